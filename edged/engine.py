"""The engine: the one code path from sample blocks and labels to outgoing payloads.

``edged run`` and ``edged replay`` both drive an :class:`Engine`; only the sources (drivers
or a file) and the sink (MQTT or a report/JSONL writer) differ. The engine is
single-threaded: the runtime hands it blocks and label messages from its own loop.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from drivers.base import Block
from edged.seq import SeqStore
from pipelines.task import Prediction, TaskPipeline

if TYPE_CHECKING:
    from pipelines.anomaly import Verdict

log = structlog.get_logger("edged.engine")

SCHEMA_PREDICTION = "edged.prediction.v1"
SCHEMA_SUMMARY = "edged.summary.v1"
SCHEMA_ALERT = "edged.alert.v1"
MAX_SCORES_PER_INTERVAL = 4096
MAX_LABEL_SOURCES = 64  # label publishers with a bucket of their own; the rest share one


class Sink(Protocol):
    """Where payloads go: ``topic`` is relative to the device prefix (``prediction/activity``)."""

    def send(self, topic: str, payload: dict[str, Any], kind: str) -> None: ...


# -- incoming labels ---------------------------------------------------------------------------------
_LabelText = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
_Time = Field(allow_inf_nan=False, ge=0, le=1e11)


class _PointLabel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    label: str = _LabelText
    ts: float = _Time


class _RangeLabel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    label: str = _LabelText
    from_: float = Field(alias="from", allow_inf_nan=False, ge=0, le=1e11)
    to: float = _Time


_LABEL = TypeAdapter(_PointLabel | _RangeLabel)


def parse_label(payload: bytes, max_bytes: int) -> tuple[str, float, float, bool]:
    """Validate a label payload; returns (label, lo, hi, is_point) or raises ValueError(reason)."""
    if len(payload) > max_bytes:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        msg = _LABEL.validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "payload"
        raise ValueError(f"{where}: {first['msg']}") from None
    if isinstance(msg, _PointLabel):
        return msg.label, msg.ts, msg.ts, True
    if msg.to < msg.from_:
        raise ValueError("'to' is before 'from'")
    return msg.label, msg.from_, msg.to, False


class _TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.t = rate, burst, burst, -math.inf

    def take(self, now: float) -> bool:
        if self.t == -math.inf:
            self.t = now
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# -- summary aggregates -------------------------------------------------------------------------------
class _ChannelAgg:
    __slots__ = ("hi", "lo", "n", "s", "ss")

    def __init__(self) -> None:
        self.n, self.s, self.ss, self.lo, self.hi = 0, 0.0, 0.0, math.inf, -math.inf

    def add(self, col: np.ndarray) -> None:
        finite = np.isfinite(col)
        good = col if finite.all() else col[finite]
        if good.size:
            self.n += int(good.size)
            self.s += float(good.sum())
            # not np.dot: on long columns it wakes OpenBLAS threads (milliseconds on a busy core)
            self.ss += float(np.square(good).sum())
            self.lo = min(self.lo, float(good.min()))
            self.hi = max(self.hi, float(good.max()))


def _r(v: float) -> float:
    """A statistic as it is: rounding is the summary policy's job (``summary.round_step``), not
    the engine's; a non-finite value (an empty evaluation) becomes 0.0, which JSON can carry."""
    return float(v) if math.isfinite(v) else 0.0


class Engine:
    """Routes blocks to task pipelines, numbers predictions, applies labels, aggregates."""

    def __init__(
        self,
        device_id: str,
        tasks: dict[str, TaskPipeline],
        sink: Sink,
        seq: SeqStore,
        wall: Callable[[float], float],
        label_max_bytes: int = 1024,
        labels_per_s: float = 50.0,
        allowed_classes: dict[str, set[str]] | None = None,
        clip: dict[str, tuple[float, float]] | None = None,
        label_sources: set[str] | None = None,
        alert_min_interval_s: float = 300.0,
    ) -> None:
        self.device_id = device_id
        self.clip = clip or {}  # summary aggregates only: samples clipped to [lo, hi] (edged/sanitize.py)
        self.tasks = tasks
        self.sink = sink
        self.seq = seq
        self.wall = wall
        self.label_max_bytes = label_max_bytes
        self.allowed = allowed_classes or {}
        self.labels_per_s = labels_per_s
        # One bucket per publisher, so a flood from one does not starve the others. The table is
        # bounded: sources beyond MAX_LABEL_SOURCES (names are chosen by publishers) share one.
        self._buckets: dict[str, _TokenBucket] = {}
        self.label_sources = label_sources  # None: any source; else only these (MQTT v5 "source")
        self.alert_min_interval_s = alert_min_interval_s
        self._alert_last: dict[tuple[str, str], tuple[float, int]] = {}
        self.latest: dict[str, float] = {}  # last finite value per channel
        self.counters: Counter[str] = Counter()
        self._alarm_on: dict[str, dict[str, Any]] = {}  # task -> the alarm in progress
        self._reset_interval(time.time())

    # -- samples ---------------------------------------------------------------------------------
    def _sanitise(self, block: Block) -> np.ndarray:
        """Non-finite samples become the channel's last finite value (counted); never NaN downstream."""
        x = block.x
        bad = ~np.isfinite(x)
        if not bad.any():
            return x
        x = x.copy()
        for j in np.flatnonzero(bad.any(axis=0)):
            ch = block.channels[j]
            col = x[:, j]
            m = bad[:, j]
            idx = np.where(m, 0, np.arange(col.shape[0]))
            np.maximum.accumulate(idx, out=idx)
            prev = self.latest.get(ch, 0.0)
            filled = np.where(m & (idx == 0) & m[0], prev, col[idx])
            x[:, j] = filled
            self.counters[f"samples_filled.{ch}"] += int(m.sum())
        return x

    def ingest(self, block: Block) -> int:
        """Process one block; returns the number of predictions emitted."""
        if len(block) == 0:
            return 0
        for j, ch in enumerate(block.channels):
            agg = self._channels.get(ch)
            if agg is None:
                agg = self._channels[ch] = _ChannelAgg()
            agg.add(block.x[:, j] if ch not in self.clip else np.clip(block.x[:, j], *self.clip[ch]))
        x = self._sanitise(block)
        for j, ch in enumerate(block.channels):
            self.latest[ch] = float(x[-1, j])
        self.counters["samples"] += len(block)
        emitted = 0
        for name, task in self.tasks.items():
            cols = task.bind(block.channels)
            if cols is None:
                continue
            codes = self._label_codes(task, block)
            for pred in task.process(block.t, x, cols, codes, self.wall, self.latest):
                self._emit(name, task, pred)
                emitted += 1
            self._label_events(name, task)
            self._model_events(name, task)
        return emitted

    def _model_events(self, name: str, task: TaskPipeline) -> None:
        """Drift and version changes of a task's model become alerts."""
        for ev in task.model.pop_events():
            kind = "drift" if ev["kind"] == "drift" else "model"
            if ev["kind"] == "challenger_started":
                log.info("challenger_started", task=name, **{k: v for k, v in ev.items() if k != "kind"})
                continue
            (log.warning if kind == "drift" else log.info)("model_event", task=name, **ev)
            self.alert(kind, task=name, event=ev)

    def _label_codes(self, task: TaskPipeline, block: Block) -> np.ndarray | None:
        if not block.labels or task.name not in block.labels:
            return None
        allowed = self.allowed.get(task.name)
        return block.labels[task.name].recode(
            lambda v: task.code(v) if v and (not allowed or v in allowed) else -1
        )

    def _emit(self, name: str, task: TaskPipeline, pred: Prediction) -> None:
        payload: dict[str, Any] = {
            "schema": SCHEMA_PREDICTION,
            "device": self.device_id,
            "task": name,
            "ts": round(pred.ts, 6),
            "seq": self.seq.next(name),
            "label": pred.label,
            "scores": {k: round(v, 4) for k, v in sorted(pred.scores.items())},
            "model": {"version": pred.version, "n_learned": pred.n_learned},
        }
        agg = self._tasks[name]
        agg["predictions"] += 1
        if pred.label is not None:  # no prediction yet: counted in "windows", not as a class
            agg["classes"][str(pred.label)] += 1
        if pred.anomaly is not None:
            v = pred.anomaly
            payload["anomaly"] = an = {
                "score": round(v.level, 6),
                "alarm": v.alarm,
                "threshold": round(v.threshold, 6) if math.isfinite(v.threshold) else None,
                "tail": float(f"{v.tail:.4g}"),
            }
            if v.novel:
                an["novel"] = True
            if len(agg["scores"]) < MAX_SCORES_PER_INTERVAL:
                agg["scores"].append(v.level)
            if v.alarm:
                agg["alarms"] += 1
            self._episode(name, payload, v)
        self.sink.send(f"prediction/{name}", payload, "prediction")

    def _episode(self, name: str, payload: dict[str, Any], v: Verdict) -> None:
        """One ``anomaly`` alert at an alarm's onset, one ``anomaly_cleared`` at its end."""
        ep = self._alarm_on.get(name)
        ts = payload["ts"]
        an = payload["anomaly"]
        if v.alarm and ep is None:
            self._alarm_on[name] = {"started": ts, "peak": v.level, "windows": 1}
            self.alert(
                "anomaly",
                task=name,
                ts=ts,
                score=an["score"],
                threshold=an["threshold"],
                tail=an["tail"],
                model=payload["model"],
            )
        elif v.alarm and ep is not None:
            ep["peak"] = max(ep["peak"], v.level)
            ep["windows"] += 1
        elif ep is not None:
            del self._alarm_on[name]
            self.alert(
                "anomaly_cleared",
                task=name,
                ts=ts,
                started=ep["started"],
                duration_s=round(max(0.0, ts - ep["started"]), 6),
                windows=ep["windows"],
                peak_score=round(ep["peak"], 6),
                model=payload["model"],
            )

    def alert(self, kind: str, **fields: Any) -> None:
        """Publish an alert (``kind``: anomaly, sensor, state, ...).

        A repeated problem (the same ``problem``, task and details: a checkpoint that keeps
        failing on a full disk, ...) is sent at most once per ``alert_min_interval_s``; the next
        one sent carries ``suppressed``, the number left out meanwhile (also counted)."""
        if "problem" in fields:
            key = (kind, json.dumps(fields, sort_keys=True, default=str))
            now = time.monotonic()
            last = self._alert_last.get(key)
            if last is not None and now - last[0] < self.alert_min_interval_s:
                self._alert_last[key] = (last[0], last[1] + 1)
                self.counters[f"alerts_suppressed.{kind}"] += 1
                return
            if len(self._alert_last) > 1000:
                self._alert_last.clear()
            self._alert_last[key] = (now, 0)
            if last is not None and last[1]:
                fields["suppressed"] = last[1]
        payload = {
            "schema": SCHEMA_ALERT,
            "kind": kind,
            "device": self.device_id,
            "ts": fields.pop("ts", round(time.time(), 3)),
            **fields,
        }
        self.counters[f"alerts.{kind}"] += 1
        self.sink.send("alert", payload, "alert")

    # -- labels ----------------------------------------------------------------------------------
    def _bucket(self, origin: str) -> _TokenBucket:
        b = self._buckets.get(origin)
        if b is None:
            key = origin if len(self._buckets) < MAX_LABEL_SOURCES else "*"
            b = self._buckets.get(key)
            if b is None:
                b = self._buckets[key] = _TokenBucket(self.labels_per_s, max(1.0, self.labels_per_s * 2))
        return b

    def on_label(self, task_name: str, payload: bytes, now: float, origin: str = "mqtt") -> str:
        """Validate and apply one label message; returns the outcome (``rejected:<reason>`` on
        bad input). Never raises for bad input.

        ``origin`` is ``mqtt`` (a publisher without an identity: MQTT 3.1.1, or v5 without a
        ``source`` user property), ``mqtt:<source>``, or ``simulator`` (the built-in ground truth,
        trusted). MQTT labels are rate-limited per origin, restricted to ``label_sources`` when
        configured, bounded in span and windows, and held back when they would flip the model
        wholesale (see :mod:`pipelines.task`)."""
        if self.label_sources is not None and origin != "simulator":
            src = origin.split(":", 1)[1] if origin.startswith("mqtt:") else None
            if src not in self.label_sources:
                return self._reject(task_name, origin, "not from a configured label source")
        if not self._bucket(origin).take(now):
            return self._reject(task_name, origin, "rate limit exceeded")
        task = self.tasks.get(task_name)
        if task is None:
            return self._reject(task_name, origin, f"no task named {task_name!r}")
        try:
            label, lo, hi, point = parse_label(payload, self.label_max_bytes)
        except ValueError as exc:
            return self._reject(task_name, origin, str(exc))
        allowed = self.allowed.get(task_name)
        if allowed and label not in allowed:
            return self._reject(task_name, origin, f"class {label!r} is not one of {sorted(allowed)}")
        trusted = origin == "simulator"
        if not point and not trusted and hi - lo > task.label_max_span_s:
            return self._reject(
                task_name,
                origin,
                f"range of {hi - lo:.0f} s is longer than the {task.label_max_span_s:g} s a label may span",
            )
        if not point and hi - lo > task.horizon_s * 10:
            return self._reject(
                task_name, origin, f"range of {hi - lo:.0f} s is longer than 10x the label horizon"
            )
        outcome = task.apply_label(label, lo, hi, point, now, source=origin)
        self._label_events(task_name, task)
        self._model_events(task_name, task)
        self.counters[f"labels.{outcome}"] += 1
        self._tasks[task_name]["labels"] += 1
        return outcome

    def _label_events(self, name: str, task: TaskPipeline) -> None:
        """Labels held back as suspicious become alerts."""
        for ev in task.pop_label_events():
            log.warning("labels_held", task=name, **ev)
            self.alert("label", task=name, problem="labels_held", **ev)

    def _reject(self, task: str, origin: str, reason: str) -> str:
        self.counters["labels.rejected"] += 1
        n = self.counters["labels.rejected"]
        if n <= 10 or n % 100 == 0:  # every rejection is counted; the log is rate-limited
            log.warning("label_rejected", task=task[:64], origin=origin, reason=reason, rejected_total=n)
        return f"rejected:{reason}"

    # -- summaries -------------------------------------------------------------------------------
    def _reset_interval(self, ts: float | None) -> None:
        self._interval_start = ts
        self._channels: dict[str, _ChannelAgg] = {}
        self._tasks: dict[str, dict[str, Any]] = {
            n: {"predictions": 0, "classes": Counter(), "scores": [], "alarms": 0, "labels": 0}
            for n in self.tasks
        }

    def summary(self, ts_end: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Sanitised aggregates since the previous summary (and start a new interval)."""
        channels = {}
        for ch, a in sorted(self._channels.items()):
            if a.n == 0:
                continue
            mean = a.s / a.n
            var = max(0.0, a.ss / a.n - mean * mean)
            channels[ch] = {
                "count": a.n,
                "mean": _r(mean),
                "std": _r(math.sqrt(var)),
                "min": _r(a.lo),
                "max": _r(a.hi),
            }
        tasks = {}
        for name, agg in self._tasks.items():
            model = self.tasks[name].model
            ev = model.evaluation.report()
            entry: dict[str, Any] = {
                "windows": agg["predictions"],
                "predicted": dict(sorted(agg["classes"].items())),
                "labels": agg["labels"],
                "model": {"version": model.version, "n_learned": model.n_learned},
                "prequential": {
                    "n": ev["n"],
                    "accuracy": _r(ev["accuracy"]),
                    "macro_f1": _r(ev["macro_f1"]),
                    "kappa": _r(ev["kappa"]),
                    "recent_accuracy": _r(ev["recent"]["accuracy"]),
                    "recent_macro_f1": _r(ev["recent"]["macro_f1"]),
                    "class_counts": ev["class_counts"],
                },
            }
            if model.detector is not None:
                scores = np.asarray(agg["scores"])
                entry["anomaly"] = {"alarms": agg["alarms"]}
                if scores.size:
                    q = np.quantile(scores, [0.5, 0.9, 0.99])
                    entry["anomaly"].update(
                        p50=_r(q[0]), p90=_r(q[1]), p99=_r(q[2]), max=_r(float(scores.max()))
                    )
            tasks[name] = entry
        payload = {
            "schema": SCHEMA_SUMMARY,
            "device": self.device_id,
            "from": round(self._interval_start, 3) if self._interval_start is not None else None,
            "to": round(ts_end, 3),
            "channels": channels,
            "tasks": tasks,
            "counters": dict(sorted(self.counters.items())),
            **(extra or {}),
        }
        self._reset_interval(ts_end)
        return payload
