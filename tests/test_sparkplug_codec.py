"""edged's Sparkplug encoder and session state, decoded by classes compiled from Tahu's proto."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from edged.sparkplug import codec
from edged.sparkplug.node import BdSeqStore, sensor_metrics, task_metrics
from tests.test_sparkplug import tahu  # noqa: F401 - the session fixture


class TestCodec:
    def test_birth_carries_names_types_aliases(self, tahu: ModuleType) -> None:  # noqa: F811
        """A birth metric has name, alias, datatype, timestamp and the value in the field of its type."""
        vals = [
            codec.Value("bdSeq", None, codec.UINT64, 7, 1000),
            codec.Value("a", 1, codec.DOUBLE, 1.5, 1000),
            codec.Value("b", 2, codec.BOOLEAN, True, 1000),
            codec.Value("c", 3, codec.STRING, None, 1000),
            codec.Value("d", 4, codec.INT32, -3, 1000),
        ]
        p = tahu.Payload()
        p.ParseFromString(codec.encode(vals, seq=0, birth=True, timestamp=1000))
        assert p.seq == 0 and p.timestamp == 1000
        bd, a, b, c, d = p.metrics
        assert bd.name == "bdSeq" and not bd.HasField("alias") and bd.long_value == 7
        assert (a.name, a.alias, a.datatype, a.double_value) == ("a", 1, tahu.Double, 1.5)
        assert b.boolean_value is True and b.datatype == tahu.Boolean
        assert c.is_null and c.datatype == tahu.String
        assert d.int_value == (-3) & 0xFFFFFFFF  # two's complement in the uint32 field

    def test_data_carries_alias_only_and_history_flag(self, tahu: ModuleType) -> None:  # noqa: F811
        """DATA metrics: alias, timestamp, value, is_historical; no name and no datatype."""
        p = tahu.Payload()
        p.ParseFromString(
            codec.encode([codec.Value("a", 5, codec.DOUBLE, 2.0, 99, True)], seq=255, birth=False)
        )
        [m] = p.metrics
        assert p.seq == 255 and not m.name and not m.HasField("datatype")
        assert (m.alias, m.timestamp, m.is_historical, m.double_value) == (5, 99, True, 2.0)

    def test_ndeath_has_no_seq(self, tahu: ModuleType) -> None:  # noqa: F811
        """NDEATH: bdSeq only, no seq."""
        p = tahu.Payload()
        p.ParseFromString(codec.encode([codec.Value("bdSeq", None, codec.UINT64, 3)], seq=None, birth=True))
        assert not p.HasField("seq") and p.metrics[0].long_value == 3


class TestBdSeq:
    def test_persisted_and_wraps(self, tmp_path: Path) -> None:
        """Each start uses the next bdSeq after the one on disk; 255 is followed by 0."""
        path = tmp_path / "sparkplug.json"
        assert BdSeqStore(path).value == 0
        assert BdSeqStore(path).value == 1
        s = BdSeqStore(path)
        for _ in range(253):  # the third start is at 2
            s.bump()
        assert s.value == 255
        assert BdSeqStore(path).value == 0


def test_metric_sets() -> None:
    """Sensor devices carry health, rate and per-channel statistics; task devices label, scores,
    model and prequential figures, and anomaly metrics only with a detector."""
    assert {"health", "samples", "sample_rate_hz", "ax/mean", "ax/max"} <= set(sensor_metrics(["ax"]))
    t = task_metrics(["idle", "running"], anomaly=False)
    assert {"label", "scores/idle", "model/version", "model/n_learned", "prequential/accuracy"} <= set(t)
    assert "anomaly/score" not in t and task_metrics([], anomaly=True)["anomaly/alarm"] == codec.BOOLEAN
