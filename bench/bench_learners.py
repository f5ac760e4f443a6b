"""Learner cost per window: river's GaussianNB and StandardScaler | SoftmaxRegression vs the fast
learners of :mod:`pipelines.fastlearn`, on the features edged computes (issue 11).

    .venv/bin/python -m bench.bench_learners            # table
    .venv/bin/python -m bench.bench_learners --json     # one JSON object

The feature vectors are captured first (not timed) from an ``edged replay`` of each stream with
the example config: BasicMotions train + test (``examples/basic_motions.toml``), and the CWRU dev
stream of ../shared/data (``examples/cwru.toml``, hop 512; the test excerpt when the shared
data is not there). Then, per learner, a fresh model runs the stream test-then-train (predict,
then learn each window) and the time per window is the mean over the stream; A and B alternate
(A B A B ...) and each figure is the median of ``--repeats`` passes, so the ratios come from the
same run on the same machine.

Variants, for each model family:

* ``river``: the river estimator on the dict of features (what ``gaussian_nb``/``logistic`` do);
* ``fast dict``: the fast learner through river's interface (dicts in, dicts out);
* ``fast array``: the fast learner on the feature vector (``predict_proba_array``/``learn_array``);
* ``task river`` / ``task fast``: ``TaskModel.predict`` + ``learn`` as the service calls them,
  from the window's :class:`~pipelines.fastpath.FeatureVector` (building the dict, for river,
  is part of the cost there, as in the service).

The agreement of the labels predicted by river and by the fast array path is printed too.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"

Row = tuple[np.ndarray, tuple[str, ...], str]


def capture(config: str, files: list[Path], over: dict[str, Any]) -> list[Row]:
    """(feature vector, names, label) of each labelled window of an edged replay, in order."""
    from edged.config import parse
    from edged.replay import replay
    from pipelines.learners import TaskModel

    raw = tomllib.loads((REPO / config).read_text())
    task = next(iter(raw["tasks"]))
    raw["tasks"][task].update(over, classifier={"model": "fast_gnb"})
    cfg = parse(raw, config, (REPO / config).parent)
    rows: list[Row] = []
    original = TaskModel.learn

    def keep(self: TaskModel, x: Any, y: str, y_pred: str | None) -> None:
        rows.append((x.vec.copy(), x.names, y))
        original(self, x, y, y_pred)

    TaskModel.learn = keep  # type: ignore[method-assign]
    try:
        replay(cfg, files)
    finally:
        TaskModel.learn = original  # type: ignore[method-assign]
    return rows


def streams() -> dict[str, list[Row]]:
    cwru = SHARED / "cwru_dev" / "stream.csv.gz"
    if not cwru.exists():
        cwru = REPO / "tests" / "data" / "cwru" / "excerpt.csv.gz"
    bm = REPO / "tests" / "data" / "basic_motions"
    return {
        "basic_motions": capture(
            "examples/basic_motions.toml", [bm / "stream_train.csv", bm / "stream_test.csv"], {}
        ),
        f"cwru ({cwru.parent.name})": capture("examples/cwru.toml", [cwru], {"hop": 512}),
    }


# -- one pass of a stream, test-then-train; returns (seconds per window, predicted labels) ------------
def _label(proba: Any) -> Any:
    return max(proba, key=proba.__getitem__) if proba else None


def run_dict(model: Any, rows: list[Row], dicts: list[dict[str, float]]) -> tuple[float, list[Any]]:
    out = []
    t0 = time.perf_counter()
    for (_, _, y), x in zip(rows, dicts, strict=True):
        out.append(_label(model.predict_proba_one(x)))
        model.learn_one(x, y)
    return (time.perf_counter() - t0) / len(rows), out


def run_array(model: Any, rows: list[Row]) -> tuple[float, list[Any]]:
    out = []
    model.bind(rows[0][1])
    classes = model.classes
    t0 = time.perf_counter()
    for vec, _, y in rows:
        p = model.predict_proba_array(vec)
        out.append(classes[int(np.argmax(p))] if len(p) else None)
        model.learn_array(vec, y)
    return (time.perf_counter() - t0) / len(rows), out


def run_task(params: Any, rows: list[Row]) -> tuple[float, list[Any]]:
    from pipelines.fastpath import FeatureVector, vector_to_dict
    from pipelines.learners import LifecycleParams, TaskModel

    tm = TaskModel("t", params, lifecycle=LifecycleParams(drift_detector="none"))
    names = rows[0][1]

    def to_dict(v: np.ndarray) -> dict[str, float]:
        return vector_to_dict(v, names)

    out = []
    t0 = time.perf_counter()
    for vec, _, y in rows:
        fv = FeatureVector(vec, names, to_dict)  # a new one per window, as the pipeline makes
        label, _ = tm.predict(fv)
        out.append(label)
        tm.learn(fv, y, label)
    return (time.perf_counter() - t0) / len(rows), out


def variants(rows: list[Row]) -> dict[str, dict[str, Callable[[], tuple[float, list[Any]]]]]:
    from river import linear_model, naive_bayes, optim, preprocessing

    from pipelines.fastlearn import FastGaussianNB, FastSoftmax
    from pipelines.fastpath import vector_to_dict
    from pipelines.learners import (
        FastGaussianNBParams,
        FastSoftmaxParams,
        GaussianNBParams,
        LogisticParams,
    )

    dicts = [vector_to_dict(v, n) for v, n, _ in rows]
    lr = 0.05  # edged's `logistic` default
    return {
        "gaussian_nb": {
            "river": lambda: run_dict(naive_bayes.GaussianNB(), rows, dicts),
            "fast dict": lambda: run_dict(FastGaussianNB(), rows, dicts),
            "fast array": lambda: run_array(FastGaussianNB(), rows),
            "task river": lambda: run_task(GaussianNBParams(model="gaussian_nb"), rows),
            "task fast": lambda: run_task(FastGaussianNBParams(model="fast_gnb"), rows),
        },
        "softmax": {
            "river": lambda: run_dict(
                preprocessing.StandardScaler() | linear_model.SoftmaxRegression(optimizer=optim.SGD(lr)),
                rows,
                dicts,
            ),
            "fast dict": lambda: run_dict(FastSoftmax(lr=lr), rows, dicts),
            "fast array": lambda: run_array(FastSoftmax(lr=lr), rows),
            "task river": lambda: run_task(LogisticParams(model="logistic", lr=lr), rows),
            "task fast": lambda: run_task(FastSoftmaxParams(model="fast_softmax", lr=lr), rows),
        },
    }


def bench(repeats: int) -> dict[str, Any]:
    data = streams()
    report: dict[str, Any] = {}
    for name, rows in data.items():
        # compile the kernels (and warm river) outside the timed passes
        for runs in variants(rows[:20]).values():
            for fn in runs.values():
                fn()
        per: dict[str, Any] = {"windows": len(rows), "features": len(rows[0][1])}
        for family, runs in variants(rows).items():
            times: dict[str, list[float]] = {k: [] for k in runs}
            labels: dict[str, list[Any]] = {}
            for _ in range(repeats):  # A B C ... A B C ...: every variant sees the same machine load
                for k, fn in runs.items():
                    s, out = fn()
                    times[k].append(s)
                    labels[k] = out
            us = {k: statistics.median(v) * 1e6 for k, v in times.items()}
            same = np.mean([a == b for a, b in zip(labels["river"], labels["fast array"], strict=True)])
            per[family] = {
                "us_per_window": {k: round(v, 2) for k, v in us.items()},
                "ratio_river_over_fast_array": round(us["river"] / us["fast array"], 1),
                "ratio_river_over_fast_dict": round(us["river"] / us["fast dict"], 1),
                "ratio_task_river_over_task_fast": round(us["task river"] / us["task fast"], 1),
                "agreement": round(float(same), 4),
            }
        report[name] = per
    return report


def main() -> None:
    from edged import logs

    logs.configure("error")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rep = bench(a.repeats)
    if a.json:
        print(json.dumps(rep))
        return
    for stream, per in rep.items():
        print(f"{stream}: {per['windows']} windows, {per['features']} features (µs per predict + learn)")
        for family in ("gaussian_nb", "softmax"):
            r = per[family]
            cells = "  ".join(f"{k} {v:8.2f}" for k, v in r["us_per_window"].items())
            print(f"  {family:<12} {cells}")
            print(
                f"  {'':<12} river / fast array {r['ratio_river_over_fast_array']}x, "
                f"river / fast dict {r['ratio_river_over_fast_dict']}x, "
                f"task river / task fast {r['ratio_task_river_over_task_fast']}x, "
                f"labels the same {100 * r['agreement']:.1f} %"
            )
    print(json.dumps(copy.deepcopy(rep)))


if __name__ == "__main__":
    main()
