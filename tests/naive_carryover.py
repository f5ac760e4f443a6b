"""Plain numpy references for :mod:`pipelines.carryover` (as ``tests/naive.py`` for the features).

Vectorised numpy with boolean frequency masks and ``np.median``; no loops over bins.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal


def line_to_background(
    psd: np.ndarray, df: float, f: float, tol_hz: float, gap_hz: float, bg_hz: float
) -> float:
    """Line-to-background ratio (dB) of one spectrum at ``f``."""
    k = np.arange(psd.shape[0])
    dist = np.abs(k * df - f)
    near = math.floor(f / df + 0.5)
    if f <= 0 or near > psd.shape[0] - 1:
        return math.nan
    line = (dist <= tol_hz) & (k >= 1)
    if not line.any():
        if near < 1:
            return math.nan
        line = k == near
    bg = (dist > gap_hz) & (dist <= gap_hz + bg_hz) & ~line & (k >= 1)
    if not bg.any():
        return math.nan
    return float(10 * np.log10((psd[line].max() + 1e-30) / (np.median(psd[bg]) + 1e-30)))


def family_lines(
    psd: np.ndarray,
    df: float,
    shaft_hz: float,
    mults: np.ndarray,
    harmonics: int,
    tol_frac: float,
    gap_hz: float,
    bg_frac: float,
    min_bg_hz: float,
) -> np.ndarray:
    """(C, M, H) line-to-background ratios of every harmonic of every family."""
    out = np.empty((psd.shape[0], len(mults), harmonics))
    for c in range(psd.shape[0]):
        for m, mult in enumerate(mults):
            f0 = mult * shaft_hz
            for h in range(1, harmonics + 1):
                out[c, m, h - 1] = line_to_background(
                    psd[c], df, h * f0, max(tol_frac * h * f0, df), gap_hz, max(bg_frac * f0, min_bg_hz)
                )
    return out


def speed_search(
    psd: np.ndarray,
    df: float,
    nominal_hz: float,
    mults: np.ndarray,
    harmonics: int,
    tol_frac: float,
    gap_hz: float,
    bg_frac: float,
    min_bg_hz: float,
    lo: float,
    hi: float,
    steps: int,
) -> float:
    """Shaft speed maximising the best family's summed ratios over a grid of scales."""
    scales = [lo + (hi - lo) * i / (steps - 1) for i in range(steps)] if steps > 1 else [lo]
    scores = [
        np.nansum(
            family_lines(psd, df, s * nominal_hz, mults, harmonics, tol_frac, gap_hz, bg_frac, min_bg_hz),
            axis=(0, 2),
        ).max()
        for s in scales
    ]
    return scales[int(np.argmax(scores))] * nominal_hz


def family_summary(lines: np.ndarray, n_share: int) -> np.ndarray:
    """(C, 2M + n_share): mean, max per family, then the shares of the positive maxima."""
    mean = np.nanmean(lines, axis=2)
    top = np.nanmax(lines, axis=2)
    pos = np.where(top[:, :n_share] > 0, top[:, :n_share], 0.0)
    tot = pos.sum(axis=1, keepdims=True)
    share = np.where(tot > 0, pos / np.where(tot > 0, tot, 1.0), 1.0 / n_share)
    inter = np.stack([mean, top], axis=2).reshape(lines.shape[0], -1)
    return np.concatenate([inter, share], axis=1)


def impulsiveness(x: np.ndarray) -> np.ndarray:
    """(C, 2): log Pearson kurtosis and log crest factor per row."""
    d = x - x.mean(axis=1, keepdims=True)
    m2 = np.mean(d**2, axis=1)
    kurt = np.mean(d**4, axis=1) / m2**2
    crest = np.abs(d).max(axis=1) / np.sqrt(m2)
    return np.stack([np.log(kurt), np.log(crest)], axis=1)


def gravity_aligned(acc: np.ndarray, lin: np.ndarray, gyro: np.ndarray | None) -> np.ndarray:
    """Mean/std of |acc|, vertical and horizontal linear acceleration (and rotation rate)."""
    g = acc - lin
    u = g / np.linalg.norm(g, axis=0)
    out = []
    for mag, src in ((acc, lin), (gyro, gyro)):
        if src is None:
            continue
        v = np.sum(src * u, axis=0)
        h = np.linalg.norm(src - v * u, axis=0)
        for r in (np.linalg.norm(mag, axis=0), v, h):
            out += [r.mean(), r.std()]
    return np.array(out)


def dominance(lines: np.ndarray, families: int, tau_db: float) -> np.ndarray:
    """(C, families + 1): softmax shares of the fundamentals' ratios, then the largest ratio."""
    fund = np.nan_to_num(lines[:, :families, 0], nan=0.0)
    shares = np.exp(fund / tau_db)
    shares /= shares.sum(axis=1, keepdims=True)
    return np.concatenate([shares, fund.max(axis=1, keepdims=True)], axis=1)


def lines_features(
    raw: np.ndarray, band: np.ndarray, rate_hz: float, nominal_hz: float, mults: np.ndarray
) -> tuple[np.ndarray, float]:
    """The ``lines`` feature set of one window, the way one would write it with numpy/scipy."""
    from pipelines.featuresets import BG_FRAC, LINE_TOL, LINE_TOL_READ, PAD, TAU_DB, slip_search_passes
    from tests.naive import hann

    n = raw.shape[1]
    p = 1 << (n - 1).bit_length()
    df = rate_hz / (PAD * p)
    gap = 2 * rate_hz / n
    env = np.abs(scipy.signal.hilbert(band, p, axis=-1))[:, :n]  # the envelope at the window's length
    w = hann(n)
    spec = np.abs(np.fft.rfft((env - env.mean(axis=1, keepdims=True)) * w, PAD * p, axis=-1)) ** 2
    weight = np.full(spec.shape[-1], 2.0)
    weight[0] = weight[-1] = 1.0
    pw = weight * spec / (PAD * p * np.sum(w**2))  # its spectrum, zero-padded PAD x
    scale = None
    for _ in range(2):
        lo, hi, steps = slip_search_passes(scale)
        hz = speed_search(pw, df, nominal_hz, mults, 3, LINE_TOL, gap, BG_FRAC, 2 * df, lo, hi, steps)
        scale = hz / nominal_hz
    lines = family_lines(pw, df, hz, mults, 1, LINE_TOL_READ, gap, BG_FRAC, 2 * df)
    dom = dominance(lines, 3, TAU_DB)
    log_rms = np.log10(raw.std(axis=1))
    return np.concatenate([dom, log_rms[:, None]], axis=1).ravel(), hz
