"""Data quality of a chip's samples: frozen (stuck) output, saturation, implausible values.

Nothing implausible reaches a learner; what is dropped is counted, and what the gate sees feeds
the sensor's health (``ChipDriver.fault``: ``degraded`` while stuck or saturated).
"""

from __future__ import annotations

from collections import Counter

import numpy as np


class QualityGate:
    """Drops samples nobody should learn from, and says why the sensor looks unwell.

    * stuck: the raw words of a sample are identical to the previous ``stuck_after`` samples (a
      live ADC always has noise in its last bits); those samples are dropped while it lasts;
    * saturated: a raw value at the converter's limit; such samples are real but clipped, so they
      are kept, counted, and flagged when at least a quarter of a block is saturated;
    * out of range: a converted value outside the chip's physical range, or not finite: dropped.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, stuck_after: int) -> None:
        self.lo = lo
        self.hi = hi
        self.stuck_after = stuck_after
        self._prev: np.ndarray | None = None
        self.run = 0  # how many samples in a row equal _prev (including it)
        self.stuck = False
        self.saturated = False

    def reset(self) -> None:
        self._prev, self.run, self.stuck = None, 0, False

    def keep(self, raw: np.ndarray, x: np.ndarray, saturated: np.ndarray, stats: Counter[str]) -> np.ndarray:
        n = raw.shape[0]
        same = np.empty(n, dtype=bool)
        if n:
            same[0] = self._prev is not None and bool(np.array_equal(raw[0], self._prev))
            same[1:] = np.all(raw[1:] == raw[:-1], axis=1)
        # run length of identical samples, carried over from the previous block
        idx = np.arange(n)
        starts = np.where(same, -1, idx)
        np.maximum.accumulate(starts, out=starts)
        run = np.where(starts >= 0, idx - starts + 1, idx + 1 + self.run)
        frozen = run > self.stuck_after
        if n:
            self._prev = raw[-1].copy()
            self.run = int(run[-1])
            self.stuck = bool(frozen[-1])
        ok = np.all(np.isfinite(x) & (x >= self.lo) & (x <= self.hi), axis=1)
        stats["stuck_samples"] += int(frozen.sum())
        stats["out_of_range"] += int((~ok & ~frozen).sum())
        n_sat = int(saturated.sum())
        stats["saturated_samples"] += n_sat
        self.saturated = n > 0 and n_sat * 4 >= n
        return ok & ~frozen
