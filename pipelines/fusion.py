"""Stream stages: per-sample filters with state, run once over every new sample.

Windows overlap (``hop < window``), so a filter with memory cannot run per window: it would
see samples twice. A :class:`StreamStage` is the :class:`~pipelines.windowing.Windower`'s
``derive`` hook instead: when new samples land in the ring, it reads their sensor rows and
writes its derived rows for exactly those samples, carrying its state (a quaternion, filter
delays) from one block to the next. The windows then carry derived rows like sensor rows.

* :class:`Orientation`: Madgwick's gradient-descent orientation filter (accelerometer +
  gyroscope, and magnetometer when present), giving ``roll``, ``pitch`` (and ``yaw`` with a
  magnetometer, in radians) and the gravity-free linear acceleration ``lax``, ``lay``,
  ``laz`` in the sensor frame.
* :class:`BandPass`: a Butterworth band-pass (second-order sections, as
  ``scipy.signal.sosfilt``) per channel, for envelope analysis.

Conventions: the quaternion ``q = (w, x, y, z)`` rotates sensor-frame vectors into the earth
frame (x north, z up); at rest the accelerometer reads ``+g`` along the earth's up axis;
angles are Z-Y-X (yaw, pitch, roll).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

from pipelines.jit import JIT
from pipelines.units import ACCEL_UNITS, STANDARD_GRAVITY

ORIENTATION_OUTPUTS = ("roll", "pitch", "yaw", "lax", "lay", "laz")
IMU = ("ax", "ay", "az", "gx", "gy", "gz")
MAG = ("mx", "my", "mz")


@njit(**JIT)
def _initial_quaternion(
    ax: float, ay: float, az: float, mx: float, my: float, mz: float, use_mag: bool, q: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Orientation from one accelerometer (+ magnetometer) sample: roll and pitch from gravity,
    yaw from the tilt-compensated magnetic field (0 without one)."""
    roll = math.atan2(ay, az)
    pitch = math.atan2(-ax, math.sqrt(ay * ay + az * az))
    yaw = 0.0
    if use_mag:
        sr, cr = math.sin(roll), math.cos(roll)
        sp, cp = math.sin(pitch), math.cos(pitch)
        hx = mx * cp + (my * sr + mz * cr) * sp
        hy = my * cr - mz * sr
        yaw = math.atan2(-hy, hx)
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    q[0] = cr * cp * cy + sr * sp * sy
    q[1] = sr * cp * cy - cr * sp * sy
    q[2] = cr * sp * cy + sr * cp * sy
    q[3] = cr * cp * sy - sr * sp * cy


@njit(**JIT)
def _madgwick(
    buf: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    a: int,
    b: int,
    dt: float,
    beta: float,
    gravity: float,
    q: np.ndarray,
    started: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Madgwick's filter over columns ``[a, b)`` of ``buf`` (rows x samples).

    ``src`` holds the rows of ax, ay, az, gx, gy, gz (and mx, my, mz when it has 9 entries);
    ``dst`` the rows to write roll, pitch, yaw, lax, lay, laz to (-1: not wanted). ``q`` (4,)
    is the state; ``started[0] == 0`` initialises it from the first sample.

    Each step integrates the gyroscope rate (``q' = q (x) (0, w) / 2``) and steps ``beta``
    down the normalised gradient of the misfit between the measured and the predicted
    directions of gravity (and of the earth's field, whose horizontal part is re-estimated
    every step), as in Madgwick (2010).
    """
    use_mag = src.shape[0] == 9
    for i in range(a, b):
        ax = buf[src[0], i]
        ay = buf[src[1], i]
        az = buf[src[2], i]
        gx = buf[src[3], i]
        gy = buf[src[4], i]
        gz = buf[src[5], i]
        mx = my = mz = 0.0
        if use_mag:
            mx = buf[src[6], i]
            my = buf[src[7], i]
            mz = buf[src[8], i]
        an = math.sqrt(ax * ax + ay * ay + az * az)
        mn = math.sqrt(mx * mx + my * my + mz * mz)
        mag_ok = use_mag and mn > 0.0
        if started[0] == 0:
            if an > 0.0:
                _initial_quaternion(ax, ay, az, mx, my, mz, mag_ok, q)
            started[0] = 1
        q0, q1, q2, q3 = q[0], q[1], q[2], q[3]
        d0 = 0.5 * (-q1 * gx - q2 * gy - q3 * gz)
        d1 = 0.5 * (q0 * gx + q2 * gz - q3 * gy)
        d2 = 0.5 * (q0 * gy - q1 * gz + q3 * gx)
        d3 = 0.5 * (q0 * gz + q1 * gy - q2 * gx)
        if an > 0.0:
            ux, uy, uz = ax / an, ay / an, az / an
            # gravity misfit f_g = R(q)^T (0, 0, 1) - u and its Jacobian (rows: x, y, z)
            fx = 2.0 * (q1 * q3 - q0 * q2) - ux
            fy = 2.0 * (q0 * q1 + q2 * q3) - uy
            fz = 1.0 - 2.0 * (q1 * q1 + q2 * q2) - uz
            s0 = -2.0 * q2 * fx + 2.0 * q1 * fy
            s1 = 2.0 * q3 * fx + 2.0 * q0 * fy - 4.0 * q1 * fz
            s2 = -2.0 * q0 * fx + 2.0 * q3 * fy - 4.0 * q2 * fz
            s3 = 2.0 * q1 * fx + 2.0 * q2 * fy
            if mag_ok:
                vx, vy, vz = mx / mn, my / mn, mz / mn
                # the field in the earth frame, h = R(q) v, defines the reference b = (|h_xy|, 0, h_z)
                hx = (
                    (1.0 - 2.0 * (q2 * q2 + q3 * q3)) * vx
                    + 2.0 * (q1 * q2 - q0 * q3) * vy
                    + 2.0 * (q1 * q3 + q0 * q2) * vz
                )
                hy = (
                    2.0 * (q1 * q2 + q0 * q3) * vx
                    + (1.0 - 2.0 * (q1 * q1 + q3 * q3)) * vy
                    + 2.0 * (q2 * q3 - q0 * q1) * vz
                )
                hz = (
                    2.0 * (q1 * q3 - q0 * q2) * vx
                    + 2.0 * (q2 * q3 + q0 * q1) * vy
                    + (1.0 - 2.0 * (q1 * q1 + q2 * q2)) * vz
                )
                bx = math.sqrt(hx * hx + hy * hy)
                bz = hz
                ex = bx * (1.0 - 2.0 * (q2 * q2 + q3 * q3)) + 2.0 * bz * (q1 * q3 - q0 * q2) - vx
                ey = 2.0 * bx * (q1 * q2 - q0 * q3) + 2.0 * bz * (q0 * q1 + q2 * q3) - vy
                ez = 2.0 * bx * (q0 * q2 + q1 * q3) + bz * (1.0 - 2.0 * (q1 * q1 + q2 * q2)) - vz
                s0 += -2.0 * bz * q2 * ex + (-2.0 * bx * q3 + 2.0 * bz * q1) * ey + 2.0 * bx * q2 * ez
                s1 += (
                    2.0 * bz * q3 * ex
                    + (2.0 * bx * q2 + 2.0 * bz * q0) * ey
                    + (2.0 * bx * q3 - 4.0 * bz * q1) * ez
                )
                s2 += (
                    (-4.0 * bx * q2 - 2.0 * bz * q0) * ex
                    + (2.0 * bx * q1 + 2.0 * bz * q3) * ey
                    + (2.0 * bx * q0 - 4.0 * bz * q2) * ez
                )
                s3 += (
                    (-4.0 * bx * q3 + 2.0 * bz * q1) * ex
                    + (-2.0 * bx * q0 + 2.0 * bz * q2) * ey
                    + 2.0 * bx * q1 * ez
                )
            sn = math.sqrt(s0 * s0 + s1 * s1 + s2 * s2 + s3 * s3)
            if sn > 0.0:
                d0 -= beta * s0 / sn
                d1 -= beta * s1 / sn
                d2 -= beta * s2 / sn
                d3 -= beta * s3 / sn
        q0 += d0 * dt
        q1 += d1 * dt
        q2 += d2 * dt
        q3 += d3 * dt
        qn = math.sqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3)
        q0 /= qn
        q1 /= qn
        q2 /= qn
        q3 /= qn
        q[0], q[1], q[2], q[3] = q0, q1, q2, q3
        if dst[0] >= 0:
            buf[dst[0], i] = math.atan2(2.0 * (q0 * q1 + q2 * q3), 1.0 - 2.0 * (q1 * q1 + q2 * q2))
        if dst[1] >= 0:
            buf[dst[1], i] = math.asin(min(1.0, max(-1.0, 2.0 * (q0 * q2 - q1 * q3))))
        if dst[2] >= 0:
            buf[dst[2], i] = math.atan2(2.0 * (q0 * q3 + q1 * q2), 1.0 - 2.0 * (q2 * q2 + q3 * q3))
        if dst[3] >= 0:
            buf[dst[3], i] = ax - gravity * 2.0 * (q1 * q3 - q0 * q2)
        if dst[4] >= 0:
            buf[dst[4], i] = ay - gravity * 2.0 * (q0 * q1 + q2 * q3)
        if dst[5] >= 0:
            buf[dst[5], i] = az - gravity * (1.0 - 2.0 * (q1 * q1 + q2 * q2))


@njit(**JIT)
def _sos_filter(
    buf: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    a: int,
    b: int,
    sos: np.ndarray,
    zi_unit: np.ndarray,
    zi: np.ndarray,
    started: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Cascaded biquads (``scipy.signal.sosfilt``, transposed direct form II) from rows ``src``
    to rows ``dst`` of ``buf`` over columns ``[a, b)``. ``zi`` (rows, sections, 2) is the state;
    a row not yet ``started`` begins in the steady state for its first sample
    (``sosfilt_zi * x[0]``, as ``zi_unit``), so the filter does not ring at start."""
    n_sec = sos.shape[0]
    for r in range(src.shape[0]):
        s_row = src[r]
        d_row = dst[r]
        if started[r] == 0 and b > a:
            x0 = buf[s_row, a]
            for s in range(n_sec):
                zi[r, s, 0] = zi_unit[s, 0] * x0
                zi[r, s, 1] = zi_unit[s, 1] * x0
            started[r] = 1
        for i in range(a, b):
            v = buf[s_row, i]
            for s in range(n_sec):
                y = sos[s, 0] * v + zi[r, s, 0]
                zi[r, s, 0] = sos[s, 1] * v - sos[s, 4] * y + zi[r, s, 1]
                zi[r, s, 1] = sos[s, 2] * v - sos[s, 5] * y
                v = y
            buf[d_row, i] = v


class Orientation:
    """Madgwick orientation filter over a window ring's IMU rows (see :func:`_madgwick`).

    ``rows`` maps the channel names it reads (ax..gz, and mx..mz when ``use_mag``) and the
    outputs it writes to ring rows.
    """

    def __init__(
        self,
        rows: dict[str, int],
        outputs: Sequence[str],
        rate_hz: float,
        beta: float = 0.1,
        accel_unit: str = "m/s2",
        use_mag: bool = False,
    ) -> None:
        if beta <= 0 or rate_hz <= 0:
            raise ValueError("beta and rate_hz must be > 0")
        bad = [o for o in outputs if o not in ORIENTATION_OUTPUTS]
        if bad:
            raise ValueError(f"unknown orientation output(s) {bad}; known: {list(ORIENTATION_OUTPUTS)}")
        if "yaw" in outputs and not use_mag:
            raise ValueError("yaw needs a magnetometer (channels mx, my, mz): without one it drifts")
        inputs = IMU + (MAG if use_mag else ())
        self._src = np.array([rows[c] for c in inputs], dtype=np.int64)
        self._dst = np.array(
            [rows.get(o, -1) if o in outputs else -1 for o in ORIENTATION_OUTPUTS], dtype=np.int64
        )
        self.dt = 1.0 / rate_hz
        self.beta = float(beta)
        self.gravity = STANDARD_GRAVITY / ACCEL_UNITS[accel_unit]  # in the accelerometer's unit
        self.q = np.array([1.0, 0.0, 0.0, 0.0])
        self._started = np.zeros(1, dtype=np.int64)

    def reset(self) -> None:
        self.q[:] = (1.0, 0.0, 0.0, 0.0)
        self._started[0] = 0

    def __call__(self, buf: np.ndarray, a: int, b: int) -> None:
        _madgwick(buf, self._src, self._dst, a, b, self.dt, self.beta, self.gravity, self.q, self._started)


class BandPass:
    """Butterworth band-pass of order 2 x ``order`` from rows ``src`` to rows ``dst`` of a ring.

    The coefficients come from ``scipy.signal.butter`` (a well-tested design; only the
    per-sample filtering is ours).
    """

    def __init__(
        self, src: Sequence[int], dst: Sequence[int], rate_hz: float, band_hz: Sequence[float], order: int = 4
    ) -> None:
        from scipy.signal import butter, sosfilt_zi

        lo, hi = float(band_hz[0]), float(band_hz[1])
        nyq = rate_hz / 2
        if not 0.0 < lo < hi < nyq:
            raise ValueError(f"band-pass {lo:g}-{hi:g} Hz must satisfy 0 < low < high < Nyquist ({nyq:g} Hz)")
        self.band_hz = (lo, hi)
        self.sos = np.ascontiguousarray(butter(order, [lo, hi], btype="bandpass", fs=rate_hz, output="sos"))
        self._zi_unit = np.ascontiguousarray(sosfilt_zi(self.sos))
        self._src = np.array(src, dtype=np.int64)
        self._dst = np.array(dst, dtype=np.int64)
        self._zi = np.zeros((len(src), self.sos.shape[0], 2))
        self._started = np.zeros(len(src), dtype=np.int64)

    def reset(self) -> None:
        self._zi[:] = 0.0
        self._started[:] = 0

    def __call__(self, buf: np.ndarray, a: int, b: int) -> None:
        _sos_filter(buf, self._src, self._dst, a, b, self.sos, self._zi_unit, self._zi, self._started)


class StreamStage:
    """The stream stages of one task, as a Windower ``derive`` hook writing ``rows`` rows."""

    def __init__(self, stages: Sequence[Orientation | BandPass], rows: int) -> None:
        self.stages = tuple(stages)
        self.rows = rows

    def reset(self) -> None:
        for s in self.stages:
            s.reset()

    def __call__(self, buf: np.ndarray, a: int, b: int) -> None:
        for s in self.stages:
            s(buf, a, b)
