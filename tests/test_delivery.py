"""The publisher against mosquitto, for both protocol versions: order, PUBACK-driven spool
deletion, and the persistent session that keeps labels sent while the gateway is away."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edged.config import MqttConfig
from edged.mqtt import Publisher
from edged.spool import Spool
from tests.conftest import Broker, Recorder, wait_for

pytestmark = pytest.mark.broker


def _publisher(port: int, protocol: str, spool: Spool, labels: list[tuple[str, bytes]]) -> Publisher:
    cfg = MqttConfig(port=port, protocol=protocol, reconnect_min_s=1, reconnect_max_s=1)  # type: ignore[arg-type]
    return Publisher(
        cfg,
        "test-gw",
        lambda s: {"schema": "edged.status.v1", "state": s, "version": "t", "device": "test-gw"},
        lambda task, payload, origin: labels.append((task, payload)),
        spool,
    )


def _wait(pred: Any, what: str, timeout: float = 60.0) -> bool:
    """Wait for ``pred()``; fails saying what it waited for (True otherwise, for ``assert _wait(...)``)."""
    wait_for(pred, timeout, what)
    return True


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_order_ack_and_persistent_session(
    tmp_path: Path, broker: Broker, recorder: Recorder, protocol: str
) -> None:
    """Spooled messages arrive in order and leave the spool only once acknowledged; a label published
    while the gateway is disconnected is delivered when it reconnects (the broker kept its session)."""
    labels: list[tuple[str, bytes]] = []
    spool = Spool(tmp_path / "spool.db")
    for i in range(50):
        spool.put("edged/test-gw/prediction/activity", json.dumps({"i": i}).encode(), "prediction")
    pub = _publisher(broker.port, protocol, spool, labels)
    pub.start()
    assert _wait(lambda: len(recorder.topic("/prediction/activity")) == 50, "50 predictions delivered")
    assert [p["i"] for p in recorder.topic("/prediction/activity")] == list(range(50))
    assert _wait(lambda: len(spool) == 0, "the spool emptied by PUBACKs") and spool.stats()["sent"] == {
        "prediction": 50
    }
    pub.stop(timeout=2.0)

    recorder.publish("edged/test-gw/label/activity", b'{"label": "idle", "ts": 1}')  # gateway is away
    labels.clear()
    pub2 = _publisher(broker.port, protocol, Spool(tmp_path / "spool.db"), labels)
    pub2.start()
    try:
        assert _wait(
            lambda: labels == [("activity", b'{"label": "idle", "ts": 1}')], "the label queued by the broker"
        ), labels
    finally:
        pub2.stop(timeout=1.0)
