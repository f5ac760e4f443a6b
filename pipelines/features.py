"""DSP features per window, computed by numba kernels.

The kernels (:mod:`pipelines.kernels`) are underscore-named ``@njit`` functions: arrays in,
arrays out, no I/O, no allocation. Each feature set (:mod:`pipelines.featuresets`) is their
validating wrapper: it checks its part of the spec once, precomputes bin ranges, owns its
buffers, and names its outputs (``"<channel>.<feature>"``). :class:`FeatureExtractor` runs
the sets a task names over one window, into one output vector.

Spectra use a Hann window on the mean-removed signal, zero-padded to the next power of two
``P``. The one-sided power spectrum is scaled so that its bins add up to the mean-square of
the signal (the integral of the PSD): a band value is the power in that band, the bands of a
channel add up to its variance. Feature sets (``features`` in a task's config):

``stats``
    mean, std, RMS, min, max, peak-to-peak, skewness, excess kurtosis, crest factor and
    zero-crossing rate per channel.
``bands``
    power in each band of ``bands_hz`` per channel (log10 when ``log_bands``).
``spectrum``
    dominant frequency (Hz) and its amplitude (of the sinusoid in that bin), spectral
    centroid (Hz) and normalised spectral entropy (0: one line, 1: white) per channel.
``motion``
    per vector triad (``acc`` = ax/ay/az, ``gyro``, ``mag``, ``lin`` = linear acceleration):
    signal magnitude area, mean/std/min/max of the vector norm, and the correlations between
    its axes.
``velocity``
    velocity RMS (mm/s) in the ISO 10816/20816 band, from acceleration integrated in the
    frequency domain (``accel_unit`` says whether acceleration is in m/s^2 or g).
``shaft``
    power at 1x, 2x and 3x the shaft speed per channel (plus ``shaft.hz`` when the speed is
    estimated from the spectrum).
``lines``
    per channel, which bearing defect family dominates the envelope spectrum (softmax shares of
    the defect fundamentals' line-to-background ratios at a searched shaft speed), the
    strongest ratio in dB and log10 RMS: features meant to carry over to other fault sizes,
    loads and bearings (:class:`~pipelines.featuresets.Lines`).
``gravity``
    mean/std of the acceleration magnitude and of the gravity-aligned vertical and horizontal
    linear acceleration (and rotation rate): orientation-invariant IMU motion.
``envelope``
    per channel, from the band-passed signal (a stateful filter upstream, see
    :mod:`pipelines.fusion`): the mean of the envelope (the Hilbert-transform magnitude,
    computed by FFT) and the power of the envelope spectrum at the bearing defect frequencies
    BPFO, BPFI, BSF and FTF (each summed over ``harmonics`` harmonics).

The window rows a :class:`FeatureExtractor` reads are its ``channels``, then the ``derived``
channels (e.g. orientation from :mod:`pipelines.fusion`), then, for ``envelope`` or ``lines``, one
band-passed copy of each channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pipelines.featuresets import (
    DEFECTS,
    ENVELOPE,
    FEATURE_SETS,
    MOTION,
    SHAFT,
    SPECTRUM,
    STATS,
    TRIADS,
    FeatureSet,
    Frame,
    ShaftSpeed,
    Spec,
)
from pipelines.kernels.time import _finite_or_nan
from pipelines.units import ACCEL_UNITS

__all__ = [
    "ACCEL_UNITS",
    "DEFECTS",
    "ENVELOPE",
    "FEATURE_SETS",
    "MOTION",
    "SHAFT",
    "SPECTRUM",
    "STATS",
    "TRIADS",
    "FeatureExtractor",
]


class FeatureExtractor:
    """Validated feature spec for one task's window; ``compute`` fills one feature vector.

    Parameters
    ----------
    channels
        the windowed sensor channels (rows 0..C-1 of a window).
    rate_hz, window
        sample rate and window length in samples.
    features
        feature sets, from ``FEATURE_SETS``.
    bands_hz, log_bands
        band edges for ``bands``; log10 of power-like features (bands, shaft and envelope lines).
    derived
        names of the derived channels that follow the sensor channels in a window (from the
        stream stage, e.g. ``roll``); ``stats``, ``bands``, ``spectrum`` and ``motion`` see them
        like sensor channels.
    accel_unit, velocity_band_hz
        for ``velocity`` (mm/s, in the band, clipped to Nyquist).
    shaft_hz, shaft_range_hz, line_tol
        shaft speed for ``shaft`` and ``envelope``: fixed, or estimated per window as the
        strongest line in ``shaft_range_hz``; ``line_tol`` is the relative half width of a line.
    defects, harmonics
        ``{"bpfo": x, ...}`` defect frequencies as multiples of the shaft speed, and how many
        harmonics of each the ``envelope`` energies sum.

    Examples
    --------
    >>> fx = FeatureExtractor(("ax",), rate_hz=100.0, window=128, bands_hz=(1.0, 10.0, 50.0))
    >>> t = np.arange(128) / 100.0
    >>> v = fx.compute(np.sin(2 * np.pi * 5.0 * t)[None, :])
    >>> names = dict(zip(fx.names, v))
    >>> round(float(names["ax.rms"]), 2), bool(names["ax.band_1_10"] > names["ax.band_10_50"])
    (0.71, True)
    """

    def __init__(
        self,
        channels: Sequence[str],
        rate_hz: float,
        window: int,
        features: Sequence[str] = ("stats", "bands"),
        bands_hz: Sequence[float] = (),
        log_bands: bool = True,
        derived: Sequence[str] = (),
        accel_unit: str = "m/s2",
        velocity_band_hz: Sequence[float] = (10.0, 1000.0),
        shaft_hz: float | None = None,
        shaft_range_hz: Sequence[float] | None = None,
        line_tol: float = 0.02,
        defects: Mapping[str, float] | None = None,
        harmonics: int = 3,
    ) -> None:
        if not channels:
            raise ValueError("a window needs at least one channel")
        if window < 4:
            raise ValueError(f"window must be at least 4 samples, got {window}")
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        unknown = [f for f in features if f not in FEATURE_SETS]
        if unknown:
            raise ValueError(f"unknown feature set(s) {unknown}; known: {list(FEATURE_SETS)}")
        clash = sorted(set(channels) & set(derived))
        if clash or len(set(derived)) != len(derived):
            raise ValueError(f"derived channel names must be new and distinct, got {list(derived)}")
        if accel_unit not in ACCEL_UNITS:
            raise ValueError(f"accel_unit must be one of {list(ACCEL_UNITS)}, got {accel_unit!r}")
        spec = Spec(
            tuple(channels),
            tuple(derived),
            float(rate_hz),
            int(window),
            bands_hz,
            bool(log_bands),
            accel_unit,
            velocity_band_hz,
            shaft_hz,
            shaft_range_hz,
            line_tol,
            defects,
            harmonics,
        )
        self.channels = spec.channels
        self.derived = spec.derived
        self.visible = self.channels + self.derived
        self.rate_hz = spec.rate_hz
        self.window = spec.window
        self.features = tuple(f for f in FEATURE_SETS if f in features)
        band = "envelope" in self.features or "lines" in self.features  # band-passed copies
        self.rows = len(self.visible) + (len(self.channels) if band else 0)
        self._frame = frame = Frame(spec, self.rows)
        self._speed: ShaftSpeed | None = None
        sets: list[FeatureSet] = []
        for name in self.features:
            if name in ("shaft", "envelope") and self._speed is None:
                self._speed = ShaftSpeed(frame, spec)
            if name == "envelope" and self._speed is not None:  # always set just above
                sets.append(self._speed)
            sets.append(FEATURE_SETS[name](frame, spec, self._speed))
        if self._speed is not None and "envelope" not in self.features:
            sets.append(self._speed)  # ``shaft.hz`` goes after ``shaft`` and before ``envelope``
        self.sets = tuple(s for s in sets if s.names)  # ShaftSpeed has no output at a fixed speed
        self._psd = any(s.needs_psd for s in self.sets)
        if self._psd:
            frame.fft()
        names = [n for s in self.sets for n in s.names]
        if not names:
            raise ValueError("no features selected")
        self.names: tuple[str, ...] = tuple(names)
        self._out = np.zeros(len(names))
        self._slots: list[tuple[FeatureSet, np.ndarray]] = []
        k = 0
        for s in self.sets:  # each set fills its own slice of the output vector
            self._slots.append((s, self._out[k : k + len(s.names)]))
            k += len(s.names)

    def feature_set(self, key: str) -> FeatureSet:
        """The set named ``key`` (``"bands"``, ..., ``"shaft_speed"``); ``KeyError`` if not used."""
        for s in self.sets:
            if s.key == key:
                return s
        raise KeyError(key)

    def compute(self, win: np.ndarray) -> np.ndarray:
        """Features of one window ``win`` (``rows`` x ``window``, float64); returns an internal buffer."""
        if win.shape != (self.rows, self.window):
            raise ValueError(f"window shape {win.shape} != {(self.rows, self.window)}")
        f = self._frame
        f.load(win)
        if self._psd:
            f.power_spectrum()
        if self._speed is not None:
            self._speed.update(f)
        for s, out in self._slots:
            s.fill(f, out)
        _finite_or_nan(self._out)
        return self._out
