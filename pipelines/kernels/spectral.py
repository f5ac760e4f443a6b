"""Spectral kernels: the windowed power spectrum of each row and what is read off it (band
powers, spectral shape, velocity RMS, power at spectral lines, the strongest line).

Scaling: the one-sided power of a row adds up to its window-weighted mean square (Parseval;
Heinzel, Ruediger & Schilling 2002, "Spectrum and spectral density estimation by the Discrete
Fourier transform (DFT)"), so a band value is the power in that band.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipelines.jit import JIT
from pipelines.kernels import CONSTANT, LOG_FLOOR
from pipelines.kernels.fft import _padded_power


@njit(**JIT)
def _power_spectrum(
    x: np.ndarray,
    means: np.ndarray,
    win: np.ndarray,
    swaps: np.ndarray,
    tw_re: np.ndarray,
    tw_im: np.ndarray,
    scale: float,
    re: np.ndarray,
    im: np.ndarray,
    psd: np.ndarray,
) -> None:
    """One-sided power spectrum of each row of ``x`` (C, N) into ``psd`` (C, P/2 + 1).

    Rows are mean-removed (``means``), windowed (``win``) and zero-padded to ``P`` =
    ``len(re)``; ``scale`` = 1 / (P * sum(win**2)), so the bins of a row add up to its
    (window-weighted) mean square. Two real rows share one complex FFT (row a as the real
    part, row b as the imaginary part).

    Parameters
    ----------
    x
        (C, N) float64 rows.
    means
        (C,) row means.
    win
        (N,) window function.
    swaps, tw_re, tw_im
        FFT tables (:func:`~pipelines.kernels.fft.fft_tables`).
    scale
        1 / (P sum(win^2)).
    re, im
        (P,) float64 work space.
    psd
        (C, P/2 + 1) float64, written.
    """
    n_ch, n = x.shape
    for c0 in range(0, n_ch, 2):
        c1 = c0 + 1 if c0 + 1 < n_ch else -1
        m0 = means[c0]
        if c1 >= 0:
            m1 = means[c1]
            for i in range(n):
                re[i] = (x[c0, i] - m0) * win[i]
                im[i] = (x[c1, i] - m1) * win[i]
        else:
            for i in range(n):
                re[i] = (x[c0, i] - m0) * win[i]
                im[i] = 0.0
        _padded_power(re, im, n, swaps, tw_re, tw_im, scale, psd, c0, c1)


@njit(**JIT)
def _band_sums(psd: np.ndarray, band_lo: np.ndarray, band_hi: np.ndarray, log: bool, out: np.ndarray) -> None:
    """Power of each row of ``psd`` in bin ranges ``[band_lo[b], band_hi[b])`` into ``out`` (C, B).

    Parameters
    ----------
    psd
        (C, K) one-sided power.
    band_lo, band_hi
        (B,) int64 first and one-past-last bin of each band.
    log
        write log10(power + 1e-12) instead of the power.
    out
        (C, B) float64, written.
    """
    for c in range(psd.shape[0]):
        for b in range(band_lo.shape[0]):
            acc = 0.0
            for k in range(band_lo[b], band_hi[b]):
                acc += psd[c, k]
            out[c, b] = math.log10(acc + LOG_FLOOR) if log else acc


@njit(**JIT)
def _spectral_shape(psd: np.ndarray, means: np.ndarray, df: float, amp_scale: float, out: np.ndarray) -> None:
    """Dominant frequency, its amplitude, spectral centroid and normalised spectral entropy of
    each row of ``psd`` (bins 1 and up; DC excluded) into ``out`` (C, 4), in ``SPECTRUM`` order.

    The amplitude is that of a sinusoid whose power falls in the dominant bin
    (``amp_scale * sqrt(psd)``); the entropy is Shannon's of the normalised spectrum divided
    by log(number of bins). A row without power (a constant signal) gives zeros.

    Parameters
    ----------
    psd
        (C, K) one-sided power.
    means
        (C,) row means (a row whose AC power is rounding next to its level is constant).
    df
        bin width (Hz).
    amp_scale
        converts the square root of a bin's power to the amplitude of a sinusoid in it.
    out
        (C, 4) float64, written in ``SPECTRUM`` order.
    """
    n_bins = psd.shape[1]
    log_bins = math.log(n_bins - 1)
    for c in range(psd.shape[0]):
        total = 0.0
        moment = 0.0
        best = -1.0
        k_best = 0
        for k in range(1, n_bins):
            v = psd[c, k]
            total += v
            moment += k * v
            if v > best:
                best = v
                k_best = k
        if total <= CONSTANT * means[c] * means[c] or total <= 0.0:
            for j in range(4):
                out[c, j] = 0.0
            continue
        h = 0.0
        for k in range(1, n_bins):
            v = psd[c, k]
            if v > 0.0:
                q = v / total
                h -= q * math.log(q)
        out[c, 0] = k_best * df
        out[c, 1] = amp_scale * math.sqrt(best)
        out[c, 2] = moment / total * df
        out[c, 3] = h / log_bins


@njit(**JIT)
def _velocity_rms(psd: np.ndarray, k_lo: int, k_hi: int, df: float, scale: float, out: np.ndarray) -> None:
    """RMS of the velocity in bins ``[k_lo, k_hi)`` from acceleration power ``psd`` (C, K):
    integration divides each bin by (2 pi f)^2; ``scale`` converts to the output unit.

    Parameters
    ----------
    psd
        (C, K) one-sided acceleration power.
    k_lo, k_hi
        bin range ``[k_lo, k_hi)``, ``k_lo >= 1``.
    df
        bin width (Hz).
    scale
        acceleration unit to m/s^2, times 1000 (mm/s).
    out
        (C,) float64, written.
    """
    w = 2.0 * math.pi * df
    for c in range(psd.shape[0]):
        acc = 0.0
        for k in range(k_lo, k_hi):
            acc += psd[c, k] / ((w * k) * (w * k))
        out[c] = math.sqrt(acc) * scale


@njit(**JIT)
def _line_power(
    psd: np.ndarray,
    df: float,
    centers: np.ndarray,
    harmonics: int,
    rel_tol: float,
    min_half_width: float,
    log: bool,
    out: np.ndarray,
) -> None:
    """Power of each row of ``psd`` (C, K) at spectral lines into ``out`` (C, M): for line m,
    the sum over harmonics h = 1..``harmonics`` of the bins within ``h * centers[m] +- hw``,
    ``hw = max(rel_tol * h * centers[m], min_half_width)`` (Hz); DC and bins past Nyquist are
    left out.

    Parameters
    ----------
    psd
        (C, K) one-sided power.
    df
        bin width (Hz).
    centers
        (M,) line frequencies (Hz).
    harmonics
        harmonics summed per line.
    rel_tol, min_half_width
        half width of a line, relative and at least (Hz).
    log
        write log10(power + 1e-12).
    out
        (C, M) float64, written.
    """
    n_bins = psd.shape[1]
    for c in range(psd.shape[0]):
        for m in range(centers.shape[0]):
            acc = 0.0
            for h in range(1, harmonics + 1):
                f = h * centers[m]
                hw = max(rel_tol * f, min_half_width)
                lo = max(1, math.ceil((f - hw) / df))
                hi = min(n_bins - 1, math.floor((f + hw) / df))
                for k in range(lo, hi + 1):
                    acc += psd[c, k]
            out[c, m] = math.log10(acc + LOG_FLOOR) if log else acc


@njit(**JIT)
def _peak_frequency(psd: np.ndarray, k_lo: int, k_hi: int, df: float) -> float:
    """Frequency of the strongest line of the summed rows of ``psd`` in bins ``[k_lo, k_hi]``,
    refined by a parabola through the log power of the peak bin and its neighbours.

    Parameters
    ----------
    psd
        (C, K) one-sided power.
    k_lo, k_hi
        bin range searched, ``[k_lo, k_hi]``.
    df
        bin width (Hz).

    Returns
    -------
    float
        the frequency (Hz).
    """
    n_bins = psd.shape[1]
    best = -1.0
    k_best = k_lo
    for k in range(k_lo, k_hi + 1):
        v = 0.0
        for c in range(psd.shape[0]):
            v += psd[c, k]
        if v > best:
            best = v
            k_best = k
    if k_best < 1 or k_best >= n_bins - 1 or best <= 0.0:
        return k_best * df
    a = 0.0
    b = 0.0
    for c in range(psd.shape[0]):
        a += psd[c, k_best - 1]
        b += psd[c, k_best + 1]
    if a <= 0.0 or b <= 0.0:
        return k_best * df
    la = math.log(a)
    lb = math.log(best)
    lc = math.log(b)
    den = la - 2.0 * lb + lc
    delta = 0.5 * (la - lc) / den if den < 0.0 else 0.0
    return (k_best + delta) * df
