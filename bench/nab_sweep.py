"""Sweep the NAB example's anomaly settings and score each with NAB's standard profile.

    python -m bench.nab_sweep

The example config (examples/nab_machine_temperature.toml) was chosen with this; every run goes
through edged's replay code path and bench.nab's scorer.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from bench.nab import load_windows, onsets, score
from edged.config import parse
from edged.replay import replay

REPO = Path(__file__).resolve().parent.parent
D = REPO.parent / "shared" / "data" / "nab_machine_temperature"
EXAMPLE = REPO / "examples" / "nab_machine_temperature.toml"


def run(task_over: dict[str, Any], anomaly_over: dict[str, Any]) -> tuple[dict[str, Any], int]:
    base = tomllib.loads(EXAMPLE.read_text())
    raw = copy.deepcopy(base)
    t = raw["tasks"]["maintenance"]
    t.update(task_over)
    t["anomaly"].update(anomaly_over)
    cfg = parse(raw, str(EXAMPLE), EXAMPLE.parent)
    buf = io.StringIO()
    rep = replay(cfg, [D / "stream.csv"], buf)
    preds = [json.loads(x) for x in buf.getvalue().splitlines()]
    wins, profiles = load_windows(D / "labels.json")
    rows = np.loadtxt(D / "stream.csv", delimiter=",", skiprows=1, usecols=0)
    probation = min(int(0.15 * len(rows)), int(0.15 * 5000))
    ts, on = onsets(preds, "maintenance")
    return score(rows, ts[on], wins, profiles["standard"]["CostMatrix"], probation), rep["tasks"][
        "maintenance"
    ]["anomaly"]["alarms"]


def main() -> None:
    from edged import logs

    logs.configure("error")
    grid = itertools.product([4, 6, 8, 16], [1e-3, 1e-4], [36, 100])
    for m, tail, hold in grid:
        r, alarms = run({}, {"m": m, "tail": tail, "hold": hold})
        print(
            f"m={m:2} tail={tail:g} hold={hold:3}: score={r['score']:7.3f} "
            f"windows={r['windows_detected']} fp={r['false_positives']} alarms={alarms}",
            flush=True,
        )


if __name__ == "__main__":
    main()
