"""The disk spool: order, bounds and drop policy, age, crash safety, corrupt files, full disks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edged.seq import SpoolSeq
from edged.spool import Msg, Spool, SpoolLimits
from tests.conftest import REPO, fill, spool_count, wait_for


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def drain(spool: Spool) -> list[Msg]:
    out: list[Msg] = []
    while batch := spool.next_batch(7):
        out += batch
    return out


class TestOrderAndAck:
    def test_order_is_kept_across_kinds(self, tmp_path: Path) -> None:
        """Messages come out in the order they went in, whatever their kind."""
        s = Spool(tmp_path / "spool.db")
        for i, kind in enumerate(["prediction", "alert", "summary", "prediction"]):
            assert s.put(f"t{i}", b"x", kind)
        assert [m.topic for m in drain(s)] == ["t0", "t1", "t2", "t3"]

    def test_only_acknowledged_messages_leave_and_the_rest_survive_reopening(self, tmp_path: Path) -> None:
        """Handed-out but unacknowledged messages are sent again after a restart; acked ones are gone."""
        s = Spool(tmp_path / "spool.db")
        for i in range(5):
            s.put(f"t{i}", b"p", "prediction")
        out = s.next_batch(3)
        s.ack(out[:2])
        assert len(s) == 3 and s.stats()["sent"] == {"prediction": 2}
        s.close()
        s2 = Spool(tmp_path / "spool.db")
        assert [m.topic for m in drain(s2)] == ["t2", "t3", "t4"]
        assert s2.stats()["sent"] == {"prediction": 2} and s2.stats()["spooled"] == {"prediction": 5}

    def test_refused_publications_are_counted_as_drops(self, tmp_path: Path) -> None:
        """A message the broker refuses (e.g. ACL) leaves the spool and is counted as dropped/refused."""
        s = Spool(tmp_path / "spool.db")
        s.put("t", b"p", "alert")
        s.ack([], s.next_batch(1))
        assert len(s) == 0 and s.stats()["dropped"] == {"alert": {"refused": 1}}


class TestBounds:
    def test_drop_policy_summaries_then_predictions_never_alerts_first(self, tmp_path: Path) -> None:
        """When full: oldest summary goes first, then oldest prediction; alerts survive; every drop counted."""
        s = Spool(tmp_path / "a.db", SpoolLimits(max_messages=3))
        s.put("s", b"", "summary")
        s.put("p1", b"", "prediction")
        s.put("a1", b"", "alert")
        s.put("p2", b"", "prediction")  # drops s
        s.put("a2", b"", "alert")  # drops p1
        assert [m.topic for m in drain(s)] == ["a1", "p2", "a2"]
        assert s.stats()["dropped"] == {"summary": {"full": 1}, "prediction": {"full": 1}}
        s2 = Spool(tmp_path / "b.db", SpoolLimits(max_messages=2))
        s2.put("a1", b"", "alert")
        s2.put("a2", b"", "alert")
        assert not s2.put("p", b"", "prediction")  # nothing less important to drop: it goes itself
        assert [m.topic for m in drain(s2)] == ["a1", "a2"] and s2.stats()["dropped"] == {
            "prediction": {"full": 1}
        }

    def test_size_bound_and_persisted_counters(self, tmp_path: Path) -> None:
        """``max_bytes`` bounds the payload bytes kept; drop counts survive a restart."""
        s = Spool(tmp_path / "spool.db", SpoolLimits(max_bytes=10_000))
        for _i in range(50):
            s.put("p", b"x" * 999, "prediction")
        assert s.stats()["queued_bytes"] <= 10_000 and len(s) == 10
        s.close()
        again = Spool(tmp_path / "spool.db", SpoolLimits(max_bytes=10_000))
        assert again.stats()["dropped"] == {"prediction": {"full": 40}} and len(again) == 10

    def test_messages_in_flight_are_not_dropped(self, tmp_path: Path) -> None:
        """What the sender already handed to the broker is not counted as dropped (it is being delivered)."""
        s = Spool(tmp_path / "spool.db", SpoolLimits(max_messages=3))
        for i in range(3):
            s.put(f"p{i}", b"", "prediction")
        handed = s.next_batch(2)
        s.put("p3", b"", "prediction")  # must drop p2, the oldest not yet handed out
        assert [m.topic for m in handed] == ["p0", "p1"]
        assert [m.topic for m in drain(s)] == ["p3"]

    def test_age_uses_service_time_not_the_wall_clock(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Messages older than max_age (spool clock, accumulated across restarts) expire, counted; a wall
        clock jump of years expires nothing."""
        clock = FakeClock()
        lim = SpoolLimits(max_age_s=100.0)
        s = Spool(tmp_path / "spool.db", lim, clock=clock)
        s.put("old", b"", "alert")
        clock.t += 60
        s.close()
        monkeypatch.setattr(time, "time", lambda: 4e9)  # wall clock stepped far ahead
        clock.t += 10_000  # downtime between runs does not count
        s2 = Spool(tmp_path / "spool.db", lim, clock=clock)
        s2.put("new", b"", "prediction")
        assert len(s2) == 2
        clock.t += 50  # now 110 s of service time after "old" (and > EXPIRY_EVERY_S since the last look)
        s2.put("newer", b"", "prediction")
        assert [m.topic for m in drain(s2)] == ["new", "newer"]
        assert s2.stats()["dropped"] == {"alert": {"expired": 1}}


WRITER = """
import sys, time
from pathlib import Path
from edged.seq import SpoolSeq
from edged.spool import Spool
spool = Spool(Path(sys.argv[1]))
seq = SpoolSeq(spool, Path(sys.argv[2]))
i = 0
while True:
    n = seq.next("activity")
    spool.put("edged/gw/prediction/activity", ('{"seq": %d}' % n).encode(), "prediction")
    if i % 3 == 0:
        spool.put("edged/gw/summary", b'{}', "summary")
    i += 1
    if i == 200:
        print("ready", flush=True)
"""


class TestCrashSafety:
    def test_kill_9_loses_nothing_spooled_and_seq_never_repeats(self, tmp_path: Path) -> None:
        """A writer SIGKILLed mid-stream: every spooled prediction is there, seq 0..k-1 without a hole,
        and the next seq after restart is the highest durable floor: never a repeat, a gap of at
        most the seq.json reservation (issue 17: the spool alone may be an older copy)."""
        db, floor = tmp_path / "spool.db", tmp_path / "seq.json"
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(floor)],
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        # Was a 0.3 s sleep; under load the writer may not have run at all in it. Kill it once it
        # has visibly written on past "ready", i.e. mid-stream.
        wait_for(lambda: spool_count(db), 60, "the writer past 300 predictions", lambda n: n >= 300)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        spool = Spool(db)
        seqs = [json.loads(m.payload)["seq"] for m in drain(spool) if m.kind == "prediction"]
        assert len(seqs) >= 200 and seqs == list(range(len(seqs)))
        seq = SpoolSeq(spool, floor)
        assert "spool" in seq.source and len(seqs) <= seq.next("activity") <= len(seqs) + seq.reserve + 1
        assert seq.problems == []

    def test_floor_file_is_used_when_the_spool_is_lost(self, tmp_path: Path) -> None:
        """Without the spool's counters (file deleted), seq jumps ahead to the seq.json reservation:
        a visible gap, never a repeat."""
        spool = Spool(tmp_path / "spool.db")
        seq = SpoolSeq(spool, tmp_path / "seq.json")
        issued = [seq.next("a") for _ in range(5)]
        spool.put("t", b"", "prediction")
        spool.close()
        for p in tmp_path.glob("spool.db*"):
            p.unlink()
        seq2 = SpoolSeq(Spool(tmp_path / "spool.db"), tmp_path / "seq.json")
        assert seq2.source == "seq.json" and seq2.next("a") > max(issued)

    @pytest.mark.parametrize(
        "garbage", [b"not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 5000]
    )
    def test_corrupt_spool_is_moved_aside_and_replaced(self, tmp_path: Path, garbage: bytes) -> None:
        """An unreadable spool file is reported and moved aside; a fresh spool works (no crash loop)."""
        (tmp_path / "spool.db").write_bytes(garbage)
        s = Spool(tmp_path / "spool.db")
        assert len(s.problems) == 1 and "moved aside" in s.problems[0]
        assert any(p.name.startswith("spool.db.corrupt-") for p in tmp_path.iterdir())
        assert s.put("t", b"x", "alert") and [m.topic for m in drain(s)] == ["t"]


class TestFullDisk:
    def test_full_disk_keeps_alerts_in_memory_drops_predictions_and_recovers_in_order(
        self, small_fs: Path
    ) -> None:
        """ENOSPC on a real tmpfs: alerts and summaries wait in memory, predictions are dropped and
        counted (their seq cannot be made durable); once space is back the memory queue moves to
        disk after the disk backlog, in order, and the counters are written."""
        s = Spool(small_fs / "spool.db", SpoolLimits(retry_s=0.0))
        seq = SpoolSeq(s, None)
        s.put("before", b"b" * 100, "prediction")
        filler = fill(small_fs)
        results = []
        for _i in range(400):  # enough to need new pages on a full disk
            n = seq.next("a")
            results.append(s.put(f"p{n}", b"y" * 2000, "prediction"))
            if s.unwritable:
                break
        assert s.unwritable and "full" in s.unwritable.lower()
        assert s.take_events()[0]["problem"] == "spool_unwritable"
        assert s.put("alert-1", b"a", "alert") and s.put("summary-1", b"s", "summary")
        n_lost = seq.next("a")
        assert not s.put(f"p{n_lost}", b"y", "prediction")
        assert s.stats()["dropped"]["prediction"]["unwritable"] >= 1 and s.stats()["in_memory"] == 2
        filler.unlink()
        assert s.put("alert-2", b"a", "alert")  # retry succeeds: memory moves to disk
        assert s.unwritable is None and s.take_events()[0]["problem"] == "spool_recovered"
        topics = [m.topic for m in drain(s)]
        kept = [t for t in topics if t.startswith("p")]
        assert topics[0] == "before" and topics[-3:] == ["alert-1", "summary-1", "alert-2"]
        assert f"p{n_lost}" not in topics and kept == sorted(kept, key=lambda t: int(t[1:]))
        s.close()
        again = Spool(small_fs / "spool.db")
        assert again.stats()["dropped"]["prediction"]["unwritable"] >= 1
        assert SpoolSeq(again, None).next("a") == n_lost + 1  # the dropped seq is never reused

    def test_unopenable_spool_starts_in_memory(self, tmp_path: Path) -> None:
        """A state directory the spool cannot write at start: the service still starts (memory queue)."""
        d = tmp_path / "ro"
        d.mkdir()
        (d / "spool.db").mkdir()  # a directory where the file should be: sqlite cannot open it
        s = Spool(d / "spool.db")
        assert s.unwritable and s.problems and s.put("a", b"x", "alert")
        assert [m.topic for m in drain(s)] == ["a"]


def test_state_directory_that_cannot_be_created_is_not_fatal(tmp_path: Path) -> None:
    """If the spool's directory cannot even be created, the spool starts in memory and reports it."""
    (tmp_path / "file").write_text("not a directory")
    s = Spool(tmp_path / "file" / "spool.db")
    assert s.unwritable and "FileExistsError" in s.unwritable and s.problems and s.put("a", b"x", "alert")


def test_database_is_wal_and_private(tmp_path: Path) -> None:
    """The spool runs in WAL mode and its file is readable by the owner only."""
    s = Spool(tmp_path / "spool.db")
    s.put("t", b"x", "alert")
    assert sqlite3.connect(tmp_path / "spool.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "spool.db").stat().st_mode & 0o077 == 0
