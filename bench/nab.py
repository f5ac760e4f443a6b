"""NAB scoring (standard profile) of alarm onsets against the labelled anomaly windows.

The scoring itself is :mod:`bench.nab_score` (NAB's sweeper, ported row for row). The rules stated in ``../shared/data/nab_machine_temperature/labels.json`` (taken
from NAB's ``sweeper.py``): rows in the probationary period are not scored; the first detection
inside a window scores ``tpWeight * S(y)`` with ``y`` its relative position (-1 at the window's
left edge, 0 at its right edge) and ``S(y) = 2 * sigmoid(-5 y) - 1``; a detection outside every
window scores ``fpWeight * S(y)`` with ``y`` its distance past the preceding window's right edge
in window lengths (``-fpWeight`` when no window precedes it); each missed window costs
``fnWeight``. A detection here is an alarm *onset*: a prediction whose ``anomaly.alarm`` is true
after one that was not, which is exactly when edged publishes an anomaly alert.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.nab_score import score_file


def _ts(s: str) -> float:
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC).timestamp()


def load_windows(labels_json: Path) -> tuple[list[tuple[float, float]], dict[str, Any]]:
    lab = json.loads(labels_json.read_text())
    return [(_ts(a), _ts(b)) for a, b in lab["anomaly_windows"]], lab["scoring_profiles"]


def onsets(predictions: list[dict[str, Any]], task: str) -> tuple[np.ndarray, np.ndarray]:
    """Window end times of all predictions of ``task`` and the indices of alarm onsets."""
    preds = [p for p in predictions if p["task"] == task and "anomaly" in p]
    ts = np.array([p["ts"] for p in preds])
    alarm = np.array([p["anomaly"]["alarm"] for p in preds], dtype=bool)
    rising = alarm & ~np.concatenate(([False], alarm[:-1]))
    return ts, np.flatnonzero(rising)


def score(
    row_ts: np.ndarray,
    detections_ts: np.ndarray,
    windows: list[tuple[float, float]],
    profile: dict[str, float],
    probation_rows: int | None = None,
) -> dict[str, Any]:
    """Raw NAB score of ``detections_ts`` over a file whose rows are at ``row_ts``, by NAB's own
    rules (:mod:`bench.nab_score`; ``probation_rows`` is NAB's and the argument is ignored)."""
    flags = np.zeros(len(row_ts), dtype=bool)
    flags[np.searchsorted(row_ts, detections_ts)] = True
    wins = [
        (float(row_ts[np.searchsorted(row_ts, a)]), float(row_ts[np.searchsorted(row_ts, b)]))
        for a, b in windows
    ]
    s = score_file(row_ts, flags, wins, profile)
    return {
        "score": round(s.score, 4),
        "windows_detected": s.tp,
        "per_window": [round(w, 4) if w > -profile["fnWeight"] else None for w in s.windows],
        "false_positives": s.fp,
        "fp_penalty": round(s.fp_penalty, 4),
    }
