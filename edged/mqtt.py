"""The only module that talks to paho-mqtt.

* Outgoing payloads are written to the disk spool (:mod:`edged.spool`) by :meth:`Publisher.send`,
  which never touches the network. A sender thread hands spooled messages to paho (QoS 1) only
  while connected, at most ``max_inflight`` unacknowledged at a time, oldest first; a message
  leaves the spool only when the broker has acknowledged it (PUBACK). After a restart, whatever
  is still spooled is sent first. Duplicates are possible (QoS 1): subscribers dedupe by
  ``(task, seq)``.
* After a reconnect, messages that were in flight are re-sent by paho first; new messages wait
  until those are acknowledged, so subscribers see them in order.
* Persistent session: a fixed client id, MQTT v5 ``clean_start=False`` with a session expiry
  (v3.1.1: ``clean_session=False``), so the broker keeps our label subscription and queues labels
  sent while the gateway is away.
* paho's network thread reconnects on its own with capped exponential backoff; labels are
  (re)subscribed and the retained ``status`` online is (re)published in ``on_connect``; the
  same topic is the last will (offline). Connection trouble is logged when it starts (with its
  cause: refused credentials, TLS verification, unreachable) and when it ends, not on every retry.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edged.config import MqttConfig
from edged.spool import Msg, Spool

log = structlog.get_logger("edged.mqtt")


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, no NaN (the contract is strict JSON)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def max_incoming_packet(cfg: MqttConfig) -> int:
    """MQTT v5 Maximum Packet Size we announce: the broker drops anything larger before it reaches
    the gateway (memory safety). Payloads between ``label_max_bytes`` and this still arrive and are
    rejected and counted by the engine."""
    return 4 * cfg.label_max_bytes + 1024


class Publisher:
    """paho client + spool + sender thread; also receives labels."""

    def __init__(
        self,
        cfg: MqttConfig,
        device_id: str,
        status: Callable[[str], dict[str, Any]],
        on_label: Callable[[str, bytes | bytearray, str], None],
        spool: Spool,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        will: dict[str, Any] | None = None,
        observers: list[Callable[[str, dict[str, Any], str], None]] | None = None,
    ) -> None:
        """``status(state)`` is the ``<prefix>/status`` payload (sent on connect and at stop);
        ``will`` the last will the broker publishes if the connection is lost (default:
        ``status("offline")`` as it is now); ``observers`` see every payload :meth:`send` spools
        (the Sparkplug node, the metrics), on the caller's thread."""
        self.cfg = cfg
        self.prefix = f"edged/{device_id}"
        self.status = status
        self.on_label = on_label
        self.spool = spool
        self.tls = tls
        self._inflight: dict[int, Msg] = {}
        self._acks: queue.SimpleQueue[tuple[int, bool, str]] = queue.SimpleQueue()
        self.refused_publish: Counter[str] = Counter()
        self.observers = list(observers or [])
        self._connected = threading.Event()
        self._resync = False
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._down_since: float | None = time.monotonic()
        self._fail_logged = False
        self._ever_connected = False
        self._refusals = 0
        self.last_refusal: str | None = None
        self.last_error: str | None = None
        self.v5 = cfg.protocol == "5"
        client_id = cfg.client_id or f"edged-{device_id}"
        kwargs: dict[str, Any] = {
            "callback_api_version": CallbackAPIVersion.VERSION2,
            "client_id": client_id,
            "protocol": paho.MQTTv5 if self.v5 else paho.MQTTv311,
        }
        if not self.v5:
            kwargs["clean_session"] = False  # persistent session (v5: clean_start=False at connect)
        self.client = paho.Client(**kwargs)
        self.client.max_inflight_messages_set(cfg.max_inflight)
        self.client.reconnect_delay_set(
            min_delay=max(1, round(cfg.reconnect_min_s)), max_delay=max(1, round(cfg.reconnect_max_s))
        )
        if tls is not None:
            self.client.tls_set_context(tls)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.will_set(
            self.topic("status"), encode(will if will is not None else status("offline")), qos=1, retain=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self._sender = threading.Thread(target=self._send_loop, name="edged-mqtt-sender", daemon=True)

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}/{suffix}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def died(self) -> bool:
        """The sender thread was started and has ended (as it does in :meth:`stop`)."""
        return self._sender.ident is not None and not self._sender.is_alive()

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (retrying until it works) and start sending."""
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.session_expiry_s
            props.MaximumPacketSize = max_incoming_packet(self.cfg)
            self.client.connect_async(
                self.cfg.host,
                self.cfg.port,
                keepalive=self.cfg.keepalive_s,
                clean_start=False,
                properties=props,
            )
        else:
            self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._sender.start()
        log.info(
            "mqtt_connecting",
            host=self.cfg.host,
            port=self.cfg.port,
            prefix=self.prefix,
            protocol=self.cfg.protocol,
            tls=self.tls is not None,
            spooled=len(self.spool),
        )

    def stop(self, timeout: float = 4.0) -> int:
        """Send what can be sent within ``timeout``, publish status offline, disconnect.

        Returns the number of messages left in the spool (they are sent after the next start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.connected and len(self.spool):
            with self._wake:
                self._wake.notify_all()
            time.sleep(0.02)
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self._sender.join(timeout=2.0)
        self._process_acks()
        left = len(self.spool)
        if self.connected:
            info = self.client.publish(
                self.topic("status"), encode(self.status("offline")), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt_offline_status_failed", error=str(exc))
        if left:
            log.info("mqtt_spooled_at_stop", messages=left, note="kept on disk; sent after the next start")
        self.client.disconnect()
        self.client.loop_stop()
        self.spool.close()
        return left

    def publish_status(self) -> bool:
        """Republish the retained ``status`` online now (health changed); False while not connected
        (``on_connect`` publishes the then-current status anyway)."""
        if not self.connected:
            return False
        info = self.client.publish(self.topic("status"), encode(self.status("online")), qos=1, retain=True)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    # -- sink ---------------------------------------------------------------------------------------
    def send(self, topic: str, payload: dict[str, Any], kind: str) -> None:
        """Spool a payload for ``<prefix>/<topic>`` (local disk only, never the network)."""
        self.spool.put(self.topic(topic), encode(payload), kind)
        with self._wake:
            self._wake.notify()
        for observe in self.observers:  # Sparkplug, metrics: they see exactly what the JSON topics carry
            observe(topic, payload, kind)

    def take_events(self) -> list[dict[str, Any]]:
        """Spool state changes (disk unwritable / recovered) for alerts."""
        return self.spool.take_events()

    def stats(self) -> dict[str, Any]:
        """Delivery figures for summaries and the status view (no host names or credentials)."""
        out = {"connected": self.connected, "refused": self.last_refusal, "inflight": len(self._inflight)}
        out.update(self.spool.stats())
        return out

    # -- sender thread ------------------------------------------------------------------------------
    def _process_acks(self) -> None:
        done: list[Msg] = []
        refused: list[Msg] = []
        while True:
            try:
                mid, ok, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            msg = self._inflight.pop(mid, None)
            if msg is None:
                continue
            if ok:
                done.append(msg)
            else:  # e.g. "Not authorized" (ACL) or quota: retrying would not help
                refused.append(msg)
                self.refused_publish[msg.kind] += 1
                n = sum(self.refused_publish.values())
                if n <= 10 or n % 100 == 0:
                    log.error("mqtt_publish_refused", topic=msg.topic, reason=reason, refused_total=n)
        if done or refused:
            self.spool.ack(done, refused)

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                self._wake.wait(timeout=0.05)
            self._process_acks()
            self._check_network_thread()
            if not self.connected:
                continue
            if self._resync:
                if self._inflight:
                    continue  # paho is re-sending what was in flight; keep order
                self._resync = False
            room = self.cfg.max_inflight - len(self._inflight)
            if room <= 0:
                continue
            for msg in self.spool.next_batch(room):
                info = self.client.publish(msg.topic, msg.payload, qos=1, retain=msg.retain)
                # MQTT_ERR_SUCCESS or MQTT_ERR_NO_CONN: either way paho holds the QoS 1 message
                # and (re)sends it once connected; its PUBACK arrives through on_publish.
                if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:  # cannot happen: paho's queue is unbounded
                    log.error("mqtt_queue_full", topic=msg.topic)
                self._inflight[info.mid] = msg

    def _check_network_thread(self) -> None:
        """paho's network thread must never be gone for good (paho-mqtt #894): restart it."""
        thread = getattr(self.client, "_thread", None)  # paho keeps no public handle on it
        if thread is not None and not thread.is_alive() and not self._stop.is_set():
            log.error("mqtt_network_thread_died", note="restarting the network loop")
            self.client._thread = None  # loop_start() refuses while a (dead) thread is set
            self.client.loop_start()

    # -- paho callbacks (network thread) -------------------------------------------------------------
    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Any
    ) -> None:
        # Called with paho's message lock held: only hand over, never block here.
        failed = bool(getattr(reason_code, "is_failure", False))
        self._acks.put((mid, not failed, str(reason_code)))
        with self._wake:
            self._wake.notify()

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        if reason_code.is_failure:
            self.last_refusal = str(reason_code)
            self._refusals += 1
            if self._refusals <= 3 or self._refusals % 20 == 0:
                log.error(
                    "mqtt_connect_refused",
                    reason=str(reason_code),
                    host=self.cfg.host,
                    port=self.cfg.port,
                    attempts=self._refusals,
                    note="the service keeps running and spooling; "
                    "fix the credentials or the broker's ACL, then restart edged",
                )
            return
        client.subscribe(self.topic("label/+"), qos=1)
        client.publish(self.topic("status"), encode(self.status("online")), qos=1, retain=True)
        outage = time.monotonic() - self._down_since if self._down_since is not None else 0.0
        event = "mqtt_reconnected" if self._ever_connected else "mqtt_connected"
        log.info(
            event,
            host=self.cfg.host,
            port=self.cfg.port,
            down_s=round(outage, 1),
            spooled=len(self.spool),
            session_present=bool(getattr(flags, "session_present", False)),
        )
        self._ever_connected = True
        self._down_since = None
        self._fail_logged = False
        self._refusals = 0
        self.last_refusal = None
        self.last_error = None
        self._connected.set()
        with self._wake:
            self._wake.notify()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._resync = True
        if was:
            self._down_since = time.monotonic()
            if not self._stop.is_set():
                log.warning("mqtt_disconnected", reason=str(reason_code), spooled=len(self.spool))

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        if not self._fail_logged:
            self._fail_logged = True
            # paho does not tell why; find out off the network thread and log the cause once.
            threading.Thread(target=self._diagnose, name="edged-mqtt-diagnose", daemon=True).start()

    def _diagnose(self) -> None:
        host, port = self.cfg.host, self.cfg.port
        try:
            with socket.create_connection((host, port), timeout=5.0) as sock:
                if self.tls is not None:
                    with self.tls.wrap_socket(sock, server_hostname=host):
                        pass
            cause = "connection works now (transient failure)"
        except ssl.SSLCertVerificationError as exc:
            cause = f"TLS certificate verification failed: {exc.verify_message or exc}"
        except ssl.SSLError as exc:
            cause = f"TLS handshake failed: {exc.reason or exc}"
        except OSError as exc:
            cause = f"{type(exc).__name__}: {exc.strerror or exc}"
        self.last_error = cause
        log.warning(
            "mqtt_unreachable",
            host=host,
            port=port,
            cause=cause,
            retry_max_s=self.cfg.reconnect_max_s,
            note="retrying in the background; messages stay in the spool",
        )

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        prefix = self.topic("label/")
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = ""
        task = topic[len(prefix) :] if topic.startswith(prefix) else ""
        self.on_label(task, msg.payload, label_origin(msg))


def label_origin(msg: paho.MQTTMessage) -> str:
    """Who published a label: ``mqtt:<source>`` from an MQTT v5 user property ``source`` (the
    label role sets it; the broker's ACL decides who may publish labels at all), else ``mqtt``
    (MQTT 3.1.1 has no properties: every publisher shares one rate-limit bucket)."""
    props = getattr(msg, "properties", None)
    for k, v in getattr(props, "UserProperty", None) or ():
        if k == "source" and isinstance(v, str) and 0 < len(v) <= 64 and v.isprintable():
            return f"mqtt:{v}"
    return "mqtt"


class LabelInbox:
    """Bounded hand-over of label messages from the network thread to the engine thread.

    A payload over ``max_bytes`` is dropped here, before it is queued or parsed (MQTT 3.1.1 has no
    Maximum Packet Size for the broker to enforce; set mosquitto's ``message_size_limit``). One
    origin may hold at most a quarter of the queue, so a flood from one publisher does not crowd
    out the others before the engine's per-publisher rate limit sees them."""

    def __init__(self, capacity: int = 1000, max_bytes: int = 1 << 16) -> None:
        self._q: queue.Queue[tuple[str, bytes, str]] = queue.Queue(maxsize=capacity)
        self.max_bytes = max_bytes
        self.per_origin = max(1, capacity // 4)
        self._queued: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.overflow = 0
        self.oversize = 0

    def put(self, task: str, payload: bytes | bytearray, origin: str = "mqtt") -> None:
        with self._lock:
            if len(payload) > self.max_bytes:
                self.oversize += 1
                return
            if self._queued[origin] >= self.per_origin:
                self.overflow += 1
                return
            try:
                self._q.put_nowait((task, bytes(payload), origin))
            except queue.Full:
                self.overflow += 1
                return
            self._queued[origin] += 1

    def take_drops(self) -> tuple[int, int]:
        """(overflowed, oversize) since the last call; counted under the lock the network thread
        increments them with, so none is lost."""
        with self._lock:
            out = (self.overflow, self.oversize)
            self.overflow = self.oversize = 0
            return out

    def drain(self) -> list[tuple[str, bytes, str]]:
        out: list[tuple[str, bytes, str]] = []
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return out
            out.append(item)
            with self._lock:
                self._queued[item[2]] -= 1
                if self._queued[item[2]] <= 0:
                    del self._queued[item[2]]
