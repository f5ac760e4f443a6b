"""Prediction ``seq`` counters: per task, increasing by one, never repeated, also across crashes.

:class:`SeqStore` keeps them in a small JSON file (or in memory for replay); :class:`SpoolSeq`,
what the service uses, takes the exact values committed in the spool with each prediction and
keeps the file as a floor for when the spool itself is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from edged.state import atomic_write, canonical

if TYPE_CHECKING:
    from edged.spool import Spool

log = structlog.get_logger("edged.seq")


class SeqStore:
    """Per-task ``seq`` counters that never repeat, also across crashes.

    The file holds, per task, a value no lower than any seq handed out: on a clean stop the
    exact next value, while running a reservation ``reserve`` ahead (written each time the
    counter reaches it). After a crash seq therefore jumps ahead (a visible gap) but never
    repeats. ``path=None`` keeps the counters in memory only (replay).

    An unreadable file (corrupt, truncated, wrong types) is not fatal: it is renamed to
    ``<name>.corrupt-<unix time>``, the finding is kept in ``problems`` (the service reports it as
    a ``state`` alert) and the counters start empty. A state file must never put the service in a
    crash loop; the spool normally holds the exact counters anyway (see ``edged.spool``)."""

    def __init__(self, path: Path | None, reserve: int = 1000) -> None:
        self.path = path
        self.reserve = reserve
        self._next: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self.problems: list[str] = []
        if path is not None and path.exists():
            try:
                raw = json.loads(path.read_text())
                nxt = raw["next"]
                if not isinstance(nxt, dict) or not all(type(v) is int and v >= 0 for v in nxt.values()):
                    raise ValueError("bad counters")
            except (ValueError, KeyError, TypeError, OSError) as exc:
                aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
                with contextlib.suppress(OSError):
                    os.replace(path, aside)
                self.problems.append(
                    f"{path}: unreadable seq counters ({type(exc).__name__}: {exc}); "
                    f"moved aside to {aside.name}"
                )
                return
            self._next = {str(k): int(v) for k, v in nxt.items()}
            self._reserved = dict(self._next)

    def next(self, task: str) -> int:
        n = self._next.get(task, 0)
        self._next[task] = n + 1
        if self.path is not None and n + 1 > self._reserved.get(task, 0):
            self._reserved[task] = n + 1 + self.reserve
            self._write(self._reserved)
        return n

    def peek(self, task: str) -> int:
        return self._next.get(task, 0)

    def _write(self, values: dict[str, int]) -> None:
        assert self.path is not None
        merged = dict(self._reserved)
        merged.update(values)
        atomic_write(self.path, canonical({"next": merged, **self._extra()}))

    def _extra(self) -> dict[str, Any]:
        """More fields for the file (a subclass records what it needs to check the floor)."""
        return {}

    def close(self) -> None:
        """Record the exact next values (clean stop)."""
        if self.path is not None:
            self._reserved = dict(self._next)
            self._write(self._next)


def _floor_mark(path: Path | None) -> int | None:
    """The spool's highest message id recorded in the floor file at its last write, if any."""
    if path is None:
        return None
    try:
        v = json.loads(path.read_text()).get("spool_high_water")
    except (OSError, ValueError, AttributeError):
        return None
    return v if type(v) is int else None


class SpoolSeq(SeqStore):
    """Prediction ``seq`` counters backed by the spool (exact after a crash), with ``seq.json``
    kept as a reservation floor for when the spool file itself is lost.

    Start value per task: the maximum of every durable floor, the spool's counter (committed with
    the last spooled prediction) and the floor file's reservation (>= anything ever handed out), so
    a jump ahead after a crash but never a repeat, also when the spool is lost, replaced by an
    older copy, or lost its WAL tail. A spool behind the floor by more than a crash can explain
    (more than the reservation), or whose highest message id is below the one recorded in the
    floor file, was restored from an older copy: that is reported in ``problems`` (an alert)."""

    def __init__(self, spool: Spool, floor_path: Path | None) -> None:
        super().__init__(floor_path)
        self.spool = spool
        durable = spool.seq_counters()
        sources = {"spool"} if durable else set()
        for task, n in durable.items():
            floor = self._next.get(task, 0)
            if floor > n:
                sources.add("seq.json")
                if floor - n > self.reserve + 1:
                    self.problems.append(
                        f"{spool.path}: seq of task {task!r} is {n} in the spool but {floor} in "
                        f"{floor_path.name if floor_path else 'the floor'}: an older spool was restored "
                        "(or lost its last commits); seq continues from the higher value"
                    )
            self._next[task] = max(n, floor)
            self._reserved[task] = max(self._reserved.get(task, 0), n)
        if self._next and not durable:
            sources.add("seq.json")
        self.source = "+".join(sorted(sources)) or "none"
        mark, high = _floor_mark(floor_path), spool.high_water()
        if mark is not None and high is not None and high < mark and not self.problems:
            self.problems.append(
                f"{spool.path}: the spool's newest message id is {high}, but {mark} was reached before "
                "(seq.json): an older spool was restored, or the spool lost its last commits; seq "
                "continues from the highest floor"
            )

    def _extra(self) -> dict[str, Any]:
        high = self.spool.high_water() if hasattr(self, "spool") else None
        return {"spool_high_water": high} if high is not None else {}

    def next(self, task: str) -> int:
        try:
            n = super().next(task)
        except OSError as exc:  # the floor could not be written (disk full): the spool still counts
            n = self._next[task] - 1
            log.warning("seq_floor_write_failed", task=task, error=str(exc))
        self.spool.note_seq(task, n + 1)
        return n

    def close(self) -> None:
        try:
            super().close()
        except OSError as exc:
            log.warning("seq_floor_write_failed", error=str(exc))
