"""The service end to end: a real ``edged run`` process against a real mosquitto."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Broker, Recorder, free_port, sim_config, spool_count, wait_for

pytestmark = pytest.mark.broker

PREDICTION_KEYS = {"schema", "device", "task", "ts", "seq", "label", "scores", "model"}


def _preds(rec: Recorder, task: str) -> list[dict[str, Any]]:
    return rec.topic(f"/prediction/{task}")


def _assert_gap_free(preds: list[dict[str, Any]], start: int = 0) -> None:
    seqs = [p["seq"] for p in preds]
    assert seqs == list(range(start, start + len(seqs))), f"seq not gap-free: {seqs[:20]}..."


class TestEndToEnd:
    def test_status_predictions_summary_and_clean_stop(
        self, tmp_path: Path, broker: Broker, recorder: Recorder, service_factory: Any
    ) -> None:
        """Status online (retained), contract predictions for both tasks with gap-free seq, a
        summary of aggregates only, then status offline and exit 0 on SIGTERM."""
        svc = service_factory(sim_config(tmp_path, broker.port))
        svc.start()
        assert recorder.wait_for(
            lambda m: (
                len([x for x in m if "/prediction/maintenance" in x[0]]) >= 8
                and any(t.endswith("/summary") for t, _, _ in m)
            ),
            timeout=60,
        ), svc.logs()[-5:]
        assert svc.stop() == 0
        assert recorder.wait_for(
            lambda m: any(t.endswith("/status") and p["state"] == "offline" for t, p, _ in m)
        )

        status = [(p, r) for t, p, r in recorder.messages if t == "edged/test-gw/status"]
        assert status[0][0]["state"] == "online" and status[0][0]["schema"] == "edged.status.v1"
        assert status[-1][0]["state"] == "offline"
        assert "version" in status[0][0]

        for task in ("activity", "maintenance"):
            preds = _preds(recorder, task)
            assert len(preds) >= 8
            _assert_gap_free(preds)
            for p in preds:
                assert set(p) >= PREDICTION_KEYS, p
                assert p["schema"] == "edged.prediction.v1" and p["device"] == "test-gw" and p["task"] == task
                assert set(p["model"]) == {"version", "n_learned"}
                assert isinstance(p["scores"], dict)
            ts = [p["ts"] for p in preds]
            assert ts == sorted(ts) and abs(ts[-1] - time.time()) < 60
        for p in _preds(recorder, "maintenance"):
            assert (
                {"score", "alarm", "threshold", "tail"}
                <= set(p["anomaly"])
                <= {"score", "alarm", "threshold", "tail", "novel"}
            )
            assert isinstance(p["anomaly"]["alarm"], bool)
        assert "anomaly" not in _preds(recorder, "activity")[0]

        summaries = recorder.topic("/summary")
        assert len(summaries) >= 2  # periodic + final
        for s in summaries:
            assert s["schema"] == "edged.summary.v1"
            for agg in s["channels"].values():
                assert set(agg) == {"count", "mean", "std", "min", "max"}
                assert all(isinstance(v, int | float) for v in agg.values())
        final = summaries[-1]
        assert final["channels"]["az"]["count"] > 0
        assert 9.0 < final["channels"]["az"]["mean"] < 10.5  # gravity, a real aggregate
        events = [e.get("event") for e in svc.logs()]
        assert "service_started" in events and "service_stopped" in events
        from tests.schemas import validate_all

        assert validate_all(recorder.messages) > 20  # every payload matches schemas/*.json

    def test_labels_over_mqtt_are_learned_and_bad_ones_rejected(
        self, tmp_path: Path, broker: Broker, recorder: Recorder, service_factory: Any
    ) -> None:
        """A range label over MQTT raises n_learned; malformed labels are counted, never fatal."""
        cfg = sim_config(tmp_path, broker.port, simulator="seed = 3\nlabel_every_s = 0")
        svc = service_factory(cfg)
        svc.start()
        assert recorder.wait_for(
            lambda m: len([x for x in m if "/prediction/activity" in x[0]]) >= 3, timeout=60
        )
        first = _preds(recorder, "activity")[0]
        assert first["model"]["n_learned"] == 0
        bad = [
            b"not json",
            b'{"label": "running"}',
            b'{"label": "running", "ts": 1, "x": 2}',
            b'{"label": "flying", "ts": 1}',
            b'{"label": "", "ts": 1}',
            b'{"label": "running", "ts": "now"}',
            b'{"label": "running", "from": 10, "to": 5}',
            b"\xff\xfe",
            b"[]",
            b"x" * 5000,
            b'{"label": "running", "ts": NaN}',
        ]
        for payload in bad:
            recorder.publish("edged/test-gw/label/activity", payload)
        recorder.publish("edged/test-gw/label/nosuchtask", b'{"label": "a", "ts": 1}')
        now = time.time()
        good = {"label": "running", "from": first["ts"] - 1, "to": now + 3}
        recorder.publish("edged/test-gw/label/activity", json.dumps(good))
        assert recorder.wait_for(
            lambda m: any("/prediction/activity" in t and p["model"]["n_learned"] > 0 for t, p, _ in m),
            timeout=30,
        ), svc.logs()[-10:]
        assert svc.stop() == 0
        final = recorder.topic("/summary")[-1]
        assert final["counters"]["labels.rejected"] == len(bad) + 1
        assert final["counters"]["labels.applied"] + final["counters"].get("labels.open", 0) >= 1
        assert final["tasks"]["activity"]["model"]["n_learned"] > 0
        rejected = [e for e in svc.logs() if e.get("event") == "label_rejected"]
        assert rejected and all("reason" in e for e in rejected)

    def test_state_survives_restart(
        self, tmp_path: Path, broker: Broker, recorder: Recorder, service_factory: Any
    ) -> None:
        """What was learned is restored after a restart, and seq continues without a gap."""
        cfg = sim_config(tmp_path, broker.port)
        svc = service_factory(cfg)
        svc.start()
        assert recorder.wait_for(
            lambda m: any("/prediction/activity" in t and p["model"]["n_learned"] >= 20 for t, p, _ in m),
            timeout=90,
        ), svc.logs()[-10:]
        assert svc.stop() == 0
        before = _preds(recorder, "activity")
        last = before[-1]
        summary = recorder.topic("/summary")[-1]
        learned = summary["tasks"]["activity"]["model"]["n_learned"]
        assert learned >= last["model"]["n_learned"] >= 20

        show = subprocess.run(
            [sys.executable, "-m", "edged", "model", "show", "--json", "-c", str(cfg)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert show.returncode == 0, show.stderr
        shown = json.loads(show.stdout)["tasks"]["activity"]
        assert shown["n_learned"] == learned and shown["version"] == last["model"]["version"]

        n_before = len(before)
        svc2 = service_factory(cfg)
        svc2.start()
        assert recorder.wait_for(
            lambda m: len([x for x in m if "/prediction/activity" in x[0]]) >= n_before + 3, timeout=60
        )
        assert svc2.stop() == 0
        after = _preds(recorder, "activity")[n_before:]
        assert after[0]["seq"] == last["seq"] + 1
        _assert_gap_free(_preds(recorder, "activity"))
        assert after[0]["model"]["n_learned"] >= learned
        assert after[0]["model"]["version"] == last["model"]["version"]


class TestBrokerAway:
    def test_messages_wait_for_the_broker(self, tmp_path: Path, service_factory: Any) -> None:
        """With no broker reachable the service runs on, keeps its messages, and delivers all of
        them, in order, once the broker appears."""
        from tests.conftest import _mosquitto_or_skip

        _mosquitto_or_skip()
        port = free_port()
        conf = tmp_path / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        b = Broker(conf, port, tmp_path / "mosquitto.log")
        svc = service_factory(sim_config(tmp_path, port))
        svc.start()
        # Race: a fixed 4 s sleep stood here. On a loaded machine the service had not yet tried the
        # broker (no mqtt_unreachable) nor spooled anything after 4 s, so the "backlog from before the
        # broker came" was never tested and the log check failed. Wait for both, observed: the log
        # event, then predictions waiting in the spool.
        svc.wait_log("mqtt_unreachable", timeout=60)
        db = tmp_path / "state" / "spool.db"
        wait_for(lambda: spool_count(db), 60, "10 predictions spooled with no broker", lambda n: n >= 10)
        assert svc.proc is not None and svc.proc.poll() is None, "service died without a broker"
        b.start()
        rec = Recorder(port)
        try:
            assert rec.wait_for(
                lambda m: len([x for x in m if "/prediction/activity" in x[0]]) >= 40, timeout=60
            )
            assert svc.stop() == 0
            preds = _preds(rec, "activity")
            _assert_gap_free(preds)  # the backlog from before the broker came, then the rest
            assert [p["ts"] for p in preds] == sorted(p["ts"] for p in preds)
        finally:
            rec.close()
            b.stop()
        events = [e.get("event") for e in svc.logs()]
        assert "mqtt_unreachable" in events and "mqtt_connected" in events


class TestRecovery:
    def test_crash_and_damaged_checkpoint(
        self, tmp_path: Path, broker: Broker, recorder: Recorder, service_factory: Any
    ) -> None:
        """After SIGKILL the restored model gets a new version (its checkpoint is older than what
        ran); a damaged newest checkpoint is refused with a state alert and the one before it loads."""
        import signal

        cfg = sim_config(tmp_path, broker.port, state='dir = "state"\ncheckpoint_interval_s = 1')
        svc = service_factory(cfg)
        svc.start()
        assert recorder.wait_for(
            lambda m: any("/prediction/activity" in t and p["model"]["n_learned"] >= 10 for t, p, _ in m),
            timeout=90,
        ), svc.logs()[-10:]
        # Race: "a few periodic checkpoints" was a 2.5 s sleep; under load the second checkpoint was
        # not written yet and the test had no older file to fall back to. Wait for the files.
        ckpts = tmp_path / "state" / "models" / "activity"
        wait_for(
            lambda: sorted(p.name for p in ckpts.glob("ckpt-*.edgedmodel")),
            60,
            "two activity checkpoints",
            lambda names: len(names) >= 2,
        )
        svc.stop(signal.SIGKILL)
        files = sorted(ckpts.glob("ckpt-*.edgedmodel"), reverse=True)
        assert len(files) >= 2
        files[0].write_bytes(files[0].read_bytes()[:-10])  # torn newest file
        # Race: predictions spooled but not yet acknowledged when the service was killed are re-sent
        # by the restarted service, by design (QoS 1, nothing spooled is lost); they can even reach the
        # recorder after the kill. So "the first prediction after restart" is not "the n-th received":
        # it was often a pre-crash one, of the old model version. What the restarted service numbers is
        # known exactly: its seq starts at the counter committed in the spool with the last spooled
        # prediction. Everything below that was made before the crash.
        with contextlib.closing(sqlite3.connect(tmp_path / "state" / "spool.db")) as con:
            spooled_next = dict(con.execute("SELECT task, next FROM seq").fetchall())["activity"]
        # ...or at the seq.json reservation, whichever is higher (issue 17: the highest durable floor;
        # after SIGKILL seq may jump ahead, never repeat)
        reserved = json.loads((tmp_path / "state" / "seq.json").read_text())["next"].get("activity", 0)
        first_new = max(spooled_next, reserved)

        def restarted() -> list[dict[str, Any]]:
            return [p for p in _preds(recorder, "activity") if p["seq"] >= first_new]

        svc2 = service_factory(cfg)
        svc2.start()
        assert recorder.wait_for(
            lambda m: (
                len(restarted()) >= 3 and any(t.endswith("/alert") and p["kind"] == "state" for t, p, _ in m)
            ),
            timeout=60,
            what="3 predictions of the restarted service and a state alert",
        )
        assert svc2.stop() == 0
        before = max(
            (p for p in _preds(recorder, "activity") if p["seq"] < first_new), key=lambda p: p["seq"]
        )
        after = min(restarted(), key=lambda p: p["seq"])
        assert after["model"]["version"] == before["model"]["version"] + 1  # recovery version
        assert after["seq"] == first_new > before["seq"]  # never repeats after a crash, no false gap
        alerts = recorder.topic("/alert")
        state = [a for a in alerts if a["kind"] == "state"]
        assert state and "truncated" in state[0]["detail"]
        model_alerts = [a for a in alerts if a["kind"] == "model" and a["task"] == "activity"]
        assert any(a["event"]["kind"] == "recovery" for a in model_alerts)
        events = [e.get("event") for e in svc2.logs()]
        assert "unclean_stop_detected" in events and "checkpoint_rejected" in events
