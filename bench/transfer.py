"""The goal table of issue 10: does a model carry over, and what does it cost?

    python -m bench.transfer [--models hoeffding_tree,gaussian_nb,...] [--markdown]

Everything runs through ``edged.replay`` with the shipped examples, the same code path as
``edged replay -c examples/cwru.toml ...``:

* frozen transfer: ``replay --save`` on ``cwru_dev`` (prequential, with the accuracy after each
  class's first window, which no model can get right), then ``replay --from-state --no-learn`` on
  ``sizes_021_0hp`` and each ``loads_007_*hp`` file;
* learning on: BasicMotions train then test stream (test-stream accuracy), and the cold start
  (the train stream from a fresh model);
* per recording, whether a defect line stands out of the envelope spectrum at all (the
  ``lines`` features), i.e. whether envelope analysis can work on it (Smith & Randall 2015);
* microseconds per window of the CWRU feature extraction, the example's sets against the
  ``envelope`` set used before.

With ``--models`` the CWRU rows repeat per learner (the learner sweep in docs/learning.md).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from edged.config import Config, parse
from edged.replay import ReplayError, replay

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
CWRU = REPO / "examples" / "cwru.toml"
BASIC = REPO / "examples" / "basic_motions.toml"
DEV = DATA / "cwru_dev" / "stream.csv.gz"
TRANSFER = {
    "sizes_021_0hp": DATA / "cwru_transfer" / "sizes_021_0hp.csv.gz",
    **{f"loads_007_{h}hp": DATA / "cwru_transfer" / f"loads_007_{h}hp.csv.gz" for h in (1, 2, 3)},
}
GOALS = {"sizes_021_0hp": 0.9, "loads_007_1hp": 0.97, "loads_007_2hp": 0.97, "loads_007_3hp": 0.97}
LINE_DB = 10.0  # a fundamental this far over its background is a line; below it, no defect shows
EXPECTED = {"inner_race": "bpfi", "outer_race": "bpfo", "ball": "bsf"}


def verdict(label: str, line_db: float, family: str) -> str:
    """What envelope analysis can say about a recording of class ``label``."""
    if label not in EXPECTED:
        return "no defect line (as a healthy bearing should)" if line_db < LINE_DB else "a defect line on it"
    if line_db < LINE_DB:
        return "no defect line: not diagnosable by envelope analysis"
    if family != EXPECTED[label]:
        return f"a {family.upper()} line, not {EXPECTED[label].upper()}: not diagnosable by envelope analysis"
    return f"diagnosable: its {EXPECTED[label].upper()} line dominates"


def _config(path: Path, state: Path, task: str, **over: Any) -> Config:
    raw = tomllib.loads(path.read_text())
    raw = copy.deepcopy(raw)
    raw["state"]["dir"] = str(state)
    for k, v in over.items():
        raw["tasks"][task][k] = v
    return parse(raw, str(path), path.resolve().parent)


def after_first(task_rep: dict[str, Any]) -> float:
    """Accuracy without each class's first window (never right: the class was not known yet)."""
    n = task_rep["labelled"]
    k = len(task_rep["class_counts"])
    correct = round(task_rep["accuracy"] * n)
    return correct / (n - k) if n > k else float("nan")


def cwru_rows(classifier: dict[str, Any] | None) -> dict[str, Any]:
    """Dev prequential, then each transfer file frozen, for the example (or another learner)."""
    with tempfile.TemporaryDirectory() as tmp:
        over = {"classifier": classifier} if classifier else {}
        cfg = _config(CWRU, Path(tmp) / "state", "maintenance", **over)
        dev = replay(cfg, [DEV], save=True)["tasks"]["maintenance"]
        row: dict[str, Any] = {
            "model": cfg.tasks["maintenance"].classifier.model,
            "dev": dev["accuracy"],
            "dev_after_first": after_first(dev),
        }
        for name, path in TRANSFER.items():
            try:
                rep = replay(cfg, [path], from_state=True, learn=False)["tasks"]["maintenance"]
            except ReplayError as exc:  # e.g. a learner whose checkpoint the safe unpickler refuses
                row[name] = float("nan")
                row["note"] = str(exc).split(": ")[-1]
                continue
            row[name] = rep["accuracy"]
        return row


def basic_rows() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(BASIC, Path(tmp) / "state", "activity")
        train = DATA / "basic_motions" / "stream_train.csv"
        test = DATA / "basic_motions" / "stream_test.csv"
        rep = replay(cfg, [train, test])
        cold = rep["files"][0]["tasks"]["activity"]
        return {
            "test": rep["files"][1]["tasks"]["activity"]["accuracy"],
            "cold": cold["accuracy"],
            "cold_after_first": after_first(cold),
        }


def _windows(cfg: Config, task: str, path: Path) -> tuple[list[np.ndarray], list[str], Any]:
    """Feature vectors and labels of every window of ``path``, through the task's own DSP."""
    from drivers.replay import read_recording
    from edged.app import build_tasks

    pipe = build_tasks(cfg)[task]
    vecs: list[np.ndarray] = []
    labels: list[str] = []
    for block in read_recording(path):
        cols = pipe.bind(tuple(block.channels))
        codes = None
        if block.labels and task in block.labels:
            raw, vocab = block.labels[task]
            lut = np.array([pipe.code(v) if v else -1 for v in vocab] + [-1], dtype=np.int32)
            codes = lut[np.where(raw >= 0, raw, len(vocab))]
        for win in pipe.windower.push(block.t, block.x, cols, codes):
            vecs.append(pipe.extractor.compute(win.data[: pipe.extractor.rows]).copy())
            labels.append(pipe.vocab[win.label] if win.label >= 0 else "")
    return vecs, labels, pipe.extractor


def diagnosable() -> list[dict[str, Any]]:
    """Per recording: the median strongest defect fundamental over its background (dB), per channel."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(CWRU, Path(tmp) / "state", "maintenance")
        for name, path in {"cwru_dev": DEV, **TRANSFER}.items():
            vecs, labels, fx = _windows(cfg, "maintenance", path)
            names = list(fx.names)
            x = np.array(vecs)
            y = np.array(labels)
            for label in sorted(set(labels) - {""}):
                rec: dict[str, Any] = {"file": name, "label": label}
                for ch in fx.channels:
                    col = names.index(f"{ch}.line_max")
                    rec[ch] = float(np.median(x[y == label, col]))
                    dom = [f"{ch}.dom_bpfo", f"{ch}.dom_bpfi", f"{ch}.dom_bsf"]
                    shares = np.median(x[y == label][:, [names.index(d) for d in dom]], axis=0)
                    rec[f"{ch}_family"] = ("bpfo", "bpfi", "bsf")[int(np.argmax(shares))]
                rec["lines"] = max(rec[ch] for ch in fx.channels) >= LINE_DB
                out.append(rec)
    return out


def us_per_window(features: list[str], repeat: int = 300) -> float:
    """Feature extraction time per CWRU window (the extractor only; the band-pass is common)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(CWRU, Path(tmp) / "state", "maintenance", features=features)
        from pipelines.dsp import build_dsp

        t = cfg.tasks["maintenance"]
        fx = build_dsp(t, 12000.0).extractor
        rng = np.random.default_rng(0)
        data = rng.standard_normal((fx.rows, t.window))
        fx.compute(data)  # compile
        t0 = time.perf_counter()
        for _ in range(repeat):
            fx.compute(data)
        return (time.perf_counter() - t0) / repeat * 1e6


def main() -> None:
    from edged import logs

    logs.configure("error")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models", default="", help="comma-separated learners for the CWRU rows (default: the example's)"
    )
    ap.add_argument("--skip-basic", action="store_true")
    a = ap.parse_args()
    models: list[dict[str, Any] | None] = [{"model": m} for m in a.models.split(",") if m] or [None]
    print("## Frozen transfer (train replay --save on cwru_dev, then --from-state --no-learn)\n")
    cols = ["dev", "dev_after_first", *TRANSFER]
    print("| learner | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for m in models:
        r = cwru_rows(m)
        note = f" ({r['note']})" if "note" in r else ""
        print(f"| {r['model']}{note} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |", flush=True)
    print(f"\ngoals: dev >= 0.99 (after first windows), {GOALS}\n")
    if not a.skip_basic:
        b = basic_rows()
        print("## BasicMotions (learning on)\n")
        print("| test stream (after train) | cold start (train stream) | cold start after first windows |")
        print("|---|---|---|")
        print(f"| {b['test']:.3f} | {b['cold']:.3f} | {b['cold_after_first']:.3f} |\n", flush=True)
    print("## Per recording: does a defect line stand out of the envelope spectrum?\n")
    print(
        f"| file | recording | de (dB) | fe (dB) | dominant family | envelope analysis (a line: >= {LINE_DB:g} dB) |"
    )
    print("|---|---|---|---|---|---|")
    for d in diagnosable():
        best = "de" if d["de"] >= d["fe"] else "fe"
        v = verdict(d["label"], d[best], d[f"{best}_family"])
        print(f"| {d['file']} | {d['label']} | {d['de']:.1f} | {d['fe']:.1f} | {d[best + '_family']} | {v} |")
    with tempfile.TemporaryDirectory() as tmp:
        new = list(_config(CWRU, Path(tmp) / "s", "maintenance").tasks["maintenance"].features)
    old = us_per_window(["envelope"])
    now = us_per_window(new)
    print("\n## Feature extraction per CWRU window (2048 samples, both channels)\n")
    print("| features | µs/window |\n|---|---|")
    print(f"| envelope (before) | {old:.0f} |\n| {' + '.join(new)} (example now) | {now:.0f} |")


if __name__ == "__main__":
    main()
