"""The running service: sensor threads feed one engine loop; MQTT runs on its own threads.

Threads: one per sensor (blocking bus I/O never stalls the others), paho's network thread,
the MQTT sender, and the main loop, which alone touches the engine and the models. All
scheduling uses the monotonic clock; wall time is only read to stamp payloads.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from drivers.base import Block, Driver, DriverError
from edged import __version__, lineage, sdnotify
from edged.engine import Engine
from edged.health import HealthModel, Report, Verdict
from edged.lineage import StateLock
from edged.mqtt import LabelInbox, Publisher
from edged.seq import SeqStore
from edged.state import ModelStore
from pipelines.task import TaskPipeline

log = structlog.get_logger("edged.runtime")


def wall_offset() -> float:
    """Current wall-clock minus monotonic clock (changes when the wall clock is stepped)."""
    return time.time() - time.monotonic()


class SensorRunner:
    """Polls one driver on its own thread and hands blocks to the engine loop.

    A failing read marks the sensor ``degraded`` and is retried with exponential backoff
    capped at 5 s; after 10 consecutive failures it is ``lost`` (still retried). A driver that
    reads fine but reports a data-quality problem (its ``fault``: stuck, saturated, FIFO
    overflow, CRC errors) is ``degraded`` too. Health changes are logged and reported through
    ``on_health``; the first failure and the recovery are logged, not every retry. An unexpected
    exception from a driver is logged with its traceback and treated as a failed read: one
    sensor never takes the others or the service down."""

    def __init__(
        self,
        name: str,
        driver: Driver,
        poll_s: float,
        out: queue.Queue[Block],
        on_health: Callable[[str, str, str], None],
    ) -> None:
        self.name = name
        self.driver = driver
        self.poll_s = poll_s
        self.out = out
        self.on_health = on_health
        self.health = "ok"
        self.reason = ""
        self.last_block: float | None = None  # monotonic time of the last block handed on
        self.failures = 0
        self.dropped_blocks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"edged-sensor-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def died(self) -> bool:
        """The polling thread was started and has ended (as it does in :meth:`stop`)."""
        return self._thread.ident is not None and not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        try:
            self.driver.close()
        except (OSError, DriverError) as exc:
            log.warning("sensor_close_failed", sensor=self.name, error=str(exc))

    def _set_health(self, health: str, reason: str) -> None:
        if health != self.health:
            self.health = health
            self.reason = "" if health == "ok" else reason
            self.on_health(self.name, health, reason)

    def _run(self) -> None:
        delay = self.poll_s
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                block = self.driver.read_block(time.monotonic())
            except Exception as exc:  # classified below: a driver bug must not kill the sensor thread
                if not isinstance(exc, OSError | DriverError):
                    log.exception("sensor_driver_crashed", sensor=self.name)
                self.failures += 1
                self._set_health(
                    "lost" if self.failures >= 10 else "degraded", f"{type(exc).__name__}: {exc}"
                )
                delay = min(5.0, self.poll_s * 2 ** min(self.failures, 10))
            else:
                fault = getattr(self.driver, "fault", None)
                if self.failures:
                    self.failures = 0
                    delay = self.poll_s
                    if fault is None:
                        self._set_health("ok", "reads succeed again")
                if fault is not None:
                    self._set_health("degraded", fault)
                elif self.health != "ok":
                    self._set_health("ok", "readings are plausible again")
                if block is not None and len(block):
                    try:
                        self.out.put_nowait(block)
                        self.last_block = time.monotonic()
                    except queue.Full:
                        self.dropped_blocks += 1
            next_t += delay  # after the read: a recovered sensor is polled at its rate at once
            wait = next_t - time.monotonic()
            if wait < -1.0:
                next_t = time.monotonic()  # fell behind (suspend, clock trouble): don't burst
                wait = 0.0
            self._stop.wait(max(0.0, wait))


class ServiceStatus:
    """What the service says about itself: the ``<prefix>/status`` payload and sensor health.

    Built before the publisher and the daemon and handed to both (and to every
    :class:`SensorRunner`): the publisher sends :meth:`payload` when it connects and stops,
    sensor threads report health changes through :meth:`on_sensor_health`, and the main loop
    turns those into alerts (:meth:`sensor_events`)."""

    def __init__(
        self,
        device_id: str,
        tasks: Mapping[str, TaskPipeline],
        sensors: Iterable[str],
        health_observers: Iterable[Callable[[str, str], None]] = (),
    ) -> None:
        self.device_id = device_id
        self.health_observers = list(health_observers)  # (sensor, health), on the sensor's thread
        self.tasks = tasks
        self.sensors = dict.fromkeys(sensors, "ok")  # name -> health, written by the sensor threads
        self.started = time.time()
        self.health = Report({n: Verdict("ok") for n in self.sensors}, {n: Verdict("ok") for n in tasks})
        self._events: queue.SimpleQueue[tuple[str, str, str]] = queue.SimpleQueue()

    def last_will(self) -> dict[str, Any]:
        """The status the broker publishes if the connection is lost: only what stays true then."""
        return {
            "schema": "edged.status.v1",
            "state": "offline",
            "version": __version__,
            "device": self.device_id,
        }

    def payload(self, state: str) -> dict[str, Any]:
        """Payload of ``<prefix>/status``: the health the main loop computed last (edged/health.py)."""
        h = self.health
        return {
            "schema": "edged.status.v1",
            "state": state,
            "version": __version__,
            "device": self.device_id,
            "ts": round(time.time(), 3),
            "since": round(self.started, 3),
            "healthy": h.healthy,
            "problems": h.problems(),
            "tasks": {
                n: {
                    "model_version": t.model.version,
                    "n_learned": t.model.n_learned,
                    "health": h.tasks[n].state if n in h.tasks else "ok",
                }
                for n, t in self.tasks.items()
            },
            "sensors": {n: v.state for n, v in h.sensors.items()},
        }

    def on_sensor_health(self, name: str, health: str, reason: str) -> None:
        """Called from sensor threads: log now, alert from the main loop."""
        self.sensors[name] = health
        (log.info if health == "ok" else log.warning)(
            "sensor_health", sensor=name, health=health, reason=reason
        )
        self._events.put((name, health, reason))
        for observe in self.health_observers:  # the Sparkplug node: DDEATH / DBIRTH
            observe(name, health)

    def sensor_events(self) -> list[tuple[str, str, str]]:
        """Health changes since the last call: (sensor, health, reason)."""
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out


@dataclass
class Timers:
    summary_s: float
    checkpoint_s: float
    next_summary: float = 0.0
    next_checkpoint: float = 0.0
    watchdog_s: float | None = None
    next_watchdog: float = 0.0
    health_s: float = 1.0  # health is evaluated this often
    next_health: float = 0.0
    republish_s: float = 120.0  # the retained status is republished at least this often
    next_republish: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class Daemon:
    """Composition of sensors, engine, publisher and state, with the main loop."""

    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        status: ServiceStatus,
        inbox: LabelInbox,
        sensors: list[SensorRunner],
        blocks: queue.Queue[Block],
        store: ModelStore,
        seq: SeqStore,
        timers: Timers,
        labeler: Any | None = None,
        running_marker: Any | None = None,
        summary_policy: Any | None = None,
        ops: Any | None = None,
        lock: StateLock | None = None,
        health: HealthModel | None = None,
        companions: list[Any] | None = None,
    ) -> None:
        self.engine = engine
        # started after the publisher and stopped after it (start(), stop()): the Sparkplug node, metrics
        self.companions = companions or []
        self.publisher = publisher
        self.status = status
        self.inbox = inbox
        self.sensors = sensors
        self.blocks = blocks
        self.store = store
        self.seq = seq
        self.timers = timers
        self.labeler = labeler
        self.running_marker = running_marker
        self.summary_policy = summary_policy  # edged.sanitize.SummaryPolicy
        self.ops = ops  # edged.ops.Ops: status file, disk watch, health for the watchdog
        self.lock = lock  # held for the daemon's lifetime: one service per state directory
        self.health = health  # edged.health.HealthModel: drives the status message and file
        self._published_health: tuple[tuple[str, str], ...] | None = None
        self._health_key: tuple[tuple[str, str], ...] | None = None
        self._stop = threading.Event()
        self._summary_clock = (
            time.monotonic(),
            wall_offset(),
        )  # (monotonic, wall offset) at the last summary

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    # -- main loop --------------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        self.publisher.start()
        for c in self.companions:
            c.start()
        for s in self.sensors:
            s.start()
        now = time.monotonic()
        self.timers.next_summary = now + self.timers.summary_s
        self.timers.next_checkpoint = now + self.timers.checkpoint_s
        self.timers.watchdog_s = sdnotify.watchdog_interval()
        sdnotify.notify("READY=1")
        log.info(
            "service_started",
            device=self.engine.device_id,
            tasks=list(self.engine.tasks),
            sensors=[s.name for s in self.sensors],
        )
        while not self._stop.is_set():
            self._step(0.05)
        return self.shutdown()

    def _step(self, timeout: float) -> None:
        started = time.monotonic()
        try:
            block = self.blocks.get(timeout=timeout)
        except queue.Empty:
            block = None
        budget = 200
        while block is not None and budget:
            self.engine.ingest(block)
            budget -= 1
            try:
                block = self.blocks.get_nowait()
            except queue.Empty:
                block = None
        now = time.monotonic()
        if self.labeler is not None:
            for task, payload in self.labeler.poll(now, wall_offset()):
                self.inbox.put(task, payload, origin="simulator")
        self._drain_inbox(now)
        t = self.timers
        if now >= t.next_summary:
            t.next_summary = now + t.summary_s
            self.publish_summary()
        if now >= t.next_checkpoint:
            t.next_checkpoint = now + t.checkpoint_s
            self.checkpoint()
        if self.health is not None and now >= t.next_health:
            t.next_health = now + t.health_s
            self.refresh_health(now)
        if self.ops is not None:
            self.ops.tick(self, started, timeout)
        if t.watchdog_s and now >= t.next_watchdog:
            t.next_watchdog = now + t.watchdog_s
            healthy, why = self.ops.healthy(self) if self.ops is not None else (True, "")
            if healthy:  # no ping while unhealthy: systemd restarts us after WatchdogSec
                sdnotify.notify("WATCHDOG=1")
            else:
                log.error("unhealthy_no_watchdog_ping", reason=why)

    def refresh_health(self, now: float) -> None:
        """Evaluate health; republish the retained status when a verdict changed, and at least
        every ``republish_s`` (a subscriber that missed one still converges)."""
        assert self.health is not None
        report = self.health.evaluate(now)
        self.status.health = report
        key = report.key()
        if key != self._health_key:
            self._health_key = key
            (log.info if report.healthy else log.warning)(
                "health", healthy=report.healthy, problems=report.problems()
            )
        due = key != self._published_health or now >= self.timers.next_republish
        if due and self.publisher.publish_status():
            self._published_health = key
            self.timers.next_republish = now + self.timers.republish_s

    def _drain_inbox(self, now: float) -> None:
        for event in self.publisher.take_events():  # spool: disk unwritable / recovered
            self.engine.alert("state", **event)
        for name, health, reason in self.status.sensor_events():
            self.engine.alert("sensor", sensor=name, health=health, reason=reason)
        for task, payload, origin in self.inbox.drain():
            if self.health is not None:
                self.health.label_arrived(task, now)
            self.engine.on_label(task, payload, now, origin)
        overflow, oversize = self.inbox.take_drops()
        if overflow:
            self.engine.counters["labels.rejected"] += overflow
            self.engine.counters["labels.inbox_overflow"] += overflow
            log.warning("label_inbox_overflow", dropped=overflow)
        if oversize:
            self.engine.counters["labels.rejected"] += oversize
            self.engine.counters["labels.oversize"] += oversize
            log.warning("label_oversize_dropped", dropped=oversize)

    def publish_summary(self) -> None:
        extra = {
            "mqtt": self.publisher.stats(),
            "sensors": {
                s.name: {
                    "health": s.health,
                    "dropped_blocks": s.dropped_blocks,
                    **dict(getattr(s.driver, "stats", {})),
                }
                for s in self.sensors
            },
        }
        now_mono, offset = time.monotonic(), wall_offset()
        prev_mono, prev_offset = self._summary_clock
        self._summary_clock = (now_mono, offset)
        payload = self.engine.summary(now_mono + offset, extra)
        # Intervals are measured on the monotonic clock; `from`/`to` are wall clock. If the wall clock
        # was stepped (NTP sync on a gateway without RTC) during the interval, say so, and derive
        # `from` from the monotonic length so that from <= to and the interval is its true length.
        payload["interval_s"] = round(now_mono - prev_mono, 3)
        if abs(offset - prev_offset) > 1.0:
            payload["clock_step_s"] = round(offset - prev_offset, 3)
            payload["from"] = round(payload["to"] - payload["interval_s"], 3)
        if self.summary_policy is not None:
            payload = self.summary_policy.apply(payload)
        self.publisher.send("summary", payload, "summary")

    def checkpoint(self) -> bool:
        """Write a checkpoint of every task; a failure (disk full, ...) is an alert, not a crash."""
        ok = True
        for name, task in self.engine.tasks.items():
            try:
                path = lineage.save(self.store, name, task.model)
            except OSError as exc:
                ok = False
                log.error("checkpoint_failed", task=name, error=str(exc))
                self.engine.alert("state", task=name, problem="checkpoint_failed", error=str(exc))
            else:
                log.debug("checkpoint_written", task=name, path=str(path))
        return ok

    def shutdown(self) -> int:
        sdnotify.notify("STOPPING=1")
        log.info("service_stopping")
        if self.health is not None:  # the verdict at stop for the offline status, judged while running
            self.status.health = self.health.evaluate(time.monotonic())
        for s in self.sensors:
            s.stop()
        while True:
            try:
                self.engine.ingest(self.blocks.get_nowait())
            except queue.Empty:
                break
        self._drain_inbox(time.monotonic())
        self.publish_summary()
        saved = self.checkpoint()
        try:
            self.seq.close()
        except OSError as exc:
            log.error("seq_save_failed", error=str(exc))
        unsent = self.publisher.stop(timeout=4.0)
        for c in self.companions:
            c.stop()
        if saved and self.running_marker is not None:
            self.running_marker.unlink(missing_ok=True)
        if self.ops is not None:
            self.ops.write(self, "stopped")
        log.info("service_stopped", unsent=unsent, checkpointed=saved)
        return 0
