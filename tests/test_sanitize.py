"""Summary policy (rounding, minimum count, Laplace noise, pseudonym) and the payload JSON Schemas."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from drivers.base import Block
from edged.app import build_engine
from edged.config import ConfigError, NoiseConfig, SummaryConfig, load, parse
from edged.engine import parse_label
from edged.sanitize import SummaryPolicy, pseudonym, round_to
from edged.seq import SeqStore
from tests.conftest import REPO
from tests.schemas import SCHEMAS, VALIDATORS, validate

IMU = ("ax", "ay", "az", "gx", "gy", "gz")


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str]] = []

    def send(self, topic: str, payload: dict[str, Any], kind: str) -> None:
        self.sent.append((topic, payload, kind))


def _engine(raw_over: dict[str, Any] | None = None) -> Any:
    cfg, _ = load(str(REPO / "config.toml"))
    if raw_over:
        raw = cfg.model_dump()
        raw["summary"].update(raw_over)
        raw["mqtt"]["tls"] = None
        cfg = parse(json.loads(json.dumps(raw)))
    return cfg, build_engine(cfg, ListSink(), SeqStore(None), wall=lambda t: 1_700_000_000 + t)


def _feed(engine: Any, seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(1000 * seconds)
    x = rng.normal(0, 1.3, (n, 6)) + np.array([0.1, -0.2, 9.81, 0, 0, 0]) + rng.random((n, 6)) * 1e-9
    engine.ingest(Block("imu", IMU, np.arange(n) / 1000.0, x))
    env = np.array([[22.123456789, 45.6789012, 101325.123456]])
    engine.ingest(Block("env", ("temperature", "humidity", "pressure"), np.array([0.5]), env))
    return np.concatenate([x.ravel(), env.ravel()])


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, dict):
        return [v for o in obj.values() for v in _numbers(o)]
    if isinstance(obj, list):
        return [v for o in obj for v in _numbers(o)]
    return [float(obj)] if isinstance(obj, int | float) and not isinstance(obj, bool) else []


class TestSchemas:
    def test_schemas_are_valid_draft_2020_12(self) -> None:
        """Every file in schemas/ is a valid JSON Schema, one per payload kind."""
        assert set(SCHEMAS) == {"status.v1", "prediction.v1", "summary.v1", "alert.v1", "label.v1"}
        for s in SCHEMAS.values():
            Draft202012Validator.check_schema(s)

    def test_engine_payloads_match_their_schemas(self) -> None:
        """Predictions (with and without anomaly), alerts and sanitised summaries from the engine validate."""
        cfg, engine = _engine()
        _feed(engine, 6.0)
        engine.alert("state", problem="checkpoint_failed", error="No space left on device")
        engine.alert("sensor", sensor="imu", health="lost", reason="OSError: [Errno 121] Remote I/O error")
        summary = SummaryPolicy(cfg.summary).apply(
            engine.summary(1_700_000_010.0, {"mqtt": {"connected": True}})
        )
        payloads = [p for _, p, _ in engine.sink.sent] + [summary]
        kinds = {p["schema"] for p in payloads}
        assert kinds == {"edged.prediction.v1", "edged.alert.v1", "edged.summary.v1"}
        for p in payloads:
            validate(p)

    def test_schemas_reject_what_the_contract_forbids(self) -> None:
        """A raw sample array in a summary channel, a negative seq or a missing field do not validate."""
        bad = [
            (
                "summary.v1",
                {
                    "schema": "edged.summary.v1",
                    "device": "d",
                    "from": 0,
                    "to": 1,
                    "tasks": {},
                    "counters": {},
                    "channels": {"ax": {"count": 3, "mean": 0, "std": 0, "samples": [1.0, 2.0, 3.0]}},
                },
            ),
            (
                "prediction.v1",
                {
                    "schema": "edged.prediction.v1",
                    "device": "d",
                    "task": "t",
                    "ts": 1,
                    "seq": -1,
                    "label": None,
                    "scores": {},
                    "model": {"version": 1, "n_learned": 0},
                },
            ),
            ("alert.v1", {"schema": "edged.alert.v1", "kind": "anomaly", "device": "d", "ts": 1}),
        ]
        for name, payload in bad:
            assert not VALIDATORS[name].is_valid(payload), name

    @settings(max_examples=400, deadline=None)
    @given(
        st.one_of(
            st.fixed_dictionaries(
                {"label": st.text(max_size=70)},
                optional={
                    "ts": st.floats() | st.integers(-5, 2 * 10**11),
                    "from": st.floats(-10, 2e11),
                    "to": st.floats(-10, 2e11),
                    "x": st.none(),
                },
            ),
            st.dictionaries(
                st.sampled_from(["label", "ts", "from", "to"]),
                st.none() | st.booleans() | st.text(max_size=3) | st.floats(),
            ),
        )
    )
    def test_label_schema_and_label_validator_agree(self, msg: dict[str, Any]) -> None:
        """The published label schema accepts exactly what the service accepts (apart from 'to' before
        'from', which JSON Schema cannot express)."""
        raw = json.dumps(msg).encode()
        try:
            parse_label(raw, 1 << 20)
            accepted = True
        except ValueError as exc:
            accepted = False
            if "before" in str(exc):
                return
        schema_ok = VALIDATORS["label.v1"].is_valid(json.loads(raw))
        assert accepted == schema_ok, (msg, accepted, schema_ok)


class TestPolicy:
    def test_no_raw_sample_and_no_configured_identifier_in_a_summary(self, tmp_path: Path) -> None:
        """With a pseudonym and rounding, the serialised summary contains none of the raw sample values,
        no configured identifier (device id, client id, user, host, file paths), only stepped numbers."""
        text = (REPO / "config.toml").read_text()
        text = text.replace('id = "sim-gateway-01"', 'id = "plant7-press-0042"')
        text = text.replace(
            'host = "127.0.0.1"',
            'host = "mqtt.plant7.example"\nclient_id = "edged-serial-XK42"\n'
            'username = "plant7-press-0042-user"\npassword_file = "/etc/edged/pw-Q9"',
        )
        text = text.replace(
            "interval_s = 30",
            "interval_s = 30\npseudonymize = true\nmin_count = 5\n"
            "round_step = {default = 0.01, temperature = 0.5, pressure = 10}",
        )
        cfg_path = tmp_path / "edged.toml"
        cfg_path.write_text(text.replace('dir = "state"', f'dir = "{tmp_path / "state"}"'))
        cfg, _ = load(str(cfg_path))
        engine = build_engine(cfg, ListSink(), SeqStore(None), wall=lambda t: 1_700_000_000 + t)
        raw = _feed(engine)
        policy = SummaryPolicy(cfg.summary, key=b"k" * 32)
        summary = policy.apply(engine.summary(1_700_000_004.0, {"mqtt": {"connected": False, "queued": 3}}))
        validate(summary)
        blob = json.dumps(summary)
        for ident in ("plant7-press-0042", "edged-serial-XK42", "mqtt.plant7.example", "pw-Q9", "plant7"):
            assert ident not in blob, ident
        assert summary["device"] == pseudonym(b"k" * 32, "plant7-press-0042") and re.fullmatch(
            r"gw-[0-9a-f]{16}", summary["device"]
        )
        raw_set = set(raw.tolist())
        assert not raw_set & set(_numbers(summary)), "a raw sample value leaked into the summary"
        for ch, agg in summary["channels"].items():
            step = {"temperature": 0.5, "pressure": 10}.get(ch, 0.01)
            for k in ("mean", "std", "min", "max"):
                assert math.isclose(agg[k] / step, round(agg[k] / step), abs_tol=1e-6), (ch, k, agg[k])
        assert "temperature" not in summary["channels"]  # 1 sample < min_count 5: suppressed, and said so
        assert "channels.temperature" in summary["suppressed"]["aggregates"]
        assert not any(isinstance(v, list) and len(v) > 4 for v in _walk(summary))

    def test_laplace_noise_has_the_stated_scale_and_clips(self) -> None:
        """Mean and std get Laplace noise of scale sensitivity/(epsilon/2); min/max are not published."""
        cfg = SummaryConfig(noise=NoiseConfig(epsilon=1.0, bounds={"ax": [-20.0, 20.0]}), min_count=1)
        policy = SummaryPolicy(cfg, rng=np.random.default_rng(5))
        payload = {
            "schema": "edged.summary.v1",
            "device": "d",
            "from": 0,
            "to": 1,
            "tasks": {},
            "counters": {},
            "channels": {"ax": {"count": 400, "mean": 1.0, "std": 10.0, "min": -5.0, "max": 7.0}},
        }
        draws = [policy.apply(payload)["channels"]["ax"] for _ in range(4000)]
        means = np.array([d["mean"] for d in draws]) - 1.0
        stds = np.array([d["std"] for d in draws]) - 10.0  # clipping to [0, 20] only touches |noise| > 10
        b_mean, b_std = 40 / 400 / 0.5, 40 / math.sqrt(400) / 0.5  # Laplace scales
        assert np.median(np.abs(means)) == pytest.approx(b_mean * math.log(2), rel=0.1)
        assert np.median(np.abs(stds)) == pytest.approx(b_std * math.log(2), rel=0.1)
        assert all(set(d) == {"count", "mean", "std"} and d["count"] == 400 for d in draws)
        assert policy.apply(payload)["privacy"]["epsilon"] == 1.0

    def test_engine_clips_samples_before_aggregating_when_noise_is_on(self) -> None:
        """With noise bounds the aggregate sees clipped samples, so one wild sample moves the mean by at
        most (hi - lo)/n, the sensitivity the noise is scaled for."""
        bounds = {ch: (-50.0, 50.0) for ch in IMU} | {
            "temperature": (-40.0, 125.0),
            "humidity": (0.0, 100.0),
            "pressure": (3e4, 1.1e5),
        }
        _, engine = _engine({"noise": {"epsilon": 1.0, "bounds": {k: list(v) for k, v in bounds.items()}}})
        x = np.zeros((1000, 6))
        x[10, 0] = 1e9
        engine.ingest(Block("imu", IMU, np.arange(1000) / 1000.0, x))
        agg = engine.summary(1.0)["channels"]["ax"]
        assert agg["max"] == 50.0 and agg["mean"] == pytest.approx(50.0 / 1000)

    def test_noise_needs_bounds_for_every_channel(self, tmp_path: Path) -> None:
        """Noise without clipping bounds would promise nothing: a config error naming the missing channels."""
        raw = load(str(REPO / "config.toml"))[0].model_dump()
        raw["summary"]["noise"] = {"epsilon": 1.0, "bounds": {"ax": [-1, 1], "nope": [0, 1]}}
        raw["mqtt"]["tls"] = None
        with pytest.raises(ConfigError) as exc:
            parse(json.loads(json.dumps(raw)))
        text = "\n".join(exc.value.problems)
        assert "summary.noise.bounds: every summarised channel needs" in text and "ay" in text
        assert "summary.noise.bounds.nope: no sensor provides" in text

    def test_rounding(self) -> None:
        """Rounding lands on the step grid without float noise."""
        assert [round_to(v, 0.1) for v in (0.15000001, 2.04999, -0.05000001)] == [0.2, 2.0, -0.1]


def _walk(obj: Any) -> list[Any]:
    out = [obj]
    if isinstance(obj, dict):
        for v in obj.values():
            out += _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            out += _walk(v)
    return out


class TestFaithfulSummary:
    def test_values_are_rounded_only_by_the_configured_step(self) -> None:
        """Without ``summary.round_step`` a summary carries the exact aggregates (no hidden 4-digit
        rounding); with a step, exactly that step."""
        cfg, engine = _engine({"min_count": 1})
        assert not cfg.summary.round_step
        _feed(engine)
        channels = SummaryPolicy(cfg.summary).apply(engine.summary(1_700_000_010.0))["channels"]
        assert channels["pressure"]["mean"] == 101325.123456
        assert channels["temperature"]["max"] == 22.123456789
        cfg, engine = _engine({"min_count": 1, "round_step": {"pressure": 0.5}})
        _feed(engine)
        channels = SummaryPolicy(cfg.summary).apply(engine.summary(1_700_000_010.0))["channels"]
        assert channels["pressure"]["mean"] == 101325.0 and channels["humidity"]["mean"] == 45.6789012

    def test_windows_without_a_prediction_are_not_counted_under_a_none_key(self) -> None:
        """A window the model could not yet label is counted in ``windows`` but never as a string
        "None" class in ``predicted``; the schema rejects such a key."""
        cfg, engine = _engine()
        _feed(engine, 6.0)
        assert any(p["label"] is None for _, p, k in engine.sink.sent if k == "prediction")
        summary = SummaryPolicy(cfg.summary).apply(engine.summary(1_700_000_010.0))
        validate(summary)
        for task in summary["tasks"].values():
            assert "None" not in task["predicted"] and sum(task["predicted"].values()) <= task["windows"]
        summary["tasks"]["activity"]["predicted"]["None"] = 3
        with pytest.raises(Exception, match="None"):
            validate(summary)
