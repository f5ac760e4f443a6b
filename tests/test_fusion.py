"""Stream stages: Madgwick orientation on known rotation sequences, the band-pass against scipy,
and state carried correctly across blocks and overlapping windows.

Madgwick's normalised gradient step leaves a limit cycle of about beta / (2 rate) rad around
the true attitude; the tolerances below allow for it (beta 0.1 at 500 Hz: 1e-4 rad).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import scipy.signal
from scipy.spatial.transform import Rotation

from pipelines.fusion import BandPass, Orientation, StreamStage
from pipelines.windowing import DERIVED, Windower

G = 9.80665
RATE = 500.0
IMU = ("ax", "ay", "az", "gx", "gy", "gz")
MAG = ("mx", "my", "mz")
EARTH_FIELD = np.array([20.0, 0.0, -40.0])  # uT: north and (down) vertical


def _run(
    acc: np.ndarray, gyr: np.ndarray, mag: np.ndarray | None = None, beta: float = 0.1, blocks: int = 1
) -> dict[str, np.ndarray]:
    """Feed samples (n, 3) through an Orientation stage (in ``blocks`` pieces); outputs by name."""
    inputs = IMU + (MAG if mag is not None else ())
    outs = (
        ("roll", "pitch", "yaw", "lax", "lay", "laz")
        if mag is not None
        else ("roll", "pitch", "lax", "lay", "laz")
    )
    rows = {c: i for i, c in enumerate(inputs + outs)}
    n = acc.shape[0]
    buf = np.zeros((len(rows), n))
    buf[0:3], buf[3:6] = acc.T, gyr.T
    if mag is not None:
        buf[6:9] = mag.T
    stage = Orientation(rows, outs, RATE, beta, use_mag=mag is not None)
    edges = np.linspace(0, n, blocks + 1).astype(int)
    for a, b in itertools.pairwise(edges):
        stage(buf, int(a), int(b))
    return {o: buf[rows[o]] for o in outs}


def _wrap(a: np.ndarray) -> np.ndarray:
    return np.angle(np.exp(1j * a))


def _sensor(rot: Rotation, v_earth: np.ndarray) -> np.ndarray:
    """An earth-frame vector as the sensor sees it (rotation: sensor -> earth)."""
    return rot.inv().apply(v_earth)


class TestOrientation:
    @pytest.mark.parametrize("roll, pitch", [(0.0, 0.0), (0.3, -0.5), (-1.2, 0.8), (2.5, 0.2)])
    def test_static_tilt(self, roll: float, pitch: float) -> None:
        """At rest, roll and pitch equal the tilt and the linear acceleration is ~0."""
        rot = Rotation.from_euler("ZYX", [0.0, pitch, roll])
        n = 1000
        r = _run(np.tile(_sensor(rot, [0, 0, G]), (n, 1)), np.zeros((n, 3)))
        assert np.abs(_wrap(r["roll"] - roll)).max() < 1e-3 and np.abs(r["pitch"] - pitch).max() < 1e-3
        for ax in ("lax", "lay", "laz"):
            assert np.abs(r[ax]).max() < 0.02  # m/s^2

    def test_converges_from_a_wrong_start(self) -> None:
        """Started flat, the filter turns to a new tilt at about beta rad/s and then holds it."""
        rot = Rotation.from_euler("ZYX", [0.0, 0.2, 0.4])
        acc = np.concatenate([np.tile([0, 0, G], (10, 1)), np.tile(_sensor(rot, [0, 0, G]), (3000, 1))])
        r = _run(acc, np.zeros((acc.shape[0], 3)))
        assert abs(r["roll"][500] - 0.4) > 0.1  # still turning after 1 s (beta = 0.1)
        assert abs(r["roll"][-1] - 0.4) < 2e-3 and abs(r["pitch"][-1] - 0.2) < 2e-3

    @pytest.mark.parametrize("axis", ["roll", "pitch"])
    def test_constant_rate_rotation(self, axis: str) -> None:
        """Rotating at 0.5 rad/s about x (or y), the angle follows w t; gravity stays out of the linear acceleration."""
        w = 0.5
        t = np.arange(int(2.5 * RATE)) / RATE  # pitch stays below 90 degrees
        angle = w * t
        euler = np.stack(
            [np.zeros_like(t), angle if axis == "pitch" else 0 * t, angle if axis == "roll" else 0 * t], 1
        )
        rots = Rotation.from_euler("ZYX", euler)
        acc = _sensor(rots, np.array([0, 0, G]))
        gyr = np.tile([w, 0, 0] if axis == "roll" else [0, w, 0], (t.size, 1))
        r = _run(acc, gyr, blocks=7)
        assert np.abs(_wrap(r[axis] - angle)).max() < 2e-3
        assert np.abs(np.stack([r["lax"], r["lay"], r["laz"]])).max() < 0.03

    def test_yaw_follows_rotation_with_magnetometer(self) -> None:
        """Turning about the vertical at 0.3 rad/s with a magnetometer: yaw = w t (wrapped)."""
        w = 0.3
        t = np.arange(int(30 * RATE)) / RATE
        rots = Rotation.from_euler("ZYX", np.stack([w * t, 0 * t, 0 * t], 1))
        r = _run(
            _sensor(rots, np.array([0, 0, G])),
            np.tile([0, 0, w], (t.size, 1)),
            _sensor(rots, EARTH_FIELD),
            blocks=13,
        )
        assert np.abs(_wrap(r["yaw"] - w * t)).max() < 2e-3

    def test_magnetometer_corrects_gyro_bias(self) -> None:
        """A gyro bias of 0.02 rad/s turns into a steady yaw error of only ~bias/beta (bounded): the field holds the heading."""
        n = int(60 * RATE)
        rot = Rotation.from_euler("ZYX", [1.0, 0.1, -0.2])
        r = _run(
            np.tile(_sensor(rot, [0, 0, G]), (n, 1)),
            np.tile([0.0, 0.0, 0.02], (n, 1)),
            np.tile(_sensor(rot, EARTH_FIELD), (n, 1)),
        )
        assert abs(_wrap(r["yaw"][-1] - 1.0)) < 0.05 and abs(r["roll"][-1] + 0.2) < 2e-3

    def test_linear_acceleration_is_gravity_free(self) -> None:
        """Tilted and shaken along the sensor x axis (0.5 m/s^2 at 2 Hz): lax recovers the shake."""
        rot = Rotation.from_euler("ZYX", [0.0, -0.3, 0.5])
        t = np.arange(int(10 * RATE)) / RATE
        shake = 0.5 * np.sin(2 * np.pi * 2.0 * t)
        acc = np.tile(_sensor(rot, [0, 0, G]), (t.size, 1))
        acc[:, 0] += shake
        r = _run(acc, np.zeros((t.size, 3)), beta=0.02)
        assert np.abs(r["lax"] - shake)[int(RATE) :].max() < 0.08
        assert np.corrcoef(r["lax"], shake)[0, 1] > 0.99

    def test_yaw_needs_a_magnetometer(self) -> None:
        """Asking for yaw from a 6-axis IMU is refused (it would drift without bound)."""
        with pytest.raises(ValueError, match="magnetometer"):
            Orientation({c: i for i, c in enumerate((*IMU, "yaw"))}, ("yaw",), RATE)


def _stream(stage: Any, x: np.ndarray, window: int, hop: int, sizes: np.ndarray) -> list[np.ndarray]:
    """Windows (copies) of x (n, C) plus the stage's derived rows, fed in blocks of the given sizes."""
    c = x.shape[1]
    w = Windower(c + stage.rows, window, hop, capacity=window + 300, derive=stage)
    cols = list(range(c)) + [DERIVED] * stage.rows
    t = np.arange(x.shape[0], dtype=float)
    out, i = [], 0
    for size in sizes:
        if i >= x.shape[0]:
            break
        out += [v.data.copy() for v in w.push(t[i : i + size], x[i : i + size], cols)]
        i += size
    return out


class TestStreamState:
    def test_band_pass_equals_scipy_across_blocks_and_overlapping_windows(self) -> None:
        """Windows (hop < window) over random block splits hold exactly sosfilt of the whole stream (1e-12)."""
        rng = np.random.default_rng(3)
        x = rng.standard_normal((6000, 2)) + 4.0
        bp = BandPass([0, 1], [2, 3], 1000.0, [50.0, 200.0])
        wins = _stream(StreamStage([bp], 2), x, 512, 100, rng.integers(1, 700, 100))
        ref = scipy.signal.sosfilt(bp.sos, x, axis=0, zi=scipy.signal.sosfilt_zi(bp.sos)[:, :, None] * x[0])[
            0
        ]
        ends = range(512, 6001, 100)
        assert len(wins) == len(ends)
        for data, e in zip(wins, ends, strict=True):
            np.testing.assert_allclose(data[2:].T, ref[e - 512 : e], rtol=0, atol=1e-12)

    def test_orientation_advances_once_per_sample(self) -> None:
        """With overlapping windows, the derived orientation rows equal one pass over the whole stream."""
        rng = np.random.default_rng(4)
        n = 5000
        t = np.arange(n) / RATE
        rots = Rotation.from_euler("ZYX", np.stack([0 * t, 0.3 * np.sin(t), 0.5 * np.sin(0.7 * t)], 1))
        acc = _sensor(rots, np.array([0, 0, G])) + 0.05 * rng.standard_normal((n, 3))
        gyr = np.gradient(np.stack([0.5 * np.sin(0.7 * t), 0.3 * np.sin(t), 0 * t], 1), 1 / RATE, axis=0)
        x = np.concatenate([acc, gyr], axis=1)
        outs = ("roll", "pitch", "lax", "lay", "laz")
        rows = {c: i for i, c in enumerate(IMU + outs)}
        wins = _stream(StreamStage([Orientation(rows, outs, RATE)], 5), x, 256, 64, rng.integers(1, 400, 200))
        whole = _run(acc, gyr)
        ref = np.stack([whole[o] for o in outs], 1)
        for k, data in enumerate(wins):
            e = 256 + 64 * k
            np.testing.assert_allclose(data[6:].T, ref[e - 256 : e], rtol=0, atol=1e-12)

    def test_reset_starts_the_filters_again(self) -> None:
        """After Windower.reset (a new file), the stages start from scratch, as on a fresh stream."""
        rng = np.random.default_rng(5)
        x = rng.standard_normal((3000, 1))
        bp = BandPass([0], [1], 1000.0, [20.0, 100.0])
        stage = StreamStage([bp], 1)
        w = Windower(2, 256, 256, derive=stage)
        t = np.arange(3000, dtype=float)
        list(w.push(t, x, [0, DERIVED]))
        w.reset()
        again = [v.data.copy() for v in w.push(t, x[::-1].copy(), [0, DERIVED])]
        fresh = _stream(
            StreamStage([BandPass([0], [1], 1000.0, [20.0, 100.0])], 1),
            x[::-1].copy(),
            256,
            256,
            np.array([3000]),
        )
        for a, b in zip(again, fresh, strict=True):
            np.testing.assert_array_equal(a, b)
