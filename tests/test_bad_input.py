"""Hostile input end to end: fuzzed MQTT payloads through a real broker, corrupt state files,
unusable config files. Never a crash, never a corrupted model, every rejection counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.cli import main
from tests.conftest import REPO, Broker, Recorder, sim_config

OUTCOMES = ("rejected", "applied", "open", "held", "duplicate", "too_late", "unmatched")

_json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.text(max_size=30),
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(st.sampled_from(["label", "ts", "from", "to", "x", ""]), c, max_size=5)
    ),
    max_leaves=12,
)
_near_valid = st.fixed_dictionaries(
    {"label": st.sampled_from(["off", "idle", "running", "flying", "", "a\x00b", "x" * 80])},
    optional={
        "ts": st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=5),
        "from": st.floats(-1e12, 1e12),
        "to": st.floats(-1e12, 1e12),
    },
)
PAYLOADS = st.one_of(
    st.binary(max_size=300),
    _json_value.map(lambda v: json.dumps(v).encode()),
    _near_valid.map(lambda v: json.dumps(v).encode()),
    st.integers(1025, 4000).map(lambda n: b'{"label": "running", "ts": 1, "pad": "' + b"x" * n + b'"}'),
)
TASKS = st.one_of(
    st.sampled_from(["activity", "maintenance"]),
    # any topic level mosquitto accepts (it disconnects publishers of control characters
    # and noncharacters, which never reach the gateway)
    st.text(st.characters(blacklist_characters="/+#", blacklist_categories=("Cs", "Cc", "Cn")), max_size=40),
)


def _counted(counters: dict[str, int]) -> int:
    return sum(counters.get(f"labels.{o}", 0) for o in OUTCOMES)


pytestmark = pytest.mark.broker


class TestFuzzThroughBroker:
    def test_fuzzed_label_messages_are_counted_and_never_hurt_the_service(
        self, tmp_path: Path, broker: Broker, recorder: Recorder, service_factory: Any
    ) -> None:
        """Thousands of random and malformed payloads on random label topics, via mosquitto: the
        service stays up, every message is counted (applied or rejected), the rejection log is
        rate-limited, and the model still learns from a good label afterwards."""
        cfg = sim_config(
            tmp_path,
            broker.port,
            simulator="seed = 3\nlabel_every_s = 0",
            mqtt=f'host = "127.0.0.1"\nport = {broker.port}\nlabels_per_s = 100000',
        )
        svc = service_factory(cfg)
        svc.start()
        assert recorder.wait_for(lambda m: any("/prediction/activity" in t for t, _, _ in m), timeout=60)
        sent = 0

        @settings(
            max_examples=200,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(st.tuples(TASKS, PAYLOADS), min_size=8, max_size=20))
        def publish_batch(batch: list[tuple[str, bytes]]) -> None:
            nonlocal sent
            for task, payload in batch:
                recorder.publish(f"edged/test-gw/label/{task}", payload)
                sent += 1

        publish_batch()
        assert sent >= 1600
        assert svc.proc is not None and svc.proc.poll() is None, "the service died under fuzzing"
        before = recorder.topic("/prediction/activity")[-1]
        good = {"label": "running", "from": before["ts"] - 20, "to": time.time() + 3}  # within the 30 s span
        recorder.publish("edged/test-gw/label/activity", json.dumps(good))
        sent += 1
        assert recorder.wait_for(
            lambda m: any(
                "/prediction/activity" in t and p["model"]["n_learned"] > before["model"]["n_learned"]
                for t, p, _ in m
            ),
            timeout=30,
        )
        assert svc.stop() == 0
        final = recorder.topic("/summary")[-1]
        assert _counted(final["counters"]) == sent, final["counters"]
        assert final["counters"]["labels.rejected"] > sent // 2
        logged = [e for e in svc.logs() if e.get("event") == "label_rejected"]
        assert 10 <= len(logged) <= 10 + sent // 100 + 1  # counted every time, logged sparingly
        for p in recorder.topic("/prediction/maintenance"):
            assert all(isinstance(v, float) for v in p["scores"].values())
        show = subprocess.run(
            [sys.executable, "-m", "edged", "model", "show", "--json", "-c", str(cfg)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert show.returncode == 0 and json.loads(show.stdout)["problems"] == []


class TestCorruptState:
    def test_garbage_state_files_are_set_aside_reported_and_the_service_runs(
        self, tmp_path: Path, broker: Broker, recorder: Recorder, service_factory: Any
    ) -> None:
        """Corrupt spool.db, seq.json and checkpoint: each is reported as a state alert, the service
        starts, publishes and stops cleanly (no crash loop)."""
        cfg = sim_config(tmp_path, broker.port)
        state = tmp_path / "state"
        (state / "models" / "activity").mkdir(parents=True)
        (state / "spool.db").write_bytes(os.urandom(8192))
        (state / "seq.json").write_text('{"next": {"activity": "many"}}')
        (state / "models" / "activity" / "ckpt-00000001-v1.edgedmodel").write_bytes(
            b"EDGEDCKPT1\n{}\n" + os.urandom(64)
        )
        svc = service_factory(cfg)
        svc.start()
        assert recorder.wait_for(
            lambda m: len([1 for t, _, _ in m if "/prediction/activity" in t]) >= 3, timeout=60
        )
        assert svc.stop() == 0
        alerts = [a for a in recorder.topic("/alert") if a["kind"] == "state"]
        problems = sorted(a["problem"] for a in alerts)
        assert problems == ["checkpoint_rejected", "state_file_replaced", "state_file_replaced"], alerts
        assert [p["seq"] for p in recorder.topic("/prediction/activity")][:3] == [0, 1, 2]
        names = sorted(p.name.split(".corrupt-")[0] for p in state.iterdir() if ".corrupt-" in p.name)
        assert names == ["seq.json", "spool.db"]


class TestBadConfigFiles:
    @pytest.mark.parametrize(
        "make, message",
        [
            (lambda p: p.mkdir(), "not a regular file"),
            (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "not UTF-8"),
            (lambda p: p.write_text("[device\nid = 1"), "not valid TOML"),
            (lambda p: p.write_text("# " + "x" * (2 << 20)), "at most"),
        ],
    )
    def test_unusable_config_file_exits_2_with_a_message(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
    ) -> None:
        """A directory, binary junk, broken TOML or a huge file: exit 2 and a one-line reason, no traceback
        (the unit's RestartPreventExitStatus=2 then stops systemd from restarting in a loop)."""
        p = tmp_path / "edged.toml"
        make(p)
        assert main(["run", "-c", str(p)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
