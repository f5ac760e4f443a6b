"""The only module that talks to paho-mqtt.

* Outgoing payloads go into a bounded :class:`Outbox` and a sender thread hands them to paho
  (QoS 1) only while connected, at most ``max_inflight`` unacknowledged at a time. Nothing
  blocks the caller: while the broker is away messages wait in the outbox (in order); when it
  is full, summaries are dropped first, then predictions, alerts last, and every drop is
  counted per kind.
* After a reconnect, messages that were in flight are re-sent by paho first; new messages
  wait until those are acknowledged, so subscribers see them in order.
* paho's network thread reconnects on its own with capped exponential backoff; labels are
  (re)subscribed and the retained ``status`` online is (re)published in ``on_connect``; the
  same topic is the last will (offline). Connection trouble is logged when it starts and when
  it ends, not on every retry.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edged.config import MqttConfig

log = structlog.get_logger("edged.mqtt")

# Drop order when the outbox is full: first kind listed goes first.
DROP_ORDER = ("summary", "prediction", "alert")


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, no NaN (the contract is strict JSON)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass(slots=True)
class OutMsg:
    n: int  # global order
    topic: str
    payload: bytes
    kind: str
    retain: bool = False


class Outbox:
    """Bounded FIFO of outgoing messages with a per-kind drop policy (thread-safe)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._q: dict[str, deque[OutMsg]] = {k: deque() for k in DROP_ORDER}
        self._n = itertools.count()
        self._lock = threading.Lock()
        self.dropped: Counter[str] = Counter()
        self.accepted = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._q.values())

    def put(self, topic: str, payload: bytes, kind: str, retain: bool = False) -> None:
        kind = kind if kind in self._q else "alert"
        with self._lock:
            if len(self) >= self.capacity:
                victim = next((k for k in DROP_ORDER if self._q[k]), kind)
                if DROP_ORDER.index(victim) > DROP_ORDER.index(kind):
                    victim = kind  # never drop something more important for something less
                if victim == kind and not self._q[kind]:
                    self.dropped[kind] += 1
                    return
                self._q[victim].popleft()
                self.dropped[victim] += 1
            self._q[kind].append(OutMsg(next(self._n), topic, payload, kind, retain))
            self.accepted += 1

    def pop(self) -> OutMsg | None:
        """Oldest message of any kind."""
        with self._lock:
            heads = [q for q in self._q.values() if q]
            if not heads:
                return None
            return min(heads, key=lambda q: q[0].n).popleft()


class Publisher:
    """paho client + outbox + sender thread; also receives labels."""

    def __init__(self, cfg: MqttConfig, device_id: str, status: Callable[[str], dict[str, Any]],
                 on_label: Callable[[str, bytes], None]) -> None:
        self.cfg = cfg
        self.prefix = f"edged/{device_id}"
        self.status = status
        self.on_label = on_label
        self.outbox = Outbox(cfg.queue_max)
        self.sent: Counter[str] = Counter()
        self._inflight: deque[tuple[OutMsg, paho.MQTTMessageInfo]] = deque()
        self._connected = threading.Event()
        self._resync = False
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._down_since: float | None = time.monotonic()
        self._fail_logged = False
        self._ever_connected = False
        self.last_refusal: str | None = None
        protocol = paho.MQTTv5 if cfg.protocol == "5" else paho.MQTTv311
        client_id = cfg.client_id or f"edged-{device_id}"
        kwargs: dict[str, Any] = {"callback_api_version": CallbackAPIVersion.VERSION2, "client_id": client_id,
                                  "protocol": protocol}
        if protocol == paho.MQTTv311:
            kwargs["clean_session"] = True
        self.client = paho.Client(**kwargs)
        self.client.max_inflight_messages_set(cfg.max_inflight)
        self.client.reconnect_delay_set(min_delay=max(1, round(cfg.reconnect_min_s)),
                                        max_delay=max(1, round(cfg.reconnect_max_s)))
        self.client.will_set(self.topic("status"), encode(status("offline")), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self._sender = threading.Thread(target=self._send_loop, name="edged-mqtt-sender", daemon=True)

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}/{suffix}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (retrying until it works) and start sending."""
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._sender.start()
        log.info("mqtt_connecting", host=self.cfg.host, port=self.cfg.port, prefix=self.prefix)

    def stop(self, timeout: float = 5.0) -> int:
        """Flush what can be flushed within ``timeout``, publish status offline, disconnect.

        Returns the number of messages that could not be delivered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.connected and (len(self.outbox) or self._inflight):
            with self._wake:
                self._wake.notify_all()
            time.sleep(0.02)
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self._sender.join(timeout=2.0)
        self._reap()
        unsent = len(self.outbox) + len(self._inflight)
        if self.connected:
            info = self.client.publish(self.topic("status"), encode(self.status("offline")), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt_offline_status_failed", error=str(exc))
        if unsent:
            log.warning("mqtt_unsent_at_stop", messages=unsent)
        self.client.disconnect()
        self.client.loop_stop()
        return unsent

    # -- sink ---------------------------------------------------------------------------------------
    def send(self, topic: str, payload: dict[str, Any], kind: str) -> None:
        """Queue a payload for ``<prefix>/<topic>`` (never blocks)."""
        self.outbox.put(self.topic(topic), encode(payload), kind)
        with self._wake:
            self._wake.notify()

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected, "queued": len(self.outbox), "inflight": len(self._inflight),
                "sent": dict(self.sent), "dropped": dict(self.outbox.dropped)}

    # -- sender thread ------------------------------------------------------------------------------
    def _reap(self) -> None:
        if not self._inflight:
            return
        keep: deque[tuple[OutMsg, paho.MQTTMessageInfo]] = deque()
        for msg, info in self._inflight:
            if info.is_published():
                self.sent[msg.kind] += 1
            else:
                keep.append((msg, info))
        self._inflight = keep

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                self._wake.wait(timeout=0.05)
            self._reap()
            if not self.connected:
                continue
            if self._resync:
                if self._inflight:
                    continue  # paho is re-sending what was in flight; keep order
                self._resync = False
            while len(self._inflight) < self.cfg.max_inflight and self.connected:
                msg = self.outbox.pop()
                if msg is None:
                    break
                info = self.client.publish(msg.topic, msg.payload, qos=1, retain=msg.retain)
                if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:  # cannot happen with our limits
                    self.outbox.dropped[msg.kind] += 1
                    log.error("mqtt_queue_full", topic=msg.topic)
                    continue
                # MQTT_ERR_SUCCESS or MQTT_ERR_NO_CONN: either way paho holds the QoS 1 message
                # and (re)sends it once connected.
                self._inflight.append((msg, info))

    # -- paho callbacks (network thread) -------------------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self.last_refusal = str(reason_code)
            log.error("mqtt_connect_refused", reason=str(reason_code), host=self.cfg.host, port=self.cfg.port)
            return
        client.subscribe(self.topic("label/+"), qos=1)
        client.publish(self.topic("status"), encode(self.status("online")), qos=1, retain=True)
        outage = time.monotonic() - self._down_since if self._down_since is not None else 0.0
        event = "mqtt_reconnected" if self._ever_connected else "mqtt_connected"
        log.info(event, host=self.cfg.host, port=self.cfg.port, down_s=round(outage, 1),
                 queued=len(self.outbox))
        self._ever_connected = True
        self._down_since = None
        self._fail_logged = False
        self.last_refusal = None
        self._connected.set()
        with self._wake:
            self._wake.notify()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                       properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._resync = True
        if was:
            self._down_since = time.monotonic()
            if not self._stop.is_set():
                log.warning("mqtt_disconnected", reason=str(reason_code), queued=len(self.outbox))

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        if not self._fail_logged:
            log.warning("mqtt_unreachable", host=self.cfg.host, port=self.cfg.port,
                        retry_max_s=self.cfg.reconnect_max_s, note="retrying in the background; messages are kept")
            self._fail_logged = True

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        prefix = self.topic("label/")
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = ""
        task = topic[len(prefix):] if topic.startswith(prefix) else ""
        self.on_label(task, bytes(msg.payload))


class LabelInbox:
    """Bounded hand-over of label messages from the network thread to the engine thread."""

    def __init__(self, capacity: int = 1000) -> None:
        self._q: queue.Queue[tuple[str, bytes, str]] = queue.Queue(maxsize=capacity)
        self.overflow = 0

    def put(self, task: str, payload: bytes, origin: str = "mqtt") -> None:
        try:
            self._q.put_nowait((task, payload, origin))
        except queue.Full:
            self.overflow += 1

    def drain(self) -> list[tuple[str, bytes, str]]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out
