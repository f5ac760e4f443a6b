"""Sample times of a FIFO stream: from the output data rate and the position in the stream,
never from the moment Python happened to read them."""

from __future__ import annotations

import math

import numpy as np


class Timebase:
    """Sample times from the output data rate (ODR) and the position in the FIFO stream.

    Sample ``k`` after a FIFO (re)start at ``t0`` was acquired at about ``t0 + (k + 1) / ODR``.
    Chip oscillators are off by up to a few percent, so once the run is long enough for one
    sample to matter little (0.5 s and 50 samples) the rate is measured (samples counted since
    ``t0`` against the monotonic clock; clamped to +-5 % of nominal) and the stamps are steered
    onto that line: each block's spacing is chosen so the remaining offset shrinks with a time
    constant of ``converge_s``. Stamps never jump and never go back; within a block they are
    exactly evenly spaced. The time Python read a burst only feeds the slow rate estimate; it
    never moves an individual sample.
    """

    def __init__(self, nominal_hz: float, tolerance: float = 0.05, converge_s: float = 1.0) -> None:
        self.nominal = 1.0 / nominal_hz
        self.tolerance = tolerance
        self.converge_s = converge_s
        self.period = self.nominal
        self.t0 = 0.0
        self.k = 0  # samples stamped since the start
        self._anchor_t = 0.0  # time of sample index _anchor_k
        self._anchor_k = -1
        self.t_last = -math.inf

    def _clamp(self, period: float) -> float:
        return min(self.nominal * (1 + self.tolerance), max(self.nominal * (1 - self.tolerance), period))

    def start(self, t0: float) -> None:
        """The FIFO was (re)started at ``t0``: the next sample is the first of a new run."""
        t0 = max(t0, self.t_last)
        self.t0 = t0
        self.k = 0
        self._anchor_t, self._anchor_k = t0, -1

    def stamps(self, n: int, now: float, pending: int = 0) -> np.ndarray:
        """Times of the next ``n`` samples, which were all in the FIFO at ``now`` (with ``pending``
        newer ones that are held back for the next call)."""
        span = now - self.t0
        if n > 0 and span >= 0.5 and self.k + n >= 50:
            measured = self._clamp(span / (self.k + n + pending))
            last_k = self.k - 1
            last_t = self._anchor_t + (last_k - self._anchor_k) * self.period
            horizon = max(n, round(self.converge_s / measured))  # samples to absorb the offset in
            target_t = self.t0 + (last_k + horizon + 1) * measured  # the line through t0 and now
            self._anchor_t, self._anchor_k = last_t, last_k
            self.period = self._clamp((target_t - last_t) / horizon)
        idx = np.arange(self.k, self.k + n, dtype=np.float64)
        t = self._anchor_t + (idx - self._anchor_k) * self.period
        self.k += n
        if n:
            self.t_last = float(t[-1])
        return t
