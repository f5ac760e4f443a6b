"""systemd integration: the unit's hardening, the sd_notify protocol, SIGTERM within 10 s, the
watchdog only while healthy, and ``edged status``."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Broker, Recorder, free_port, sim_config, spool_count, wait_for

UNIT = REPO / "systemd" / "edged.service"


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd)")
    return exe


class TestUnit:
    def test_exposure_is_at_most_2(self) -> None:
        """`systemd-analyze security --offline=true` rates the shipped unit at exposure <= 2.0."""
        out = subprocess.run(
            [_analyze(), "security", "--offline=true", str(UNIT)], capture_output=True, text=True, check=False
        ).stdout
        m = re.search(r"Overall exposure level for edged.service: (\d+\.\d+)", out)
        assert m is not None, out[-500:]
        assert float(m.group(1)) <= 2.0, out

    def test_verify_is_clean(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` reports nothing, once ExecStart names an installed edged (here the
        test venv's; on a gateway /opt/edged/venv/bin/edged)."""
        edged = Path(sys.executable).parent / "edged"
        assert edged.exists()
        unit = tmp_path / "edged.service"
        unit.write_text(UNIT.read_text().replace("/opt/edged/venv/bin/edged", str(edged)))
        res = subprocess.run([_analyze(), "verify", str(unit)], capture_output=True, text=True, check=False)
        assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stderr

    def test_unit_promises(self) -> None:
        """Type=notify with a watchdog, no restart on a config error (exit 2), credentials, I2C only,
        and the numba exception explained where it is made."""
        text = UNIT.read_text()
        keys = {
            line.split("=", 1)[0]: line.split("=", 1)[1]
            for line in text.splitlines()
            if "=" in line and not line.startswith("#")
        }
        assert (
            keys["Type"] == "notify"
            and keys["Restart"] == "on-failure"
            and keys["RestartPreventExitStatus"] == "2"
        )
        assert (
            int(keys["WatchdogSec"]) > 0
            and keys["DevicePolicy"] == "closed"
            and keys["DeviceAllow"] == "char-i2c rw"
        )
        assert "\nLoadCredential=edged-state-key:/etc/edged/state.key\n" in text
        assert "StateDirectory=edged" in text
        # the broker password is optional: a LoadCredential= whose file is missing fails the unit
        assert not re.search(r"^LoadCredential=edged-mqtt-password", text, re.MULTILINE)
        assert re.search(r"#[^\n]*numba[^\n]*\n(#[^\n]*\n)*MemoryDenyWriteExecute=no", text)


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET, read continuously like systemd does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._marks = 0
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))

    def collect(self, until: Any, timeout: float, what: str = "sd_notify messages") -> bool:
        """Wait until ``until(messages)`` holds; fails with what did arrive if it never does."""
        wait_for(lambda: list(self.messages), timeout, what, until, lambda m: [x for _, x in m[-10:]])
        return True

    def sync(self, timeout: float = 10.0) -> None:
        """Return once every datagram sent before this call has been read. A datagram socket keeps
        order, so a marker we send ourselves arrives after all of them: waiting for it replaces
        "wait 0.3 s and hope the reader caught up"."""
        self._marks += 1
        mark = f"TEST_SYNC={self._marks}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(mark.encode(), str(self.path))
        self.collect(lambda m: any(x == mark for _, x in m), timeout, f"our marker {mark}")

    def close(self) -> None:
        self._stop.set()
        self._reader.join(1)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


def _status(cfg: Path) -> tuple[int, dict[str, Any]]:
    res = subprocess.run(
        [sys.executable, "-m", "edged", "status", "--json", "-c", str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    return res.returncode, json.loads(res.stdout)


@pytest.mark.broker
class TestServiceLifecycle:
    def test_notify_protocol_status_view_and_sigterm_within_10_s(
        self,
        tmp_path: Path,
        broker: Broker,
        recorder: Recorder,
        service_factory: Any,
        notify_socket: NotifySocket,
    ) -> None:
        """READY=1 after start-up, WATCHDOG=1 every half WatchdogSec, STATUS= lines; `edged status` shows
        delivery, sensors, models and loop lag; SIGTERM gives STOPPING=1, offline status and exit 0 in < 10 s."""
        cfg = sim_config(tmp_path, broker.port, ops="status_interval_s = 1")
        svc = service_factory(cfg)
        # WatchdogSec=4 here (the shipped unit has 30): pings every 2 s. With 1 s the test demanded a
        # ping gap under 1 s as seen by this process's reader thread, and under a CPU hog the service's
        # loop and our reader together were late by more than the 0.5 s of slack (1.24 s measured).
        # What systemd enforces is a ping within WatchdogSec, which is what is checked.
        svc.env.update(NOTIFY_SOCKET=str(notify_socket.path), WATCHDOG_USEC="4000000")
        svc.start()
        assert notify_socket.collect(lambda m: any(x == "READY=1" for _, x in m), 60), svc.logs()[-5:]
        assert recorder.wait_for(lambda m: len([1 for t, _, _ in m if "/prediction/" in t]) >= 5, timeout=30)
        warm = time.monotonic()
        assert notify_socket.collect(
            lambda m: sum(x == "WATCHDOG=1" and t > warm for t, x in m) >= 4, 60, "4 watchdog pings"
        )
        pings = [t for t, x in notify_socket.messages if x == "WATCHDOG=1" and t > warm]
        assert max(b - a for a, b in itertools.pairwise(pings)) < 4.0  # every ~2 s, always within WatchdogSec
        assert any(x.startswith("STATUS=connected") for _, x in notify_socket.messages)

        code, st = _status(cfg)
        assert code == 0 and st["verdict"] == "running", st
        s = st["status"]
        assert s["healthy"] and s["mqtt"]["connected"] and s["sensors"]["imu"]["health"] == "ok"
        assert s["mqtt"]["spooled"]["prediction"] >= 5 and "dropped" in s["mqtt"]
        assert set(s["tasks"]) == {"activity", "maintenance"} and s["tasks"]["activity"]["next_seq"] >= 1
        assert s["loop"]["lag_max_s"] >= 0 and s["disk"]["free_bytes"] > 0

        t0 = time.monotonic()
        assert svc.stop(timeout=15) == 0
        assert time.monotonic() - t0 < 10.0
        notify_socket.sync()  # the service has exited: everything it sent is in the socket
        assert any(x == "STOPPING=1" for _, x in notify_socket.messages)
        assert recorder.wait_for(
            lambda m: any(t.endswith("/status") and p["state"] == "offline" for t, p, _ in m)
        )
        code, st = _status(cfg)
        assert code == 3 and st["verdict"] == "service stopped"

    def test_sigterm_without_a_broker_exits_0_in_time_and_keeps_the_spool(
        self, tmp_path: Path, service_factory: Any
    ) -> None:
        """With the broker unreachable, SIGTERM still exits 0 within 10 s, checkpointed, and every
        undelivered message stays in the spool for the next start."""
        cfg = sim_config(tmp_path, free_port())
        svc = service_factory(cfg)
        svc.start()
        db = tmp_path / "state" / "spool.db"
        # Race: this loop read the spool as soon as spool.db existed, before the service had created
        # its tables ("no such table: msg"), and fell through silently after 60 s.
        wait_for(lambda: spool_count(db), 60, "10 predictions spooled with no broker", lambda n: n >= 10)
        t0 = time.monotonic()
        assert svc.stop(timeout=15) == 0
        assert time.monotonic() - t0 < 10.0
        with contextlib.closing(sqlite3.connect(db)) as con:
            kinds = dict(con.execute("SELECT kind, COUNT(*) FROM msg GROUP BY kind").fetchall())
        assert kinds["prediction"] >= 10 and kinds["summary"] >= 1  # the final summary is spooled too
        assert list((tmp_path / "state" / "models" / "activity").glob("ckpt-*"))
        events = {e.get("event") for e in svc.logs()}
        assert {"mqtt_spooled_at_stop", "service_stopped"} <= events


class TestWatchdogHealth:
    def test_no_watchdog_ping_once_acquisition_died(
        self, tmp_path: Path, notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The main loop pings while healthy and stops pinging when a sensor thread is gone, so systemd's
        watchdog restarts a service whose acquisition died silently."""
        from edged.app import build_daemon
        from edged.config import load

        monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
        cfg, _ = load(str(sim_config(tmp_path, free_port())))
        daemon = build_daemon(cfg)
        try:
            for s in daemon.sensors:
                s.start()
            daemon.timers.watchdog_s = 0.001
            for _ in range(5):
                daemon._step(0.01)
            notify_socket.sync()  # the pings were sent during _step(); wait until they are read
            assert sum(x == "WATCHDOG=1" for _, x in notify_socket.messages) >= 3
            victim = daemon.sensors[0]
            victim._stop.set()
            victim._thread.join(5)
            assert daemon.ops.healthy(daemon) == (False, f"sensor thread {victim.name} died")
            # Was: collect for 0.3 s, twice, hoping the reader thread had caught up (under load it had
            # not, and a late ping from the healthy steps counted as an unhealthy one). sync() waits
            # until everything sent so far has been read.
            notify_socket.sync()  # drain what the healthy steps sent
            notify_socket.messages.clear()
            for _ in range(5):
                daemon._step(0.01)
            notify_socket.sync()
            assert not any(x == "WATCHDOG=1" for _, x in notify_socket.messages)
        finally:
            for s in daemon.sensors:
                s.stop()
            daemon.publisher.spool.close()
            os.environ.pop("NOTIFY_SOCKET", None)
