"""The Sparkplug B 3.0 edge node: one MQTT session of its own beside the JSON publisher.

Why a second MQTT connection: a client has exactly one last will, and the JSON publisher's will is
the retained ``status`` offline message (a contract); Sparkplug needs the NDEATH as the will.
Sparkplug also wants a clean session (3.0: Clean Session true), the JSON publisher a persistent one.

Session rules implemented here (Sparkplug B 3.0 section numbers in brackets):

* ``bdSeq`` (birth/death sequence, 0..255): one value per MQTT connection. It is kept in
  ``<state dir>/sparkplug.json`` and written (fsync) *before* the CONNECT that carries it in the
  will, so after a ``kill -9`` the next start uses the next value and a host never sees two
  sessions with the same one. The will is NDEATH(bdSeq), QoS 1, not retained; paho sends the will
  set at connect time, so the value is bumped and the will re-set in ``on_disconnect``, before
  paho's network thread reconnects. NBIRTH carries the same ``bdSeq``; a rebirth (NCMD) within
  the same connection keeps it (the will cannot change without reconnecting).
* ``seq`` 0..255 wrapping: NBIRTH is 0, every later NBIRTH/DBIRTH/NDATA/DDATA/DDEATH of the
  session takes the next; NDEATH has none.
* Births: NBIRTH (``bdSeq``, ``Node Control/Rebirth``, the edged version, each task's model
  version), then one DBIRTH per device with every metric's name, alias and datatype and its
  current value; after that DATA messages carry aliases only. A metric that appears later (a
  class the model learned) triggers a full rebirth, because births must declare every metric.
* Primary host: with ``primary_host_id`` set, nothing is published until
  ``spBv1.0/STATE/<host>`` says ``{"online": true, "timestamp": ms}`` (3.0 JSON payload; older
  timestamps are ignored). When the host goes offline the node publishes NDEATH, disconnects and
  reconnects (new ``bdSeq``), then waits for the host again.
* Store and forward: DATA and device deaths/births go through a disk spool (the same
  :class:`edged.spool.Spool` as the JSON topics, its own file ``sparkplug.db``) in order, encoded
  only when sent, because ``seq`` and ``is_historical`` belong to the session that sends them. A
  message queued before the current birth (broker away, host offline, previous run) is sent after
  the births with ``is_historical = true`` on its metrics and its original timestamps. A message
  leaves the spool once paho has written it to the socket (QoS 0, as the spec requires for DATA);
  a publish that fails stays at the head of the queue for the next session.

Threads: the engine thread calls :meth:`EdgeNode.observe` / :meth:`sensor_health` (queue only);
the ``edged-sparkplug`` thread runs births and sending; paho's network thread runs the callbacks,
which only set flags.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edged.sparkplug import codec
from edged.sparkplug.codec import BOOLEAN, DOUBLE, STRING, UINT64, Value
from edged.spool import Msg, Spool

log = structlog.get_logger("edged.sparkplug")

REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"
PUBLISH_TIMEOUT_S = 5.0


@dataclass
class NodeSpec:
    """What the node and its devices are: filled by the composition root from the config."""

    group_id: str
    edge_node_id: str
    primary_host_id: str | None
    version: str
    sensors: dict[str, list[str]]  # sensor device -> channels
    tasks: dict[str, list[str]]  # task device -> known classes
    anomaly: set[str] = field(default_factory=set)  # tasks with an anomaly detector
    model_versions: dict[str, int] = field(default_factory=dict)


@dataclass
class _Metric:
    alias: int
    datatype: int
    value: Any = None
    ts: int | None = None


class BdSeqStore:
    """The ``bdSeq`` of the current (or next) connection, persisted before it is used."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            last = int(json.loads(path.read_text())["bdSeq"])
            self.value = (last + 1) % 256
        except (OSError, ValueError, KeyError, TypeError):
            self.value = 0
        self._write()

    def bump(self) -> int:
        self.value = (self.value + 1) % 256
        self._write()
        return self.value

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump({"bdSeq": self.value}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk must not stop the node: the host still sees a valid session
            log.error("sparkplug_bdseq_not_saved", error=str(exc), bdSeq=self.value)


def sensor_metrics(channels: list[str]) -> dict[str, int]:
    """A sensor device's metrics and their datatypes."""
    out: dict[str, int] = {"health": STRING, "samples": UINT64, "sample_rate_hz": DOUBLE}
    for ch in channels:
        for stat in ("mean", "std", "min", "max"):
            out[f"{ch}/{stat}"] = DOUBLE
    return out


def task_metrics(classes: list[str], anomaly: bool) -> dict[str, int]:
    """A task device's metrics and their datatypes."""
    out: dict[str, int] = {
        "label": STRING,
        "seq": UINT64,
        "model/version": UINT64,
        "model/n_learned": UINT64,
        "prequential/n": UINT64,
        "prequential/accuracy": DOUBLE,
        "prequential/macro_f1": DOUBLE,
    }
    for c in classes:
        out[f"scores/{c}"] = DOUBLE
    if anomaly:
        out["anomaly/score"] = DOUBLE
        out["anomaly/alarm"] = BOOLEAN
    return out


class EdgeNode:
    """Sparkplug B edge node (see the module docstring for the rules it keeps)."""

    def __init__(
        self,
        spec: NodeSpec,
        host: str,
        port: int,
        state_dir: Path,
        spool: Spool,
        *,
        keepalive_s: int = 30,
        client_id: str | None = None,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
    ) -> None:
        self.spec = spec
        self.host, self.port, self.keepalive_s = host, port, keepalive_s
        self.spool = spool
        self.bdseq = BdSeqStore(state_dir / "sparkplug.json")
        self._lock = threading.RLock()
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._next_alias = 1
        # device name ("" = the node) -> metric name -> metric
        self._metrics: dict[str, dict[str, _Metric]] = {"": {}}
        self._node_metric(REBIRTH, BOOLEAN, False)
        self._node_metric("Properties/edged version", STRING, spec.version)
        for task, v in spec.model_versions.items():
            self._node_metric(f"Models/{task}/version", UINT64, v)
        for name, chans in spec.sensors.items():
            self._device(name, sensor_metrics(chans))
            self._metrics[name]["health"].value = "ok"
        for name, classes in spec.tasks.items():
            self._device(name, task_metrics(classes, name in spec.anomaly))
        self._dead: set[str] = set()  # devices whose sensor is lost (no DBIRTH until it recovers)
        self._born_devices: set[str] = set()
        self._boot = uuid.uuid4().hex[:8]
        self._session = 0
        self._live_session = ""  # "<boot>:<session>" of the current birth
        self._born = False
        self._seq = 0
        self._connected = threading.Event()
        self._host_online = spec.primary_host_id is None
        self._host_ts = -1
        self._rebirth = False
        self._restart = False
        self._pending: deque[tuple[Msg, dict[str, Any]]] = deque()
        self.counters: dict[str, int] = {"births": 0, "sent": 0, "historical": 0, "dropped": 0}
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"edged-{spec.edge_node_id}-spb",
            protocol=paho.MQTTv311,
            clean_session=True,  # Sparkplug 3.0: edge nodes connect with a clean session
        )
        self.client.reconnect_delay_set(max(1, round(reconnect_min_s)), max(1, round(reconnect_max_s)))
        if tls is not None:
            self.client.tls_set_context(tls)
        if username is not None:
            self.client.username_pw_set(username, password)
        self._set_will()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._thread = threading.Thread(target=self._run, name="edged-sparkplug", daemon=True)

    # -- metric registry ----------------------------------------------------------------------------
    def _alias(self) -> int:
        a = self._next_alias
        self._next_alias += 1
        return a

    def _node_metric(self, name: str, datatype: int, value: Any) -> None:
        self._metrics[""][name] = _Metric(self._alias(), datatype, value)

    def _device(self, name: str, metrics: dict[str, int]) -> None:
        dev = self._metrics.setdefault(name, {})
        for m, dt in metrics.items():
            if m not in dev:
                dev[m] = _Metric(self._alias(), dt)

    def topic(self, verb: str, device: str | None = None) -> str:
        return codec.topic(self.spec.group_id, verb, self.spec.edge_node_id, device)

    @property
    def born(self) -> bool:
        return self._born

    # -- input (engine thread) ---------------------------------------------------------------------
    def observe(self, topic: str, payload: dict[str, Any], kind: str) -> None:
        """A JSON message the service publishes: the matching Sparkplug DATA is queued."""
        try:
            if topic.startswith("prediction/"):
                self._on_prediction(topic[len("prediction/") :], payload)
            elif topic == "summary":
                self._on_summary(payload)
        except (KeyError, TypeError, ValueError) as exc:  # a payload shape edged does not know
            log.warning("sparkplug_observe_failed", topic=topic, error=str(exc))

    def sensor_health(self, name: str, health: str) -> None:
        """A sensor's health changed: DDEATH when lost, DBIRTH when back, a health DDATA otherwise."""
        if name not in self.spec.sensors:
            return
        ts = codec.now_ms()
        with self._lock:
            was_dead = name in self._dead
            self._metrics[name]["health"].value = health
            self._metrics[name]["health"].ts = ts
            if health == "lost" and not was_dead:
                self._dead.add(name)
                self._queue({"t": "DDEATH", "d": name, "ts": ts}, "alert")
            elif health != "lost" and was_dead:
                self._dead.discard(name)
                self._queue({"t": "DBIRTH", "d": name, "ts": ts}, "alert")
            else:
                self._queue({"t": "DDATA", "d": name, "ts": ts, "m": {"health": health}}, "alert")

    def _on_prediction(self, task: str, p: dict[str, Any]) -> None:
        if task not in self.spec.tasks:
            return
        ts = round(float(p["ts"]) * 1000)
        values: dict[str, Any] = {
            "label": p["label"] if p["label"] is not None else None,
            "seq": p["seq"],
            "model/version": p["model"]["version"],
            "model/n_learned": p["model"]["n_learned"],
        }
        for c, s in p["scores"].items():
            values[f"scores/{c}"] = s
        if "anomaly" in p:
            values["anomaly/score"] = p["anomaly"]["score"]
            values["anomaly/alarm"] = p["anomaly"]["alarm"]
        with self._lock:
            node_key = f"Models/{task}/version"
            node = self._metrics[""]
            if node_key in node and node[node_key].value != p["model"]["version"]:
                node[node_key].value, node[node_key].ts = p["model"]["version"], ts
                self._queue(
                    {"t": "NDATA", "d": None, "ts": ts, "m": {node_key: p["model"]["version"]}}, "alert"
                )
            self._queue({"t": "DDATA", "d": task, "ts": ts, "m": values}, "prediction")

    def _on_summary(self, p: dict[str, Any]) -> None:
        ts = round(float(p["to"]) * 1000)
        interval = float(p.get("interval_s") or 0.0)
        channels = p.get("channels", {})
        with self._lock:
            for name, chans in self.spec.sensors.items():
                values: dict[str, Any] = {}
                count = 0
                for ch in chans:
                    agg = channels.get(ch)
                    if not agg:
                        continue
                    count = max(count, int(agg.get("count", 0)))
                    for stat in ("mean", "std", "min", "max"):
                        if isinstance(agg.get(stat), int | float):
                            values[f"{ch}/{stat}"] = agg[stat]
                if values and name not in self._dead:
                    values["samples"] = count
                    if interval > 0:
                        values["sample_rate_hz"] = round(count / interval, 3)
                    self._queue({"t": "DDATA", "d": name, "ts": ts, "m": values}, "summary")
            for task, entry in p.get("tasks", {}).items():
                pq = entry.get("prequential") if isinstance(entry, dict) else None
                if task in self.spec.tasks and isinstance(pq, dict):
                    values = {
                        "prequential/n": pq.get("n", 0),
                        "prequential/accuracy": pq.get("accuracy"),
                        "prequential/macro_f1": pq.get("macro_f1"),
                    }
                    self._queue({"t": "DDATA", "d": task, "ts": ts, "m": values}, "summary")

    def _queue(self, item: dict[str, Any], kind: str) -> None:
        """Remember the latest values (for births) and spool the message (lock held)."""
        dev = item.get("d") or ""
        for name, v in item.get("m", {}).items():
            m = self._metrics[dev].get(name)
            if m is None:  # a class seen for the first time: declare it, births must list it
                self._device(dev, {name: DOUBLE})
                m = self._metrics[dev][name]
                self._rebirth = True
            m.value, m.ts = v, item["ts"]
        item["s"] = self._live_session if self._born else ""
        self.spool.put(dev, json.dumps(item, separators=(",", ":")).encode(), kind)
        with self._wake:
            self._wake.notify()

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self.client.loop_start()
        self._thread.start()
        log.info(
            "sparkplug_starting",
            group=self.spec.group_id,
            node=self.spec.edge_node_id,
            primary_host=self.spec.primary_host_id,
            bdSeq=self.bdseq.value,
            spooled=len(self.spool),
        )

    def stop(self, timeout: float = 2.0) -> int:
        """Send what can be sent within ``timeout``, publish NDEATH, disconnect; returns what is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._born and (len(self.spool) or self._pending):
            with self._wake:
                self._wake.notify_all()
            time.sleep(0.02)
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self._thread.join(timeout=PUBLISH_TIMEOUT_S)
        if self._connected.is_set():
            self._publish(self.topic("NDEATH"), self._ndeath(), qos=1)
        self.client.disconnect()
        self.client.loop_stop()
        left = len(self.spool)
        self.spool.close()
        return left

    # -- paho callbacks (network thread: flags only) ------------------------------------------------
    def _ndeath(self) -> bytes:
        return codec.encode(
            [Value(BDSEQ, None, UINT64, self.bdseq.value)], seq=None, birth=True, timestamp=codec.now_ms()
        )

    def _set_will(self) -> None:
        self.client.will_set(self.topic("NDEATH"), self._ndeath(), qos=1, retain=False)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.error("sparkplug_connect_refused", reason=str(rc))
            return
        client.subscribe(self.topic("NCMD"), qos=1)
        client.subscribe(self.topic("DCMD") + "/+", qos=1)
        if self.spec.primary_host_id is not None:
            self._host_online = False  # until the (retained) STATE says otherwise
            client.subscribe(f"{codec.NAMESPACE}/STATE/{self.spec.primary_host_id}", qos=1)
        log.info("sparkplug_connected", bdSeq=self.bdseq.value)
        self._connected.set()
        with self._wake:
            self._wake.notify()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connected.clear()
        self._born = False
        if not self._stop.is_set():
            # the next CONNECT (paho reconnects on its own) must carry the next bdSeq in its will
            self.bdseq.bump()
            self._set_will()
            log.warning("sparkplug_disconnected", reason=str(rc), next_bdSeq=self.bdseq.value)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topic("NCMD"):
            try:
                payload = codec.decode(msg.payload)
            except Exception as exc:  # protobuf's DecodeError; garbage from the network is not fatal
                log.warning("sparkplug_bad_ncmd", error=str(exc))
                return
            rebirth = self._metrics[""][REBIRTH].alias
            for m in payload.metrics:
                if (m.name == REBIRTH or (not m.name and m.alias == rebirth)) and codec.metric_value(m):
                    log.info("sparkplug_rebirth_requested")
                    self._rebirth = True
        elif msg.topic.startswith(f"{codec.NAMESPACE}/STATE/"):
            try:
                state = json.loads(msg.payload)
                online, ts = state["online"], int(state["timestamp"])
                if not isinstance(online, bool):
                    raise TypeError("online is not a boolean")
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("sparkplug_bad_state", error=str(exc))
                return
            if ts < self._host_ts:
                return  # an older STATE than one already seen (3.0: ignore it)
            self._host_ts = ts
            was = self._host_online
            self._host_online = online
            log.info("sparkplug_host_state", host=self.spec.primary_host_id, online=online)
            if was and not online and self._born:
                self._restart = True  # NDEATH, disconnect, reconnect, wait for the host again
        else:
            return
        with self._wake:
            self._wake.notify()

    # -- sender thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                self._wake.wait(timeout=0.1)
            try:
                self._step()
            except Exception:  # the node must keep trying; the JSON topics are unaffected
                log.exception("sparkplug_sender_error")
                time.sleep(0.5)

    def _step(self) -> None:
        if self._restart:
            self._restart = False
            self._reconnect()
            return
        if not self._connected.is_set() or not self._host_online:
            return
        if not self._born or self._rebirth:
            self._birth()
            return
        while not self._stop.is_set() and self._born and not self._rebirth:
            if not self._pending:
                for msg in self.spool.next_batch(64):
                    self._pending.append((msg, json.loads(msg.payload)))
                if not self._pending:
                    return
            msg, item = self._pending[0]
            ok = self._send_item(item)
            if not ok:
                # The item stays at the head. Its seq was used up: if still connected (a publish that
                # timed out), rebirth, so the host never sees a gap in seq.
                if self._connected.is_set():
                    self._rebirth = True
                return
            self._pending.popleft()
            if ok == "dropped":
                self.spool.ack([], [msg])
            else:
                self.spool.ack([msg])

    def _reconnect(self) -> None:
        log.warning("sparkplug_host_offline", note="NDEATH, reconnect, wait for the host")
        if self._connected.is_set():
            self._publish(self.topic("NDEATH"), self._ndeath(), qos=1)
        self._born = False
        self.client.disconnect()  # on_disconnect bumps bdSeq and re-sets the will
        self.client.loop_stop()
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self.client.loop_start()

    def _next_seq(self) -> int:
        s = self._seq
        self._seq = (self._seq + 1) % 256
        return s

    def _publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        info = self.client.publish(topic, payload, qos=qos)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        try:
            info.wait_for_publish(timeout=PUBLISH_TIMEOUT_S)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def _values(
        self, device: str, names: list[str] | None = None, historical: bool = False, ts: int | None = None
    ) -> list[Value]:
        dev = self._metrics[device]
        out = []
        for name in names if names is not None else list(dev):
            m = dev[name]
            out.append(Value(name, m.alias, m.datatype, m.value, ts if ts is not None else m.ts, historical))
        return out

    def _birth(self) -> None:
        with self._lock:
            self._rebirth = False
            self._seq = 0
            now = codec.now_ms()
            node = [Value(BDSEQ, None, UINT64, self.bdseq.value, now), *self._values("")]
            births = [
                (self.topic("NBIRTH"), codec.encode(node, seq=self._next_seq(), birth=True, timestamp=now))
            ]
            alive = [d for d in self._metrics if d and d not in self._dead]
            for d in alive:
                payload = codec.encode(self._values(d), seq=self._next_seq(), birth=True, timestamp=now)
                births.append((self.topic("DBIRTH", d), payload))
            # From here on, what the engine queues belongs to this session (newer than the births'
            # values: live, not historical), and a device death or birth queued while the births
            # are on their way is applied after them instead of being lost.
            self._session += 1
            self._live_session = f"{self._boot}:{self._session}"
            self._born_devices = set(alive)
            self._born = True
        for t, payload in births:
            if not self._publish(t, payload):
                log.warning("sparkplug_birth_failed", topic=t)
                self._born = False
                return
        self.counters["births"] += 1
        log.info("sparkplug_born", bdSeq=self.bdseq.value, devices=alive, spooled=len(self.spool))

    def _send_item(self, item: dict[str, Any]) -> bool | str:
        """Publish one queued message; False: not sent (retry later), "dropped": skipped for good."""
        verb, dev = item["t"], item.get("d")
        historical = item.get("s") != self._live_session
        with self._lock:
            if verb in ("DDEATH", "DBIRTH"):
                if historical:
                    return "dropped"  # births of this session already reflect the current health
                if verb == "DDEATH":
                    if dev not in self._born_devices:
                        return "dropped"
                    payload = codec.encode([], seq=self._next_seq(), birth=False)
                    self._born_devices.discard(dev)
                else:
                    assert dev is not None
                    payload = codec.encode(self._values(dev), seq=self._next_seq(), birth=True)
                    self._born_devices.add(dev)
                topic = self.topic(verb, dev)
            else:
                if dev is not None and dev not in self._born_devices:
                    self.counters["dropped"] += 1
                    return "dropped"  # a device that is dead now: no DATA without its birth
                names = [n for n in item["m"] if n in self._metrics[dev or ""]]
                vals = [
                    Value(n, m.alias, m.datatype, item["m"][n], item["ts"], historical)
                    for n in names
                    for m in (self._metrics[dev or ""][n],)
                ]
                payload = codec.encode(vals, seq=self._next_seq(), birth=False)
                topic = self.topic(verb, dev)
        if not self._publish(topic, payload):
            return False
        self.counters["sent"] += 1
        if historical:
            self.counters["historical"] += 1
        return True
