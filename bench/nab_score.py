"""NAB's scorer, ported row for row from numenta/NAB ``nab/sweeper.py`` and ``nab/runner.py``.

A file's rows are scored like NAB's ``Sweeper.calcSweepScore`` + ``calcScoreByThreshold`` at one
threshold: a row is a *detection* when its flag is set (edged: the row where an alarm starts;
a published detector: ``anomaly_score >= threshold``).

* Rows before the probationary length ``min(floor(0.15 n), 0.15 * 5000)`` are not scored.
* A window is the rows from the first whose timestamp equals its start to the first whose
  timestamp equals its end (NAB matches timestamps exactly). Inside a window, row ``i`` scores
  ``S(-(right - i + 1) / width) * tpWeight / S(-1)``, with ``S(y) = 2 sigmoid(-5 y) - 1`` and
  ``S(y) = -1`` for ``y > 3``: 1.0 at the window's first row, about 0 at its last. A window
  scores the best of its detections, or ``-fnWeight`` when it has none.
* A detection outside every window scores ``fpWeight * S(|prevRight - i| / (prevWidth - 1))``
  after a window, ``-fpWeight`` before the first one. Every such detection counts.

A corpus score is normalised as NAB's ``Runner.normalize`` does:
``100 * (raw - null) / (perfect - null)`` with ``perfect = tpWeight x windows`` and ``null`` the
raw score of a detector that never fires (``-fnWeight`` per scorable window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

STANDARD = {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0}
PROBATION_PERCENT = 0.15


def scaled_sigmoid(y: float) -> float:
    """NAB's ``scaledSigmoid``: 0.98661 at -1 (a window's left edge), 0 at 0, -1 beyond 3."""
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def probation_rows(n: int) -> float:
    """NAB's ``getProbationPeriod`` (a float: the 750-row cap is 0.15 x 5000)."""
    return min(math.floor(PROBATION_PERCENT * n), PROBATION_PERCENT * 5000)


def window_rows(t: np.ndarray, windows: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """Row indices ``(left, right)`` of each window: first rows with exactly these timestamps."""
    out = []
    for a, b in windows:
        left = int(np.flatnonzero(t == a)[0])
        right = int(np.flatnonzero(t == b)[0])
        out.append((left, right))
    return out


@dataclass
class FileScore:
    score: float
    tp: int = 0  # windows detected
    fn: int = 0  # windows missed
    fp: int = 0  # detections outside windows
    fp_penalty: float = 0.0
    windows: list[float] = field(default_factory=list)  # each window's score


def row_scores(n: int, wins: list[tuple[int, int]], cost: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted score of a detection at each row, and the window index of each row (-1 outside,
    -2 in the probationary period), exactly as ``calcSweepScore`` assigns them."""
    max_tp = scaled_sigmoid(-1.0)
    probation = probation_rows(n)
    sweep = np.empty(n)
    where = np.full(n, -1, dtype=np.int64)
    prev_right: int | None = None
    prev_width = 0.0
    k = 0
    for i in range(n):
        if k < len(wins) and wins[k][0] <= i <= wins[k][1]:
            left, right = wins[k]
            width = float(right - left + 1)
            sweep[i] = scaled_sigmoid(-(right - i + 1) / width) * cost["tpWeight"] / max_tp
            where[i] = k
            if i == right:
                prev_right, prev_width = right, width
                k += 1
        else:
            # before any window: -1, as if very far from one
            s = -1.0 if prev_right is None else scaled_sigmoid(abs(prev_right - i) / (prev_width - 1.0))
            sweep[i] = s * cost["fpWeight"]
        if i < probation:
            where[i] = -2
    return sweep, where


def score_file(
    t: np.ndarray,
    detections: np.ndarray,
    windows: list[tuple[float, float]],
    cost: dict[str, float] = STANDARD,
) -> FileScore:
    """NAB score of one file; ``detections`` is a boolean flag per row of ``t``."""
    n = len(t)
    wins = window_rows(t, windows)
    sweep, where = row_scores(n, wins, cost)
    scorable = [k for k in range(len(wins)) if np.any(where == k)]
    best = {k: -cost["fnWeight"] for k in scorable}
    out = FileScore(0.0)
    for i in np.flatnonzero(detections):
        w = where[i]
        if w == -2:
            continue
        if w == -1:
            out.fp += 1
            out.fp_penalty += float(sweep[i])
        else:
            best[int(w)] = max(best[int(w)], float(sweep[i]))
    out.windows = [best[k] for k in scorable]
    out.tp = sum(v > -cost["fnWeight"] for v in out.windows)
    out.fn = len(out.windows) - out.tp
    out.score = out.fp_penalty + sum(out.windows)
    return out


def null_score(t: np.ndarray, windows: list[tuple[float, float]], cost: dict[str, float] = STANDARD) -> float:
    """Raw score of a detector that never fires."""
    return score_file(t, np.zeros(len(t), dtype=bool), windows, cost).score


def normalise(raw: float, null: float, n_windows: int, cost: dict[str, float] = STANDARD) -> float:
    """NAB's normalised score: 0 for the null detector, 100 for a perfect one."""
    perfect = n_windows * cost["tpWeight"]
    return 100.0 * (raw - null) / (perfect - null)


def onset_rows(alarm: np.ndarray) -> np.ndarray:
    """Flags of the rows where an alarm starts (on after off): edged's detections."""
    a = np.asarray(alarm, dtype=bool)
    return a & ~np.concatenate(([False], a[:-1]))
