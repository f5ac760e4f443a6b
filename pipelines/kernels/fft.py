"""The FFT the spectral kernels share, and its tables.

An iterative radix-2 decimation-in-time FFT (Cooley & Tukey 1965), with two stages fused per
pass (radix-2^2); two real rows share one complex transform and are separated by conjugate
symmetry (Press et al., *Numerical Recipes*, "FFT of real functions").
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipelines.jit import JIT


@njit(**JIT)
def _fft_inplace(
    re: np.ndarray, im: np.ndarray, swaps: np.ndarray, tw_re: np.ndarray, tw_im: np.ndarray
) -> None:
    """Iterative radix-2 decimation-in-time complex FFT of ``re + i*im`` in place (length a
    power of two), two stages per pass over the data (radix-2^2 butterflies).

    ``tw_re/tw_im`` hold the twiddles of every stage back to back: for a stage of half size
    ``h`` they are ``W_2h^k = exp(-2 pi i k / 2h)``, k < h, at offset ``h - 1``. Stages ``h`` and
    ``2h`` together take four points ``k, k+h, k+2h, k+3h`` of a block of ``4h``: the pairs
    ``(k, k+h)`` and ``(k+2h, k+3h)`` with ``W_2h^k``, then ``(k, k+2h)`` with ``W_4h^k`` and
    ``(k+h, k+3h)`` with ``W_4h^(k+h) = -i W_4h^k``.

    Parameters
    ----------
    re, im
        (P,) float64 real and imaginary parts, P a power of two; transformed in place.
    swaps
        (S, 2) int64 index pairs of the bit-reversal permutation (:func:`fft_tables`).
    tw_re, tw_im
        (P - 1,) float64 twiddles of every stage (:func:`fft_tables`).
    """
    n = re.shape[0]
    for s in range(swaps.shape[0]):  # the bit-reversal permutation as a list of swaps
        i = swaps[s, 0]
        j = swaps[s, 1]
        re[i], re[j] = re[j], re[i]
        im[i], im[j] = im[j], im[i]
    stages = 0
    while (1 << stages) < n:
        stages += 1
    h = 1
    if stages % 2 == 1:  # an odd number of stages: one plain stage of half size 1
        for a in range(0, n - 1, 2):
            b = a + 1
            tr = re[b]
            ti = im[b]
            re[b] = re[a] - tr
            im[b] = im[a] - ti
            re[a] += tr
            im[a] += ti
        h = 2
    elif n >= 4:  # stages 1 and 2 together: twiddles 1 and -i, no multiplication
        for i0 in range(0, n, 4):
            a0r = re[i0] + re[i0 + 1]
            a0i = im[i0] + im[i0 + 1]
            a1r = re[i0] - re[i0 + 1]
            a1i = im[i0] - im[i0 + 1]
            a2r = re[i0 + 2] + re[i0 + 3]
            a2i = im[i0 + 2] + im[i0 + 3]
            a3r = re[i0 + 2] - re[i0 + 3]
            a3i = im[i0 + 2] - im[i0 + 3]
            re[i0] = a0r + a2r
            im[i0] = a0i + a2i
            re[i0 + 2] = a0r - a2r
            im[i0 + 2] = a0i - a2i
            re[i0 + 1] = a1r + a3i  # a1 + (-i) a3
            im[i0 + 1] = a1i - a3r
            re[i0 + 3] = a1r - a3i
            im[i0 + 3] = a1i + a3r
        h = 4
    while h < n:
        o1 = h - 1
        o2 = 2 * h - 1
        for start in range(0, n, 4 * h):
            for k in range(h):
                w1r = tw_re[o1 + k]
                w1i = tw_im[o1 + k]
                w2r = tw_re[o2 + k]
                w2i = tw_im[o2 + k]
                i0 = start + k
                i1 = i0 + h
                i2 = i1 + h
                i3 = i2 + h
                tr = w1r * re[i1] - w1i * im[i1]
                ti = w1r * im[i1] + w1i * re[i1]
                a0r = re[i0] + tr
                a0i = im[i0] + ti
                a1r = re[i0] - tr
                a1i = im[i0] - ti
                tr = w1r * re[i3] - w1i * im[i3]
                ti = w1r * im[i3] + w1i * re[i3]
                a2r = re[i2] + tr
                a2i = im[i2] + ti
                a3r = re[i2] - tr
                a3i = im[i2] - ti
                tr = w2r * a2r - w2i * a2i
                ti = w2r * a2i + w2i * a2r
                re[i0] = a0r + tr
                im[i0] = a0i + ti
                re[i2] = a0r - tr
                im[i2] = a0i - ti
                # -i * (w2 * a3)
                tr = w2r * a3i + w2i * a3r
                ti = -(w2r * a3r - w2i * a3i)
                re[i1] = a1r + tr
                im[i1] = a1i + ti
                re[i3] = a1r - tr
                im[i3] = a1i - ti
        h *= 4


@njit(**JIT)
def _padded_power(
    re: np.ndarray,
    im: np.ndarray,
    n: int,
    swaps: np.ndarray,
    tw_re: np.ndarray,
    tw_im: np.ndarray,
    scale: float,
    psd: np.ndarray,
    c0: int,
    c1: int,
) -> None:
    """Zero-pad the loaded ``re + i im`` (first ``n`` samples) to the FFT length, transform, and
    split the two rows' one-sided power into rows ``c0`` and ``c1`` of ``psd``.

    Parameters
    ----------
    re, im
        (P,) float64 work space holding two loaded rows in their first ``n`` entries.
    n
        number of loaded samples.
    swaps, tw_re, tw_im
        FFT tables (:func:`fft_tables`).
    scale
        power scale, 1 / (P sum(win^2)).
    psd
        (C, P/2 + 1) float64; rows ``c0`` and ``c1`` written.
    c0, c1
        the rows of ``psd`` for the real and the imaginary part (-1: none).
    """
    for i in range(n, re.shape[0]):
        re[i] = 0.0
        im[i] = 0.0
    _fft_inplace(re, im, swaps, tw_re, tw_im)
    _split_power(re, im, scale, psd, c0, c1)


@njit(**JIT)
def _split_power(re: np.ndarray, im: np.ndarray, scale: float, psd: np.ndarray, c0: int, c1: int) -> None:
    """One-sided power spectra of two real signals packed as ``a + i b`` and transformed
    (``re + i im``), into rows ``c0`` and ``c1`` (-1: none) of ``psd``; separated by conjugate
    symmetry: ``A_k = (Z_k + conj(Z_{p-k})) / 2``, ``B_k = (Z_k - conj(Z_{p-k})) / 2i``.

    Parameters
    ----------
    re, im
        (P,) float64, the transform of ``a + i b``.
    scale
        power scale.
    psd
        (C, P/2 + 1) float64; rows ``c0`` and ``c1`` written.
    c0, c1
        the rows of ``psd`` for ``a`` and ``b`` (-1: none).
    """
    p = re.shape[0]
    for k in range(p // 2 + 1):
        kk = (p - k) % p
        r0 = 0.5 * (re[k] + re[kk])
        i0 = 0.5 * (im[k] - im[kk])
        w = scale if (k == 0 or 2 * k == p) else 2.0 * scale
        psd[c0, k] = w * (r0 * r0 + i0 * i0)
        if c1 >= 0:
            r1 = 0.5 * (im[k] + im[kk])
            i1 = -0.5 * (re[k] - re[kk])
            psd[c1, k] = w * (r1 * r1 + i1 * i1)


def fft_tables(p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bit-reversal swaps (pairs ``i < j``) and per-stage twiddles for :func:`_fft_inplace` of length ``p``."""
    bits = p.bit_length() - 1
    idx = np.arange(p)
    rev = np.zeros(p, dtype=np.int64)
    for b in range(bits):
        rev |= ((idx >> b) & 1) << (bits - 1 - b)
    swaps = np.ascontiguousarray(np.stack([idx, rev], axis=1)[idx < rev])
    tw = np.ones(max(p - 1, 1), dtype=np.complex128)
    h = 1
    while h < p:
        tw[h - 1 : 2 * h - 1] = np.exp(-2j * np.pi * np.arange(h) / (2 * h))
        h *= 2
    return swaps, np.ascontiguousarray(tw.real), np.ascontiguousarray(tw.imag)


def hann(n: int) -> np.ndarray:
    """Hann window of ``n`` points without the zero end points (every sample counts)."""
    return np.hanning(n + 2)[1:-1].copy()
