"""The Prometheus endpoint of a running service, scraped over HTTP and parsed with
prometheus-client's own parser; and ``edged check`` when an optional package is missing."""

from __future__ import annotations

import importlib.util
import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edged import config
from tests.conftest import REPO, Broker, Recorder, sim_config


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    assert pred(), f"timed out after {timeout} s waiting for {what}"


def _port(svc: Any) -> int | None:
    for e in svc.logs():
        if e.get("event") == "metrics_listening":
            return int(e["port"])
    return None


def _scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.mark.broker
def test_metrics_endpoint(tmp_path: Path, broker: Broker, recorder: Recorder, service_factory: Any) -> None:
    """Sensor health and sample rates, spool and delivery figures, loop lag, per-task model version,
    n_learned and prequential accuracy, drift and alarm counters and RSS are scraped from 127.0.0.1."""
    svc = service_factory(sim_config(tmp_path, broker.port, metrics="port = 0"))
    svc.start()
    _wait(lambda: _port(svc) is not None, 90, "the metrics endpoint")
    port = _port(svc)
    assert port is not None
    _wait(lambda: len(recorder.topic("/summary")) >= 2, 60, "two summaries")

    def ready() -> bool:
        m = _scrape(port)
        return "edged_prequential_accuracy" in m and "edged_model_version" in m

    _wait(ready, 30, "model figures in the scrape")
    m = _scrape(port)
    assert m["edged_sensor_health"][(("sensor", "imu"), ("state", "ok"))] == 1.0
    assert 300 < m["edged_channel_sample_rate_hz"][(("channel", "ax"),)] < 700  # 500 Hz simulated IMU
    for task in ("activity", "maintenance"):
        assert m["edged_model_version"][(("task", task),)] >= 1
        assert (("task", task),) in m["edged_model_n_learned"]
        assert (("task", task),) in m["edged_drift_events_total"]
        assert (("task", task),) in m["edged_anomaly_alarms_total"]
    assert 0.0 <= m["edged_prequential_accuracy"][(("task", "activity"),)] <= 1.0
    assert m["edged_mqtt_connected"][()] == 1.0
    assert m["edged_messages_sent_total"][(("kind", "prediction"),)] > 0
    assert "edged_spool_messages" in m and "edged_delivery_oldest_unsent_seconds" in m
    assert m["edged_loop_lag_seconds"][()] >= 0.0
    assert m["process_resident_memory_bytes"][()] > 10e6
    # every series the shipped Grafana dashboard queries is one the endpoint exports
    dashboard = json.loads((REPO / "docs" / "grafana" / "edged-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b((?:edged|process)_[a-z_]+)\b", target["expr"])
    }
    assert queried and queried <= set(m), f"dashboard queries unknown series: {queried - set(m)}"
    assert svc.stop() == 0


def test_check_names_the_missing_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """[sparkplug] or [metrics] configured without its package: a config error that says what to install."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("google.protobuf", "prometheus_client") else real(name, *a),
    )
    path = sim_config(tmp_path, 1883, sparkplug='group_id = "plant"', metrics="port = 9464")
    with pytest.raises(config.ConfigError) as err:
        config.load(str(path))
    text = json.dumps(err.value.problems)
    assert "edged[sparkplug]" in text and "edged[metrics]" in text
