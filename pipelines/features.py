"""DSP features per window, computed by numba kernels.

Kernels are underscore-named ``@njit`` functions: arrays in, arrays out, no I/O, no
allocation. :class:`FeatureExtractor` is the validating wrapper: it checks the spec once,
precomputes the window function, FFT tables and bin ranges, owns the work buffers, and maps
the output vector to stable feature names (``"<channel>.<feature>"``).

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
``envelope``
    per channel, from the band-passed signal (a stateful filter upstream, see
    :mod:`pipelines.fusion`): the mean of the envelope (the Hilbert-transform magnitude,
    computed by FFT) and the power of the envelope spectrum at the bearing defect frequencies
    BPFO, BPFI, BSF and FTF (each summed over ``harmonics`` harmonics).

The window rows a :class:`FeatureExtractor` reads are its ``channels``, then the ``derived``
channels (e.g. orientation from :mod:`pipelines.fusion`), then, for ``envelope``, one
band-passed copy of each channel.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from numba import njit

from pipelines.jit import JIT
from pipelines.units import STANDARD_GRAVITY

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
FEATURE_SETS = ("stats", "bands", "spectrum", "motion", "velocity", "shaft", "envelope")
ACCEL_UNITS = {"m/s2": 1.0, "g": STANDARD_GRAVITY}  # to m/s^2
_LOG_FLOOR = 1e-12
_CONSTANT = 1e-24  # a spread below this fraction of the squared level is rounding: a constant signal


# -- time domain ---------------------------------------------------------------------------------------
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
        mean = s / n if hi != lo else lo  # exact for a constant row (s / n may round)
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
        if var > _CONSTANT * (mean * mean + 1e-300) and var > 0.0:
            out[c, 6] = (m3 / n) / (var * math.sqrt(var))
            out[c, 7] = (m4 / n) / (var * var) - 3.0
        else:
            out[c, 6] = 0.0
            out[c, 7] = 0.0
        peak = max(abs(lo), abs(hi))
        out[c, 8] = peak / rms if rms > 0.0 else 0.0
        out[c, 9] = crossings / (n - 1) if n > 1 else 0.0


@njit(**JIT)
def _motion(x: np.ndarray, triads: np.ndarray, norm: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """Vector features of row triads of ``x`` (R, N) into ``out`` (T, 8), in ``MOTION`` order.

    ``triads`` (T, 3) holds the row indices of each vector's axes; ``norm`` (N,) is work space.
    Signal magnitude area is mean(|x| + |y| + |z|); correlations are Pearson's r (0 when an
    axis is constant).
    """
    n = x.shape[1]
    for t in range(triads.shape[0]):
        ix, iy, iz = triads[t, 0], triads[t, 1], triads[t, 2]
        sx = 0.0
        sy = 0.0
        sz = 0.0
        sabs = 0.0
        nsum = 0.0
        nlo = math.inf
        nhi = -math.inf
        for i in range(n):
            a = x[ix, i]
            b = x[iy, i]
            c = x[iz, i]
            sx += a
            sy += b
            sz += c
            sabs += abs(a) + abs(b) + abs(c)
            v = math.sqrt(a * a + b * b + c * c)
            norm[i] = v
            nsum += v
            nlo = min(nlo, v)
            nhi = max(nhi, v)
        mx = sx / n
        my = sy / n
        mz = sz / n
        nmean = nsum / n
        cxx = 0.0
        cyy = 0.0
        czz = 0.0
        cxy = 0.0
        cxz = 0.0
        cyz = 0.0
        nvar = 0.0
        for i in range(n):
            dx = x[ix, i] - mx
            dy = x[iy, i] - my
            dz = x[iz, i] - mz
            cxx += dx * dx
            cyy += dy * dy
            czz += dz * dz
            cxy += dx * dy
            cxz += dx * dz
            cyz += dy * dz
            dn = norm[i] - nmean
            nvar += dn * dn
        vx = cxx > _CONSTANT * n * (mx * mx + 1e-300) and cxx > 0.0
        vy = cyy > _CONSTANT * n * (my * my + 1e-300) and cyy > 0.0
        vz = czz > _CONSTANT * n * (mz * mz + 1e-300) and czz > 0.0
        out[t, 0] = sabs / n
        out[t, 1] = nmean
        out[t, 2] = math.sqrt(nvar / n)
        out[t, 3] = nlo
        out[t, 4] = nhi
        out[t, 5] = cxy / math.sqrt(cxx * cyy) if vx and vy else 0.0
        out[t, 6] = cxz / math.sqrt(cxx * czz) if vx and vz else 0.0
        out[t, 7] = cyz / math.sqrt(cyy * czz) if vy and vz else 0.0


# -- FFT and spectra -----------------------------------------------------------------------------------
@njit(**JIT)
def _fft_inplace(
    re: np.ndarray, im: np.ndarray, swaps: np.ndarray, tw_re: np.ndarray, tw_im: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Iterative radix-2 decimation-in-time complex FFT of ``re + i*im`` in place (length a
    power of two), two stages per pass over the data (radix-2^2 butterflies).

    ``tw_re/tw_im`` hold the twiddles of every stage back to back: for a stage of half size
    ``h`` they are ``W_2h^k = exp(-2 pi i k / 2h)``, k < h, at offset ``h - 1``. Stages ``h`` and
    ``2h`` together take four points ``k, k+h, k+2h, k+3h`` of a block of ``4h``: the pairs
    ``(k, k+h)`` and ``(k+2h, k+3h)`` with ``W_2h^k``, then ``(k, k+2h)`` with ``W_4h^k`` and
    ``(k+h, k+3h)`` with ``W_4h^(k+h) = -i W_4h^k``.
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
) -> None:  # pragma: no cover - compiled
    """Zero-pad the loaded ``re + i im`` (first ``n`` samples) to the FFT length, transform, and
    split the two rows' one-sided power into rows ``c0`` and ``c1`` of ``psd``."""
    for i in range(n, re.shape[0]):
        re[i] = 0.0
        im[i] = 0.0
    _fft_inplace(re, im, swaps, tw_re, tw_im)
    _split_power(re, im, scale, psd, c0, c1)


@njit(**JIT)
def _split_power(
    re: np.ndarray, im: np.ndarray, scale: float, psd: np.ndarray, c0: int, c1: int
) -> None:  # pragma: no cover - compiled
    """One-sided power spectra of two real signals packed as ``a + i b`` and transformed
    (``re + i im``), into rows ``c0`` and ``c1`` (-1: none) of ``psd``; separated by conjugate
    symmetry: ``A_k = (Z_k + conj(Z_{p-k})) / 2``, ``B_k = (Z_k - conj(Z_{p-k})) / 2i``."""
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
) -> None:  # pragma: no cover - compiled
    """One-sided power spectrum of each row of ``x`` (C, N) into ``psd`` (C, P/2 + 1).

    Rows are mean-removed (``means``), windowed (``win``) and zero-padded to ``P`` =
    ``len(re)``; ``scale`` = 1 / (P * sum(win**2)), so the bins of a row add up to its
    (window-weighted) mean square. Two real rows share one complex FFT (row a as the real
    part, row b as the imaginary part).
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
def _band_sums(
    psd: np.ndarray, band_lo: np.ndarray, band_hi: np.ndarray, log: bool, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Power of each row of ``psd`` in bin ranges ``[band_lo[b], band_hi[b])`` into ``out`` (C, B)."""
    for c in range(psd.shape[0]):
        for b in range(band_lo.shape[0]):
            acc = 0.0
            for k in range(band_lo[b], band_hi[b]):
                acc += psd[c, k]
            out[c, b] = math.log10(acc + _LOG_FLOOR) if log else acc


@njit(**JIT)
def _spectral_shape(
    psd: np.ndarray, means: np.ndarray, df: float, amp_scale: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Dominant frequency, its amplitude, spectral centroid and normalised spectral entropy of
    each row of ``psd`` (bins 1 and up; DC excluded) into ``out`` (C, 4), in ``SPECTRUM`` order.

    The amplitude is that of a sinusoid whose power falls in the dominant bin
    (``amp_scale * sqrt(psd)``); the entropy is Shannon's of the normalised spectrum divided
    by log(number of bins). A row without power (a constant signal) gives zeros.
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
        if total <= _CONSTANT * means[c] * means[c] or total <= 0.0:
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
def _velocity_rms(
    psd: np.ndarray, k_lo: int, k_hi: int, df: float, scale: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """RMS of the velocity in bins ``[k_lo, k_hi)`` from acceleration power ``psd`` (C, K):
    integration divides each bin by (2 pi f)^2; ``scale`` converts to the output unit."""
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
) -> None:  # pragma: no cover - compiled
    """Power of each row of ``psd`` (C, K) at spectral lines into ``out`` (C, M): for line m,
    the sum over harmonics h = 1..``harmonics`` of the bins within ``h * centers[m] +- hw``,
    ``hw = max(rel_tol * h * centers[m], min_half_width)`` (Hz); DC and bins past Nyquist are
    left out."""
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
            out[c, m] = math.log10(acc + _LOG_FLOOR) if log else acc


@njit(**JIT)
def _peak_frequency(psd: np.ndarray, k_lo: int, k_hi: int, df: float) -> float:  # pragma: no cover - compiled
    """Frequency of the strongest line of the summed rows of ``psd`` in bins ``[k_lo, k_hi]``,
    refined by a parabola through the log power of the peak bin and its neighbours."""
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
) -> None:  # pragma: no cover - compiled
    """Envelope of each (band-passed) row of ``xb`` (C, N) and its power spectrum.

    The envelope is the magnitude of the analytic signal ``x + i H{x}``, zero-padded to ``P``
    as ``scipy.signal.hilbert(x, P)``; the Hilbert transform ``H{x}`` has the spectrum
    ``-i sgn(f) X``. Its mean goes to ``env_mean`` (C,), its one-sided power spectrum (mean
    removed, windowed, scaled as in :func:`_power_spectrum`) to ``psd`` (C, P/2 + 1). ``env``
    (2, N) is work space.

    Rows go in pairs, three FFTs per pair: both rows forward as ``a + i b``; both (real)
    Hilbert transforms back as ``H{a} + i H{b}`` (the inverse FFT as the conjugate of the
    forward FFT of the conjugate); both envelope spectra as ``e_a + i e_b``.
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


@njit(**JIT)
def _finite_or_nan(v: np.ndarray) -> None:  # pragma: no cover - compiled
    """Replace non-finite entries of ``v`` by NaN (a feature absent, never +-inf to a learner)."""
    for i in range(v.shape[0]):
        if not math.isfinite(v[i]):
            v[i] = math.nan


# -- tables --------------------------------------------------------------------------------------------
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


def _bins(f_lo: float, f_hi: float, df: float) -> tuple[int, int]:
    return math.ceil(f_lo / df - 1e-9), math.ceil(f_hi / df - 1e-9)


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
        self.channels = tuple(channels)
        self.derived = tuple(derived)
        self.rate_hz = float(rate_hz)
        self.window = int(window)
        self.features = tuple(f for f in FEATURE_SETS if f in features)
        feats = set(self.features)
        self.log = bool(log_bands)
        n_raw = len(self.channels)
        self.visible = self.channels + self.derived  # rows the channel-wise sets see
        n_vis = len(self.visible)
        self.use_envelope = "envelope" in feats
        self.rows = n_vis + (n_raw if self.use_envelope else 0)
        nyq = self.rate_hz / 2
        p = 1 << (self.window - 1).bit_length()
        self._p = p
        self._df = self.rate_hz / p
        n_bins = p // 2 + 1
        self._stats = np.zeros((n_vis, len(STATS)))
        self._means = np.zeros(n_vis)
        names: list[str] = []
        if "stats" in feats:
            names += [f"{c}.{s}" for c in self.visible for s in STATS]

        self.use_psd = bool(feats & {"bands", "spectrum", "velocity", "shaft"}) or (
            self.use_envelope and shaft_hz is None
        )
        if self.use_psd or self.use_envelope:
            self._win = hann(self.window)
            self._swaps, self._tw_re, self._tw_im = fft_tables(p)
            self._scale = 1.0 / (p * float(np.sum(self._win**2)))
            self._re = np.zeros(p)
            self._im = np.zeros(p)
            self._psd = np.zeros((n_vis, n_bins))
            self._psd_raw = self._psd[:n_raw]

        self.use_bands = "bands" in feats
        if self.use_bands:
            edges = [float(e) for e in bands_hz]
            if len(edges) < 2:
                raise ValueError("feature set 'bands' needs at least two band edges in bands_hz")
            if any(b <= a for a, b in itertools.pairwise(edges)) or edges[0] < 0:
                raise ValueError(f"bands_hz must be increasing and >= 0, got {edges}")
            if edges[-1] > nyq:
                raise ValueError(f"bands_hz top edge {edges[-1]} Hz is above Nyquist ({nyq:g} Hz)")
            lo = np.array([_bins(a, a, self._df)[0] for a in edges[:-1]], dtype=np.int64)
            hi = np.array([_bins(b, b, self._df)[0] for b in edges[1:]], dtype=np.int64)
            hi[-1] = min(int(hi[-1]) + (1 if edges[-1] >= nyq else 0), n_bins)
            empty = [
                f"{a:g}-{b:g} Hz"
                for a, b, lo_, hi_ in zip(edges, edges[1:], lo, hi, strict=False)
                if hi_ <= lo_
            ]
            if empty:
                raise ValueError(
                    f"band(s) {empty} contain no FFT bin at {self.rate_hz:g} Hz / {p} points "
                    f"(bin width {self._df:.3g} Hz): widen them or lengthen the window"
                )
            self._band_lo, self._band_hi = lo, hi
            self._bands = np.zeros((n_vis, len(edges) - 1))
            names += [f"{c}.band_{a:g}_{b:g}" for c in self.visible for a, b in itertools.pairwise(edges)]

        self.use_spectrum = "spectrum" in feats
        if self.use_spectrum:
            self._shape = np.zeros((n_vis, len(SPECTRUM)))
            self._amp_scale = math.sqrt(2.0 * p * float(np.sum(self._win**2))) / float(np.sum(self._win))
            names += [f"{c}.{s}" for c in self.visible for s in SPECTRUM]

        self.use_motion = "motion" in feats
        if self.use_motion:
            index = {c: i for i, c in enumerate(self.visible)}
            triads = [(name, axes) for name, axes in TRIADS.items() if all(a in index for a in axes)]
            if not triads:
                raise ValueError(
                    "feature set 'motion' needs a complete vector triad among the channels: "
                    + ", ".join("/".join(a) for a in TRIADS.values())
                )
            self._triads = np.array([[index[a] for a in axes] for _, axes in triads], dtype=np.int64)
            self._motion = np.zeros((len(triads), len(MOTION)))
            self._norm = np.zeros(self.window)
            names += [f"{name}.{m}" for name, _ in triads for m in MOTION]

        self.use_velocity = "velocity" in feats
        if self.use_velocity:
            if len(velocity_band_hz) != 2 or not 0 < velocity_band_hz[0] < velocity_band_hz[1]:
                raise ValueError(
                    f"velocity_band_hz must be [low, high] with 0 < low < high, got {list(velocity_band_hz)}"
                )
            v_lo, v_hi = float(velocity_band_hz[0]), min(float(velocity_band_hz[1]), nyq)
            k_lo, k_hi = _bins(v_lo, v_hi, self._df)
            k_hi = min(k_hi + (1 if v_hi >= nyq else 0), n_bins)
            if k_lo < 1 or k_hi - k_lo < 2:
                raise ValueError(
                    f"velocity band {v_lo:g}-{v_hi:g} Hz (clipped to Nyquist) holds fewer than two "
                    f"FFT bins of {self._df:.3g} Hz: lengthen the window or widen the band"
                )
            self._vel_bins = (int(k_lo), int(k_hi))
            self.velocity_band = (v_lo, v_hi)
            self._vel_scale = 1000.0 * ACCEL_UNITS[accel_unit]  # -> mm/s
            self._vel = np.zeros(n_raw)
            names += [f"{c}.vel_rms" for c in self.channels]

        self.use_shaft = "shaft" in feats
        self.shaft_hz = None if shaft_hz is None else float(shaft_hz)
        self.estimate_shaft = (self.use_shaft or self.use_envelope) and shaft_hz is None
        if self.use_shaft or self.use_envelope:
            if not 0.0 < line_tol < 0.5:
                raise ValueError(f"line_tol must be in (0, 0.5), got {line_tol}")
            self.line_tol = float(line_tol)
            self._min_hw = 1.5 * self._df  # the Hann main lobe of a line in the middle of a bin
            if shaft_hz is not None:
                if not 0.0 < shaft_hz < nyq:
                    raise ValueError(f"shaft_hz must be in (0, Nyquist = {nyq:g} Hz), got {shaft_hz}")
            else:
                if shaft_range_hz is None or len(shaft_range_hz) != 2:
                    raise ValueError(
                        "the shaft speed is needed: give shaft hz, or range_hz = [low, high] to "
                        "estimate it per window"
                    )
                s_lo, s_hi = float(shaft_range_hz[0]), float(shaft_range_hz[1])
                if not 0.0 < s_lo < s_hi < nyq:
                    raise ValueError(
                        f"shaft range_hz must satisfy 0 < low < high < Nyquist ({nyq:g} Hz), "
                        f"got {[s_lo, s_hi]}"
                    )
                k_lo, k_hi = max(1, math.floor(s_lo / self._df)), min(n_bins - 2, math.ceil(s_hi / self._df))
                if k_hi - k_lo < 2:
                    raise ValueError(
                        f"shaft range_hz {s_lo:g}-{s_hi:g} Hz spans fewer than three FFT bins of "
                        f"{self._df:.3g} Hz: lengthen the window or widen the range"
                    )
                self._shaft_bins = (int(k_lo), int(k_hi))
            self._shaft_now = np.zeros(1)
        if self.use_shaft:
            self._harm = np.arange(1.0, len(SHAFT) + 1.0)
            self._harm_hz = np.zeros(len(SHAFT))
            self._shaft = np.zeros((n_raw, len(SHAFT)))
            names += [f"{c}.{s}" for c in self.channels for s in SHAFT]
        if self.estimate_shaft:
            names.append("shaft.hz")

        if self.use_envelope:
            if not defects or set(defects) != set(DEFECTS):
                raise ValueError(f"feature set 'envelope' needs the bearing defect multiples {list(DEFECTS)}")
            if harmonics < 1:
                raise ValueError(f"harmonics must be >= 1, got {harmonics}")
            self.defects = {d: float(defects[d]) for d in DEFECTS}
            self.harmonics = int(harmonics)
            self._defect_x = np.array([self.defects[d] for d in DEFECTS])
            self._centers = np.zeros(len(DEFECTS))
            self._env = np.zeros((2, self.window))
            self._env_mean = np.zeros(n_raw)
            self._env_psd = np.zeros((n_raw, n_bins))
            self._env_lines = np.zeros((n_raw, len(DEFECTS)))
            names += [f"{c}.{e}" for c in self.channels for e in ENVELOPE]

        if not names:
            raise ValueError("no features selected")
        self.names: tuple[str, ...] = tuple(names)
        self._out = np.zeros(len(names))

    @property
    def shaft_speed(self) -> float:
        """Shaft speed (Hz) used by the last window (configured or estimated)."""
        return float(self._shaft_now[0])

    def compute(self, win: np.ndarray) -> np.ndarray:
        """Features of one window ``win`` (``rows`` x ``window``, float64); returns an internal buffer."""
        if win.shape != (self.rows, self.window):
            raise ValueError(f"window shape {win.shape} != {(self.rows, self.window)}")
        n_raw = len(self.channels)
        n_vis = len(self.visible)
        vis = win[:n_vis]
        out = self._out
        _time_stats(vis, self._stats)
        k = 0
        if "stats" in self.features:
            n = self._stats.size
            out[k : k + n] = self._stats.ravel()
            k += n
        if self.use_psd:
            self._means[:] = self._stats[:, 0]
            _power_spectrum(
                vis,
                self._means,
                self._win,
                self._swaps,
                self._tw_re,
                self._tw_im,
                self._scale,
                self._re,
                self._im,
                self._psd,
            )
        if self.use_bands:
            _band_sums(self._psd, self._band_lo, self._band_hi, self.log, self._bands)
            n = self._bands.size
            out[k : k + n] = self._bands.ravel()
            k += n
        if self.use_spectrum:
            _spectral_shape(self._psd, self._means, self._df, self._amp_scale, self._shape)
            n = self._shape.size
            out[k : k + n] = self._shape.ravel()
            k += n
        if self.use_motion:
            _motion(vis, self._triads, self._norm, self._motion)
            n = self._motion.size
            out[k : k + n] = self._motion.ravel()
            k += n
        if self.use_velocity:
            _velocity_rms(
                self._psd_raw, self._vel_bins[0], self._vel_bins[1], self._df, self._vel_scale, self._vel
            )
            out[k : k + n_raw] = self._vel
            k += n_raw
        if self.use_shaft or self.use_envelope:
            if self.estimate_shaft:
                self._shaft_now[0] = _peak_frequency(
                    self._psd_raw, self._shaft_bins[0], self._shaft_bins[1], self._df
                )
            else:
                self._shaft_now[0] = self.shaft_hz
        if self.use_shaft:
            np.multiply(self._harm, self._shaft_now[0], out=self._harm_hz)
            _line_power(
                self._psd_raw, self._df, self._harm_hz, 1, self.line_tol, self._min_hw, self.log, self._shaft
            )
            n = self._shaft.size
            out[k : k + n] = self._shaft.ravel()
            k += n
        if self.estimate_shaft:
            out[k] = self._shaft_now[0]
            k += 1
        if self.use_envelope:
            np.multiply(self._defect_x, self._shaft_now[0], out=self._centers)
            _envelope_spectrum(
                win[n_vis:],
                self._win,
                self._swaps,
                self._tw_re,
                self._tw_im,
                self._scale,
                self._re,
                self._im,
                self._env,
                self._env_mean,
                self._env_psd,
            )
            _line_power(
                self._env_psd,
                self._df,
                self._centers,
                self.harmonics,
                self.line_tol,
                self._min_hw,
                self.log,
                self._env_lines,
            )
            for c in range(n_raw):
                out[k] = self._env_mean[c]
                out[k + 1 : k + 1 + len(DEFECTS)] = self._env_lines[c]
                k += 1 + len(DEFECTS)
        _finite_or_nan(out)
        return out
