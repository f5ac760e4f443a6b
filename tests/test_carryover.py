"""Carry-over kernels (pipelines/carryover.py) against their numpy references, and physical checks.

Tolerance against the references: rtol 1e-9 (the same maths in another order).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.carryover import (
    _dominance,
    _family_lines,
    _family_summary,
    _gravity_aligned,
    _impulsiveness,
    _line_to_background,
    _speed_search,
)
from tests import naive_carryover as naive

RTOL = 1e-9
CWRU = np.array([3.5848, 5.4152, 4.7135, 0.39828, 1.0])  # BPFO BPFI BSF FTF, shaft
FS = 12000.0
GAP = 2 * FS / 2048  # the Hann main lobe of a 2048-sample window


def _impacts(rate_hz: float, n: int, fs: float, rng: np.random.Generator, decay: float = 800.0) -> np.ndarray:
    """Decaying 3.5 kHz bursts at ``rate_hz`` plus noise: a bearing defect's impact train."""
    t = np.arange(n) / fs
    x = 0.3 * rng.standard_normal(n)
    for t0 in np.arange(rng.uniform(0, 1 / rate_hz), t[-1], 1 / rate_hz):
        m = t >= t0
        x[m] += np.exp(-decay * (t[m] - t0)) * np.sin(2 * np.pi * 3500 * (t[m] - t0))
    return x


def _envelope_psd(x: np.ndarray, p: int) -> np.ndarray:
    from scipy.signal import butter, hilbert, sosfilt

    y = sosfilt(butter(4, [2000, 5000], btype="band", fs=FS, output="sos"), x)
    e = np.abs(hilbert(y))
    e = (e - e.mean()) * np.hanning(len(e))
    return np.abs(np.fft.rfft(e, p)) ** 2


class TestLineToBackground:
    def test_matches_reference(self) -> None:
        """Random spectra, lines on and between bins, near DC and the last bin: as numpy."""
        rng = np.random.default_rng(1)
        psd = rng.exponential(size=257)
        scratch = np.empty(257)
        for f in (0.3, 1.0, 7.5, 100.0, 101.37, 254.9, 256.0, 300.0):
            for tol, gap, bg in ((0.2, 0.0, 8.0), (1.5, 3.0, 10.0), (3.0, 0.0, 3.0), (0.4, 2.0, 2.0)):
                want = naive.line_to_background(psd, 1.0, f, tol, gap, bg)
                got = _line_to_background(psd, 1.0, f, tol, gap, bg, scratch)
                if math.isnan(want):
                    assert math.isnan(got), (f, tol, bg)
                else:
                    assert got == pytest.approx(want, rel=RTOL, abs=1e-12), (f, tol, bg)

    def test_level_free(self) -> None:
        """Scaling the whole spectrum (a louder machine) leaves the ratio unchanged."""
        rng = np.random.default_rng(2)
        psd = rng.exponential(size=129)
        psd[40] = 50.0
        s = np.empty(129)
        a = _line_to_background(psd, 1.0, 40.0, 1.0, 2.0, 10.0, s)
        b = _line_to_background(psd * 1e4, 1.0, 40.0, 1.0, 2.0, 10.0, s)
        assert a > 10.0
        assert b == pytest.approx(a, abs=1e-9)


class TestFamilies:
    def test_family_lines_and_summary_match_reference(self) -> None:
        """Every harmonic of every family, then mean/max/share: as numpy."""
        rng = np.random.default_rng(3)
        psd = rng.exponential(size=(2, 4097))
        df = FS / 8192
        lines = np.empty((2, 5, 3))
        _family_lines(psd, df, 29.93, CWRU, 3, 0.005, GAP, 0.1, 8 * df, np.empty(4097), lines)
        want = naive.family_lines(psd, df, 29.93, CWRU, 3, 0.005, GAP, 0.1, 8 * df)
        np.testing.assert_allclose(lines, want, rtol=RTOL, atol=1e-12)
        out = np.empty((2, 13))
        _family_summary(lines, 3, out)
        np.testing.assert_allclose(out, naive.family_summary(want, 3), rtol=RTOL, atol=1e-12)

    def test_shares_say_which_family_dominates(self) -> None:
        """An outer-race impact train: BPFO holds the largest share, whatever its severity."""
        rng = np.random.default_rng(4)
        shares = []
        for amp in (1.0, 4.0):
            x = amp * _impacts(3.5848 * 29.93, 2048, FS, rng)
            psd = _envelope_psd(x, 8192)[None, :]
            lines = np.empty((1, 5, 3))
            _family_lines(
                psd, FS / 8192, 29.93, CWRU, 3, 0.005, GAP, 0.1, 8 * FS / 8192, np.empty(4097), lines
            )
            out = np.empty((1, 13))
            _family_summary(lines, 3, out)
            shares.append(out[0, 10:13])
        for s in shares:
            assert int(np.argmax(s)) == 0, s


class TestDominance:
    def test_matches_reference(self) -> None:
        """Softmax shares and the strongest fundamental, NaN lines as 0 dB: as numpy."""
        rng = np.random.default_rng(11)
        lines = rng.normal(5.0, 8.0, size=(2, 5, 3))
        lines[1, 2, 0] = np.nan
        out = np.empty((2, 4))
        _dominance(lines, 3, 4.0, out)
        np.testing.assert_allclose(out, naive.dominance(lines, 3, 4.0), rtol=RTOL)
        np.testing.assert_allclose(out[:, :3].sum(axis=1), 1.0, rtol=1e-12)

    def test_severity_invariant(self) -> None:
        """A fault line 20 or 35 dB over its background: the same family holds nearly all the share."""
        out = np.empty((2, 4))
        lines = np.zeros((2, 3, 1))
        lines[0, 1, 0] = 20.0
        lines[1, 1, 0] = 35.0
        _dominance(lines, 3, 4.0, out)
        assert out[0, 1] > 0.98 and out[1, 1] > 0.99
        assert out[0, 3] == 20.0


class TestSpeedSearch:
    def test_matches_reference(self) -> None:
        """The grid search picks the same speed as numpy."""
        rng = np.random.default_rng(5)
        psd = rng.exponential(size=(2, 4097))
        df = FS / 8192
        args = (df, 29.93, CWRU[:3], 3, 0.003, GAP, 0.1, 8 * df, 0.93, 1.02, 46)
        got = _speed_search(psd, *args, np.empty(4097), np.empty((2, 3, 3)))
        assert got == pytest.approx(naive.speed_search(psd, *args), rel=RTOL)

    @pytest.mark.parametrize("slip", [1.0, 0.985, 0.962])
    def test_tracks_load_slip(self, slip: float) -> None:
        """Inner-race impacts at a shaft speed a few percent below nominal: found within 1 % (a 0.17 s window resolves no finer)."""
        rng = np.random.default_rng(6)
        true_hz = 29.93 * slip
        x = _impacts(5.4152 * true_hz, 2048, FS, rng, decay=1500.0)
        psd = _envelope_psd(x, 8192)[None, :]
        df = FS / 8192
        got = _speed_search(
            psd,
            df,
            29.93,
            CWRU[:3],
            3,
            0.003,
            GAP,
            0.1,
            8 * df,
            0.93,
            1.02,
            46,
            np.empty(4097),
            np.empty((1, 3, 3)),
        )
        assert got == pytest.approx(true_hz, rel=0.01)


class TestImpulsiveness:
    def test_matches_reference(self) -> None:
        """log kurtosis and log crest of random rows: as numpy; a constant row gives NaN."""
        rng = np.random.default_rng(7)
        x = rng.standard_t(4, size=(3, 500))
        x[2] = 1.5
        out = np.empty((3, 2))
        _impulsiveness(x, out)
        np.testing.assert_allclose(out[:2], naive.impulsiveness(x[:2]), rtol=RTOL)
        assert np.isnan(out[2]).all()

    def test_gaussian_and_scale_free(self) -> None:
        """A Gaussian's kurtosis is 3, and scaling a row changes neither feature."""
        x = np.random.default_rng(8).standard_normal((1, 200_000))
        a, b = np.empty((1, 2)), np.empty((1, 2))
        _impulsiveness(x, a)
        _impulsiveness(x * 37.0, b)
        assert math.exp(a[0, 0]) == pytest.approx(3.0, rel=0.02)
        np.testing.assert_allclose(a, b, rtol=1e-9)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.linalg.det(q))


class TestGravityAligned:
    def _window(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = 100
        up = np.array([0.0, 0.0, 9.80665])
        lin = np.stack(
            [np.sin(np.arange(n) / 3), 0.5 * np.cos(np.arange(n) / 5), 2 * np.sin(np.arange(n) / 7)]
        )
        lin += 0.1 * rng.standard_normal((3, n))
        gyro = rng.standard_normal((3, n))
        return lin + up[:, None], lin, gyro

    def test_matches_reference(self) -> None:
        """Accelerometer with and without gyroscope: as numpy."""
        acc, lin, gyro = self._window(np.random.default_rng(9))
        out = np.empty(12)
        _gravity_aligned(acc, lin, gyro, np.empty((3, 100)), out)
        np.testing.assert_allclose(out, naive.gravity_aligned(acc, lin, gyro), rtol=RTOL, atol=1e-12)
        out6 = np.empty(6)
        _gravity_aligned(acc, lin, np.empty((0, 100)), np.empty((3, 100)), out6)
        np.testing.assert_allclose(out6, naive.gravity_aligned(acc, lin, None), rtol=RTOL, atol=1e-12)

    def test_invariant_to_how_the_device_is_held(self) -> None:
        """The same motion seen by a rotated device gives the same features."""
        rng = np.random.default_rng(10)
        acc, lin, gyro = self._window(rng)
        a, b = np.empty(12), np.empty(12)
        _gravity_aligned(acc, lin, gyro, np.empty((3, 100)), a)
        r = _rotation(rng)
        _gravity_aligned(r @ acc, r @ lin, r @ gyro, np.empty((3, 100)), b)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        assert a[2] == pytest.approx(np.mean(2 * np.sin(np.arange(100) / 7)), abs=0.05)  # vertical = world z


class TestFeatureSets:
    def test_lines_matches_reference(self) -> None:
        """The ``lines`` set on an outer-race impact train at 3 % slip: as numpy, and BPFO dominates."""
        from scipy.signal import butter, sosfilt

        from pipelines.dsp import defect_multiples
        from pipelines.features import FeatureExtractor

        rng = np.random.default_rng(12)
        m = defect_multiples(9, 0.3126, 1.537)
        raw = np.stack([_impacts(m["bpfo"] * 29.93 * 0.97, 2048, FS, rng) for _ in range(2)])
        band = sosfilt(butter(4, [2000, 5000], btype="band", fs=FS, output="sos"), raw, axis=1)
        fx = FeatureExtractor(("de", "fe"), FS, 2048, ("lines",), shaft_hz=29.93, defects=m)
        got = fx.compute(np.concatenate([raw, band])).copy()
        mults = np.array([m["bpfo"], m["bpfi"], 2 * m["bsf"]])
        want, hz = naive.lines_features(raw, band, FS, 29.93, mults)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-12)
        assert fx.feature_set("lines").speed_hz == pytest.approx(hz, rel=RTOL)  # type: ignore[attr-defined]
        assert hz == pytest.approx(29.93 * 0.97, rel=0.01)
        named = dict(zip(fx.names, got, strict=True))
        assert named["de.dom_bpfo"] > 0.9 and named["de.line_max"] > 10.0

    def test_gravity_matches_reference(self) -> None:
        """The ``gravity`` set reads ax..az, lax..laz and gx..gz rows: as numpy."""
        from pipelines.features import FeatureExtractor

        acc, lin, gyro = TestGravityAligned()._window(np.random.default_rng(13))
        fx = FeatureExtractor(
            ("ax", "ay", "az", "gx", "gy", "gz"), 100.0, 100, ("gravity",), derived=("lax", "lay", "laz")
        )
        got = fx.compute(np.concatenate([acc, gyro, lin]))
        np.testing.assert_allclose(got, naive.gravity_aligned(acc, lin, gyro), rtol=RTOL, atol=1e-12)
        assert fx.names[0] == "grav.acc_mag_mean" and len(fx.names) == 12

    def test_gravity_needs_the_fusion(self) -> None:
        """Without the linear-acceleration rows the set says what to configure."""
        from pipelines.features import FeatureExtractor

        with pytest.raises(ValueError, match="fusion"):
            FeatureExtractor(("ax", "ay", "az"), 100.0, 100, ("gravity",))


class TestCwruLines:
    """Real vibration: the CWRU excerpt in tests/data/cwru through the example's ``lines`` set."""

    def test_each_fault_dominated_by_its_own_family(self) -> None:
        """Inner-race windows are dominated by BPFI, outer-race ones by BPFO (>= 90 %), healthy ones
        show no line over 10 dB, and the searched speed stays within 1 % of the 0 HP speed."""
        from drivers.replay import read_recording
        from edged.config import load
        from pipelines.dsp import build_dsp
        from pipelines.windowing import DERIVED, Windower
        from tests.conftest import REPO

        cfg, _ = load(str(REPO / "examples" / "cwru.toml"))
        task = cfg.tasks["maintenance"]
        assert "lines" in task.features
        dsp = build_dsp(task, 12000.0)
        w = Windower(dsp.extractor.rows, task.window, task.hop, derive=dsp.stream)
        cols = [0, 1] + [DERIVED] * (dsp.extractor.rows - 2)
        names = list(dsp.extractor.names)
        lines = dsp.extractor.feature_set("lines")
        rows, labels, speeds = [], [], []
        vocab: list[str] = []
        for block in read_recording(REPO / "tests" / "data" / "cwru" / "excerpt.csv.gz"):
            codes, found = block.labels["maintenance"]
            vocab += [v for v in found if v not in vocab]
            lut = np.array([vocab.index(v) for v in found])
            for win in w.push(block.t, block.x, cols, lut[codes]):
                rows.append(dsp.extractor.compute(win.data).copy())
                labels.append(vocab[win.label])
                speeds.append(lines.speed_hz)  # type: ignore[attr-defined]
        x, y = np.array(rows), np.array(labels)
        dom = np.stack([x[:, names.index(f"de.dom_{d}")] for d in ("bpfo", "bpfi", "bsf")], 1)
        top = np.array(["bpfo", "bpfi", "bsf"])[np.argmax(dom, 1)]
        assert np.mean(top[y == "inner_race"] == "bpfi") >= 0.9
        assert np.mean(top[y == "outer_race"] == "bpfo") >= 0.9
        assert np.median(x[y == "normal", names.index("de.line_max")]) < 10.0
        faults = np.isin(y, ["inner_race", "outer_race"])
        assert np.median(np.array(speeds)[faults]) == pytest.approx(29.93, rel=0.01)
