"""Time-domain kernels: moments, extremes and zero crossings per row; vector-triad features; the
non-finite guard on the output vector.

Moments follow the biased (population) definitions of scipy.stats (``skew``, ``kurtosis`` with
``fisher=True``); Pearson's r for the axis correlations.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipelines.jit import JIT
from pipelines.kernels import CONSTANT


@njit(**JIT)
def _time_stats(x: np.ndarray, out: np.ndarray) -> None:
    """Per-row time-domain statistics of ``x`` (C, N) into ``out`` (C, 10), in ``STATS`` order.

    Skewness and kurtosis are the biased moment ratios (scipy.stats defaults; kurtosis is the
    excess, 0 for a normal distribution), 0 for a constant row. Crest factor is peak/RMS, the
    zero-crossing rate counts sign changes of the mean-removed signal per sample.

    Parameters
    ----------
    x
        (C, N) float64 rows.
    out
        (C, 10) float64, written.
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
        if var > CONSTANT * (mean * mean + 1e-300) and var > 0.0:
            out[c, 6] = (m3 / n) / (var * math.sqrt(var))
            out[c, 7] = (m4 / n) / (var * var) - 3.0
        else:
            out[c, 6] = 0.0
            out[c, 7] = 0.0
        peak = max(abs(lo), abs(hi))
        out[c, 8] = peak / rms if rms > 0.0 else 0.0
        out[c, 9] = crossings / (n - 1) if n > 1 else 0.0


@njit(**JIT)
def _motion(x: np.ndarray, triads: np.ndarray, norm: np.ndarray, out: np.ndarray) -> None:
    """Vector features of row triads of ``x`` (R, N) into ``out`` (T, 8), in ``MOTION`` order.

    ``triads`` (T, 3) holds the row indices of each vector's axes; ``norm`` (N,) is work space.
    Signal magnitude area is mean(|x| + |y| + |z|); correlations are Pearson's r (0 when an
    axis is constant).

    Parameters
    ----------
    x
        (R, N) float64 rows.
    triads
        (T, 3) int64 row indices of the x, y and z axis of each vector.
    norm
        (N,) float64 work space.
    out
        (T, 8) float64, written.
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
        vx = cxx > CONSTANT * n * (mx * mx + 1e-300) and cxx > 0.0
        vy = cyy > CONSTANT * n * (my * my + 1e-300) and cyy > 0.0
        vz = czz > CONSTANT * n * (mz * mz + 1e-300) and czz > 0.0
        out[t, 0] = sabs / n
        out[t, 1] = nmean
        out[t, 2] = math.sqrt(nvar / n)
        out[t, 3] = nlo
        out[t, 4] = nhi
        out[t, 5] = cxy / math.sqrt(cxx * cyy) if vx and vy else 0.0
        out[t, 6] = cxz / math.sqrt(cxx * czz) if vx and vz else 0.0
        out[t, 7] = cyz / math.sqrt(cyy * czz) if vy and vz else 0.0


@njit(**JIT)
def _finite_or_nan(v: np.ndarray) -> None:
    """Replace non-finite entries of ``v`` by NaN (a feature absent, never +-inf to a learner).

    Parameters
    ----------
    v
        (K,) float64, changed in place.
    """
    for i in range(v.shape[0]):
        if not math.isfinite(v[i]):
            v[i] = math.nan
