"""Envelope kernel: the Hilbert envelope of band-passed rows and its power spectrum.

Envelope analysis of rolling-element bearings (Randall & Antoni 2011, "Rolling element bearing
diagnostics - a tutorial", MSSP 25): impacts at a defect frequency excite a resonance; the
envelope of the band-passed signal repeats at the defect frequency.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipelines.jit import JIT
from pipelines.kernels.fft import _fft_inplace, _padded_power


@njit(**JIT)
def _envelope_spectrum(
    xb: np.ndarray,
    win: np.ndarray,
    swaps: np.ndarray,
    tw_re: np.ndarray,
    tw_im: np.ndarray,
    scale: float,
    re: np.ndarray,
    im: np.ndarray,
    env: np.ndarray,
    env_mean: np.ndarray,
    psd: np.ndarray,
) -> None:
    """Envelope of each (band-passed) row of ``xb`` (C, N) and its power spectrum.

    The envelope is the magnitude of the analytic signal ``x + i H{x}``, zero-padded to ``P``
    as ``scipy.signal.hilbert(x, P)``; the Hilbert transform ``H{x}`` has the spectrum
    ``-i sgn(f) X``. Its mean goes to ``env_mean`` (C,), its one-sided power spectrum (mean
    removed, windowed, scaled as in :func:`_power_spectrum`) to ``psd`` (C, P/2 + 1). ``env``
    (2, N) is work space.

    Rows go in pairs, three FFTs per pair: both rows forward as ``a + i b``; both (real)
    Hilbert transforms back as ``H{a} + i H{b}`` (the inverse FFT as the conjugate of the
    forward FFT of the conjugate); both envelope spectra as ``e_a + i e_b``.

    Parameters
    ----------
    xb
        (C, N) float64 band-passed rows.
    win
        (N,) window function.
    swaps, tw_re, tw_im
        FFT tables.
    scale
        1 / (P sum(win^2)).
    re, im
        (P,) float64 work space.
    env
        (2, N) float64 work space.
    env_mean
        (C,) float64, written.
    psd
        (C, P/2 + 1) float64, written.
    """
    n_ch, n = xb.shape
    p = re.shape[0]
    half = p // 2
    for c0 in range(0, n_ch, 2):
        c1 = c0 + 1 if c0 + 1 < n_ch else -1
        for i in range(n):
            re[i] = xb[c0, i]
            im[i] = xb[c1, i] if c1 >= 0 else 0.0
        for i in range(n, p):
            re[i] = 0.0
            im[i] = 0.0
        _fft_inplace(re, im, swaps, tw_re, tw_im)
        for k in range(1, half):
            kk = p - k
            ar = 0.5 * (re[k] + re[kk])  # A_k, the spectrum of row c0
            ai = 0.5 * (im[k] - im[kk])
            br = 0.5 * (im[k] + im[kk])  # B_k, of row c1
            bi = -0.5 * (re[k] - re[kk])
            # W = H{A} + i H{B}: W_k = -i A_k + B_k, W_{p-k} = i conj(A_k) - conj(B_k); stored conjugated
            re[k] = ai + br
            im[k] = ar - bi
            re[kk] = ai - br
            im[kk] = -(ar + bi)
        re[0] = 0.0
        im[0] = 0.0
        re[half] = 0.0
        im[half] = 0.0
        _fft_inplace(re, im, swaps, tw_re, tw_im)
        s0 = 0.0
        s1 = 0.0
        for i in range(n):
            a = xb[c0, i]
            h = re[i] / p
            e = math.sqrt(a * a + h * h)
            env[0, i] = e
            s0 += e
            if c1 >= 0:
                b = xb[c1, i]
                g = im[i] / p
                e = math.sqrt(b * b + g * g)
                env[1, i] = e
                s1 += e
        m0 = s0 / n
        m1 = s1 / n
        env_mean[c0] = m0
        if c1 >= 0:
            env_mean[c1] = m1
        for i in range(n):
            re[i] = (env[0, i] - m0) * win[i]
            im[i] = (env[1, i] - m1) * win[i] if c1 >= 0 else 0.0
        _padded_power(re, im, n, swaps, tw_re, tw_im, scale, psd, c0, c1)
