"""Numba kernels of the discord detector (:class:`pipelines.anomaly.DiscordDetector`).

Imported on first use only, after the JIT cache directory is set (edged.app), like the other
kernels: :mod:`pipelines.anomaly` is imported by the config and must not pull numba in.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipelines.jit import JIT


@njit(**JIT)
def _nearest(buf: np.ndarray, n: int, x: float, m: int, history: int) -> float:  # pragma: no cover - compiled
    """RMS distance from the stretch of the last ``m - 1`` values of the ring ``buf`` (``n``
    values written so far) followed by ``x``, to the nearest stretch of ``m`` stored values ending
    between ``history`` and ``m`` values before ``x``; -1 while there is no candidate yet."""
    size = buf.shape[0]
    first_end = max(m - 1, n - history)
    last_end = n - m
    if last_end < first_end:
        return -1.0
    best = math.inf
    for e in range(first_end, last_end + 1):
        d = x - buf[e % size]
        s = d * d
        for j in range(1, m):
            if s >= best:
                break
            d = buf[(n - j) % size] - buf[(e - j) % size]
            s += d * d
        if s < best:
            best = s
    return math.sqrt(best / m)


@njit(**JIT)
def _discord_score(
    buf: np.ndarray,
    st: np.ndarray,
    x: float,
    m: int,
    history: int,
    novelty: float,
    a_short: float,
    shift_z: float,
) -> tuple[float, bool]:  # pragma: no cover - compiled
    """Score ``x`` as the next value of one channel: (score, novel). Changes nothing
    (:func:`_discord_learn` then appends ``x``).

    ``st``: [values seen, EW mean, EW variance, min, max, short EW mean, long EW mean, EW
    variance of their difference, its weight]."""
    n = int(st[0])
    if n == 0:
        return 0.0, False
    lo, hi = st[3], st[4]
    rng = hi - lo
    floor = 1e-3 * rng + 1e-12  # a flat line has no spread: distances relative to its range
    d = _nearest(buf, n, x, m, history)
    score = math.log1p(d / (math.sqrt(st[2]) + floor)) if d >= 0.0 else 0.0
    novel = rng > 0.0 and (x > hi + novelty * rng or x < lo - novelty * rng)
    if shift_z > 0.0 and st[7] > 0.0:
        # level shift: the short mean (with x) left the long mean by shift_z of its usual spread
        gap = st[5] + a_short * (x - st[5]) - st[6]
        novel = novel or abs(gap) > shift_z * math.sqrt(st[7] / st[8])
    return score, novel


@njit(**JIT)
def _discord_learn(
    buf: np.ndarray, st: np.ndarray, x: float, alpha: float, a_short: float, a_long: float, lag: int
) -> None:  # pragma: no cover - compiled
    """Append ``x`` to one channel's ring and update its spread, range and level means."""
    n = int(st[0])
    buf[n % buf.shape[0]] = x
    if n == 0:
        st[1] = st[3] = st[4] = st[5] = st[6] = x
    elif n >= lag:
        # the range novelty compares with values at least `lag` old, so a fast climb past the
        # old extremes is new even though each step only edges past the last one
        old = buf[(n - lag) % buf.shape[0]]
        st[3] = min(st[3], old)
        st[4] = max(st[4], old)
    if n > 0:
        dd = x - st[1]
        st[1] += alpha * dd
        st[2] = (1.0 - alpha) * (st[2] + alpha * dd * dd)
        st[5] += a_short * (x - st[5])
        gap = st[5] - st[6]
        st[6] += a_long * (x - st[6])
        st[7] = (1.0 - a_long) * (st[7] + a_long * gap * gap)
        st[8] = 1.0 - (1.0 - a_long) * (1.0 - st[8])
    st[0] = n + 1
