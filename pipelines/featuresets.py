"""Feature sets: each owns its feature names and the fill of exactly those outputs.

A feature set is built once from a task's :class:`Spec` (validating what it reads, and raising
``ValueError`` that names what to change) and then, per window, fills its slice of the output
vector from the :class:`Frame`. Its ``names`` and its fill are written side by side, so they
cannot get out of step. :class:`~pipelines.features.FeatureExtractor` keeps the sets in
:data:`FEATURE_SETS` order; that order is part of a checkpoint's feature layout.

What several sets need is computed once per window by the frame: the time-domain statistics
of every visible row (their means remove the DC before the FFT), the power spectra, and the
shaft speed (:class:`ShaftSpeed`, fixed or estimated; ``shaft.hz`` when estimated).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipelines.carryover import (
    GRAVITY_ALIGNED,
    GRAVITY_ALIGNED_GYRO,
    _dominance,
    _family_lines,
    _gravity_aligned,
    _speed_search,
)
from pipelines.kernels.envelope import _envelope_spectrum
from pipelines.kernels.fft import fft_tables, hann
from pipelines.kernels.spectral import (
    _band_sums,
    _line_power,
    _peak_frequency,
    _power_spectrum,
    _spectral_shape,
    _velocity_rms,
)
from pipelines.kernels.time import _motion, _time_stats
from pipelines.units import ACCEL_UNITS

STATS = ("mean", "std", "rms", "min", "max", "ptp", "skew", "kurt", "crest", "zcr")
SPECTRUM = ("dom_freq", "dom_amp", "centroid", "entropy")
MOTION = ("sma", "norm_mean", "norm_std", "norm_min", "norm_max", "corr_xy", "corr_xz", "corr_yz")
TRIADS = {
    "acc": ("ax", "ay", "az"),
    "gyro": ("gx", "gy", "gz"),
    "mag": ("mx", "my", "mz"),
    "lin": ("lax", "lay", "laz"),
}
SHAFT = ("shaft_1x", "shaft_2x", "shaft_3x")
DEFECTS = ("bpfo", "bpfi", "bsf", "ftf")
ENVELOPE = ("env_mean", *(f"env_{d}" for d in DEFECTS))


@dataclass(frozen=True)
class Spec:
    """A task's feature spec (the arguments of :class:`~pipelines.features.FeatureExtractor`)."""

    channels: tuple[str, ...]
    derived: tuple[str, ...]
    rate_hz: float
    window: int
    bands_hz: Sequence[float] = ()
    log: bool = True
    accel_unit: str = "m/s2"
    velocity_band_hz: Sequence[float] = (10.0, 1000.0)
    shaft_hz: float | None = None
    shaft_range_hz: Sequence[float] | None = None
    line_tol: float = 0.02
    defects: Mapping[str, float] | None = None
    harmonics: int = 3


class Fft:
    """The FFT plan of a window: Hann window, tables, the power scale and work buffers."""

    def __init__(self, window: int, p: int) -> None:
        self.win = hann(window)
        self.swaps, self.tw_re, self.tw_im = fft_tables(p)
        self.scale = 1.0 / (p * float(np.sum(self.win**2)))  # bins add up to the mean square
        self.re = np.zeros(p)
        self.im = np.zeros(p)


class Frame:
    """One window as the feature sets see it, and what they share, computed once per window.

    Rows of a window: the sensor ``channels``, the ``derived`` channels, then (for
    ``envelope``) a band-passed copy of each sensor channel. ``vis`` are the first two groups.
    """

    def __init__(self, spec: Spec, rows: int) -> None:
        self.channels = spec.channels
        self.visible = spec.channels + spec.derived  # the rows the channel-wise sets see
        self.rate_hz = spec.rate_hz
        self.window = spec.window
        self.nyq = spec.rate_hz / 2
        self.p = 1 << (spec.window - 1).bit_length()  # zero-padded FFT length
        self.df = spec.rate_hz / self.p
        self.n_bins = self.p // 2 + 1
        self.stats = np.zeros((len(self.visible), len(STATS)))
        self.means = np.zeros(len(self.visible))
        self.shaft_hz = math.nan
        self._fft: Fft | None = None
        self.psd = np.zeros((0, 0))
        self.psd_raw = self.psd
        empty = np.zeros((rows, spec.window))
        self.vis = empty[: len(self.visible)]
        self.band = empty[len(self.visible) :]

    def fft(self) -> Fft:
        """The FFT plan (made on first use) and the power spectrum buffer."""
        if self._fft is None:
            self._fft = Fft(self.window, self.p)
            self.psd = np.zeros((len(self.visible), self.n_bins))
            self.psd_raw = self.psd[: len(self.channels)]
        return self._fft

    def load(self, win: np.ndarray) -> None:
        """Take a new window and compute its time statistics."""
        self.vis = win[: len(self.visible)]
        self.band = win[len(self.visible) :]
        _time_stats(self.vis, self.stats)

    def power_spectrum(self) -> None:
        """One-sided power spectrum of every visible row (mean removed, Hann, zero-padded)."""
        f = self.fft()
        self.means[:] = self.stats[:, 0]
        _power_spectrum(self.vis, self.means, f.win, f.swaps, f.tw_re, f.tw_im, f.scale, f.re, f.im, self.psd)


def _bins(f_lo: float, f_hi: float, df: float) -> tuple[int, int]:
    return math.ceil(f_lo / df - 1e-9), math.ceil(f_hi / df - 1e-9)


class FeatureSet:
    """A set of features: ``names`` and :meth:`fill`, which writes exactly ``len(names)`` values."""

    key: ClassVar[str]
    needs_psd: bool = False  # reads Frame.psd
    names: tuple[str, ...] = ()

    def __init__(self, f: Frame, spec: Spec, speed: ShaftSpeed | None = None) -> None:
        """Validate what the set reads from ``spec``, name its features, allocate its buffers;
        ``speed`` is the task's shaft speed (for the sets that read it)."""
        raise NotImplementedError

    def fill(self, f: Frame, out: np.ndarray) -> None:
        """Write this set's features of the frame's window into ``out`` (a view, ``len(names)``)."""
        raise NotImplementedError


class Stats(FeatureSet):
    """``stats``: :data:`STATS` of every visible row (the frame computes them for all sets)."""

    key = "stats"

    def __init__(self, f: Frame, spec: Spec, speed: ShaftSpeed | None = None) -> None:
        self.names = tuple(f"{c}.{s}" for c in f.visible for s in STATS)

    def fill(self, f: Frame, out: np.ndarray) -> None:
        out[:] = f.stats.ravel()


class Bands(FeatureSet):
    """``bands``: power in each band of ``bands_hz`` per visible row (log10 when ``log``)."""

    key = "bands"
    needs_psd = True

    def __init__(self, f: Frame, spec: Spec, speed: ShaftSpeed | None = None) -> None:
        edges = [float(e) for e in spec.bands_hz]
        if len(edges) < 2:
            raise ValueError("feature set 'bands' needs at least two band edges in bands_hz")
        if any(b <= a for a, b in itertools.pairwise(edges)) or edges[0] < 0:
            raise ValueError(f"bands_hz must be increasing and >= 0, got {edges}")
        if edges[-1] > f.nyq:
            raise ValueError(f"bands_hz top edge {edges[-1]} Hz is above Nyquist ({f.nyq:g} Hz)")
        lo = np.array([_bins(a, a, f.df)[0] for a in edges[:-1]], dtype=np.int64)
        hi = np.array([_bins(b, b, f.df)[0] for b in edges[1:]], dtype=np.int64)
        hi[-1] = min(int(hi[-1]) + (1 if edges[-1] >= f.nyq else 0), f.n_bins)
        empty = [
            f"{a:g}-{b:g} Hz" for a, b, lo_, hi_ in zip(edges, edges[1:], lo, hi, strict=False) if hi_ <= lo_
        ]
        if empty:
            raise ValueError(
                f"band(s) {empty} contain no FFT bin at {f.rate_hz:g} Hz / {f.p} points "
                f"(bin width {f.df:.3g} Hz): widen them or lengthen the window"
            )
        self.log = spec.log
        self._lo, self._hi = lo, hi
        self._out = np.zeros((len(f.visible), len(edges) - 1))
        self.names = tuple(f"{c}.band_{a:g}_{b:g}" for c in f.visible for a, b in itertools.pairwise(edges))

    def fill(self, f: Frame, out: np.ndarray) -> None:
        _band_sums(f.psd, self._lo, self._hi, self.log, self._out)
        out[:] = self._out.ravel()


class Spectrum(FeatureSet):
    """``spectrum``: :data:`SPECTRUM` per visible row; ``dom_amp`` is the amplitude of the sinusoid
    in the strongest bin (the Hann window's coherent gain undone)."""

    key = "spectrum"
    needs_psd = True

    def __init__(self, f: Frame, spec: Spec, speed: ShaftSpeed | None = None) -> None:
        win = f.fft().win
        self._amp_scale = math.sqrt(2.0 * f.p * float(np.sum(win**2))) / float(np.sum(win))
        self._out = np.zeros((len(f.visible), len(SPECTRUM)))
        self.names = tuple(f"{c}.{s}" for c in f.visible for s in SPECTRUM)

    def fill(self, f: Frame, out: np.ndarray) -> None:
        _spectral_shape(f.psd, f.means, f.df, self._amp_scale, self._out)
        out[:] = self._out.ravel()


class Motion(FeatureSet):
    """``motion``: :data:`MOTION` of every complete vector triad (:data:`TRIADS`) among the rows."""

    key = "motion"

    def __init__(self, f: Frame, spec: Spec, speed: ShaftSpeed | None = None) -> None:
        index = {c: i for i, c in enumerate(f.visible)}
        triads = [(name, axes) for name, axes in TRIADS.items() if all(a in index for a in axes)]
        if not triads:
            raise ValueError(
                "feature set 'motion' needs a complete vector triad among the channels: "
                + ", ".join("/".join(a) for a in TRIADS.values())
            )
        self._triads = np.array([[index[a] for a in axes] for _, axes in triads], dtype=np.int64)
        self._out = np.zeros((len(triads), len(MOTION)))
        self._norm = np.zeros(f.window)
        self.names = tuple(f"{name}.{m}" for name, _ in triads for m in MOTION)

    def fill(self, f: Frame, out: np.ndarray) -> None:
        _motion(f.vis, self._triads, self._norm, self._out)
        out[:] = self._out.ravel()


class Velocity(FeatureSet):
    """``velocity``: velocity RMS (mm/s) per sensor channel in ``velocity_band_hz`` (clipped to
    Nyquist; ISO 10816 / 20816), acceleration integrated in the frequency domain."""

    key = "velocity"
    needs_psd = True

    def __init__(self, f: Frame, spec: Spec, speed: ShaftSpeed | None = None) -> None:
        band = spec.velocity_band_hz
        if len(band) != 2 or not 0 < band[0] < band[1]:
            raise ValueError(f"velocity_band_hz must be [low, high] with 0 < low < high, got {list(band)}")
        v_lo, v_hi = float(band[0]), min(float(band[1]), f.nyq)
        k_lo, k_hi = _bins(v_lo, v_hi, f.df)
        k_hi = min(k_hi + (1 if v_hi >= f.nyq else 0), f.n_bins)
        if k_lo < 1 or k_hi - k_lo < 2:
            raise ValueError(
                f"velocity band {v_lo:g}-{v_hi:g} Hz (clipped to Nyquist) holds fewer than two "
                f"FFT bins of {f.df:.3g} Hz: lengthen the window or widen the band"
            )
        self.band = (v_lo, v_hi)
        self._bins = (int(k_lo), int(k_hi))
        self._scale = 1000.0 * ACCEL_UNITS[spec.accel_unit]  # -> mm/s
        self._out = np.zeros(len(f.channels))
        self.names = tuple(f"{c}.vel_rms" for c in f.channels)

    def fill(self, f: Frame, out: np.ndarray) -> None:
        _velocity_rms(f.psd_raw, self._bins[0], self._bins[1], f.df, self._scale, self._out)
        out[:] = self._out


class ShaftSpeed(FeatureSet):
    """The shaft speed that ``shaft`` and ``envelope`` need: fixed (``shaft_hz``) or estimated per
    window as the strongest line in ``shaft_range_hz``; then it is the feature ``shaft.hz``.
    ``line_tol`` is the relative half width of a spectral line."""

    key = "shaft_speed"

    def __init__(self, f: Frame, spec: Spec, speed: ShaftSpeed | None = None) -> None:
        if not 0.0 < spec.line_tol < 0.5:
            raise ValueError(f"line_tol must be in (0, 0.5), got {spec.line_tol}")
        self.line_tol = float(spec.line_tol)
        self.min_hw = 1.5 * f.df  # the Hann main lobe of a line in the middle of a bin
        self.hz = None if spec.shaft_hz is None else float(spec.shaft_hz)
        self.estimate = self.hz is None
        self.needs_psd = self.estimate
        if self.hz is not None:
            if not 0.0 < self.hz < f.nyq:
                raise ValueError(f"shaft_hz must be in (0, Nyquist = {f.nyq:g} Hz), got {spec.shaft_hz}")
            return
        rng = spec.shaft_range_hz
        if rng is None or len(rng) != 2:
            raise ValueError(
                "the shaft speed is needed: give shaft hz, or range_hz = [low, high] to estimate it per window"
            )
        s_lo, s_hi = float(rng[0]), float(rng[1])
        if not 0.0 < s_lo < s_hi < f.nyq:
            raise ValueError(
                f"shaft range_hz must satisfy 0 < low < high < Nyquist ({f.nyq:g} Hz), got {[s_lo, s_hi]}"
            )
        k_lo, k_hi = max(1, math.floor(s_lo / f.df)), min(f.n_bins - 2, math.ceil(s_hi / f.df))
        if k_hi - k_lo < 2:
            raise ValueError(
                f"shaft range_hz {s_lo:g}-{s_hi:g} Hz spans fewer than three FFT bins of "
                f"{f.df:.3g} Hz: lengthen the window or widen the range"
            )
        self._bins = (int(k_lo), int(k_hi))
        self.names = ("shaft.hz",)

    def update(self, f: Frame) -> None:
        """Set the frame's shaft speed for this window (after its power spectrum)."""
        if self.hz is None:
            f.shaft_hz = _peak_frequency(f.psd_raw, self._bins[0], self._bins[1], f.df)
        else:
            f.shaft_hz = self.hz

    def fill(self, f: Frame, out: np.ndarray) -> None:
        out[0] = f.shaft_hz


class Shaft(FeatureSet):
    """``shaft``: power at 1x, 2x and 3x the shaft speed per sensor channel (:data:`SHAFT`)."""

    key = "shaft"
    needs_psd = True

    def __init__(self, f: Frame, spec: Spec, speed: ShaftSpeed | None = None) -> None:
        assert speed is not None  # FeatureExtractor passes one to every set that reads the speed
        self._speed = speed
        self.log = spec.log
        self._harm = np.arange(1.0, len(SHAFT) + 1.0)
        self._harm_hz = np.zeros(len(SHAFT))
        self._out = np.zeros((len(f.channels), len(SHAFT)))
        self.names = tuple(f"{c}.{s}" for c in f.channels for s in SHAFT)

    def fill(self, f: Frame, out: np.ndarray) -> None:
        s = self._speed
        np.multiply(self._harm, f.shaft_hz, out=self._harm_hz)
        _line_power(f.psd_raw, f.df, self._harm_hz, 1, s.line_tol, s.min_hw, self.log, self._out)
        out[:] = self._out.ravel()


class Envelope(FeatureSet):
    """``envelope``: per sensor channel, the mean of the envelope of its band-passed copy and the
    envelope-spectrum power at the bearing defect lines :data:`DEFECTS` (multiples of the shaft
    speed, each summed over ``harmonics`` harmonics)."""

    key = "envelope"

    def __init__(self, f: Frame, spec: Spec, speed: ShaftSpeed | None = None) -> None:
        assert speed is not None  # FeatureExtractor passes one to every set that reads the speed
        defects = spec.defects
        if not defects or set(defects) != set(DEFECTS):
            raise ValueError(f"feature set 'envelope' needs the bearing defect multiples {list(DEFECTS)}")
        if spec.harmonics < 1:
            raise ValueError(f"harmonics must be >= 1, got {spec.harmonics}")
        self._speed = speed
        self.log = spec.log
        self.defects = {d: float(defects[d]) for d in DEFECTS}
        self.harmonics = int(spec.harmonics)
        self._fft = f.fft()
        n_raw = len(f.channels)
        self._defect_x = np.array([self.defects[d] for d in DEFECTS])
        self._centers = np.zeros(len(DEFECTS))
        self._env = np.zeros((2, f.window))
        self._mean = np.zeros(n_raw)
        self._psd = np.zeros((n_raw, f.n_bins))
        self._lines = np.zeros((n_raw, len(DEFECTS)))
        self.names = tuple(f"{c}.{e}" for c in f.channels for e in ENVELOPE)

    def fill(self, f: Frame, out: np.ndarray) -> None:
        s, t = self._speed, self._fft
        np.multiply(self._defect_x, f.shaft_hz, out=self._centers)
        _envelope_spectrum(
            f.band, t.win, t.swaps, t.tw_re, t.tw_im, t.scale, t.re, t.im, self._env, self._mean, self._psd
        )
        _line_power(
            self._psd, f.df, self._centers, self.harmonics, s.line_tol, s.min_hw, self.log, self._lines
        )
        k = 0
        for c in range(len(f.channels)):
            out[k] = self._mean[c]
            out[k + 1 : k + 1 + len(DEFECTS)] = self._lines[c]
            k += 1 + len(DEFECTS)


SLIP_RANGE = (0.93, 1.02)
"""Shaft speed searched as these multiples of the configured speed: an induction motor runs up to
~5-7 % below synchronous speed at full load (CWRU 3 HP: 3.8 % below the 0 HP speed), a little above
it never; the 2 % headroom covers a nominal speed read off a nameplate."""
SLIP_COARSE = 16  # first pass: 0.6 % steps over SLIP_RANGE
SLIP_FINE = 7  # then 0.2 % steps within one coarse step of the best (as fine as 46 steps, half the work)
LINE_TOL = 0.003  # line half width during the search (of its frequency; at least one padded bin)
LINE_TOL_READ = 0.005  # and when reading the lines at the found speed
BG_FRAC = 0.1  # background: 10 % of the fundamental beyond the main lobe (at least 2 padded bins)
PAD = 4  # the envelope spectrum is zero-padded 4x, so a line's peak is found between native bins
TAU_DB = 4.0  # dominance softmax temperature (pipelines.carryover._dominance)
LINES = ("dom_bpfo", "dom_bpfi", "dom_bsf", "line_max", "log_rms")


def slip_search_passes(coarse_best: float | None = None) -> tuple[float, float, int]:
    """``(lo, hi, steps)`` of the coarse search pass, or of the fine pass around ``coarse_best``."""
    lo, hi = SLIP_RANGE
    if coarse_best is None:
        return lo, hi, SLIP_COARSE
    step = (hi - lo) / (SLIP_COARSE - 1)
    return coarse_best - step, coarse_best + step, SLIP_FINE


class Lines(FeatureSet):
    """``lines``: which bearing defect family dominates the envelope spectrum, and how clearly.

    Per sensor channel, from the band-passed copy (as ``envelope``): the envelope spectrum
    (zero-padded ``PAD`` x), the shaft speed searched over ``SLIP_RANGE`` x the configured one
    (:func:`~pipelines.carryover._speed_search`), the line-to-background ratio of each defect
    fundamental at that speed (BPFO, BPFI and the ball-fault line 2 x BSF), then
    :data:`LINES`: each family's softmax share (``dom_*``, they add up to 1), the strongest
    fundamental's ratio in dB (``line_max``) and log10 of the raw channel's RMS, mean removed
    (``log_rms``).
    Shares and ratios are level-free (they do not grow with fault severity or load); ``log_rms``
    is the one level feature, kept because envelope analysis cannot tell a ball fault from a
    healthy bearing on many recordings (Smith & Randall 2015) and the level can. The searched
    speed is ``shaft.hz`` only in :attr:`speed_hz` (not a feature: a model must not learn the
    load it was trained at)."""

    key = "lines"

    def __init__(self, f: Frame, spec: Spec, speed: ShaftSpeed | None = None) -> None:
        defects = spec.defects
        if not defects or not {"bpfo", "bpfi", "bsf"} <= set(defects):
            raise ValueError("feature set 'lines' needs the bearing geometry (a [bearing] table)")
        if spec.shaft_hz is None:
            raise ValueError(
                "feature set 'lines' needs the nominal shaft speed (shaft hz); it searches the slip itself"
            )
        self.nominal_hz = float(spec.shaft_hz)
        self.mults = np.array([defects["bpfo"], defects["bpfi"], 2.0 * defects["bsf"]])
        n_raw = len(f.channels)
        p = PAD * f.p
        self.df = f.rate_hz / p
        self.gap_hz = 2.0 * f.rate_hz / f.window  # the Hann main lobe of the unpadded window
        self._native = Fft(f.window, f.p)  # the envelope (Hilbert transform) at the window's own length
        self._fft = Fft(f.window, p)  # the envelope's spectrum, zero-padded
        self._env = np.zeros((2, f.window))
        self._envs = np.zeros((n_raw, f.window))
        self._mean = np.zeros(n_raw)
        self._psd_native = np.zeros((2, f.n_bins))
        self._psd = np.zeros((n_raw, p // 2 + 1))
        self._scratch = np.zeros(p // 2 + 1)
        self._lines = np.zeros((n_raw, 3, 1))
        self._search = np.zeros((n_raw, 3, 3))
        self._dom = np.zeros((n_raw, 4))
        self.speed_hz = math.nan
        self.names = tuple(f"{c}.{n}" for c in f.channels for n in LINES)

    def fill(self, f: Frame, out: np.ndarray) -> None:
        a, t = self._native, self._fft
        for c0 in range(0, len(f.channels), 2):  # envelopes two rows at a time, then one padded spectrum
            c1 = min(c0 + 2, len(f.channels))
            _envelope_spectrum(
                f.band[c0:c1],
                a.win,
                a.swaps,
                a.tw_re,
                a.tw_im,
                a.scale,
                a.re,
                a.im,
                self._env,
                self._mean[c0:c1],
                self._psd_native[: c1 - c0],
            )
            self._envs[c0:c1] = self._env[: c1 - c0]
        _power_spectrum(
            self._envs, self._mean, t.win, t.swaps, t.tw_re, t.tw_im, t.scale, t.re, t.im, self._psd
        )
        df, gap = self.df, self.gap_hz
        scale: float | None = None
        hz = self.nominal_hz
        for _ in range(2):  # coarse, then fine around the coarse best
            lo, hi, steps = slip_search_passes(scale)
            hz = _speed_search(
                self._psd,
                df,
                self.nominal_hz,
                self.mults,
                3,
                LINE_TOL,
                gap,
                BG_FRAC,
                2 * df,
                lo,
                hi,
                steps,
                self._scratch,
                self._search,
            )
            scale = hz / self.nominal_hz
        self.speed_hz = hz
        _family_lines(
            self._psd,
            df,
            self.speed_hz,
            self.mults,
            1,
            LINE_TOL_READ,
            gap,
            BG_FRAC,
            2 * df,
            self._scratch,
            self._lines,
        )
        _dominance(self._lines, 3, TAU_DB, self._dom)
        k = 0
        for c in range(len(f.channels)):
            out[k : k + 4] = self._dom[c]
            out[k + 4] = math.log10(max(f.stats[c, 1], 1e-300))  # the AC RMS: std
            k += len(LINES)


class Gravity(FeatureSet):
    """``gravity``: motion features that do not depend on how the device is held or mounted.

    Needs the fusion's linear acceleration (``lax lay laz``, see :mod:`pipelines.fusion`): the
    gravity it removed, ``acc - lin``, gives the up direction at every sample, so the linear
    acceleration splits into a vertical part and a horizontal magnitude
    (:func:`~pipelines.carryover._gravity_aligned`); likewise the rotation rate when ``gx gy gz``
    are there. Outputs ``grav.<name>`` for :data:`~pipelines.carryover.GRAVITY_ALIGNED` (and
    ``..._GYRO``): mean and std of the acceleration magnitude, the vertical and the horizontal
    part. Per-axis features change when a phone turns in a pocket; these do not."""

    key = "gravity"

    def __init__(self, f: Frame, spec: Spec, speed: ShaftSpeed | None = None) -> None:
        index = {c: i for i, c in enumerate(f.visible)}
        need = ("ax", "ay", "az", "lax", "lay", "laz")
        missing = [c for c in need if c not in index]
        if missing:
            raise ValueError(
                "feature set 'gravity' needs ax, ay, az and the fusion's linear acceleration "
                f"(a [fusion] table with outputs lax, lay, laz); missing {', '.join(missing)}"
            )
        self._acc = [index[c] for c in ("ax", "ay", "az")]
        self._lin = [index[c] for c in ("lax", "lay", "laz")]
        has_gyro = all(c in index for c in ("gx", "gy", "gz"))
        self._gyro = [index[c] for c in ("gx", "gy", "gz")] if has_gyro else []
        self._a = np.zeros((3, f.window))
        self._l = np.zeros((3, f.window))
        self._g = np.zeros((3 if has_gyro else 0, f.window))
        self._work = np.zeros((3, f.window))
        names = GRAVITY_ALIGNED + (GRAVITY_ALIGNED_GYRO if has_gyro else ())
        self._out = np.zeros(len(names))
        self.names = tuple(f"grav.{n}" for n in names)

    def fill(self, f: Frame, out: np.ndarray) -> None:
        self._a[:] = f.vis[self._acc]
        self._l[:] = f.vis[self._lin]
        if self._gyro:
            self._g[:] = f.vis[self._gyro]
        _gravity_aligned(self._a, self._l, self._g, self._work, self._out)
        out[:] = self._out


FEATURE_SETS: dict[str, type[FeatureSet]] = {
    cls.key: cls for cls in (Stats, Bands, Spectrum, Motion, Velocity, Shaft, Envelope, Lines, Gravity)
}
"""Every feature set a task may name, in output order (the order is part of the feature layout)."""
