"""Disk-backed outgoing spool: every message is on disk before anyone tries to send it.

Why SQLite (stdlib ``sqlite3``, WAL mode) rather than an append-only segment log: the spool needs
(a) atomic commits that tie a message to the ``seq`` counter it consumed, so a ``kill -9`` never
leaves a seq that was handed out but not stored (or the reverse), (b) deletion by priority when
full (oldest summary first, then predictions, alerts last), which a segment log can only do by
rewriting segments, and (c) crash safety that is tested by millions of deployments. WAL mode lets
the commit be a sequential append; ``sync = "normal"`` does not fsync each commit (a process crash
loses nothing, a power cut may lose the last commits of the kernel's writeback window, never
corrupts), ``sync = "full"`` fsyncs every commit (nothing committed is lost to a power cut, at
the price of one flash write per message). No extra dependency.

Layout (one file ``<state dir>/spool.db``):

* ``msg(id, t, prio, kind, topic, payload, retain)``: messages in send order (``id`` is
  AUTOINCREMENT, never reused); ``t`` is the *spool clock*.
* ``seq(task, next)``: the next prediction ``seq`` per task, committed in the same transaction as
  the prediction that used the previous one. At start, seq continues from the highest durable
  floor (this counter or the ``seq.json`` reservation, see :class:`edged.seq.SpoolSeq`): never a
  repeat, also when the spool was replaced by an older copy; after a crash, a gap of at most the
  reservation.
* ``meta(key, value)``: the spool clock and cumulative counters (spooled, sent, dropped per kind
  and reason), so drops are reported even if the process dies before its next summary.

The spool clock is service time: monotonic time accumulated across runs. Ages are measured with
it, so an NTP step of the wall clock (gateways without an RTC boot in 1970) neither expires the
whole spool nor keeps messages forever.

When full (``max_messages`` or ``max_bytes``), the oldest message of the least important kind
present goes first (summary < prediction < alert); a message never displaces a more important
one (it is dropped itself instead). Messages older than ``max_age_s`` expire. Every drop is
counted by kind and reason (``full``, ``expired``, ``unwritable``) and persisted.

When the disk cannot be written (full, I/O error), the spool keeps the service running: alerts,
summaries and other unnumbered messages go to a small in-memory queue (same drop policy) and are
sent after the disk backlog; predictions are dropped and counted, because their ``seq`` could not
be made durable (a visible gap, never a repeated seq after a crash). Every ``retry_s`` the spool
tries the disk again and, on success, moves the memory queue to disk (order is kept).

Thread safety: one connection behind one lock; the engine thread calls :meth:`put`, the MQTT
sender thread calls :meth:`next_batch` and :meth:`ack`. Every call is short and local.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from edged import spooldb

log = structlog.get_logger("edged.spool")

# Drop order when full: the lowest priority goes first. Unknown kinds count as alerts.
PRIORITY = {"summary": 0, "prediction": 1, "alert": 2}
KINDS = tuple(PRIORITY)
EXPIRY_EVERY_S = 30.0  # how often (service time) messages older than max_age_s are looked for


@dataclass(frozen=True, slots=True)
class Msg:
    """One message handed to the sender; ``id`` is None for a message from the memory queue."""

    id: int | None
    kind: str
    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True)
class SpoolLimits:
    max_messages: int = 100_000
    max_bytes: int = 64 << 20
    max_age_s: float = 7 * 86400.0
    memory_max: int = 1000  # messages kept in memory while the disk cannot be written
    sync: str = "normal"  # "normal" | "full"
    retry_s: float = 5.0


_COLUMNS = {
    "msg": ("id", "t", "prio", "kind", "topic", "payload", "retain"),
    "seq": ("task", "next"),
    "meta": ("key", "value"),
}


class _BadContents(Exception):
    """A readable database whose contents this code never writes (wrong types, schema, values)."""


class Spool:
    """The outgoing message spool (see module docstring)."""

    def __init__(
        self, path: Path, limits: SpoolLimits = SpoolLimits(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.limits = limits
        self._mono = clock
        self._lock = threading.Lock()
        self.problems: list[str] = []  # found while opening (corrupt file moved aside, ...)
        self._events: list[dict[str, Any]] = []  # state changes for alerts (taken by the daemon)
        self._db: sqlite3.Connection | None = None
        self._cursor = 0  # highest id handed to the sender in this process
        self._count = 0
        self._bytes = 0
        self.totals: Counter[str] = Counter()  # cumulative, persisted in meta
        self._dirty: set[str] = set()
        self._seq_dirty: dict[str, int] = {}
        self._seq_durable: dict[str, int] = {}
        self._mem: deque[Msg] = deque()
        self._fallback: str | None = None  # why the disk is not used, or None
        self._retry_at = 0.0
        self._pending_acks: list[int] = []
        self._clock_base = 0.0
        self._mono0 = self._mono()
        self._next_expiry = 0.0
        try:
            self._open()
        except (sqlite3.Error, OSError) as exc:  # never fatal: the service runs on with the memory queue
            self._close_db()
            self._enter_fallback(exc, opening=True)

    # -- opening -------------------------------------------------------------------------------------
    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._db = spooldb.connect(self.path, self.limits.sync)
            self._load()
        except _BadContents as exc:  # a valid database with contents this code never writes
            self._close_db()
            self._replace_corrupt(f"bad contents: {exc}")
        except sqlite3.OperationalError:
            self._close_db()
            raise  # disk full, permissions, locked: not corruption; handled by the caller
        except sqlite3.DatabaseError as exc:  # "file is not a database", malformed, failed check
            self._close_db()
            self._replace_corrupt(str(exc))
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)

    def _replace_corrupt(self, why: str) -> None:
        aside = spooldb.move_aside(self.path)
        self.problems.append(
            f"{self.path}: unreadable spool ({why}); moved aside to {aside.name}, "
            "messages in it are lost; starting an empty spool"
        )
        log.error("spool_corrupt", path=str(self.path), error=why, moved_to=str(aside))
        self.totals.clear()
        self._db = spooldb.connect(self.path, self.limits.sync)
        self._load()

    def _load(self) -> None:
        """Read counters and the seq table, checking that every value is what this code writes
        (raises _BadContents otherwise: the file is then moved aside like a corrupt one)."""
        assert self._db is not None
        db = self._db
        for table, cols in _COLUMNS.items():
            have = tuple(r[1] for r in db.execute(f"PRAGMA table_info({table})"))
            if have != cols:
                raise _BadContents(f"table {table} has columns {have}, expected {cols}")
        bad = db.execute(
            "SELECT COUNT(*) FROM msg WHERE typeof(id) != 'integer' OR typeof(t) NOT IN ('real', 'integer') "
            "OR typeof(prio) != 'integer' OR typeof(kind) != 'text' OR typeof(topic) != 'text' "
            "OR typeof(payload) NOT IN ('blob', 'text') OR typeof(retain) != 'integer' "
            f"OR kind NOT IN ({','.join(repr(k) for k in KINDS)})"
        ).fetchone()[0]
        if bad:
            raise _BadContents(f"{bad} messages with values of the wrong type or kind")
        self._count, self._bytes = spooldb.size(db)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        for k, v in meta.items():
            if not isinstance(k, str) or type(v) not in (int, float) or not (0 <= v < 1e18):
                raise _BadContents(f"meta {k!r} = {v!r}")
        self._clock_base = float(meta.pop("clock", 0.0))
        self._mono0 = self._mono()
        for k, v in meta.items():
            self.totals[k] = int(v)
        seq = db.execute("SELECT task, next FROM seq").fetchall()
        for t, n in seq:
            if not isinstance(t, str) or type(n) is not int or not (0 <= n < 1 << 62):
                raise _BadContents(f"seq {t!r} = {n!r}")
        self._seq_durable = {t: n for t, n in seq}
        self._cursor = 0

    def _close_db(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    # -- clock ---------------------------------------------------------------------------------------
    def now(self) -> float:
        """Spool clock: service seconds accumulated across runs (immune to wall-clock steps)."""
        return self._clock_base + (self._mono() - self._mono0)

    # -- seq counters ----------------------------------------------------------------------------------
    def seq_counters(self) -> dict[str, int]:
        """Next seq per task as durably recorded with the last spooled prediction."""
        with self._lock:
            return dict(self._seq_durable)

    def high_water(self) -> int | None:
        """The highest message id ever assigned (ids only grow), or None when unknown."""
        with self._lock:
            if self._db is None:
                return None
            try:
                row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'msg'").fetchone()
            except sqlite3.Error:
                return None
            return int(row[0]) if row is not None and type(row[0]) is int else 0

    def note_seq(self, task: str, next_value: int) -> None:
        """Record that ``next_value`` is now the next seq of ``task`` (written with the next commit)."""
        with self._lock:
            self._seq_dirty[task] = next_value

    # -- writing ---------------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes, kind: str, retain: bool = False) -> bool:
        """Spool one message; returns whether it was kept (False: dropped and counted). Never raises
        for disk trouble: that switches to the memory queue (see module docstring)."""
        kind = kind if kind in PRIORITY else "alert"
        with self._lock:
            now = self.now()
            if self._fallback is not None and self._mono() >= self._retry_at:
                self._try_recover(now)
            if self._fallback is None:
                try:
                    return self._put_db(now, topic, payload, kind, retain)
                except sqlite3.Error as exc:
                    self._enter_fallback(exc)
            if kind == "prediction":
                self._drop(kind, "unwritable")
                return False
            return self._put_mem(Msg(None, kind, topic, payload, retain))

    def _drop(self, kind: str, reason: str, n: int = 1) -> None:
        key = f"dropped.{kind}.{reason}"
        self.totals[key] += n
        self._dirty.add(key)
        self._log_drop(kind, reason)

    def _put_mem(self, msg: Msg) -> bool:
        if len(self._mem) >= self.limits.memory_max:
            prio = PRIORITY[msg.kind]
            victim = None
            for p in range(prio + 1):
                victim = next((m for m in self._mem if PRIORITY[m.kind] == p), None)
                if victim is not None:
                    break
            if victim is None:
                self._drop(msg.kind, "full")
                return False
            self._mem.remove(victim)
            self._drop(victim.kind, "full")
        self._mem.append(msg)
        return True

    def _put_db(self, now: float, topic: str, payload: bytes, kind: str, retain: bool) -> bool:
        assert self._db is not None
        db = self._db
        size = len(topic) + len(payload)
        prio = PRIORITY[kind]
        drops: list[tuple[str, str, int]] = []  # (kind, reason, size) applied after commit
        with spooldb.transaction(db):
            count, nbytes = self._count, self._bytes
            if now >= self._next_expiry:  # a table scan: at most once per EXPIRY_EVERY_S of service time
                self._next_expiry = now + EXPIRY_EVERY_S
                horizon = now - self.limits.max_age_s
                for k, sz in db.execute(
                    "DELETE FROM msg WHERE t < ? AND id > ? RETURNING kind, length(topic) + length(payload)",
                    (horizon, self._cursor),
                ).fetchall():
                    drops.append((k, "expired", sz))
                    count, nbytes = count - 1, nbytes - sz
            kept = True
            last = self._cursor
            while count + 1 > self.limits.max_messages or nbytes + size > self.limits.max_bytes:
                row = db.execute(
                    "SELECT id, kind, length(topic) + length(payload) FROM msg "
                    "WHERE prio <= ? AND id > ? ORDER BY prio, id LIMIT 1",
                    (prio, last),
                ).fetchone()
                if row is None:
                    kept = False
                    break
                db.execute("DELETE FROM msg WHERE id = ?", (row[0],))
                drops.append((row[1], "full", row[2]))
                count, nbytes = count - 1, nbytes - row[2]
            if kept:
                spooldb.insert(db, now, prio, kind, topic, payload, retain)
                count, nbytes = count + 1, nbytes + size
            totals = Counter(self.totals)
            for k, reason, _ in drops:
                totals[f"dropped.{k}.{reason}"] += 1
            if kept:
                totals[f"spooled.{kind}"] += 1
            else:
                totals[f"dropped.{kind}.full"] += 1
            changed = {k for k in totals if totals[k] != self.totals.get(k)} | self._dirty
            spooldb.write_meta(db, now, {k: totals[k] for k in changed})
            seq_written = dict(self._seq_dirty)
            spooldb.write_seq(db, seq_written)
        # committed: now the in-memory view follows
        self._count, self._bytes = count, nbytes
        self.totals = totals
        self._dirty.clear()
        self._seq_durable.update(seq_written)
        for task, n in seq_written.items():
            if self._seq_dirty.get(task) == n:
                del self._seq_dirty[task]
        for k, reason, _ in drops:
            self._log_drop(k, reason)
        if not kept:
            self._log_drop(kind, "full")
        return kept

    def _log_drop(self, kind: str, reason: str) -> None:
        """Every drop is counted; the log thins out: the first 10, every 100th to 1000, then every 1000th."""
        total = sum(v for k, v in self.totals.items() if k.startswith("dropped."))
        if total <= 10 or (total <= 1000 and total % 100 == 0) or total % 1000 == 0:
            log.warning("spool_dropped", kind=kind, reason=reason, dropped_total=total)

    # -- disk trouble ------------------------------------------------------------------------------------
    def _enter_fallback(self, exc: BaseException, opening: bool = False) -> None:
        first = self._fallback is None
        self._fallback = f"{type(exc).__name__}: {exc}"
        self._retry_at = self._mono() + self.limits.retry_s
        if first:
            log.error(
                "spool_unwritable",
                path=str(self.path),
                error=self._fallback,
                note="alerts and summaries wait in memory; predictions are dropped (counted) until "
                "the disk can be written again",
            )
            self._events.append(
                {"problem": "spool_unwritable", "error": self._fallback, "path": str(self.path)}
            )
            if opening:
                self.problems.append(f"{self.path}: cannot open the spool ({self._fallback})")

    def _try_recover(self, now: float) -> None:
        """Disk again: reopen if needed, then move the memory queue to disk in one transaction."""
        self._retry_at = self._mono() + self.limits.retry_s
        try:
            if self._db is None:
                self._open()
            assert self._db is not None
            db = self._db
            with spooldb.transaction(db):
                moved = list(self._mem)
                for m in moved:
                    spooldb.insert(db, now, PRIORITY[m.kind], m.kind, m.topic, m.payload, m.retain)
                spooldb.delete(db, self._pending_acks)
                spooldb.write_meta(db, now, self.totals)
                spooldb.write_seq(db, self._seq_dirty)
        except (sqlite3.Error, OSError) as exc:
            self._fallback = f"{type(exc).__name__}: {exc}"
            return
        self._count, self._bytes = spooldb.size(self._db)
        self._mem.clear()
        self._pending_acks.clear()
        self._dirty.clear()
        self._seq_durable.update(self._seq_dirty)
        self._seq_dirty.clear()
        log.info("spool_recovered", path=str(self.path), moved_from_memory=len(moved))
        self._events.append(
            {"problem": "spool_recovered", "moved_from_memory": len(moved), "path": str(self.path)}
        )
        self._fallback = None

    def take_events(self) -> list[dict[str, Any]]:
        """State changes since the last call (for alerts)."""
        with self._lock:
            out, self._events = self._events, []
            return out

    # -- sending ---------------------------------------------------------------------------------------
    def next_batch(self, n: int) -> list[Msg]:
        """Up to ``n`` messages not yet handed out, oldest first: the disk backlog, then memory."""
        with self._lock:
            out: list[Msg] = []
            if self._db is not None:
                try:
                    rows = self._db.execute(
                        "SELECT id, kind, topic, payload, retain FROM msg WHERE id > ? ORDER BY id LIMIT ?",
                        (self._cursor, n),
                    ).fetchall()
                except sqlite3.Error as exc:
                    log.error("spool_read_failed", error=str(exc))
                    rows = []
                out = [Msg(r[0], r[1], r[2], bytes(r[3]), bool(r[4])) for r in rows]
                if out:
                    self._cursor = out[-1].id  # type: ignore[assignment]
            while len(out) < n and self._mem:  # the memory queue is always newer than the disk
                out.append(self._mem.popleft())
            return out

    def ack(self, msgs: list[Msg], refused: list[Msg] | None = None) -> None:
        """The broker acknowledged ``msgs`` (and refused ``refused``, e.g. ACL "Not authorized",
        counted as dropped): delete them. A failed delete is retried later; at worst the message
        is sent again after a crash, which QoS 1 allows."""
        refused = refused or []
        if not msgs and not refused:
            return
        with self._lock:
            for m in msgs:
                self.totals[f"sent.{m.kind}"] += 1
                self._dirty.add(f"sent.{m.kind}")
            for m in refused:
                self.totals[f"dropped.{m.kind}.refused"] += 1
                self._dirty.add(f"dropped.{m.kind}.refused")
            ids = self._pending_acks + [m.id for m in msgs + refused if m.id is not None]
            if not ids or self._db is None or self._fallback is not None:
                self._pending_acks = ids
                return
            db = self._db
            try:
                with spooldb.transaction(db):
                    gone, freed = spooldb.delete(db, ids)
                    spooldb.write_meta(db, self.now(), {k: self.totals[k] for k in self._dirty})
            except sqlite3.Error as exc:
                self._pending_acks = ids
                log.warning("spool_ack_failed", error=str(exc), pending=len(ids))
                return
            self._pending_acks = []
            self._dirty.clear()
            self._count, self._bytes = self._count - gone, self._bytes - freed

    # -- views -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return self._count + len(self._mem)

    @property
    def unwritable(self) -> str | None:
        return self._fallback

    def stats(self) -> dict[str, Any]:
        """Depth, age of the oldest message and cumulative counters (for summaries and status)."""
        with self._lock:
            oldest = None
            if self._db is not None and self._count:
                with contextlib.suppress(sqlite3.Error):
                    row = self._db.execute("SELECT t FROM msg ORDER BY id LIMIT 1").fetchone()
                    if row is not None:
                        oldest = round(max(0.0, self.now() - row[0]), 1)
            dropped: dict[str, dict[str, int]] = {}
            for k, v in sorted(self.totals.items()):
                if k.startswith("dropped.") and v:
                    _, kind, reason = k.split(".", 2)
                    dropped.setdefault(kind, {})[reason] = v
            return {
                "queued": self._count + len(self._mem),
                "queued_bytes": self._bytes,
                "in_memory": len(self._mem),
                "oldest_age_s": oldest,
                "unwritable": self._fallback,
                "spooled": {k: self.totals[f"spooled.{k}"] for k in KINDS if self.totals[f"spooled.{k}"]},
                "sent": {k: self.totals[f"sent.{k}"] for k in KINDS if self.totals[f"sent.{k}"]},
                "dropped": dropped,
            }

    def close(self) -> None:
        """Write pending counters and close the database."""
        with self._lock:
            if self._db is not None and self._fallback is None:
                try:
                    with spooldb.transaction(self._db) as db:
                        spooldb.delete(db, self._pending_acks)
                        spooldb.write_meta(db, self.now(), self.totals)
                        spooldb.write_seq(db, self._seq_dirty)
                    self._seq_durable.update(self._seq_dirty)
                    self._seq_dirty.clear()
                except sqlite3.Error as exc:
                    log.error("spool_close_failed", error=str(exc))
            self._close_db()
