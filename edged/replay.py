"""``edged replay``: recorded files through the same engine as ``run``, as fast as possible.

Files run in order through the same models, like one long stream (windows do not span two
files). Metrics are prequential: each labelled window is predicted before it is learned.

Three switches turn replay into the factory end of "train on recordings, ship, refine on the
gateway" (issue 10):

* ``from_state``: start from the newest verified checkpoint of each task in the config's state
  directory (read only; a task without one that matches the config's feature layout is an
  error, not a silent fresh start);
* ``learn=False``: predict only; labelled windows are still scored, so accuracy says how a frozen
  model transfers, and ``n_learned`` does not move;
* ``save``: write each task's model as it is at the end as a new version of kind ``replay``
  whose lineage event names the files. It takes the state lock first, so it is refused while
  the service runs on that state directory (as ``model rollback``).

The report's metrics cover this replay only (``run_eval``), also when the model arrived with a
history of its own.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from drivers.replay import RecordingError, read_header, read_recording, text_size
from edged.app import build_engine, build_tasks
from edged.config import Config
from edged.lineage import StateLock, offline_lock, replay_start, save_replayed, task_rate
from edged.seq import SeqStore
from edged.state import StateError, ensure_dir
from pipelines.evaluation import Prequential

RATE_TOLERANCE = 0.02
MAX_KEPT_SCORES = 200_000


class ReplayError(Exception):
    """A file cannot be replayed with this config."""

    exit_code = 1


class ReplayDataError(ReplayError):
    """``--strict``: a recording holds what the config does not know (exit 2, naming the file
    and the column)."""

    exit_code = 2


class _DataCheck:
    """What a recording holds that the config does not know: label columns that name no task,
    classes a task does not allow, columns no sensor or task uses. Warned about and counted in
    the report's ``warnings``; with ``strict`` the first one is a :class:`ReplayDataError`."""

    def __init__(self, cfg: Config, strict: bool) -> None:
        self.strict = strict
        self.tasks = set(cfg.tasks)
        self.classes = {n: set(t.classes) for n, t in cfg.tasks.items() if t.classes}
        self.known = set(cfg.channel_owner())
        for t in cfg.tasks.values():
            self.known.update(t.channels, t.context)
        self.found: dict[tuple[str, str, str], int] = {}

    def _add(self, path: Path, column: str, what: str, n: int) -> None:
        if self.strict:
            raise ReplayDataError(f"{path}: column {column}: {what} (--strict)")
        key = (str(path), column, what)
        self.found[key] = self.found.get(key, 0) + n

    def header(self, path: Path, channels: list[str], labels: dict[str, int]) -> None:
        for task in sorted(set(labels) - self.tasks):
            what = f"names no task (tasks: {', '.join(sorted(self.tasks))}); its labels are ignored"
            self._add(path, f"label.{task}", what, 1)
        for ch in channels:
            if ch not in self.known:
                self._add(path, ch, "no sensor or task uses this column; it is ignored", 1)

    def block(self, path: Path, block: Any) -> None:
        for task, col in (block.labels or {}).items():
            allowed = self.classes.get(task)
            if not allowed:
                continue
            counts = np.bincount(col.codes[col.codes >= 0], minlength=len(col.vocab))
            for name, n in zip(col.vocab, counts, strict=True):
                if n and name not in allowed:
                    what = f"class {name!r} is not one of the task's classes; those samples are unlabelled"
                    self._add(path, f"label.{task}", what, int(n))

    def report(self) -> list[dict[str, Any]]:
        return [
            {"file": f, "column": c, "problem": w, "count": n} for (f, c, w), n in sorted(self.found.items())
        ]


class _Collector:
    """Sink for replay: optionally writes prediction payloads as JSON lines; keeps anomaly stats."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.alerts = 0
        self.scores: dict[str, list[float]] = {}
        self.alarms: dict[str, int] = {}
        self.alarm_flags: dict[str, list[bool]] = {}
        self.times: dict[str, list[float]] = {}
        self.thresholds: dict[str, list[float]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}

    def send(self, topic: str, payload: dict[str, Any], kind: str) -> None:
        if kind == "prediction":
            if self.out is not None:
                self.out.write(json.dumps(payload, separators=(",", ":"), allow_nan=False) + "\n")
            an = payload.get("anomaly")
            if an is not None:
                task = payload["task"]
                kept = self.scores.setdefault(task, [])
                if len(kept) < MAX_KEPT_SCORES:
                    kept.append(an["score"])
                    self.alarm_flags.setdefault(task, []).append(bool(an["alarm"]))
                    self.times.setdefault(task, []).append(payload["ts"])
                    thr = an.get("threshold")
                    self.thresholds.setdefault(task, []).append(math.nan if thr is None else thr)
                self.alarms[task] = self.alarms.get(task, 0) + int(an["alarm"])
        elif kind == "alert":
            self.alerts += 1
            if "event" in payload:
                self.events.setdefault(payload["task"], []).append(payload["event"])


def _metrics(ev: Prequential | None, windows: int) -> dict[str, Any]:
    rep = ev.report() if ev is not None else Prequential().report()
    return {
        "windows": windows,
        "labelled": rep["n"],
        "accuracy": round(rep["accuracy"], 6),
        "macro_f1": round(rep["macro_f1"], 6),
        "kappa": round(rep["kappa"], 6),
        "recent_accuracy": round(rep["recent"]["accuracy"], 6),
        "class_counts": rep["class_counts"],
        "confusion": rep["confusion"],
    }


def _anomaly(scores: list[float], alarms: int) -> dict[str, Any]:
    if not scores:
        return {"scored": 0, "alarms": alarms}
    a = np.asarray(scores)
    q = np.quantile(a, [0.5, 0.9, 0.99])
    return {
        "scored": int(a.size),
        "alarms": alarms,
        "score_p50": round(float(q[0]), 6),
        "score_p90": round(float(q[1]), 6),
        "score_p99": round(float(q[2]), 6),
        "score_max": round(float(a.max()), 6),
    }


def _estimate_rate(t: np.ndarray) -> float | None:
    d = np.diff(t)
    d = d[d > 0]
    return float(1.0 / np.median(d)) if d.size else None


def replay(
    cfg: Config,
    files: Sequence[str | Path],
    predictions: TextIO | None = None,
    chunk_rows: int = 65536,
    progress: bool = False,
    trace: dict[str, Any] | None = None,
    from_state: bool = False,
    learn: bool = True,
    save: bool = False,
    strict: bool = False,
) -> dict[str, Any]:
    """Replay ``files`` in order; returns the report (see DESIGN.md ``replay --json``).

    ``progress`` shows a progress bar on stderr when it is a terminal. A ``trace`` dict is
    filled with what the plots need: per task the correctness of each learned window, model
    events (drift, promotions), anomaly scores and alarms, and where each file starts.
    ``from_state``, ``learn`` and ``save``: see the module docstring; with ``save`` the report
    has ``"saved": {task: {"version", "path"}}``. What the files hold that the config does not
    know is in ``warnings`` (see :class:`_DataCheck`); ``strict`` makes it an error, for headers
    before any file runs."""
    check = _DataCheck(cfg, strict)
    for path in files:
        with contextlib.suppress(OSError, RecordingError):  # reported in the file's turn below
            check.header(Path(path), *read_header(Path(path)))
    lock = _lock_state(cfg) if save else None  # refuse before spending minutes on the replay
    models = _state_models(cfg) if from_state else None
    sink = _Collector(predictions)
    engine = build_engine(cfg, sink, SeqStore(None), wall=lambda t: t, tasks=build_tasks(cfg, models))
    for t in engine.tasks.values():
        t.learning = learn
        t.run_eval = Prequential(recent=t.model.evaluation.recent)
    if trace is not None:
        for t in engine.tasks.values():
            t.trace = []
        trace["file_starts"] = {n: [] for n in engine.tasks}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=sum(text_size(f) for f in files if Path(f).is_file()),
            unit="B",
            unit_scale=True,
            desc="replay",
            file=sys.stderr,
            disable=None,
            leave=False,
        )
    started = time.perf_counter()
    total_samples = 0
    file_reports = []
    for path in files:
        p = Path(path)
        try:
            channels = read_header(p)[0]
        except (OSError, RecordingError) as exc:
            raise ReplayError(str(exc)) from None
        active = {n: t for n, t in engine.tasks.items() if all(c in channels for c in t.channels)}
        if not active:
            raise ReplayError(
                f"{p}: no configured task finds its channels here (file has {channels}); "
                "use a config written for this recording (see examples/)"
            )
        before = {n: t.windows for n, t in engine.tasks.items()}
        scores_before = {n: len(sink.scores.get(n, [])) for n in engine.tasks}
        alarms_before = dict(sink.alarms)
        for t in engine.tasks.values():
            t.reset_stream()  # windows do not span two files
            t.begin_segment()
        samples = 0
        checked = False
        if trace is not None:
            for n, t in engine.tasks.items():
                trace["file_starts"][n].append((len(t.trace or []), p.name))
        try:
            for block in read_recording(p, chunk_rows, progress=bar.update if bar is not None else None):
                if not checked:
                    _check_rates(cfg, p, block.t, active)
                    checked = True
                check.block(p, block)
                engine.ingest(block)
                samples += len(block)
        except RecordingError as exc:
            raise ReplayError(str(exc)) from None
        total_samples += samples
        tasks_rep = {}
        for n, t in engine.tasks.items():
            rep = _metrics(t.segment_eval, t.windows - before[n])
            if t.model.detector is not None:
                rep["anomaly"] = _anomaly(
                    sink.scores.get(n, [])[scores_before[n] :],
                    sink.alarms.get(n, 0) - alarms_before.get(n, 0),
                )
            if n not in active:
                rep["skipped"] = "channels not in file"
            tasks_rep[n] = rep
        file_reports.append({"path": str(p), "samples": samples, "tasks": tasks_rep})
    for t in engine.tasks.values():
        t.end_segment()
    saved = None
    if lock is not None:
        with lock:
            saved = _save_models(cfg, engine.tasks, files, from_state, learn)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    if trace is not None:
        trace["tasks"] = {
            n: {
                "hits": t.trace,
                "events": sink.events.get(n, []),
                "scores": sink.scores.get(n, []),
                "alarms": sink.alarm_flags.get(n, []),
                "times": sink.times.get(n, []),
                "thresholds": sink.thresholds.get(n, []),
                "confusion": (t.run_eval or t.model.evaluation).report()["confusion"],
            }
            for n, t in engine.tasks.items()
        }
    tasks = {}
    for n, t in engine.tasks.items():
        rep = _metrics(t.run_eval, t.windows)
        rep["n_learned"] = t.model.n_learned
        rep["learning"] = learn
        rep["model"] = {
            "algorithm": t.model.algorithm,
            "version": t.model.version,
            "size_bytes": t.model.size_bytes(),
            "reliance": t.model.reliance(),
            "events": [e for e in t.model.events if e["kind"] != "challenger_started"][-20:],
        }
        if t.model.detector is not None:
            rep["anomaly"] = _anomaly(sink.scores.get(n, []), sink.alarms.get(n, 0))
        tasks[n] = rep
    out = {
        "tasks": tasks,
        "samples": total_samples,
        "seconds": round(seconds, 4),
        "samples_per_s": round(total_samples / seconds, 1) if seconds > 0 else None,
        "files": file_reports,
        "counters": dict(sorted(engine.counters.items())),
        "warnings": check.report(),
    }
    if saved is not None:
        out["saved"] = saved
    return out


def _lock_state(cfg: Config) -> StateLock:
    """The state directory's lock, as the service holds it (``--save`` refuses while it runs)."""
    ensure_dir(Path(cfg.state.dir))
    return offline_lock(cfg)


def _state_models(cfg: Config) -> dict[str, Any]:
    try:
        return replay_start(cfg)
    except StateError as exc:
        raise ReplayError(f"--from-state: {exc}") from None


def _save_models(
    cfg: Config, tasks: dict[str, Any], files: Sequence[str | Path], from_state: bool, learn: bool
) -> dict[str, Any]:
    saved = save_replayed(
        cfg,
        {n: t.model for n, t in tasks.items()},
        [str(f) for f in files],
        {n: t.windows for n, t in tasks.items()},
        from_state=from_state,
        learned=learn,
    )
    return {
        v.task: {"version": v.model.version, "n_learned": v.model.n_learned, "path": str(v.path)}
        for v in saved
    }


def _check_rates(cfg: Config, path: Path, t: np.ndarray, active: dict[str, Any]) -> None:
    rate = _estimate_rate(t[: min(len(t), 4096)])
    if rate is None:
        return
    for name in active:
        want = task_rate(cfg, cfg.tasks[name])
        if want is None:  # the sensor takes its rate from the recording
            continue
        if not math.isclose(rate, want, rel_tol=RATE_TOLERANCE):
            sensor = cfg.channel_owner()[cfg.tasks[name].channels[0]]
            raise ReplayError(
                f"{path}: sampled at {rate:.6g} Hz, but task {name!r} reads sensor {sensor!r} "
                f"configured at rate_hz = {want:g}; use a config written for this recording"
            )


def format_report(rep: dict[str, Any]) -> str:
    """Human-readable table of a replay report."""
    lines = [
        f"{rep['samples']} samples in {rep['seconds']:.2f} s ({rep.get('samples_per_s') or 0:,.0f} samples/s)",
        "",
    ]
    header = f"{'task':<14}{'scope':<34}{'windows':>8}{'labelled':>9}{'accuracy':>9}{'macroF1':>9}{'kappa':>8}{'alarms':>8}"
    lines.append(header)
    lines.append("-" * len(header))

    def row(task: str, scope: str, r: dict[str, Any]) -> str:
        alarms = r.get("anomaly", {}).get("alarms", "")
        if r["labelled"]:
            acc, f1, k = f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}", f"{r['kappa']:.3f}"
        else:
            acc = f1 = k = "-"
        return f"{task:<14}{scope[-33:]:<34}{r['windows']:>8}{r['labelled']:>9}{acc:>9}{f1:>9}{k:>8}{alarms!s:>8}"

    for task, r in rep["tasks"].items():
        lines.append(row(task, "all files", r))
        if len(rep["files"]) > 1:
            for f in rep["files"]:
                fr = f["tasks"][task]
                if "skipped" not in fr:
                    lines.append(row("", Path(f["path"]).name, fr))
    for task, sv in rep.get("saved", {}).items():
        lines.append(
            f"saved {task}: version {sv['version']} ({sv['n_learned']} windows learned) -> {sv['path']}"
        )
    return "\n".join(lines)
