"""Health computed from what the service observes now, never remembered from start-up.

One verdict per sensor and per task, evaluated by the main loop (:meth:`HealthModel.evaluate`)
from facts the loop can check at that moment:

* a **sensor** is ``ok``; ``degraded`` (reads fail, or the driver reports a data-quality fault);
  ``lost`` (10 failed reads in a row, or its polling thread ended while the service runs); or
  ``no_data`` (its reads succeed but no samples arrived for ``ops.no_data_s``, or for ten poll
  periods or three sample periods if that is longer);
* a **task** is ``ok``; ``no_data`` (no window completed for ``ops.no_data_s`` plus one window's
  length: the sensors that feed it deliver nothing); or ``learning_stalled`` (labels arrive, yet
  the model learned nothing for ``ops.learning_stall_s``: classes that match nothing, labels
  outside the windows kept, ...).

The :class:`Report` drives the retained ``<prefix>/status`` message (republished whenever a
verdict changes), the status file and ``edged status``. The service is healthy when every
sensor and task is ``ok``; each other verdict carries the reason, for the operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

SENSOR_STATES = ("ok", "degraded", "lost", "no_data")
TASK_STATES = ("ok", "no_data", "learning_stalled")


class SensorView(Protocol):
    """What the health model reads from a :class:`~edged.runtime.SensorRunner`."""

    name: str
    health: str
    reason: str
    poll_s: float
    last_block: float | None

    def died(self) -> bool: ...


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "reason": self.reason} if self.reason else {"state": self.state}


@dataclass(frozen=True)
class Report:
    """Health of every sensor and task at one moment."""

    sensors: dict[str, Verdict] = field(default_factory=dict)
    tasks: dict[str, Verdict] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(v.state == "ok" for v in (*self.sensors.values(), *self.tasks.values()))

    def problems(self) -> list[str]:
        """One line per sensor or task that is not ``ok``: what and why."""
        out = [f"sensor {n} {v.state}: {v.reason}" for n, v in self.sensors.items() if v.state != "ok"]
        out += [f"task {n} {v.state}: {v.reason}" for n, v in self.tasks.items() if v.state != "ok"]
        return out

    def key(self) -> tuple[tuple[str, str], ...]:
        """What identifies a change worth republishing (the states, not the reasons' wording)."""
        return tuple(
            [(f"s:{n}", v.state) for n, v in self.sensors.items()]
            + [(f"t:{n}", v.state) for n, v in self.tasks.items()]
        )


@dataclass
class _TaskTrack:
    next_seq: int
    n_learned: int
    since: float  # when the last window completed (or the service started)
    learned_at: float  # when n_learned last grew (or the service started)
    labels_unlearned: int = 0  # labels that arrived since n_learned last grew
    first_unlearned: float | None = None  # when the first of those arrived


class HealthModel:
    """Evaluates :class:`Report` from sensor runners, models and label arrivals.

    ``tasks`` maps a task name to a callable giving its ``(next seq, n_learned)`` now;
    ``window_s`` is the length of one of its windows in seconds; ``sample_gap_s`` the nominal time
    between two samples of a sensor (a sensor read once a minute is not silent after 30 s)."""

    def __init__(
        self,
        sensors: list[SensorView],
        tasks: Mapping[str, Callable[[], tuple[int, int]]],
        window_s: Mapping[str, float],
        no_data_s: float = 30.0,
        stall_s: float = 600.0,
        now: float | None = None,
        sample_gap_s: Mapping[str, float] | None = None,
    ) -> None:
        t0 = time.monotonic() if now is None else now
        self.started = t0
        self.sensors = sensors
        self.task_state = tasks
        self.window_s = dict(window_s)
        self.sample_gap_s = dict(sample_gap_s or {})  # a slow sensor's nominal gap between samples
        self.no_data_s = no_data_s
        self.stall_s = stall_s
        self._tracks = {n: _TaskTrack(*f(), since=t0, learned_at=t0) for n, f in tasks.items()}
        self.report = Report({s.name: Verdict("ok") for s in sensors}, {n: Verdict("ok") for n in tasks})

    def label_arrived(self, task: str, now: float) -> None:
        """A label for ``task`` reached the engine (accepted or not)."""
        tr = self._tracks.get(task)
        if tr is None:
            return
        tr.labels_unlearned += 1
        if tr.first_unlearned is None:
            tr.first_unlearned = now

    def evaluate(self, now: float | None = None) -> Report:
        now = time.monotonic() if now is None else now
        self.report = Report(
            {s.name: self._sensor(s, now) for s in self.sensors},
            {n: self._task(n, f, now) for n, f in self.task_state.items()},
        )
        return self.report

    def _sensor(self, s: SensorView, now: float) -> Verdict:
        if s.died():
            return Verdict("lost", "its polling thread ended")
        if s.health != "ok":
            return Verdict(s.health, s.reason)
        quiet = now - (s.last_block if s.last_block is not None else self.started)
        limit = max(self.no_data_s, 10 * s.poll_s, 3 * self.sample_gap_s.get(s.name, 0.0))
        if quiet > limit:
            what = "since the last block" if s.last_block is not None else "since start"
            return Verdict("no_data", f"reads succeed but no samples for {quiet:.0f} s {what}")
        return Verdict("ok")

    def _task(self, name: str, state: Callable[[], tuple[int, int]], now: float) -> Verdict:
        seq, learned = state()
        tr = self._tracks[name]
        if seq != tr.next_seq:
            tr.next_seq, tr.since = seq, now
        if learned != tr.n_learned:
            tr.n_learned, tr.learned_at = learned, now
            tr.labels_unlearned, tr.first_unlearned = 0, None
        quiet = now - tr.since
        if quiet > self.no_data_s + self.window_s.get(name, 0.0):
            return Verdict("no_data", f"no window completed for {quiet:.0f} s (its sensors deliver nothing)")
        if tr.first_unlearned is not None and now - tr.first_unlearned > self.stall_s:
            return Verdict(
                "learning_stalled",
                f"{tr.labels_unlearned} labels arrived in {now - tr.first_unlearned:.0f} s "
                f"but nothing was learned (n_learned stays {learned})",
            )
        return Verdict("ok")
