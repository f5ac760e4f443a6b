"""Shared fixtures: a real mosquitto per test, config files, the service as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import structlog
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Every test starts from structlog's defaults."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


WARM_UP = """
import sys
from edged.app import warm_up
from edged.config import load
for path in sys.argv[1:]:
    warm_up(load(path)[0])
"""


@pytest.fixture(scope="session")
def jit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One numba cache for every service subprocess of the session, filled here, once.

    Race: the first service of a session compiled every kernel before it did anything else; on a
    loaded machine that took minutes, and the test that happened to come first timed out waiting
    for its first prediction. Compiling up front (the warm-up the service itself runs, on the test
    config and the shipped one) is bounded by the compiler finishing, not by a test's timeout."""
    cache = tmp_path_factory.mktemp("numba-cache")
    work = tmp_path_factory.mktemp("jit-warm-up")
    configs = [sim_config(work, free_port()), REPO / "config.toml"]
    res = subprocess.run(
        [sys.executable, "-c", WARM_UP, *map(str, configs)],
        env=dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(REPO)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert res.returncode == 0, f"compiling the kernels failed: {res.stderr[-3000:]}"
    return cache


# -- waiting on events, never on time -------------------------------------------------------------------
class WaitTimeout(AssertionError):
    """A wait ran out of time. An AssertionError, so helper threads that collect failures see it too."""


def wait_for(
    observe: Callable[[], Any],
    timeout: float,
    what: str,
    until: Callable[[Any], Any] = bool,
    describe: Callable[[Any], Any] = lambda v: v,
    interval: float = 0.05,
) -> Any:
    """Poll ``observe()`` until ``until(value)`` holds and return that value.

    Tests synchronise on something the service makes observable (a log event, the status file, the
    spool's rows, an MQTT message), never on a fixed sleep: a sleep is too short on a loaded machine
    and wasted time on an idle one. ``timeout`` is only the bound after which the test fails, saying
    ``what`` it waited for and the last value it saw (shown through ``describe``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = observe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            last = repr(describe(value))
            raise WaitTimeout(f"timed out after {timeout} s waiting for {what}; last observed: {last:.3000}")
        time.sleep(interval)


def spool_rows(db: Path, kind: str = "prediction") -> dict[str, list[int]] | None:
    """``{task: [seq, ...]}`` of the ``kind`` messages in a service's spool, or None while it cannot be
    read yet. The service creates ``spool.db`` first and its tables a moment later (``no such table:
    msg`` in between), so a missing file, table or lock is "not yet", not an error. Read-only: a reader
    must never create the file or hold it open."""
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = con.execute("SELECT payload FROM msg WHERE kind = ?", (kind,)).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    out: dict[str, list[int]] = {}
    for (payload,) in rows:
        p = json.loads(payload)
        if "task" in p:
            out.setdefault(p["task"], []).append(p.get("seq", -1))
        else:
            out.setdefault("", []).append(-1)
    return out


def spool_count(db: Path, kind: str = "prediction") -> int:
    """How many ``kind`` messages the spool holds (0 while it cannot be read yet)."""
    rows = spool_rows(db, kind)
    return sum(len(v) for v in rows.values()) if rows else 0


# -- mosquitto -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """A mosquitto process owned by one test."""

    conf: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115 - the broker process keeps the file
        )

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(listening, timeout, f"mosquitto to listen on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _mosquitto_or_skip() -> str:
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("mosquitto is not installed, and under CI=true a missing broker is a failure")
        pytest.skip("mosquitto is not installed (apt install mosquitto); broker tests need a real broker")
    return exe


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A plain mosquitto on a free loopback port, with a config this test wrote."""
    exe = _mosquitto_or_skip()
    os.environ["PATH"] = f"{Path(exe).parent}:{os.environ.get('PATH', '')}"
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "log_dest stderr\nlog_type error\nlog_type warning\n"
    )
    b = Broker(conf, port, tmp_path / "mosquitto.log")
    b.start()
    yield b
    b.stop()


# -- a small filesystem that really fills up -------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test (needs root/CAP_SYS_ADMIN): ENOSPC for real, not simulated."""
    mnt = tmp_path / "smallfs"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"cannot mount a tmpfs for the disk-full test: {res.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {res.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``directory`` until at most ``leave`` bytes are free; returns the filler."""
    filler = directory / "filler"
    with open(filler, "ab") as f:
        chunk = b"\0" * 65536
        while True:
            free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
            if free <= leave:
                break
            try:
                f.write(chunk[: max(1, min(len(chunk), free - leave))])
                f.flush()
            except OSError:
                break
    return filler


# -- an MQTT subscriber that records everything -----------------------------------------------------
@dataclass
class Recorder:
    """Subscribes to ``edged/#`` and keeps every message (decoded JSON)."""

    port: int
    messages: list[tuple[str, Any, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    host: str = "127.0.0.1"
    username: str | None = None
    password: str | None = None
    ca: Path | None = None  # TLS when set
    persistent: bool = False  # clean_session=False: the broker queues QoS 1 messages while we are away
    client_id: str | None = None

    def __post_init__(self) -> None:
        cid = self.client_id or f"rec-{os.getpid()}-{id(self)}"
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=cid, clean_session=not self.persistent
        )
        if self.ca is not None:
            self.client.tls_set(ca_certs=str(self.ca))
        if self.username is not None:
            self.client.username_pw_set(self.username, self.password)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_message = self._on_message
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe("edged/#", qos=1)
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        # Was a 10 s bound; a TLS handshake plus SUBSCRIBE took longer than that on a loaded machine.
        wait_for(ready.is_set, 60, f"the recorder's subscription on port {self.port}")

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        if "/label/" in msg.topic:
            return  # our own label publications (some deliberately malformed)
        with self.lock:
            self.messages.append((msg.topic, json.loads(msg.payload), bool(msg.retain)))

    def topic(self, suffix: str) -> list[Any]:
        with self.lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def snapshot(self) -> list[tuple[str, Any, bool]]:
        with self.lock:
            return list(self.messages)

    def wait_for(self, pred: Any, timeout: float = 30.0, what: str = "MQTT messages") -> bool:
        """Wait until ``pred(messages)`` holds; fails (WaitTimeout) with a digest of what did arrive if
        it never does. Returns True, so ``assert rec.wait_for(...)`` reads as before."""

        def digest(m: list[tuple[str, Any, bool]]) -> dict[str, Any]:
            return {"per_topic": dict(Counter(t for t, _, _ in m)), "last": m[-3:]}

        wait_for(self.snapshot, timeout, what, pred, digest)
        return True

    def publish(self, topic: str, payload: bytes | str) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(60)  # returns on PUBACK; the bound only catches a broker that never acks
        assert info.is_published(), f"no PUBACK for {topic} within 60 s"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def recorder(broker: Broker) -> Iterator[Recorder]:
    r = Recorder(broker.port)
    yield r
    r.close()


# -- configs and the service process -----------------------------------------------------------------
def sim_config(tmp_path: Path, port: int, **over: Any) -> Path:
    """A small, fast simulated config for tests; ``over`` replaces top-level TOML snippets."""
    sections = {
        "device": 'id = "test-gw"',
        "mqtt": f'host = "127.0.0.1"\nport = {port}\nreconnect_min_s = 1\nreconnect_max_s = 2',
        "state": 'dir = "state"\ncheckpoint_interval_s = 3',
        "log": 'level = "info"\nformat = "json"',
        "summary": "interval_s = 2",
        "simulator": "seed = 3\nlabel_every_s = 1\nstate_min_s = 3\nstate_max_s = 5",
    }
    sections.update(over)
    body = "\n".join(f"[{k}]\n{v}\n" for k, v in sections.items() if v is not None)
    body += """
[sensors.imu]
driver = "sim_imu"
rate_hz = 500

[sensors.env]
driver = "sim_env"
rate_hz = 2

[tasks.activity]
channels = ["ax", "ay", "az", "gx", "gy", "gz"]
window = 128
hop = 64
bands_hz = [0.5, 5, 15, 30, 60, 120, 250]
classes = ["off", "idle", "running"]

[tasks.maintenance]
channels = ["ax", "ay", "az"]
context = ["temperature"]
window = 256
hop = 128
bands_hz = [5, 20, 40, 60, 100, 200, 250]

[tasks.maintenance.anomaly]
model = "half_space_trees"
warmup = 20
"""
    path = tmp_path / "edged.toml"
    path.write_text(body)
    return path


@dataclass
class Service:
    """``python -m edged run`` as a child process."""

    config: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, ready_timeout: float = 300.0) -> None:
        """Start ``edged run`` and return once it logged ``service_started``.

        Race: tests gave the service 60 s from spawn to its first prediction, but start-up (imports,
        restoring models, loading kernels) alone took most of that on a loaded machine. Waiting for
        the service to say it runs makes every later timeout measure the behaviour under test; the
        bound here only catches a service that never starts."""
        assert self.log_path is not None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "ab"),  # noqa: SIM115
            env=self.env,
            cwd=REPO,
        )
        self.wait_log("service_started", timeout=ready_timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def logs(self) -> list[dict[str, Any]]:
        assert self.log_path is not None
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "unparsed", "line": line})
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        """The service's log events called ``name`` (JSON lines on its stderr)."""
        return [e for e in self.logs() if e.get("event") == name]

    def wait_log(self, name: str, timeout: float = 60.0, n: int = 1) -> list[dict[str, Any]]:
        """Wait until the service has logged ``name`` ``n`` times (and is still alive while it has not)."""

        def observe() -> list[dict[str, Any]]:
            found = self.events(name)
            if len(found) < n and self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"service exited ({self.proc.returncode}) before logging {name}: {self.logs()[-5:]}"
                )
            return found

        return wait_for(observe, timeout, f"{n} log event(s) {name!r}", lambda f: len(f) >= n)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def service_factory(tmp_path: Path, jit_cache: Path) -> Iterator[Any]:
    made: list[Service] = []

    def make(config: Path) -> Service:
        env = dict(os.environ, NUMBA_CACHE_DIR=str(jit_cache), PYTHONPATH=str(REPO))
        s = Service(config, env, log_path=tmp_path / f"service-{len(made)}.log")
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()
