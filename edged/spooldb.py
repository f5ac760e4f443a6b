"""The SQLite file under :mod:`edged.spool`: schema, connection settings, transactions, and the
statements the spool runs from more than one place.

Tables (see :mod:`edged.spool` for what they mean): ``msg`` (messages in send order), ``seq``
(next prediction seq per task) and ``meta`` (spool clock and cumulative counters).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS msg (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t REAL NOT NULL,
    prio INTEGER NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS msg_prio ON msg(prio, id);
CREATE TABLE IF NOT EXISTS seq (task TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""


def connect(path: Path, sync: str) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with ``synchronous`` per ``sync`` ("normal" | "full"), check its
    integrity and create the tables. ``sqlite3.DatabaseError`` (not Operational) means corrupt."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL mode (got {mode})")
        db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        db.execute("PRAGMA journal_size_limit=4194304")  # WAL truncated back to 4 MiB after checkpoints
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        db.executescript(SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def move_aside(path: Path) -> Path:
    """Rename a corrupt database (with its WAL and shared-memory files) to ``<name>.corrupt-<time>``."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
    return aside


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; anything raised inside rolls back and propagates."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def size(db: sqlite3.Connection) -> tuple[int, int]:
    """(messages, bytes of topic + payload) in the spool."""
    count, nbytes = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(length(topic) + length(payload)), 0) FROM msg"
    ).fetchone()
    return int(count), int(nbytes)


def insert(
    db: sqlite3.Connection, t: float, prio: int, kind: str, topic: str, payload: bytes, retain: bool
) -> None:
    db.execute(
        "INSERT INTO msg (t, prio, kind, topic, payload, retain) VALUES (?, ?, ?, ?, ?, ?)",
        (t, prio, kind, topic, payload, int(retain)),
    )


def write_seq(db: sqlite3.Connection, counters: Mapping[str, int]) -> None:
    db.executemany("INSERT OR REPLACE INTO seq (task, next) VALUES (?, ?)", counters.items())


def write_meta(db: sqlite3.Connection, now: float, values: Mapping[str, int]) -> None:
    """The spool clock and the given counters."""
    rows: list[tuple[str, float]] = [("clock", now), *values.items()]
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)


def delete(db: sqlite3.Connection, ids: Iterable[int]) -> tuple[int, int]:
    """Delete rows by id; returns (rows deleted, bytes freed)."""
    ids = list(ids)
    gone = freed = 0
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for (sz,) in db.execute(
            f"DELETE FROM msg WHERE id IN ({marks}) RETURNING length(topic) + length(payload)", chunk
        ).fetchall():
            gone += 1
            freed += sz
    return gone, freed
