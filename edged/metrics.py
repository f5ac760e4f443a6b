"""Prometheus endpoint (``[metrics]``, opt-in): ``http://<bind>:<port>/metrics``.

Values come from two places, neither of which blocks the engine:

* what the service publishes anyway (predictions, summaries, alerts), seen through
  :meth:`MetricsServer.observe` on the engine thread and kept as plain numbers: model version and
  ``n_learned``, prequential accuracy, sample rates, drift events, anomaly alarms;
* at scrape time, on the HTTP thread, read-only views of the daemon: sensor health, spool depth,
  sent/dropped counters, the age of the oldest unsent message (the delivery latency bound while
  the broker is away), main-loop lag, and the process (RSS, CPU, open files) from
  prometheus-client's process collector.

Bound to 127.0.0.1 by default: the endpoint has no authentication, so reaching it from the
network is a decision (bind an internal address, or scrape through a tunnel or proxy).
prometheus-client is imported only when ``[metrics]`` is configured (the ``edged[metrics]`` extra).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edged.spool import KINDS

log = structlog.get_logger("edged.metrics")
DROP_REASONS = ("full", "expired", "unwritable", "refused")


class _Collector(Collector):
    def __init__(self, owner: MetricsServer) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Any]:
        return iter(self.owner.families())


class MetricsState:
    """Figures taken from what the service publishes (the publisher's observer, engine thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.models: dict[str, tuple[int, int]] = {}  # task -> (version, n_learned)
        self.prequential: dict[str, tuple[int, float | None, float | None]] = {}
        self.rates: dict[str, float] = {}  # channel -> samples per second over the last summary
        self.drift: Counter[str] = Counter()
        self.alarms: Counter[str] = Counter()
        self.predictions: Counter[str] = Counter()

    # -- engine thread ------------------------------------------------------------------------------
    def observe(self, topic: str, payload: dict[str, Any], kind: str) -> None:
        """A message the service publishes (cheap: a few dict look-ups)."""
        with self._lock:
            if topic.startswith("prediction/"):
                task = payload.get("task", topic[len("prediction/") :])
                model = payload.get("model", {})
                self.models[task] = (int(model.get("version", 0)), int(model.get("n_learned", 0)))
                self.predictions[task] += 1
            elif topic == "alert":
                task = str(payload.get("task", ""))
                if payload.get("kind") == "drift":
                    self.drift[task] += 1
                elif payload.get("kind") == "anomaly":
                    self.alarms[task] += 1
            elif topic == "summary":
                interval = float(payload.get("interval_s") or 0.0)
                for ch, agg in payload.get("channels", {}).items():
                    if interval > 0 and isinstance(agg, dict) and "count" in agg:
                        self.rates[ch] = agg["count"] / interval
                for task, entry in payload.get("tasks", {}).items():
                    pq = entry.get("prequential", {}) if isinstance(entry, dict) else {}
                    self.prequential[task] = (int(pq.get("n", 0)), pq.get("accuracy"), pq.get("macro_f1"))


class MetricsServer:
    """The registry, its collector and the HTTP server thread; reads the service's views at scrape time."""

    def __init__(
        self,
        bind: str,
        port: int,
        state: MetricsState,
        *,
        sensors: list[Any],
        tasks: list[str],
        delivery: Callable[[], dict[str, Any]],
        ops: Any | None,
    ) -> None:
        self.bind, self.port = bind, port
        self.state = state
        self.sensors = sensors  # SensorRunner: name, health, dropped_blocks
        self.tasks = tasks
        self.delivery = delivery  # Publisher.stats
        self.ops = ops  # edged.ops.Ops: loop lag
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu, fds
        self.registry.register(_Collector(self))
        self._server: Any = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._server, _ = start_http_server(self.port, addr=self.bind, registry=self.registry)
        self.port = int(self._server.server_port)
        log.info("metrics_listening", bind=self.bind, port=self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- HTTP thread --------------------------------------------------------------------------------
    def families(self) -> list[Any]:
        out: list[Any] = []
        health = GaugeMetricFamily(
            "edged_sensor_health", "1 for the sensor's current health state", labels=["sensor", "state"]
        )
        for s in list(self.sensors):
            for state in ("ok", "degraded", "lost"):
                health.add_metric([s.name, state], 1.0 if s.health == state else 0.0)
        out.append(health)
        dropped_blocks = CounterMetricFamily(
            "edged_sensor_dropped_blocks",
            "Sample blocks dropped because the engine was behind",
            labels=["sensor"],
        )
        for s in list(self.sensors):
            dropped_blocks.add_metric([s.name], float(s.dropped_blocks))
        out.append(dropped_blocks)
        st = self.state
        with st._lock:
            rates = dict(st.rates)
            models = dict(st.models)
            preq = dict(st.prequential)
            drift, alarms, preds = Counter(st.drift), Counter(st.alarms), Counter(st.predictions)
        rate = GaugeMetricFamily(
            "edged_channel_sample_rate_hz",
            "Samples per second over the last summary interval",
            labels=["channel"],
        )
        for ch, r in sorted(rates.items()):
            rate.add_metric([ch], r)
        out.append(rate)
        stats = self.delivery()
        out.append(
            GaugeMetricFamily(
                "edged_mqtt_connected", "1 while connected to the broker", value=float(stats["connected"])
            )
        )
        out.append(
            GaugeMetricFamily(
                "edged_spool_messages", "Messages waiting in the spool", value=float(stats["queued"])
            )
        )
        out.append(
            GaugeMetricFamily(
                "edged_spool_bytes", "Payload bytes waiting in the spool", value=float(stats["queued_bytes"])
            )
        )
        out.append(
            GaugeMetricFamily(
                "edged_delivery_oldest_unsent_seconds",
                "Age of the oldest message not yet acknowledged by the broker (0 when the spool is empty): "
                "the delivery latency bound",
                value=float(stats.get("oldest_age_s") or 0.0),
            )
        )
        spooled = CounterMetricFamily(
            "edged_messages_spooled", "Messages written to the spool", labels=["kind"]
        )
        for k in KINDS:  # every series exists from the start (rate() and alerts need no special case)
            spooled.add_metric([k], float(stats["spooled"].get(k, 0)))
        out.append(spooled)
        sent = CounterMetricFamily(
            "edged_messages_sent", "Messages acknowledged by the broker", labels=["kind"]
        )
        for k in KINDS:
            sent.add_metric([k], float(stats["sent"].get(k, 0)))
        out.append(sent)
        dropped = CounterMetricFamily("edged_messages_dropped", "Messages dropped", labels=["kind", "reason"])
        for k in sorted(set(KINDS) | set(stats["dropped"])):
            reasons = stats["dropped"].get(k, {})
            for reason in sorted(set(DROP_REASONS) | set(reasons)):
                dropped.add_metric([k, reason], float(reasons.get(reason, 0)))
        out.append(dropped)
        ops = self.ops
        if ops is not None:
            out.append(
                GaugeMetricFamily(
                    "edged_loop_lag_seconds", "Lag of the last main-loop iteration", value=ops.last_lag
                )
            )
            out.append(
                GaugeMetricFamily(
                    "edged_loop_lag_max_seconds",
                    "Largest main-loop lag in the current status interval",
                    value=ops.lag_max,
                )
            )
        fams: dict[str, Any] = {
            "version": GaugeMetricFamily("edged_model_version", "Deployed model version", labels=["task"]),
            "n": GaugeMetricFamily(
                "edged_model_n_learned", "Labelled windows the model has learned", labels=["task"]
            ),
            "acc": GaugeMetricFamily("edged_prequential_accuracy", "Prequential accuracy", labels=["task"]),
            "f1": GaugeMetricFamily("edged_prequential_macro_f1", "Prequential macro F1", labels=["task"]),
            "scored": GaugeMetricFamily(
                "edged_prequential_windows", "Labelled windows scored", labels=["task"]
            ),
            "drift": CounterMetricFamily("edged_drift_events", "Drift events", labels=["task"]),
            "alarm": CounterMetricFamily("edged_anomaly_alarms", "Anomaly alarm onsets", labels=["task"]),
            "pred": CounterMetricFamily("edged_predictions", "Predictions published", labels=["task"]),
        }
        for task in self.tasks:
            if task in models:
                fams["version"].add_metric([task], float(models[task][0]))
                fams["n"].add_metric([task], float(models[task][1]))
            n, acc, f1 = preq.get(task, (0, None, None))
            fams["scored"].add_metric([task], float(n))
            if acc is not None:
                fams["acc"].add_metric([task], float(acc))
            if f1 is not None:
                fams["f1"].add_metric([task], float(f1))
            fams["drift"].add_metric([task], float(drift[task]))
            fams["alarm"].add_metric([task], float(alarms[task]))
            fams["pred"].add_metric([task], float(preds[task]))
        out.extend(fams.values())
        return out
