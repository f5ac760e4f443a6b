"""DSP features per window, computed by numba kernels.

Kernels are underscore-named ``@njit`` functions: arrays in, arrays out, no I/O, no
allocation. :class:`FeatureExtractor` is the validating wrapper: it checks the spec once,
precomputes the window function, FFT tables and band bins, owns the work buffers, and maps
the output vector to stable feature names (``"<channel>.<feature>"``).

Spectral features use a Hann window on the mean-removed signal, zero-padded to the next power
of two. Band values are the mean-square signal power in each band (the integral of the
one-sided PSD), so the bands of a channel add up to its variance; optionally log10-scaled.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from numba import njit

JIT = {"cache": os.environ.get("EDGED_NUMBA_CACHE", "1") != "0", "nogil": True, "fastmath": False}

STATS = ("mean", "std", "rms", "min", "max", "ptp", "skew", "kurt", "crest", "zcr")
FEATURE_SETS = ("stats", "bands")
_LOG_FLOOR = 1e-12


@njit(**JIT)
def _time_stats(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Per-row time-domain statistics of ``x`` (C, N) into ``out`` (C, 10), in ``STATS`` order.

    Skewness and kurtosis are the biased moment ratios (scipy.stats defaults; kurtosis is the
    excess, 0 for a normal distribution), 0 for a constant row. Crest factor is peak/RMS, the
    zero-crossing rate counts sign changes of the mean-removed signal per sample.
    """
    n_ch, n = x.shape
    for c in range(n_ch):
        s = 0.0
        sq = 0.0
        lo = x[c, 0]
        hi = x[c, 0]
        for i in range(n):
            v = x[c, i]
            s += v
            sq += v * v
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        mean = s / n
        m2 = 0.0
        m3 = 0.0
        m4 = 0.0
        crossings = 0
        prev = 0.0
        for i in range(n):
            d = x[c, i] - mean
            d2 = d * d
            m2 += d2
            m3 += d2 * d
            m4 += d2 * d2
            if d != 0.0:
                if prev != 0.0 and (d > 0.0) != (prev > 0.0):
                    crossings += 1
                prev = d
        var = m2 / n
        rms = math.sqrt(sq / n)
        out[c, 0] = mean
        out[c, 1] = math.sqrt(var)
        out[c, 2] = rms
        out[c, 3] = lo
        out[c, 4] = hi
        out[c, 5] = hi - lo
        # A spread below float64 resolution of the level is a constant signal.
        if var > 1e-24 * (mean * mean + 1e-300) and var > 0.0:
            out[c, 6] = (m3 / n) / (var * math.sqrt(var))
            out[c, 7] = (m4 / n) / (var * var) - 3.0
        else:
            out[c, 6] = 0.0
            out[c, 7] = 0.0
        peak = max(abs(lo), abs(hi))
        out[c, 8] = peak / rms if rms > 0.0 else 0.0
        out[c, 9] = crossings / (n - 1) if n > 1 else 0.0


@njit(**JIT)
def _fft_inplace(re: np.ndarray, im: np.ndarray, bitrev: np.ndarray, cos_t: np.ndarray,
                 sin_t: np.ndarray) -> None:  # pragma: no cover - compiled
    """Iterative radix-2 complex FFT of ``re + i*im`` in place (length a power of two)."""
    n = re.shape[0]
    for i in range(n):
        j = bitrev[i]
        if j > i:
            re[i], re[j] = re[j], re[i]
            im[i], im[j] = im[j], im[i]
    size = 2
    while size <= n:
        half = size // 2
        step = n // size
        for start in range(0, n, size):
            for k in range(half):
                wr = cos_t[k * step]
                wi = -sin_t[k * step]
                a = start + k
                b = a + half
                tr = wr * re[b] - wi * im[b]
                ti = wr * im[b] + wi * re[b]
                re[b] = re[a] - tr
                im[b] = im[a] - ti
                re[a] += tr
                im[a] += ti
        size *= 2


@njit(**JIT)
def _band_power(x: np.ndarray, means: np.ndarray, win: np.ndarray, bitrev: np.ndarray,
                cos_t: np.ndarray, sin_t: np.ndarray, band_lo: np.ndarray, band_hi: np.ndarray,
                scale: float, log: bool, re: np.ndarray, im: np.ndarray,
                out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Band powers of each row of ``x`` (C, N) into ``out`` (C, B).

    Two real rows share one complex FFT (row a as the real part, row b as the imaginary part)
    and are separated by conjugate symmetry. ``band_lo``/``band_hi`` are bin index ranges
    ``[lo, hi)`` of the one-sided spectrum; ``scale`` is 1 / (P * sum(win**2)).
    """
    n_ch, n = x.shape
    p = re.shape[0]
    n_bands = band_lo.shape[0]
    for c0 in range(0, n_ch, 2):
        c1 = c0 + 1 if c0 + 1 < n_ch else -1
        for i in range(n):
            re[i] = (x[c0, i] - means[c0]) * win[i]
            im[i] = (x[c1, i] - means[c1]) * win[i] if c1 >= 0 else 0.0
        for i in range(n, p):
            re[i] = 0.0
            im[i] = 0.0
        _fft_inplace(re, im, bitrev, cos_t, sin_t)
        for b in range(n_bands):
            acc0 = 0.0
            acc1 = 0.0
            for k in range(band_lo[b], band_hi[b]):
                kk = (p - k) % p
                # X0 = (Z_k + conj(Z_{p-k})) / 2 ; X1 = (Z_k - conj(Z_{p-k})) / 2i
                r0 = 0.5 * (re[k] + re[kk])
                i0 = 0.5 * (im[k] - im[kk])
                r1 = 0.5 * (im[k] + im[kk])
                i1 = -0.5 * (re[k] - re[kk])
                w = 1.0 if (k == 0 or 2 * k == p) else 2.0
                acc0 += w * (r0 * r0 + i0 * i0)
                acc1 += w * (r1 * r1 + i1 * i1)
            acc0 *= scale
            acc1 *= scale
            if log:
                acc0 = math.log10(acc0 + 1e-12)
                acc1 = math.log10(acc1 + 1e-12)
            out[c0, b] = acc0
            if c1 >= 0:
                out[c1, b] = acc1


def _bitrev(p: int) -> np.ndarray:
    bits = p.bit_length() - 1
    idx = np.arange(p)
    rev = np.zeros(p, dtype=np.int64)
    for b in range(bits):
        rev |= ((idx >> b) & 1) << (bits - 1 - b)
    return rev


class FeatureExtractor:
    """Validated feature spec for one task's window; ``compute`` fills one feature vector.

    Examples
    --------
    >>> fx = FeatureExtractor(("ax",), rate_hz=100.0, window=128, bands_hz=(1.0, 10.0, 50.0))
    >>> t = np.arange(128) / 100.0
    >>> v = fx.compute(np.sin(2 * np.pi * 5.0 * t)[None, :])
    >>> names = dict(zip(fx.names, v))
    >>> round(float(names["ax.rms"]), 2), bool(names["ax.band_1_10"] > names["ax.band_10_50"])
    (0.71, True)
    """

    def __init__(self, channels: Sequence[str], rate_hz: float, window: int,
                 features: Sequence[str] = FEATURE_SETS, bands_hz: Sequence[float] = (),
                 log_bands: bool = True) -> None:
        if not channels:
            raise ValueError("a window needs at least one channel")
        if window < 4:
            raise ValueError(f"window must be at least 4 samples, got {window}")
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        unknown = [f for f in features if f not in FEATURE_SETS]
        if unknown:
            raise ValueError(f"unknown feature set(s) {unknown}; known: {list(FEATURE_SETS)}")
        self.channels = tuple(channels)
        self.rate_hz = float(rate_hz)
        self.window = int(window)
        self.use_stats = "stats" in features
        self.use_bands = "bands" in features and len(bands_hz) >= 2
        if "bands" in features and len(bands_hz) < 2:
            raise ValueError("feature set 'bands' needs at least two band edges in bands_hz")
        n_ch = len(self.channels)
        self._stats = np.zeros((n_ch, len(STATS)))
        names: list[str] = []
        if self.use_stats:
            names += [f"{c}.{s}" for c in self.channels for s in STATS]
        if self.use_bands:
            edges = [float(e) for e in bands_hz]
            nyq = self.rate_hz / 2
            if any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or edges[0] < 0:
                raise ValueError(f"bands_hz must be increasing and >= 0, got {edges}")
            if edges[-1] > nyq:
                raise ValueError(f"bands_hz top edge {edges[-1]} Hz is above Nyquist ({nyq:g} Hz)")
            p = 1 << (self.window - 1).bit_length()
            self._p = p
            self._win = np.hanning(self.window + 2)[1:-1].copy()  # Hann without zero end points
            self._bitrev = _bitrev(p)
            self._cos = np.cos(2 * np.pi * np.arange(p // 2) / p)
            self._sin = np.sin(2 * np.pi * np.arange(p // 2) / p)
            df = self.rate_hz / p
            lo = np.array([math.ceil(a / df - 1e-9) for a in edges[:-1]], dtype=np.int64)
            hi = np.array([math.ceil(b / df - 1e-9) for b in edges[1:]], dtype=np.int64)
            hi[-1] = min(int(hi[-1]) + (1 if edges[-1] >= nyq else 0), p // 2 + 1)
            empty = [f"{a:g}-{b:g} Hz" for a, b, lo_, hi_ in zip(edges, edges[1:], lo, hi, strict=False) if hi_ <= lo_]
            if empty:
                raise ValueError(f"band(s) {empty} contain no FFT bin at {self.rate_hz:g} Hz / {p} points "
                                 f"(bin width {df:.3g} Hz): widen them or lengthen the window")
            self._band_lo, self._band_hi = lo, hi
            self._scale = 1.0 / (p * float(np.sum(self._win**2)))
            self._log = bool(log_bands)
            self._re = np.zeros(p)
            self._im = np.zeros(p)
            self._bands = np.zeros((n_ch, len(edges) - 1))
            self._means = np.zeros(n_ch)
            names += [f"{c}.band_{a:g}_{b:g}" for c in self.channels for a, b in zip(edges, edges[1:], strict=False)]
        if not names:
            raise ValueError("no features selected")
        self.names: tuple[str, ...] = tuple(names)
        self._out = np.zeros(len(names))

    def compute(self, win: np.ndarray) -> np.ndarray:
        """Features of one window ``win`` (channels x samples, float64); returns an internal buffer."""
        if win.shape != (len(self.channels), self.window):
            raise ValueError(f"window shape {win.shape} != {(len(self.channels), self.window)}")
        _time_stats(win, self._stats)
        k = 0
        if self.use_stats:
            n = self._stats.size
            self._out[k:k + n] = self._stats.ravel()
            k += n
        if self.use_bands:
            np.copyto(self._means, self._stats[:, 0])
            _band_power(win, self._means, self._win, self._bitrev, self._cos, self._sin,
                        self._band_lo, self._band_hi, self._scale, self._log, self._re, self._im, self._bands)
            n = self._bands.size
            self._out[k:k + n] = self._bands.ravel()
        return self._out
