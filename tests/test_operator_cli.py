"""Operator conveniences (issue 12): ``edged sensors read`` and ``edged label``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import REPO, Broker, Recorder, free_port, sim_config
from tests.schemas import validate
from tests.test_security import FACTORY_PASSWORD, GW_PASSWORD, SecureBroker, secure_broker  # noqa: F401 - the fixture, requested by name


def edged(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
        env=env,
    )


class LabelListener:
    """Subscribes to ``edged/+/label/#`` (which :class:`Recorder` leaves out) and keeps the messages."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, Any, int]] = []
        self.got = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"labels-{os.getpid()}")
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe("edged/+/label/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10), "label listener did not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.got:
            self.messages.append((msg.topic, json.loads(msg.payload), msg.qos))
            self.got.notify_all()

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[str, Any, int]]:
        with self.got:
            assert self.got.wait_for(lambda: len(self.messages) >= n, timeout), self.messages
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class TestSensorsRead:
    def test_prints_converted_values_from_the_shipped_config(self) -> None:
        """With the shipped config (emulated MPU-6050 and BME280 on bus "sim") it prints --count lines per
        sensor with every channel in the contract's units, then exits 0."""
        res = edged("sensors", "read", "--count", "2", "-c", str(REPO / "config.toml"))
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        imu = [x for x in lines if x.startswith("imu ")]
        env = [x for x in lines if x.startswith("env ")]
        assert len(imu) == 2 and len(env) == 2, lines
        assert all(f"{c}=" in imu[0] for c in ("ax", "ay", "az", "gx", "gy", "gz"))
        assert "m/s²" in imu[0] and "rad/s" in imu[0]
        assert "temperature=" in env[0] and "°C" in env[0] and "Pa" in env[0] and "%RH" in env[0]

    def test_json_lines_hold_plausible_values(self) -> None:
        """``--json`` gives one object per block; gravity shows on the accelerometer, air pressure
        is near sea level."""
        res = edged("sensors", "read", "--json", "-c", str(REPO / "config.toml"))
        assert res.returncode == 0, res.stderr
        rows = {r["sensor"]: r for r in map(json.loads, res.stdout.splitlines())}
        a = rows["imu"]["mean"]
        assert 8.0 < (a["ax"] ** 2 + a["ay"] ** 2 + a["az"] ** 2) ** 0.5 < 12.0
        assert 90_000 < rows["env"]["values"]["pressure"] < 110_000

    def test_a_missing_bus_is_an_error_with_the_fix(self, tmp_path: Path) -> None:
        """A chip on a bus whose /dev/i2c-N is missing: exit 1, the error and how to enable I2C."""
        cfg = sim_config(tmp_path, 1883)
        cfg.write_text(
            cfg.read_text().replace(
                '[sensors.imu]\ndriver = "sim_imu"\nrate_hz = 500\n',
                '[sensors.imu]\ndriver = "mpu6050"\nbus = 1\naddress = 0x68\nrate_hz = 500\n'
                'channels = ["ax", "ay", "az", "gx", "gy", "gz"]\n',
            )
        )
        env = dict(os.environ, EDGED_I2C_DEV_DIR=str(tmp_path))
        res = edged("sensors", "read", "--sensor", "imu", "--timeout", "5", "-c", str(cfg), env=env)
        assert res.returncode == 1
        assert "imu: ERROR" in res.stderr and "dtparam=i2c_arm=on" in res.stderr, res.stderr


class TestLabelCommand:
    def test_bad_arguments_are_refused_before_connecting(self, tmp_path: Path) -> None:
        """An unknown task, a class the task does not list, or half a range: exit 2 and why."""
        cfg = str(sim_config(tmp_path, free_port()))
        res = edged("label", "nope", "running", "-c", cfg)
        assert res.returncode == 2 and "no task named 'nope'" in res.stderr
        res = edged("label", "activity", "flying", "-c", cfg)
        assert res.returncode == 2 and "not a class of task activity" in res.stderr
        res = edged("label", "activity", "running", "--from=-1m", "-c", cfg)
        assert res.returncode == 2 and "--from and --to go together" in res.stderr
        res = edged("label", "activity", "running", "--ts", "yesterday", "-c", cfg)
        assert res.returncode == 2 and "not a time" in res.stderr

    def test_no_broker_is_an_error_not_a_traceback(self, tmp_path: Path) -> None:
        """Nothing listens on the configured port: exit 1 naming the broker."""
        port = free_port()
        res = edged("label", "activity", "running", "--timeout", "3", "-c", str(sim_config(tmp_path, port)))
        assert res.returncode == 1 and f"127.0.0.1:{port}" in res.stderr and "Traceback" not in res.stderr

    @pytest.mark.broker
    def test_the_running_service_learns_from_it(
        self, tmp_path: Path, broker: Broker, recorder: Recorder, service_factory: Any
    ) -> None:
        """`edged label` publishes contract payloads QoS 1 to edged/<id>/label/<task> and returns
        after the PUBACK; the running service (no simulated labels) learns from them."""
        cfg = sim_config(tmp_path, broker.port, simulator="seed = 3\nlabel_every_s = 0")
        listener = LabelListener(broker.port)
        svc = service_factory(cfg)
        try:
            svc.start()
            assert recorder.wait_for(
                lambda m: len([1 for t, _, _ in m if t.endswith("/prediction/activity")]) >= 3, timeout=90
            ), svc.logs()[-5:]
            assert all(p["model"]["n_learned"] == 0 for p in recorder.topic("/prediction/activity"))
            res = edged("label", "activity", "running", "--from", "2m", "--to", "now", "-c", str(cfg))
            assert res.returncode == 2 and "label_max_span_s" in res.stderr, res.stderr  # refused up front
            res = edged("label", "activity", "running", "--from", "25s", "--to", "now", "-c", str(cfg))
            assert res.returncode == 0, res.stderr
            assert "acknowledged" in res.stdout
            res = edged("label", "maintenance", "normal", "-c", str(cfg))
            assert res.returncode == 0, res.stderr
            msgs = listener.wait(2)
            (t1, p1, q1), (t2, p2, q2) = msgs[:2]
            assert (t1, q1, t2, q2) == (
                "edged/test-gw/label/activity",
                1,
                "edged/test-gw/label/maintenance",
                1,
            )
            assert set(p1) == {"label", "from", "to"} and p1["label"] == "running"
            assert p1["to"] - p1["from"] == pytest.approx(25, abs=1)
            assert set(p2) == {"label", "ts"} and abs(p2["ts"] - time.time()) < 60
            validate(p1, t1)
            validate(p2, t2)
            assert recorder.wait_for(
                lambda m: any(
                    t.endswith("/prediction/activity") and p["model"]["n_learned"] > 0 for t, p, _ in m
                ),
                timeout=30,
            ), "the service did not learn from the label"
            assert svc.stop(timeout=30) == 0
            events = [e for e in svc.logs() if e.get("event") == "label_rejected"]
            assert not events, events
        finally:
            listener.close()


@pytest.mark.broker
class TestLabelOverTls:
    def test_tls_and_password_as_the_service_and_the_acl_refusal(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """Over TLS with a password file, an account that may write label topics gets its label
        acknowledged; the gateway's own account, which the shipped ACL lets only read them, is told
        that the broker refused it (exit 1), never a silent success."""
        sb: SecureBroker = request.getfixturevalue("secure_broker")
        tls = f'\n[mqtt.tls]\nca_file = "{sb.pki.ca}"\n'
        for user, password, code in (("factory", FACTORY_PASSWORD, 0), ("test-gw", GW_PASSWORD, 1)):
            pw = tmp_path / f"{user}.pw"
            pw.write_text(password + "\n")
            pw.chmod(0o600)
            mqtt = f'host = "localhost"\nport = {sb.tls_port}\nusername = "{user}"\npassword_file = "{pw}"\n{tls}'
            d = tmp_path / user
            d.mkdir()
            res = edged("label", "activity", "idle", "-c", str(sim_config(d, sb.tls_port, mqtt=mqtt)))
            assert res.returncode == code, (user, res.stdout, res.stderr)
            if code == 0:
                assert "acknowledged" in res.stdout
            else:
                assert "refused the label" in res.stderr and "authori" in res.stderr.lower(), res.stderr
