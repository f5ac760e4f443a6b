"""Engine: label payload validation, sanitising bad samples, payload contract."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.base import Block
from edged.app import build_engine
from edged.config import load
from edged.engine import parse_label
from edged.seq import SeqStore
from tests.conftest import REPO


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str]] = []

    def send(self, topic: str, payload: dict[str, Any], kind: str) -> None:
        self.sent.append((topic, payload, kind))


@pytest.fixture
def engine() -> Any:
    cfg, _ = load(str(REPO / "config.toml"))
    return build_engine(cfg, ListSink(), SeqStore(None), wall=lambda t: t)


class TestLabelPayloads:
    @pytest.mark.parametrize(
        "payload",
        [
            b'{"label": "running", "ts": 1700000000.5}',
            b'{"label": "running", "from": 1700000000, "to": 1700000010}',
        ],
    )
    def test_contract_forms_are_accepted(self, payload: bytes) -> None:
        """The two forms of the contract parse."""
        label, lo, hi, point = parse_label(payload, 1024)
        assert label == "running" and lo <= hi and point == (b'"ts"' in payload)

    @pytest.mark.parametrize(
        "payload, reason",
        [
            (b"", "Invalid JSON"),
            (b"{", "Invalid JSON"),
            (b"[1]", "Input should be"),
            (b'{"label": "x"}', "Field required"),
            (b'{"label": "x", "ts": 1, "extra": 1}', "Extra inputs"),
            (b'{"label": 3, "ts": 1}', "valid string"),
            (b'{"label": "x", "ts": true}', "valid number"),
            (b'{"label": "x", "ts": -1}', "greater than or equal"),
            (b'{"label": "x", "from": 5, "to": 1}', "before"),
            (b'{"label": "x", "ts": 1e400}', "finite"),
            (b'{"label": "a\\u0000b", "ts": 1}', "pattern"),
        ],
    )
    def test_bad_payloads_are_rejected_with_a_reason(self, payload: bytes, reason: str) -> None:
        """Anything outside the contract is a ValueError naming what is wrong."""
        with pytest.raises(ValueError) as exc:
            parse_label(payload, 1024)
        assert reason.lower() in str(exc.value).lower()

    def test_size_limit(self) -> None:
        """Oversized payloads are refused before parsing."""
        with pytest.raises(ValueError, match="exceeds"):
            parse_label(b'{"label": "' + b"a" * 2000 + b'", "ts": 1}', 1024)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        st.one_of(
            st.binary(max_size=300),
            st.recursive(
                st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                lambda c: (
                    st.lists(c, max_size=4)
                    | st.dictionaries(st.sampled_from(["label", "ts", "from", "to", "x"]), c, max_size=4)
                ),
                max_leaves=10,
            ).map(lambda v: json.dumps(v).encode()),
        )
    )
    def test_fuzzed_labels_never_crash_the_engine(self, engine: Any, payload: bytes) -> None:
        """Random bytes and random JSON never raise; they are applied or counted as rejected (one
        engine for all examples, so state accumulates as in a long-running service)."""
        before = engine.tasks["activity"].model.n_learned
        engine.fuzz_clock = getattr(engine, "fuzz_clock", 0.0) + 1.0  # below the rate limit
        rejected = engine.counters["labels.rejected"]
        outcome = engine.on_label("activity", payload, now=engine.fuzz_clock)
        assert outcome.startswith("rejected:") == (engine.counters["labels.rejected"] == rejected + 1)
        assert "rate limit" not in outcome
        assert isinstance(outcome, str)
        assert engine.tasks["activity"].model.n_learned >= before

    def test_rejections_are_counted(self, engine: Any) -> None:
        """Unknown task, unknown class and rate limiting are counted rejections."""
        assert engine.on_label("nope", b'{"label": "idle", "ts": 1}', 0.0).startswith("rejected:no task")
        assert engine.on_label("activity", b'{"label": "flying", "ts": 1}', 0.0).startswith("rejected:class")
        assert engine.counters["labels.rejected"] == 2
        outcomes = [engine.on_label("activity", b'{"label": "idle", "ts": 1}', 100.0) for _ in range(300)]
        assert any(o == "rejected:rate limit exceeded" for o in outcomes)


class TestSamples:
    def test_non_finite_samples_never_reach_the_learner(self, engine: Any) -> None:
        """NaN/inf samples are replaced by the channel's last value, counted, and windows stay finite."""
        chans = ("ax", "ay", "az", "gx", "gy", "gz")
        t = np.arange(2048) / 1000.0
        x = np.random.default_rng(0).standard_normal((2048, 6))
        x[100:400, 1] = np.nan
        x[0:5, 2] = np.inf
        engine.ingest(Block("imu", chans, t, x))
        assert engine.counters["samples_filled.ay"] == 300 and engine.counters["samples_filled.az"] == 5
        preds = [p for _, p, k in engine.sink.sent if k == "prediction"]
        assert preds and all(np.isfinite(p["ts"]) for p in preds)
        task = engine.tasks["activity"]
        assert all(np.isfinite(r.x[: len(task.extractor.names)]).all() for r in task.pending)

    def test_payloads_follow_the_contract(self, engine: Any) -> None:
        """Prediction payloads carry the contract fields, seq per task from 0."""
        chans = ("ax", "ay", "az", "gx", "gy", "gz")
        t = 1_700_000_000 + np.arange(4096) / 1000.0
        engine.ingest(Block("imu", chans, t, np.random.default_rng(1).standard_normal((4096, 6))))
        by_task: dict[str, list[dict[str, Any]]] = {}
        for topic, p, kind in engine.sink.sent:
            if kind == "prediction":
                assert topic == f"prediction/{p['task']}"
                by_task.setdefault(p["task"], []).append(p)
        assert set(by_task) == {"activity", "maintenance"}
        for preds in by_task.values():
            assert [p["seq"] for p in preds] == list(range(len(preds)))
        p = by_task["maintenance"][0]
        assert p["ts"] == pytest.approx(t[1023]) and "anomaly" in p
        json.dumps(p, allow_nan=False)
