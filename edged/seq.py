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
from typing import TYPE_CHECKING

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
        atomic_write(self.path, canonical({"next": merged}))

    def close(self) -> None:
        """Record the exact next values (clean stop)."""
        if self.path is not None:
            self._reserved = dict(self._next)
            self._write(self._next)


class SpoolSeq(SeqStore):
    """Prediction ``seq`` counters backed by the spool (exact after a crash), with ``seq.json``
    kept as a reservation floor for when the spool file itself is lost.

    Start value per task: the spool's counter (committed with the last spooled prediction); if the
    spool has none (first start with a spool, or the spool was lost), the floor file's reservation
    (>= anything ever handed out, so a jump ahead but never a repeat); else 0."""

    def __init__(self, spool: Spool, floor_path: Path | None) -> None:
        super().__init__(floor_path)
        self.spool = spool
        durable = spool.seq_counters()
        self.source = "spool" if durable else ("seq.json" if self._next else "none")
        for task, n in durable.items():
            self._next[task] = n
            self._reserved[task] = max(self._reserved.get(task, 0), n)

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
