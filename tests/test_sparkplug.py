"""Sparkplug B against a real mosquitto and the real service, seen by an independent host.

The host in this file decodes with classes that grpc_tools.protoc compiles from Tahu's
sparkplug_b.proto at test time, not with edged's encoder or its generated module, and checks the
session rules: births before data, seq continuity with the 255 wrap, NDEATH (the will) with the
birth's bdSeq after SIGKILL, rebirth on NCMD, STATE gating, and historical data after an outage.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import REPO, Broker, Recorder, free_port, sim_config

pytestmark = pytest.mark.broker

PROTO = REPO / "edged" / "sparkplug" / "sparkplug_b.proto"
GROUP, NODE = "plant", "test-gw"


@pytest.fixture(scope="session")
def tahu(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """Tahu's protobuf classes, compiled here from the .proto (independent of edged's module)."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("tahu")
    (out / "sparkplug_b.proto").write_bytes(PROTO.read_bytes())
    rc = protoc.main(["protoc", f"-I{out}", f"--python_out={out}", str(out / "sparkplug_b.proto")])
    assert rc == 0, "protoc failed on Tahu's sparkplug_b.proto"
    spec = importlib.util.spec_from_file_location("tahu_sparkplug_b_pb2", out / "sparkplug_b_pb2.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tahu_sparkplug_b_pb2"] = mod
    spec.loader.exec_module(mod)
    return mod


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    assert pred(), f"timed out after {timeout} s waiting for {what}"


@dataclass
class Msg:
    topic: str
    verb: str
    device: str | None
    payload: Any  # decoded Payload (Tahu classes) or the STATE JSON
    t: float


@dataclass
class Host:
    """A Sparkplug host application: subscribes to the namespace, decodes, keeps everything."""

    port: int
    pb: ModuleType
    host_id: str = "scada"
    messages: list[Msg] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"host-{id(self)}")
        self.client.reconnect_delay_set(1, 1)
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe("spBv1.0/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert ready.wait(10), "host did not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if not msg.payload:
            return  # a retained message being cleared
        if parts[1] == "STATE":
            m = Msg(msg.topic, "STATE", None, json.loads(msg.payload), time.monotonic())
        else:
            p = self.pb.Payload()
            p.ParseFromString(msg.payload)
            m = Msg(msg.topic, parts[2], parts[4] if len(parts) > 4 else None, p, time.monotonic())
        with self.lock:
            self.messages.append(m)

    def node_msgs(self) -> list[Msg]:
        with self.lock:
            return [m for m in self.messages if m.verb != "STATE" and m.verb not in ("NCMD", "DCMD")]

    def verbs(self) -> list[str]:
        return [m.verb for m in self.node_msgs()]

    def count(self, verb: str) -> int:
        return self.verbs().count(verb)

    def state(self, online: bool) -> None:
        payload = json.dumps({"online": online, "timestamp": int(time.time() * 1000)})
        self.client.publish(f"spBv1.0/STATE/{self.host_id}", payload, qos=1, retain=True).wait_for_publish(5)

    def rebirth(self) -> None:
        p = self.pb.Payload()
        p.timestamp = int(time.time() * 1000)
        m = p.metrics.add()
        m.name = "Node Control/Rebirth"
        m.datatype = self.pb.Boolean
        m.boolean_value = True
        self.client.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", p.SerializeToString(), qos=0).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def bdseq(p: Any) -> int:
    [m] = [m for m in p.metrics if m.name == "bdSeq"]
    return int(m.long_value)


def check_sessions(host: Host, pb: ModuleType) -> dict[str, Any]:
    """Walk everything the host saw and assert the session rules; returns what was found.

    Per session (from an NBIRTH): seq starts at 0 and goes up by one per message, 255 -> 0; a
    device's DATA only after its DBIRTH and before its DDEATH; DATA metrics carry an alias that
    the births declared (and no name), and a value of the birth's datatype; an NDEATH carries the
    bdSeq of the NBIRTH before it and no seq."""
    value_field = {
        pb.Boolean: "boolean_value",
        pb.String: "string_value",
        pb.Double: "double_value",
        pb.UInt64: "long_value",
    }
    seq: int | None = None
    born: dict[str, dict[int, tuple[str, int]]] = {}
    node_aliases: dict[int, tuple[str, int]] = {}
    birth_bdseq: int | None = None
    found: dict[str, Any] = {"wraps": 0, "births": 0, "deaths": [], "data": [], "bdseqs": []}
    for m in host.node_msgs():
        p = m.payload
        if m.verb == "NDEATH":
            assert not p.HasField("seq"), "NDEATH must not carry a seq"
            assert bdseq(p) == birth_bdseq, f"NDEATH bdSeq {bdseq(p)} != NBIRTH bdSeq {birth_bdseq}"
            found["deaths"].append(bdseq(p))
            seq, born = None, {}
            continue
        assert p.HasField("seq"), f"{m.verb} without seq"
        if m.verb == "NBIRTH":
            assert p.seq == 0, "NBIRTH seq must be 0"
            birth_bdseq = bdseq(p)
            found["bdseqs"].append(birth_bdseq)
            found["births"] += 1
            node_aliases = {x.alias: (x.name, x.datatype) for x in p.metrics if x.HasField("alias")}
            names = {x.name: x for x in p.metrics}
            assert names["Node Control/Rebirth"].datatype == pb.Boolean
            assert names["Node Control/Rebirth"].boolean_value is False
            assert names["bdSeq"].datatype == pb.UInt64
            assert names["Properties/edged version"].datatype == pb.String
            seq, born = 0, {}
            continue
        assert seq is not None, f"{m.verb} {m.device} before any NBIRTH"
        expected = (seq + 1) % 256
        assert p.seq == expected, f"seq gap: {p.seq} after {seq} ({m.verb} {m.device})"
        if p.seq == 0:
            found["wraps"] += 1
        seq = p.seq
        if m.verb == "DBIRTH":
            assert m.device is not None
            for x in p.metrics:
                assert x.name and x.HasField("alias") and x.datatype in value_field, x
                if x.is_null:
                    continue
                assert x.WhichOneof("value") == value_field[x.datatype], x
            born[m.device] = {x.alias: (x.name, x.datatype) for x in p.metrics}
        elif m.verb == "DDEATH":
            assert m.device in born, f"DDEATH of {m.device} that was not born"
            del born[m.device]
        elif m.verb in ("DDATA", "NDATA"):
            aliases = born.get(m.device) if m.device else node_aliases
            assert aliases is not None, f"DDATA of {m.device} before its DBIRTH"
            values = {}
            for x in p.metrics:
                assert not x.name, "DATA metrics carry the alias only"
                assert x.alias in aliases, f"alias {x.alias} was not declared in the birth"
                name, dt = aliases[x.alias]
                if not x.is_null:
                    assert x.WhichOneof("value") == value_field[dt], (name, x)
                values[name] = (getattr(x, value_field[dt]), x.timestamp, x.is_historical)
            found["data"].append((m.device, values))
    return found


def _config(tmp_path: Path, port: int, primary: str | None = None, **over: Any) -> Path:
    sp = f'group_id = "{GROUP}"' + (f'\nprimary_host_id = "{primary}"' if primary else "")
    return sim_config(tmp_path, port, sparkplug=sp, **over)


@pytest.fixture
def host(broker: Broker, tahu: ModuleType) -> Iterator[Host]:
    h = Host(broker.port, tahu)
    yield h
    h.close()


def births(host: Host) -> list[int]:
    """bdSeq of every NBIRTH so far (a class a model learns later also causes a rebirth, same bdSeq)."""
    return [bdseq(m.payload) for m in host.node_msgs() if m.verb == "NBIRTH"]


def _born(host: Host) -> bool:
    verbs = host.verbs()
    return "NBIRTH" in verbs and verbs.count("DBIRTH") >= 4


def test_births_before_data_seq_wrap_types_and_timestamps(
    tmp_path: Path, broker: Broker, host: Host, tahu: ModuleType, recorder: Recorder, service_factory: Any
) -> None:
    """NBIRTH, then a DBIRTH per sensor and task, then data with aliases and the birth's datatypes;
    seq runs without a gap through the 255 -> 0 wrap; task metrics carry the window end as their
    timestamp, and the JSON topics are still published beside Sparkplug."""
    svc = service_factory(_config(tmp_path, broker.port))
    svc.start()
    _wait(lambda: len(host.node_msgs()) > 300, 120, "300 Sparkplug messages (past the seq wrap)")
    verbs = host.verbs()
    assert verbs[0] == "NBIRTH"
    first_data = next(i for i, v in enumerate(verbs) if v.endswith("DATA"))
    births = {m.device for m in host.node_msgs()[1:first_data]}
    assert births == {"imu", "env", "activity", "maintenance"}
    found = check_sessions(host, tahu)
    assert found["wraps"] >= 1
    # a class the maintenance model learns later is a new metric: a rebirth on the same connection
    assert len(set(found["bdseqs"])) == 1
    # the same prediction on both sides: Sparkplug metric timestamp = JSON window end
    by_seq = {p["seq"]: p for p in recorder.topic("/prediction/activity")}
    matched = 0
    for dev, values in found["data"]:
        if dev == "activity" and "seq" in values and values["seq"][0] in by_seq:
            pred = by_seq[values["seq"][0]]
            assert values["seq"][1] == round(pred["ts"] * 1000)
            assert values["label"][0] == (pred["label"] or "")
            matched += 1
    assert matched > 10
    assert svc.stop() == 0
    _wait(lambda: host.count("NDEATH") == 1, 10, "NDEATH at a clean stop")
    check_sessions(host, tahu)


def test_ndeath_will_on_sigkill_and_next_bdseq(
    tmp_path: Path, broker: Broker, host: Host, tahu: ModuleType, service_factory: Any
) -> None:
    """SIGKILL: the broker publishes the will, an NDEATH with the bdSeq of the NBIRTH; the next
    start births with the next bdSeq (persisted on disk)."""
    cfg = _config(tmp_path, broker.port)
    svc = service_factory(cfg)
    svc.start()
    _wait(lambda: _born(host) and host.count("DDATA") > 3, 90, "births and data")
    svc.stop(signal.SIGKILL)
    _wait(lambda: host.count("NDEATH") == 1, 30, "the NDEATH will")
    svc2 = service_factory(cfg)
    svc2.start()
    first = births(host)[0]
    _wait(lambda: births(host)[-1] != first, 90, "the NBIRTH of the restarted service")
    found = check_sessions(host, tahu)
    assert found["deaths"] == [first]
    assert births(host)[-1] == (first + 1) % 256
    svc2.stop()


def test_rebirth_on_ncmd(
    tmp_path: Path, broker: Broker, host: Host, tahu: ModuleType, service_factory: Any
) -> None:
    """An NCMD Node Control/Rebirth = true: NBIRTH (seq 0, same bdSeq: same connection) and every
    DBIRTH again, then data continues."""
    svc = service_factory(_config(tmp_path, broker.port))
    svc.start()
    _wait(lambda: _born(host) and host.count("DDATA") > 3, 90, "births and data")
    n_births = host.count("NBIRTH")
    host.rebirth()
    _wait(lambda: _log_has(svc, "sparkplug_rebirth_requested"), 30, "the NCMD at the node")
    _wait(lambda: host.count("NBIRTH") > n_births, 30, "the rebirth")
    n = len(host.node_msgs())
    _wait(lambda: len(host.node_msgs()) > n + 5, 30, "data after the rebirth")
    check_sessions(host, tahu)  # NBIRTH seq 0 again, DBIRTHs, then continuous seq
    assert len(set(births(host))) == 1, "a rebirth keeps the bdSeq (same connection)"
    svc.stop()


def _log_has(svc: Any, event: str) -> bool:
    return any(e.get("event") == event for e in svc.logs())


def test_state_gating(
    tmp_path: Path, broker: Broker, host: Host, tahu: ModuleType, recorder: Recorder, service_factory: Any
) -> None:
    """With a primary host configured, nothing is born until its STATE says online; when it goes
    offline the node publishes NDEATH, reconnects and waits; online again: births with a new bdSeq."""
    svc = service_factory(_config(tmp_path, broker.port, primary="scada"))
    svc.start()
    _wait(lambda: _log_has(svc, "sparkplug_connected"), 90, "the Sparkplug connection")
    _wait(lambda: len(recorder.topic("/prediction/activity")) > 5, 60, "JSON predictions")
    assert host.node_msgs() == [], "published before the primary host was online"
    host.state(True)
    _wait(lambda: _born(host) and host.count("DDATA") > 3, 30, "births after STATE online")
    host.state(False)
    _wait(lambda: host.count("NDEATH") == 1, 30, "NDEATH after STATE offline")
    _wait(lambda: sum(e.get("event") == "sparkplug_connected" for e in svc.logs()) == 2, 30, "the reconnect")
    n = len(host.node_msgs())
    k = len(recorder.topic("/prediction/activity"))
    _wait(lambda: len(recorder.topic("/prediction/activity")) > k + 5, 30, "JSON predictions meanwhile")
    assert len(host.node_msgs()) == n, "published while the primary host is offline"
    first = births(host)[0]
    host.state(True)
    _wait(lambda: births(host)[-1] != first, 30, "births after STATE online again")

    def forwarded() -> bool:  # what happened while the host was offline arrives as history
        msgs = host.node_msgs()
        second = next(i for i, m in enumerate(msgs) if m.verb == "NBIRTH" and bdseq(m.payload) != first)
        return any(
            m.verb == "DDATA" and m.device == "activity" and all(x.is_historical for x in m.payload.metrics)
            for m in msgs[second:]
        )

    _wait(forwarded, 30, "historical task data after STATE online again")
    check_sessions(host, tahu)
    assert births(host)[-1] == (first + 1) % 256
    host.client.publish("spBv1.0/STATE/scada", b"", retain=True).wait_for_publish(5)  # clear retained
    svc.stop()


class Proxy:
    """A TCP forwarder between the gateway and the broker that the test can cut and restore
    (the gateway's uplink goes down; the host stays connected and sees everything)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._srv: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen()
        self._srv = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                a, _ = srv.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    def _pipe(self, x: socket.socket, y: socket.socket) -> None:
        try:
            while data := x.recv(65536):
                y.sendall(data)
        except OSError:
            pass
        for s in (x, y):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self._srv is not None
        self._srv.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def _spooled(state: Path) -> int:
    try:
        with sqlite3.connect(f"file:{state / 'sparkplug.db'}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM msg").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_historical_after_outage(
    tmp_path: Path, broker: Broker, host: Host, tahu: ModuleType, recorder: Recorder, service_factory: Any
) -> None:
    """The gateway loses the broker: DATA is spooled on disk; after the reconnect the node births
    (next bdSeq) and sends the spooled data with is_historical = true, in order, before live data;
    every task prediction arrives exactly once (no gap, no duplicate in its seq)."""
    proxy = Proxy(broker.port)
    cfg = _config(tmp_path, proxy.port)
    svc = service_factory(cfg)
    svc.start()
    _wait(lambda: _born(host) and host.count("DDATA") > 10, 90, "births and data")
    proxy.cut()
    _wait(lambda: host.count("NDEATH") == 1, 60, "the NDEATH will when the link drops")
    _wait(lambda: _spooled(tmp_path / "state") > 30, 60, "30 messages spooled during the outage")
    first = births(host)[0]
    proxy.restore()
    _wait(lambda: births(host)[-1] != first, 60, "births after the outage")
    _wait(lambda: _spooled(tmp_path / "state") < 5, 60, "the spool drained")
    n = host.count("DDATA")
    _wait(lambda: host.count("DDATA") > n + 10, 60, "live data after the backlog")
    svc.stop()
    found = check_sessions(host, tahu)
    assert found["deaths"][0] == first and births(host)[-1] == (first + 1) % 256  # then the stop's NDEATH
    # walk the second session: historical first (in order), then live
    msgs = host.node_msgs()
    second = next(i for i, m in enumerate(msgs) if m.verb == "NBIRTH" and bdseq(m.payload) != first)
    flags, seqs, stamps = [], [], []
    for m in msgs[second:]:
        if m.verb == "DDATA" and m.device == "activity":
            hist = {x.is_historical for x in m.payload.metrics}
            assert len(hist) == 1, "a message is historical or not, not both"
            flags.append(hist.pop())
    assert flags and flags[0] is True, "spooled data must arrive as historical"
    assert flags == sorted(flags, reverse=True), "historical data must come before live data"
    assert flags.count(True) > 5
    for dev, values in found["data"]:
        if dev == "activity" and "seq" in values:
            seqs.append(values["seq"][0])
            stamps.append(values["seq"][1])
    assert len(seqs) == len(set(seqs)), "a prediction was delivered twice"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a prediction is missing or out of order"
    assert stamps == sorted(stamps)


def test_device_death_and_rebirth_of_a_lost_sensor(
    tmp_path: Path, broker: Broker, host: Host, tahu: ModuleType
) -> None:
    """A sensor whose health becomes lost gets a DDEATH (no DATA for it afterwards); when it reads
    again, a DBIRTH with its current values; seq stays continuous throughout."""
    from edged.sparkplug.node import EdgeNode, NodeSpec
    from edged.spool import Spool

    spec = NodeSpec(GROUP, NODE, None, "t", sensors={"imu": ["ax"]}, tasks={"activity": ["idle"]})
    node = EdgeNode(spec, "127.0.0.1", broker.port, tmp_path, Spool(tmp_path / "sparkplug.db"))
    node.start()
    try:
        _wait(lambda: host.count("DBIRTH") == 2, 30, "the births")
        summary = {"to": time.time(), "interval_s": 1.0, "channels": {"ax": {"count": 10, "mean": 0.5}}}
        node.observe("summary", summary, "summary")
        _wait(lambda: host.count("DDATA") == 1, 30, "sensor data")
        node.sensor_health("imu", "lost")
        _wait(lambda: host.count("DDEATH") == 1, 30, "the DDEATH")
        node.observe("summary", summary, "summary")  # a lost sensor has no summary data to send
        node.sensor_health("imu", "ok")
        _wait(lambda: host.count("DBIRTH") == 3, 30, "the DBIRTH after recovery")
        node.observe("summary", summary, "summary")
        _wait(lambda: host.count("DDATA") == 2, 30, "sensor data after the recovery")
        imu = [m.verb for m in host.node_msgs() if m.device == "imu"]
        assert imu == ["DBIRTH", "DDATA", "DDEATH", "DBIRTH", "DDATA"]
        check_sessions(host, tahu)
    finally:
        node.stop()
    _wait(lambda: host.count("NDEATH") == 1, 10, "NDEATH at stop")
