"""NAB scoring (standard profile) of alarm onsets against the labelled anomaly windows.

Implements the rules stated in ``../shared/data/nab_machine_temperature/labels.json`` (taken
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
import math
from pathlib import Path
from typing import Any

import numpy as np


def _sigmoid_scaled(y: float) -> float:
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


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
    probation_rows: int,
) -> dict[str, Any]:
    """Raw NAB score of ``detections_ts`` over a file whose rows are at ``row_ts``."""
    idx = np.searchsorted(row_ts, detections_ts)  # row index of each detection
    wins = [
        (int(np.searchsorted(row_ts, a)), int(np.searchsorted(row_ts, b, "right")) - 1) for a, b in windows
    ]
    total = 0.0
    detected = [None] * len(wins)
    fps: list[dict[str, Any]] = []
    for i in idx:
        if i < probation_rows:
            continue
        inside = next((k for k, (a, b) in enumerate(wins) if a <= i <= b), None)
        if inside is not None:
            a, b = wins[inside]
            if detected[inside] is None:
                y = (i - b) / max(1, b - a)
                detected[inside] = {"row": int(i), "score": profile["tpWeight"] * _sigmoid_scaled(y)}
            continue
        prev = [w for w in wins if w[1] < i]
        if prev:
            a, b = prev[-1]
            s = profile["fpWeight"] * _sigmoid_scaled((i - b) / max(1, b - a))
        else:
            s = -profile["fpWeight"]
        fps.append({"row": int(i), "score": s})
        total += s
    for d in detected:
        total += d["score"] if d is not None else -profile["fnWeight"]
    return {
        "score": round(total, 4),
        "windows_detected": sum(d is not None for d in detected),
        "per_window": [d and {"row": d["row"], "score": round(d["score"], 4)} for d in detected],
        "false_positives": len(fps),
        "fp_penalty": round(sum(f["score"] for f in fps), 4),
    }
