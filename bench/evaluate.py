"""Replay the real datasets in ../shared/data with the shipped example configs and write the
results into docs/benchmarks.md (between the ``evaluation`` markers).

    python -m bench.evaluate            # prints the table and updates docs/benchmarks.md
    python -m bench.evaluate --no-write # only prints

Each dataset runs through ``edged replay``'s code path with ``examples/<name>.toml``;
metrics are prequential (every labelled window is predicted before it is learned), one pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.nab import load_windows, onsets, score
from edged.config import load
from edged.replay import replay

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
START, END = "<!-- evaluation:start -->", "<!-- evaluation:end -->"


def basic_motions() -> dict[str, Any]:
    cfg, _ = load(str(REPO / "examples" / "basic_motions.toml"))
    d = DATA / "basic_motions"
    rep = replay(cfg, [d / "stream_train.csv", d / "stream_test.csv"])
    train, test = (f["tasks"]["activity"] for f in rep["files"])
    return {
        "name": "BasicMotions (activity)",
        "rep": rep,
        "rows": [
            ("accuracy, train stream (cold start)", train["accuracy"], ">= 0.9"),
            ("accuracy, test stream", test["accuracy"], ">= 0.975 (goal 1.0)"),
            ("macro-F1, test stream", test["macro_f1"], ""),
        ],
        "model": rep["tasks"]["activity"]["model"],
    }


def cwru() -> dict[str, Any] | None:
    path = REPO / "examples" / "cwru.toml"
    if not path.exists():
        return None
    cfg, _ = load(str(path))
    rep = replay(cfg, [DATA / "cwru_dev" / "stream.csv.gz"])
    task = next(iter(cfg.tasks))
    r = rep["tasks"][task]
    return {
        "name": f"CWRU bearings ({task})",
        "rep": rep,
        "rows": [
            ("accuracy", r["accuracy"], ">= 0.99"),
            ("macro-F1", r["macro_f1"], ">= 0.98"),
        ],
        "model": r["model"],
    }


def nab() -> dict[str, Any]:
    cfg, _ = load(str(REPO / "examples" / "nab_machine_temperature.toml"))
    d = DATA / "nab_machine_temperature"
    buf = io.StringIO()
    rep = replay(cfg, [d / "stream.csv"], buf)
    preds = [json.loads(x) for x in buf.getvalue().splitlines()]
    task = next(iter(cfg.tasks))
    wins, profiles = load_windows(d / "labels.json")
    rows_t = np.loadtxt(d / "stream.csv", delimiter=",", skiprows=1, usecols=0)
    probation = min(int(0.15 * len(rows_t)), int(0.15 * 5000))
    ts, on = onsets(preds, task)
    res = score(rows_t, ts[on], wins, profiles["standard"]["CostMatrix"], probation)
    per = ", ".join("no" if w is None else "yes" for w in res["per_window"])
    return {
        "name": "NAB machine temperature (anomaly)",
        "rep": rep,
        "nab": res,
        "rows": [
            ("anomaly windows flagged (of 4)", res["windows_detected"], "4"),
            (f"flagged per window: {per}", None, ""),
            ("alarm onsets outside the windows (after probation)", res["false_positives"], "few"),
            ("NAB raw score, standard profile", res["score"], "null -4.0, HTM 1.36, perfect ~3.95"),
        ],
        "model": rep["tasks"][task]["model"],
    }


def table(results: list[dict[str, Any]]) -> str:
    out = ["| dataset | measure | edged | goal |", "|---|---|---|---|"]
    for r in results:
        for i, (what, value, goal) in enumerate(r["rows"]):
            v = "" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
            out.append(f"| {r['name'] if i == 0 else ''} | {what} | {v} | {goal} |")
    return "\n".join(out)


def main() -> None:
    from edged import logs

    logs.configure("error")
    ap = argparse.ArgumentParser(
        description="replay the datasets and write the results into docs/benchmarks.md"
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    results = [r for r in (basic_motions(), cwru(), nab()) if r is not None]
    body = table(results)
    notes = []
    for r in results:
        m = r["model"]
        feats = ", ".join(list(m["reliance"].get("features", {}))[:6]) or "n/a"
        notes.append(
            f"- {r['name']}: {m['algorithm']}, final version {m['version']}, "
            f"{m['size_bytes'] / 1024:.0f} KiB; relies most on: {feats}"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    text = (
        f"{START}\nMeasured {stamp} with `python -m bench.evaluate` ({time.perf_counter() - t0:.0f} s, "
        f"one pass, prequential):\n\n{body}\n\n" + "\n".join(notes) + f"\n{END}"
    )
    print(text)
    if not args.no_write:
        readme = REPO / "docs" / "benchmarks.md"
        s = readme.read_text()
        if START in s:
            s = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: text, s, flags=re.S)
        else:
            s += "\n" + text + "\n"
        readme.write_text(s)


if __name__ == "__main__":
    main()
