"""Plain numpy/scipy references for the numba feature kernels (stumpy's ``tests/naive.py`` idea).

Written the way one would without numba: vectorised numpy over channels, scipy.stats for the
moments, scipy.signal.hilbert for the envelope, boolean frequency masks for bands and lines.
The tests compare :class:`pipelines.features.FeatureExtractor` with :class:`NaiveFeatures`;
``bench/bench.py`` times both on the same windows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.signal
import scipy.stats

from pipelines.features import ACCEL_UNITS, DEFECTS, MOTION, SHAFT, SPECTRUM, STATS, TRIADS


def hann(n: int) -> np.ndarray:
    return np.hanning(n + 2)[1:-1]


def psd(x: np.ndarray, p: int) -> np.ndarray:
    """One-sided power spectrum of the mean-removed, Hann-windowed rows of ``x`` zero-padded to ``p``;
    the bins add up to the window-weighted mean square."""
    w = hann(x.shape[-1])
    spec = np.abs(np.fft.rfft((x - x.mean(axis=-1, keepdims=True)) * w, p, axis=-1)) ** 2
    weight = np.full(spec.shape[-1], 2.0)
    weight[0] = 1.0
    weight[-1] = 1.0
    return weight * spec / (p * np.sum(w**2))


def time_stats(x: np.ndarray) -> np.ndarray:
    """(C, 10) in ``STATS`` order."""
    mean = x.mean(axis=1)
    std = x.std(axis=1)
    rms = np.sqrt(np.mean(x**2, axis=1))
    lo, hi = x.min(axis=1), x.max(axis=1)
    constant = std**2 <= 1e-24 * (mean**2 + 1e-300)
    skew = np.where(constant, 0.0, scipy.stats.skew(x, axis=1))
    kurt = np.where(constant, 0.0, scipy.stats.kurtosis(x, axis=1))
    crest = np.where(rms > 0, np.maximum(np.abs(lo), np.abs(hi)) / np.where(rms > 0, rms, 1.0), 0.0)
    zcr = np.empty(x.shape[0])
    for c, row in enumerate(x - mean[:, None]):
        s = np.sign(row[row != 0])
        zcr[c] = np.count_nonzero(np.diff(s)) / (x.shape[1] - 1)
    return np.stack([mean, std, rms, lo, hi, hi - lo, skew, kurt, crest, zcr], axis=1)


def band_masks(freqs: np.ndarray, edges: Sequence[float], nyq: float) -> list[np.ndarray]:
    return [
        (freqs >= lo) & ((freqs < hi) | ((hi >= nyq) & (freqs <= hi))) for lo, hi in itertools.pairwise(edges)
    ]


def spectrum(pw: np.ndarray, means: np.ndarray, df: float, amp_scale: float) -> np.ndarray:
    """(C, 4) in ``SPECTRUM`` order from a one-sided power spectrum (DC excluded)."""
    body = pw[:, 1:]
    total = body.sum(axis=1)
    k = np.argmax(body, axis=1)
    freqs = np.arange(1, pw.shape[1]) * df
    out = np.zeros((pw.shape[0], 4))
    for c in range(pw.shape[0]):
        if total[c] <= 1e-24 * means[c] ** 2 or total[c] <= 0:
            continue
        out[c] = (
            freqs[k[c]],
            amp_scale * np.sqrt(body[c, k[c]]),
            np.sum(freqs * body[c]) / total[c],
            scipy.stats.entropy(body[c]) / np.log(body.shape[1]),
        )
    return out


def motion(x3: np.ndarray) -> np.ndarray:
    """(8,) in ``MOTION`` order for one (3, N) vector signal."""
    norm = np.linalg.norm(x3, axis=0)
    stds = x3.std(axis=1)
    corr = np.corrcoef(x3) if np.all(stds > 0) else np.zeros((3, 3))
    if not np.all(stds > 0):
        for i, j in ((0, 1), (0, 2), (1, 2)):
            if stds[i] > 0 and stds[j] > 0:
                corr[i, j] = np.corrcoef(x3[i], x3[j])[0, 1]
    return np.array(
        [
            np.mean(np.abs(x3).sum(axis=0)),
            norm.mean(),
            norm.std(),
            norm.min(),
            norm.max(),
            corr[0, 1],
            corr[0, 2],
            corr[1, 2],
        ]
    )


def line_power(
    pw: np.ndarray, df: float, centers: Sequence[float], harmonics: int, rel_tol: float, min_hw: float
) -> np.ndarray:
    """(C, M) power in bins within +-hw of each line's harmonics (DC excluded)."""
    freqs = np.arange(pw.shape[1]) * df
    out = np.zeros((pw.shape[0], len(centers)))
    for m, f0 in enumerate(centers):
        for h in range(1, harmonics + 1):
            f = h * f0
            hw = max(rel_tol * f, min_hw)
            sel = (freqs >= f - hw) & (freqs <= f + hw) & (np.arange(pw.shape[1]) >= 1)
            out[:, m] += pw[:, sel].sum(axis=1)
    return out


def peak_frequency(pw: np.ndarray, df: float, lo_hz: float, hi_hz: float) -> float:
    """Strongest line of the summed rows in [lo, hi] (bin range as the kernel), parabola on log power."""
    total = pw.sum(axis=0)
    k_lo = max(1, math.floor(lo_hz / df))
    k_hi = min(len(total) - 2, math.ceil(hi_hz / df))
    k = k_lo + int(np.argmax(total[k_lo : k_hi + 1]))
    a, b, c = np.log(total[k - 1 : k + 2])
    den = a - 2 * b + c
    return (k + (0.5 * (a - c) / den if den < 0 else 0.0)) * df


def envelope(xb: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean envelope (C,) and envelope power spectrum (C, p/2+1) of band-passed rows."""
    env = np.abs(scipy.signal.hilbert(xb, p, axis=-1))[:, : xb.shape[1]]
    return env.mean(axis=1), psd(env, p)


def defect_multiples(balls: int, d: float, pitch: float, angle_deg: float = 0.0) -> dict[str, float]:
    r = d / pitch * math.cos(math.radians(angle_deg))
    return {
        "bpfo": balls / 2 * (1 - r),
        "bpfi": balls / 2 * (1 + r),
        "bsf": pitch / (2 * d) * (1 - r * r),
        "ftf": 0.5 * (1 - r),
    }


class NaiveFeatures:
    """The same features as :class:`~pipelines.features.FeatureExtractor`, in numpy/scipy, by name."""

    def __init__(
        self,
        channels: Sequence[str],
        rate_hz: float,
        window: int,
        features: Sequence[str],
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
        self.channels, self.derived = list(channels), list(derived)
        self.visible = self.channels + self.derived
        self.rate, self.n = rate_hz, window
        self.features = set(features)
        self.edges = list(bands_hz)
        self.log = log_bands
        self.unit = ACCEL_UNITS[accel_unit]
        self.vband = (velocity_band_hz[0], min(velocity_band_hz[1], rate_hz / 2))
        self.shaft_hz, self.shaft_range = shaft_hz, shaft_range_hz
        self.tol, self.defects, self.harmonics = line_tol, defects, harmonics
        self.p = 1 << (window - 1).bit_length()
        self.df = rate_hz / self.p
        w = hann(window)
        self.amp_scale = math.sqrt(2 * self.p * np.sum(w**2)) / np.sum(w)

        self.names = self._names()

    def _names(self) -> list[str]:
        vis, raw = self.visible, self.channels
        names = [f"{c}.{s}" for c in vis for s in STATS] if "stats" in self.features else []
        if "bands" in self.features:
            names += [
                f"{c}.band_{a:g}_{b:g}" for c in vis for a, b in zip(self.edges, self.edges[1:], strict=False)
            ]
        if "spectrum" in self.features:
            names += [f"{c}.{s}" for c in vis for s in SPECTRUM]
        if "motion" in self.features:
            names += [f"{t}.{m}" for t, axes in TRIADS.items() if all(a in vis for a in axes) for m in MOTION]
        if "velocity" in self.features:
            names += [f"{c}.vel_rms" for c in raw]
        if "shaft" in self.features:
            names += [f"{c}.{s}" for c in raw for s in SHAFT]
        if self.shaft_hz is None and ("shaft" in self.features or "envelope" in self.features):
            names.append("shaft.hz")
        if "envelope" in self.features:
            names += [f"{c}.{e}" for c in raw for e in ("env_mean", *(f"env_{d}" for d in DEFECTS))]
        return names

    def _log(self, v: np.ndarray) -> np.ndarray:
        return np.log10(v + 1e-12) if self.log else v

    def vector(self, win: np.ndarray) -> np.ndarray:
        """All features of one window, in ``names`` order."""
        parts: list[np.ndarray] = []
        nv, nr = len(self.visible), len(self.channels)
        x = win[:nv]
        st = time_stats(x)
        if "stats" in self.features:
            parts.append(st.ravel())
        pw = psd(x, self.p)
        freqs = np.fft.rfftfreq(self.p, 1 / self.rate)
        if "bands" in self.features:
            masks = band_masks(freqs, self.edges, self.rate / 2)
            parts.append(self._log(np.stack([pw[:, m].sum(axis=1) for m in masks], axis=1)).ravel())
        if "spectrum" in self.features:
            parts.append(spectrum(pw, st[:, 0], self.df, self.amp_scale).ravel())
        if "motion" in self.features:
            for axes in TRIADS.values():
                if all(a in self.visible for a in axes):
                    parts.append(motion(x[[self.visible.index(a) for a in axes]]))
        if "velocity" in self.features:
            lo, hi = self.vband
            sel = (freqs >= lo) & ((freqs < hi) | ((hi >= self.rate / 2) & (freqs <= hi)))
            parts.append(
                np.sqrt(np.sum(pw[:nr, sel] / (2 * np.pi * freqs[sel]) ** 2, axis=1)) * 1000 * self.unit
            )
        shaft = self.shaft_hz
        if shaft is None and ("shaft" in self.features or "envelope" in self.features):
            assert self.shaft_range is not None
            shaft = peak_frequency(pw[:nr], self.df, *self.shaft_range)
        if "shaft" in self.features:
            assert shaft is not None
            parts.append(
                self._log(
                    line_power(pw[:nr], self.df, [shaft, 2 * shaft, 3 * shaft], 1, self.tol, 1.5 * self.df)
                ).ravel()
            )
        if self.shaft_hz is None and ("shaft" in self.features or "envelope" in self.features):
            parts.append(np.array([shaft]))
        if "envelope" in self.features:
            assert self.defects is not None and shaft is not None
            mean, epw = envelope(win[nv : nv + nr], self.p)
            lp = self._log(
                line_power(
                    epw,
                    self.df,
                    [self.defects[d] * shaft for d in DEFECTS],
                    self.harmonics,
                    self.tol,
                    1.5 * self.df,
                )
            )
            parts.append(np.concatenate([mean[:, None], lp], axis=1).ravel())
        return np.concatenate(parts)

    def compute(self, win: np.ndarray) -> dict[str, float]:
        """All features of one window by name."""
        return dict(zip(self.names, self.vector(win).tolist(), strict=True))
