"""Health computed, not remembered (issue 12): per sensor and task verdicts, the retained status
that follows them, ``edged status`` exit codes, and the bus probes of ``check`` and ``sensors scan``."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edged.health import HealthModel
from tests.conftest import REPO, Broker, Recorder, sim_config, wait_for
from tests.schemas import validate

SIM_IMU = '[sensors.imu]\ndriver = "sim_imu"\nrate_hz = 500\n'
BUS1_IMU = (
    '[sensors.imu]\ndriver = "mpu6050"\nbus = 1\naddress = 0x68\nrate_hz = 500\n'
    'channels = ["ax", "ay", "az", "gx", "gy", "gz"]\n'
)


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


@dataclass
class FakeSensor:
    name: str = "imu"
    health: str = "ok"
    reason: str = ""
    poll_s: float = 0.1
    last_block: float | None = None
    dead: bool = False

    def died(self) -> bool:
        return self.dead


class TestHealthModel:
    def _model(self, sensor: FakeSensor, state: list[int]) -> HealthModel:
        return HealthModel(
            [sensor], {"t": lambda: (state[0], state[1])}, {"t": 2.0}, no_data_s=10, stall_s=60, now=0.0
        )

    def test_sensor_verdicts_follow_what_is_observed_now(self) -> None:
        """A sensor is ok while blocks arrive, no_data when reads succeed but nothing arrives, its own
        degraded/lost with the reason while reads fail, lost when its thread ended; and ok again."""
        s, st = FakeSensor(last_block=0.0), [0, 0]
        h = self._model(s, st)
        assert h.evaluate(5.0).sensors["imu"].state == "ok"
        assert h.evaluate(11.0).sensors["imu"].state == "no_data"
        s.health, s.reason = "lost", "BusError: bus 1: No such file or directory"
        v = h.evaluate(12.0).sensors["imu"]
        assert (v.state, v.reason) == ("lost", s.reason)
        s.health, s.reason, s.last_block = "ok", "", 12.5
        assert h.evaluate(13.0).sensors["imu"].state == "ok"
        s.dead = True
        r = h.evaluate(13.5)
        assert r.sensors["imu"].state == "lost" and not r.healthy
        assert r.problems()[0] == "sensor imu lost: its polling thread ended"

    def test_a_slow_sensor_is_not_silent_between_its_samples(self) -> None:
        """A sensor sampled once a minute is ok 40 s after its last sample; no_data after three periods."""
        s = FakeSensor(name="soil", last_block=0.0, poll_s=1.0)
        h = HealthModel([s], {}, {}, no_data_s=10, now=0.0, sample_gap_s={"soil": 60.0})
        assert h.evaluate(40.0).sensors["soil"].state == "ok"
        assert h.evaluate(181.0).sensors["soil"].state == "no_data"

    def test_task_no_data_and_learning_stalled(self) -> None:
        """A task without windows for no_data_s plus a window is no_data; labels that keep arriving
        while nothing is learned for stall_s make it learning_stalled; learning clears it."""
        s, st = FakeSensor(last_block=0.0), [0, 0]
        h = self._model(s, st)
        assert h.evaluate(11.0).tasks["t"].state == "ok"  # within one window + no_data_s
        assert h.evaluate(12.5).tasks["t"].state == "no_data"
        st[0] = 5  # windows complete again
        s.last_block = 13.0
        assert h.evaluate(13.0).tasks["t"].state == "ok"
        for k in range(10):
            h.label_arrived("t", 14.0 + k)
            st[0] += 1
            assert h.evaluate(14.0 + k).tasks["t"].state == "ok"
        st[0] += 1
        s.last_block = 80.0
        v = h.evaluate(80.0).tasks["t"]
        assert v.state == "learning_stalled" and "10 labels" in v.reason, v
        st[1] = 3  # it learns
        assert h.evaluate(81.0).tasks["t"].state == "ok"


class TestStatusExitCodes:
    def test_exit_codes_follow_the_lsb_convention(self) -> None:
        """0 running and healthy, 1 running but unhealthy or stuck, 3 stopped, gone or no status."""
        from edged.ops import format_status, status_code

        ok = {"state": "running", "healthy": True, "problems": [], "device": "d"}
        bad = {**ok, "healthy": False, "problems": ["sensor imu lost: thread ended"]}
        stopped = {"state": "stopped", "healthy": None, "problems": [], "device": "d"}
        assert status_code(ok, "running") == 0
        assert status_code(bad, "running") == 1
        assert status_code(ok, "status is 40 s old: the main loop may be stuck") == 1
        assert status_code(stopped, "service stopped") == 3
        assert status_code(None, "no status file") == 3
        assert "sensor imu lost: thread ended" in format_status(bad, "running")
        assert "UNHEALTHY" not in format_status(stopped, "service stopped")


@pytest.mark.broker
class TestServiceHealth:
    def test_clean_stop_reads_stopped_not_unhealthy(
        self, tmp_path: Path, broker: Broker, recorder: Recorder, service_factory: Any
    ) -> None:
        """After SIGTERM, `edged status` says the service stopped, exit 3, and blames no sensor thread."""
        cfg = sim_config(tmp_path, broker.port, ops="status_interval_s = 0.5")
        svc = service_factory(cfg)
        svc.start()
        status = tmp_path / "state" / "status.json"
        wait_for(
            lambda: status.exists() and json.loads(status.read_text()).get("healthy") is True,
            90,
            "a healthy status file",
        )
        res = edged("status", "-c", str(cfg))
        assert res.returncode == 0 and "healthy" in res.stdout.splitlines()[0], res.stdout
        assert svc.stop(timeout=30) == 0
        res = edged("status", "-c", str(cfg))
        assert res.returncode == 3, res.stdout + res.stderr
        assert "stopped" in res.stdout.splitlines()[0]
        assert "UNHEALTHY" not in res.stdout and "died" not in res.stdout, res.stdout
        offline = wait_for(
            lambda: [p for p in recorder.topic("/status") if p["state"] == "offline"], 10, "status offline"
        )
        validate(offline[-1])

    def test_missing_bus_makes_the_imu_lost_everywhere(
        self, tmp_path: Path, broker: Broker, recorder: Recorder, service_factory: Any
    ) -> None:
        """With bus = 1 and no /dev/i2c-1 the IMU goes lost: the retained status is republished as it
        changes (degraded, then lost, tasks without data), and `edged status` exits 1 saying why."""
        cfg = sim_config(tmp_path, broker.port, ops="status_interval_s = 0.5\nno_data_s = 3")
        cfg.write_text(cfg.read_text().replace(SIM_IMU, BUS1_IMU))
        dev = tmp_path / "dev"
        dev.mkdir()
        svc = service_factory(cfg)
        svc.env["EDGED_I2C_DEV_DIR"] = str(dev)
        svc.start()

        def lost() -> list[Any]:
            return [p for p in recorder.topic("/status") if p.get("sensors", {}).get("imu") == "lost"]

        last = wait_for(lost, 120, "a retained status with the imu lost")[-1]
        for p in recorder.topic("/status"):
            validate(p)
        states = [p["sensors"]["imu"] for p in recorder.topic("/status") if p["state"] == "online"]
        assert "degraded" in states and states.index("degraded") < states.index("lost"), states
        assert last["healthy"] is False and any("sensor imu lost" in x for x in last["problems"]), last
        # a new subscriber gets the current verdict, retained
        late = Recorder(broker.port)
        try:
            wait_for(
                lambda: [
                    p for t, p, r in late.messages if t.endswith("/status") and r and p["healthy"] is False
                ],
                10,
                "the retained unhealthy status",
            )
        finally:
            late.close()
        wait_for(
            lambda: [
                p
                for p in recorder.topic("/status")
                if p.get("tasks", {}).get("activity", {}).get("health") == "no_data"
            ],
            60,
            "task activity no_data in the status",
        )
        res = edged("status", "-c", str(cfg))
        assert res.returncode == 1, res.stdout + res.stderr
        assert "UNHEALTHY" in res.stdout and "sensor imu lost" in res.stdout, res.stdout
        assert "task activity no_data" in res.stdout, res.stdout
        assert svc.stop(timeout=30) == 0


class TestBusProbes:
    def _cfg(self, tmp_path: Path) -> Path:
        cfg = sim_config(tmp_path, 1883)
        cfg.write_text(cfg.read_text().replace(SIM_IMU, BUS1_IMU))
        return cfg

    def test_check_names_the_key_and_how_to_enable_i2c(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`edged check` with bus = 1 and no /dev/i2c-1: exit 2, the key, and how to enable I2C."""
        from edged.cli import main

        monkeypatch.setenv("EDGED_I2C_DEV_DIR", str(tmp_path))
        cfg = self._cfg(tmp_path)
        assert main(["check", "-c", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert "sensors.imu.bus" in err and "i2c-1 does not exist" in err
        assert "dtparam=i2c_arm=on" in err and "raspi-config" in err
        (tmp_path / "i2c-1").write_bytes(b"")  # the device exists (and opens)
        assert main(["check", "-c", str(cfg)]) == 0

    def test_check_says_to_join_the_i2c_group_on_permission_denied(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`edged check` when /dev/i2c-1 is not ours to open: exit 2 and the `i2c` group fix."""
        from edged.cli import main

        monkeypatch.setenv("EDGED_I2C_DEV_DIR", str(tmp_path))
        (tmp_path / "i2c-1").write_bytes(b"")
        real_open = os.open

        def denied(path: Any, flags: int, *a: Any) -> int:
            if str(path).endswith("i2c-1"):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, flags, *a)

        monkeypatch.setattr(os, "open", denied)  # we run as root here: chmod would not deny
        assert main(["check", "-c", str(self._cfg(tmp_path))]) == 2
        err = capsys.readouterr().err
        assert "sensors.imu.bus" in err and "permission denied" in err and "`i2c` group" in err

    def test_scan_of_a_missing_bus_gives_the_fix(self, tmp_path: Path) -> None:
        """`sensors scan --bus 1` without /dev/i2c-1 says how to enable I2C, not only ENOENT."""
        env = dict(os.environ, EDGED_I2C_DEV_DIR=str(tmp_path), PYTHONPATH=str(REPO))
        res = edged("sensors", "scan", "--bus", "1", "-c", str(sim_config(tmp_path, 1883)), env=env)
        assert res.returncode == 1
        assert "i2c-1 does not exist" in res.stderr and "dtparam=i2c_arm=on" in res.stderr, res.stderr
