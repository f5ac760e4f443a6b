"""Faults against real processes: the broker killed mid-run, the service killed mid-run, the state
directory filling up, and the wall clock stepping under a running service."""

from __future__ import annotations

import contextlib
import getpass
import json
import signal
import sqlite3
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Broker,
    Recorder,
    _mosquitto_or_skip,
    fill,
    free_port,
    sim_config,
    spool_rows,
    wait_for,
)
from tests.schemas import validate_all

pytestmark = pytest.mark.broker
TASKS = ("activity", "maintenance")


def _persistent_broker(tmp_path: Path, port: int | None = None) -> Broker:
    """mosquitto that saves sessions and queued messages every second (survives its own SIGKILL up to
    the last save), as a production broker with persistence would."""
    _mosquitto_or_skip()
    port = port or free_port()
    (tmp_path / "mq").mkdir(exist_ok=True)
    conf = tmp_path / "mosquitto-persistent.conf"
    conf.write_text(
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {tmp_path / 'mq'}/\nautosave_interval 1\n"
        "log_dest stderr\nlog_type error\nlog_type warning\n"
    )
    return Broker(conf, port, tmp_path / "mosquitto.log")


def _seqs(rec: Recorder) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    with rec.lock:
        for topic, p, _ in rec.messages:
            if "/prediction/" in topic:
                out[p["task"]].append(p["seq"])
    return out


def _assert_complete(seqs: dict[str, list[int]]) -> None:
    """Every seq from 0 to the highest seen arrived (duplicates allowed: QoS 1)."""
    for task in TASKS:
        got = set(seqs[task])
        missing = sorted(set(range(max(got) + 1)) - got)
        assert not missing, f"{task}: missing seq {missing[:20]} (of {max(got) + 1})"


class TestBrokerKilled:
    def test_broker_sigkilled_and_restarted_subscriber_sees_every_seq(
        self, tmp_path: Path, service_factory: Any
    ) -> None:
        """mosquitto is SIGKILLed mid-run and restarted 3 s later: the service spools meanwhile, reconnects,
        and a persistent-session subscriber ends up with every seq of every task, without a gap."""
        b = _persistent_broker(tmp_path)
        b.start()
        rec = Recorder(b.port, persistent=True, client_id="fault-subscriber")
        svc = service_factory(sim_config(tmp_path, b.port))
        try:
            svc.start()
            assert rec.wait_for(lambda m: all(len(_seqs(rec)[t]) >= 5 for t in TASKS), timeout=60)
            # Race: the broker saves its sessions every second, so a SIGKILL right after the subscriber
            # subscribed can restart a broker that never heard of it; it then queues nothing for the
            # subscriber and what the service sends before the subscriber is back is lost (a false gap).
            # A fixed 1.5 s sleep is not "a save happened" on a loaded machine: wait until the broker has
            # written its persistence file after the subscription is known to be live.
            saved_after = time.time_ns()
            persisted = tmp_path / "mq" / "mosquitto.db"
            wait_for(
                lambda: persisted.stat().st_mtime_ns if persisted.exists() else 0,
                30,
                "mosquitto to autosave its persistence file after the subscription",
                lambda mtime: mtime > saved_after,
            )
            before = {t: max(s) for t, s in _seqs(rec).items()}
            assert b.proc is not None
            b.proc.send_signal(signal.SIGKILL)
            b.proc.wait()
            # Race: "3 s later" was meant as "while the service spools". Under load the service had not
            # even noticed the broker was gone after 3 s. Wait for the service to say so, then for
            # predictions piling up in its spool: only then is the outage really exercised.
            svc.wait_log("mqtt_disconnected", timeout=60)
            db = tmp_path / "state" / "spool.db"
            wait_for(
                lambda: spool_rows(db),
                60,
                "predictions of every task spooled while the broker is down",
                lambda rows: rows is not None and all(len(rows.get(t, [])) >= 5 for t in TASKS),
            )
            b.start()
            assert rec.wait_for(
                lambda m: all(max(_seqs(rec)[t]) >= before[t] + 15 for t in TASKS), timeout=60
            ), (before, {t: max(s) for t, s in _seqs(rec).items()})
            assert svc.stop() == 0
            assert rec.wait_for(
                lambda m: any(t.endswith("/status") and p["state"] == "offline" for t, p, _ in m)
            )
        finally:
            rec.close()
            b.stop()
        _assert_complete(_seqs(rec))
        validate_all(rec.messages)
        assert "Error" not in b.log.read_text()  # e.g. the broker could not save its persistence file
        events = [e.get("event") for e in svc.logs()]
        assert "mqtt_disconnected" in events and "mqtt_reconnected" in events


class TestServiceKilled:
    def test_sigkill_with_a_backlog_loses_nothing_spooled_and_seq_never_repeats(
        self, tmp_path: Path, service_factory: Any
    ) -> None:
        """The service is SIGKILLed while the broker is away: after restart every prediction that was
        spooled is delivered, and seq carries on from the highest durable floor (the seq.json
        reservation): never a repeat, one gap of at most the reservation (issue 17: the spool alone
        may be an older copy)."""
        port = free_port()
        cfg = sim_config(tmp_path, port)
        svc = service_factory(cfg)
        svc.start()
        db = tmp_path / "state" / "spool.db"
        # Race: the service creates spool.db and its tables a moment apart; reading in between failed
        # with "no such table: msg". spool_rows() treats a file without tables as "not yet", and the wait
        # fails loudly instead of falling through to the SIGKILL with an empty backlog.
        wait_for(
            lambda: spool_rows(db),
            60,
            "15 spooled predictions per task (no broker)",
            lambda rows: rows is not None and all(len(rows.get(t, [])) >= 15 for t in TASKS),
        )
        assert svc.proc is not None
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait()
        with contextlib.closing(sqlite3.connect(db)) as con:
            spooled = defaultdict(list)
            for (payload,) in con.execute("SELECT payload FROM msg WHERE kind = 'prediction'"):
                p = json.loads(payload)
                spooled[p["task"]].append(p["seq"])
            counters = dict(con.execute("SELECT task, next FROM seq").fetchall())
        for t in TASKS:
            assert sorted(spooled[t]) == list(range(len(spooled[t]))) and counters[t] == len(spooled[t])

        b = Broker(tmp_path / "plain.conf", port, tmp_path / "mosquitto.log")
        b.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        b.start()
        rec = Recorder(port)
        try:
            svc2 = service_factory(cfg)
            svc2.start()
            assert rec.wait_for(
                lambda m: all(max(_seqs(rec)[t], default=-1) >= counters[t] + 5 for t in TASKS), timeout=60
            )
            assert svc2.stop() == 0
        finally:
            rec.close()
            b.stop()
        got = _seqs(rec)
        for t in TASKS:
            assert set(spooled[t]) <= set(got[t]), f"{t}: spooled before the crash but never delivered"
            after = sorted(v for v in set(got[t]) if v >= counters[t])
            assert after and counters[t] <= after[0] <= counters[t] + 1001, (t, counters[t], after[:3])
            assert after == list(range(after[0], after[0] + len(after))), f"{t}: a gap after the restart"
        _assert_complete({t: [v for v in got[t] if v < counters[t]] for t in TASKS})
        assert any(e.get("event") == "unclean_stop_detected" for e in svc2.logs())


class TestDiskFull:
    def test_state_directory_filling_up_alerts_and_the_service_keeps_running(
        self, tmp_path: Path, small_fs: Path, broker: Broker, recorder: Recorder, service_factory: Any
    ) -> None:
        """The state directory's filesystem (a real 16 MiB tmpfs) fills up: disk_low and checkpoint_failed
        alerts arrive, acquisition and summaries go on, every missing seq is a counted drop; when space is
        back, disk_ok and predictions resume; SIGTERM still exits 0."""
        cfg = sim_config(
            tmp_path,
            broker.port,
            state=f'dir = "{small_fs}"\ncheckpoint_interval_s = 2\nkeep = 1',
            ops="status_interval_s = 1\nmin_free_mb = 0.5",
        )
        svc = service_factory(cfg)
        svc.start()
        assert recorder.wait_for(lambda m: all(len(_seqs(recorder)[t]) >= 3 for t in TASKS), timeout=60)
        filler = fill(small_fs)

        def alerted(problem: str) -> Any:
            return lambda m: any(t.endswith("/alert") and p.get("problem") == problem for t, p, _ in m)

        assert recorder.wait_for(alerted("disk_low"), timeout=20), svc.logs()[-5:]
        assert recorder.wait_for(alerted("checkpoint_failed"), timeout=20)
        n_summaries = len(recorder.topic("/summary"))
        assert recorder.wait_for(
            lambda m: len([1 for t, _, _ in m if t.endswith("/summary")]) >= n_summaries + 2, timeout=20
        ), "summaries stopped while the disk was full"
        # (A 2 s sleep stood here: the two summaries just awaited already show the service living on
        # with a full disk, for two summary intervals.)
        assert svc.proc is not None and svc.proc.poll() is None
        filler.unlink()
        assert recorder.wait_for(alerted("disk_ok"), timeout=20)
        mark = {t: max(s) for t, s in _seqs(recorder).items()}
        assert recorder.wait_for(
            lambda m: all(max(_seqs(recorder)[t]) >= mark[t] + 5 for t in TASKS), timeout=30
        )
        assert svc.stop() == 0
        assert recorder.wait_for(
            lambda m: any(t.endswith("/status") and p["state"] == "offline" for t, p, _ in m)
        )
        final = recorder.topic("/summary")[-1]
        dropped = final["mqtt"]["dropped"].get("prediction", {}).get("unwritable", 0)
        seqs = _seqs(recorder)
        missing = sum(len(set(range(max(seqs[t]) + 1)) - set(seqs[t])) for t in TASKS)
        assert missing == dropped, (missing, final["mqtt"])
        validate_all(recorder.messages)


class TestClockSteps:
    def test_wall_clock_steps_forward_and_back_under_a_running_service(
        self, tmp_path: Path, broker: Broker, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """time.time() jumps +1 h, then -2 h, in a running (in-process) service: acquisition never stalls,
        seq stays strictly +1, ts follows the wall clock, and summaries stay consistent (from <= to,
        monotonic interval, the step reported)."""
        from edged.app import build_daemon
        from edged.config import load

        real_time = time.time
        offset = [0.0]
        monkeypatch.setattr(time, "time", lambda: real_time() + offset[0])
        cfg, _ = load(str(sim_config(tmp_path, broker.port)))
        daemon = build_daemon(cfg)
        marks: list[tuple[float, int]] = []

        def count() -> int:
            return len(recorder.topic("/prediction/activity"))

        def stepped() -> int:
            return len([s for s in recorder.topic("/summary") if "clock_step_s" in s])

        failures: list[BaseException] = []

        def drive() -> None:
            try:
                recorder.wait_for(lambda m: count() >= 10, timeout=60, what="10 activity predictions")
                for i, step in enumerate((3600.0, -7200.0)):
                    n = count()
                    offset[0] += step
                    marks.append((step, n))
                    recorder.wait_for(
                        lambda m, n=n: count() >= n + 15, timeout=30, what="15 predictions after the step"
                    )
                    # Race: a fixed 2.5 s ("a summary interval") let the next step land before the
                    # summary that reports this one on a loaded machine; two steps in one interval are
                    # reported as one (-1 h instead of +1 h and -2 h). Wait for the report itself.
                    recorder.wait_for(
                        lambda m, i=i: stepped() >= i + 1, timeout=30, what=f"a summary reporting step {step}"
                    )
            except BaseException as exc:  # re-raised in the test's thread: a thread's failure is lost
                failures.append(exc)
            finally:
                daemon.request_stop()

        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        helper = threading.Thread(target=drive, daemon=True)
        helper.start()
        try:
            assert daemon.run() == 0
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        helper.join(5)
        if failures:
            raise failures[0]
        assert recorder.wait_for(
            lambda m: any(t.endswith("/status") and p["state"] == "offline" for t, p, _ in m)
        )
        assert len(marks) == 2
        for task in TASKS:
            preds = recorder.topic(f"/prediction/{task}")
            assert [p["seq"] for p in preds] == list(range(len(preds)))  # never repeated, never reordered
        preds = recorder.topic("/prediction/activity")
        for step, n in marks:
            assert len(preds) >= n + 15  # no stall after the step
            jumps = [
                b["ts"] - a["ts"] for a, b in zip(preds[n - 3 : n + 6], preds[n - 2 : n + 7], strict=False)
            ]
            assert any(abs(j - step) < 5 for j in jumps), (step, jumps)  # ts is wall time, so it jumps once
        summaries = recorder.topic("/summary")
        steps = [s["clock_step_s"] for s in summaries if "clock_step_s" in s]
        assert [round(x / 3600) for x in steps] == [1, -2], steps
        for s in summaries:
            assert s["from"] <= s["to"] and 0 < s["interval_s"] < 10
            az = s["channels"].get(
                "az", {"count": 0}
            )  # absent when suppressed (min_count), e.g. a short last one
            assert az["count"] <= 500 * s["interval_s"] * 1.5 + 1000  # no double counting
        validate_all(recorder.messages)
