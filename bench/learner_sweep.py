"""Choose a task's window and learner by measurement: replay files under a grid of settings.

    python -m bench.learner_sweep examples/basic_motions.toml activity \\
        tests/data/basic_motions/stream_train.csv tests/data/basic_motions/stream_test.csv

Prints, per setting, the prequential accuracy on each file (the first file is the cold start,
the later ones show what the model does once it has learned). Everything runs through
``edged.replay``, the same code path as the service.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import tomllib
from pathlib import Path
from typing import Any

from edged.config import parse
from edged.replay import replay

MODELS: list[dict[str, Any]] = [
    {"model": "hoeffding_tree", "grace_period": 10, "delta": 0.01},
    {"model": "hoeffding_tree"},
    {"model": "gaussian_nb"},
    {"model": "logistic", "lr": 0.1},
    {"model": "knn", "n_neighbors": 1, "window_size": 1000},
    {"model": "knn", "n_neighbors": 3, "window_size": 1000},
    {"model": "arf", "n_models": 10},
]


def sweep(config: Path, task: str, files: list[str], windows: list[tuple[int, int]]) -> list[dict[str, Any]]:
    base = tomllib.loads(config.read_text())
    rows = []
    for (w, h), m in itertools.product(windows, MODELS):
        raw = copy.deepcopy(base)
        t = raw["tasks"][task]
        t["window"], t["hop"], t["classifier"] = w, h, m
        cfg = parse(raw, str(config), config.resolve().parent)
        rep = replay(cfg, files)
        rows.append(
            {
                "window": w,
                "hop": h,
                "model": m,
                "files": [f["tasks"][task]["accuracy"] for f in rep["files"]],
                "all": rep["tasks"][task]["accuracy"],
            }
        )
        name = m["model"] + "".join(f" {k}={v}" for k, v in m.items() if k != "model")
        print(
            f"window {w:>5} hop {h:>5}  {name:<42}" + "".join(f"{a:>8.3f}" for a in rows[-1]["files"]),
            flush=True,
        )
    return rows


def main() -> None:
    from edged import logs

    logs.configure("error")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("task")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--windows", default="", help="w:h,w:h,... (default: the config's)")
    a = ap.parse_args()
    if a.windows:
        windows = [tuple(int(v) for v in p.split(":")) for p in a.windows.split(",")]
    else:
        t = tomllib.loads(a.config.read_text())["tasks"][a.task]
        windows = [(t["window"], t["hop"])]
    sweep(a.config, a.task, a.files, windows)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
