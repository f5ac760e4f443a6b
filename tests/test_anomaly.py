"""The discord detector and the forgetting alarm policy (pipelines/anomaly.py) on synthetic streams,
alone and through the engine with examples/nab.toml (alerts validated against the JSON Schemas)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from drivers.base import Block
from edged.app import build_engine
from edged.config import load
from edged.replay import replay
from edged.seq import SeqStore
from pipelines.anomaly import AlarmPolicy, DiscordDetector
from tests.conftest import REPO
from tests.schemas import validate


def _step(det: DiscordDetector, values: list[float] | np.ndarray) -> tuple[float, bool]:
    out = det.score_one(values)
    det.learn_one(values)
    return out


def _run(values: np.ndarray, **policy: float) -> tuple[np.ndarray, np.ndarray]:
    det = DiscordDetector()
    pol = AlarmPolicy(**policy)  # type: ignore[arg-type]
    alarms, thresholds = [], []
    for v in values.tolist():
        s, novel = _step(det, [v])
        verdict = pol.update(s, novel)
        alarms.append(verdict.alarm)
        thresholds.append(verdict.threshold)
    return np.array(alarms), np.array(thresholds)


def _onsets(alarm: np.ndarray) -> np.ndarray:
    return np.flatnonzero(alarm & ~np.concatenate(([False], alarm[:-1])))


class TestAlarmPolicy:
    def test_level_shift_alarms_then_adapts_and_clears(self) -> None:
        """A level shift raises one alarm at once; the new level becomes normal and the alarm clears."""
        rng = np.random.default_rng(3)
        x = rng.normal(0.0, 1.0, 6000)
        x[3000:] += 8.0
        alarm, thr = _run(x)
        on = _onsets(alarm)
        assert any(3000 <= o <= 3005 for o in on)
        assert not alarm[4000:].any()  # re-adapted: the shifted level no longer alarms
        assert np.isfinite(thr[-1])
        assert thr[3500] > thr[2999]  # the shift's scores widened the long-run spread ...
        assert thr[-1] < thr[3500]  # ... and that is forgotten again

    def test_forgets_a_noisy_past(self) -> None:
        """After a long noisy stretch, a calm stream's threshold comes down, so a modest burst alarms."""
        rng = np.random.default_rng(4)
        noisy = rng.normal(0.0, 1.0, 3000) * np.where(rng.random(3000) < 0.05, 6.0, 1.0)
        calm = rng.normal(0.0, 1.0, 6000)
        calm[5000:5010] += 5.0
        alarm, _ = _run(np.concatenate((noisy, calm)))
        assert alarm[3000 + 5000 : 3000 + 5015].any()

    def test_warmup_counts_windows(self) -> None:
        """Nothing alarms during the warm-up, whatever the scores."""
        pol = AlarmPolicy(warmup=50, average=1)
        verdicts = [pol.update(100.0 * (i % 7 == 0), novel=True) for i in range(50)]
        assert not any(v.alarm for v in verdicts)
        assert all(math.isinf(v.threshold) for v in verdicts)
        assert pol.update(1e6, novel=True).alarm

    def test_hold_debounces_an_episode(self) -> None:
        """Crossings closer together than the hold make one alarm; one further apart starts another."""
        pol = AlarmPolicy(average=1, warmup=100, hold=20, span=500)
        rng = np.random.default_rng(5)
        flags = [pol.update(float(s)).alarm for s in rng.normal(0, 0.1, 400)]
        assert not any(flags)
        burst = [50.0 if i % 5 == 0 else 0.0 for i in range(60)]  # a crossing every 5 windows
        flags = [pol.update(s).alarm for s in burst] + [pol.update(0.0).alarm for _ in range(40)]
        a = np.array(flags)
        assert len(_onsets(a)) == 1 and a[:76].all() and not a[76:].any()

    def test_judge_is_pure(self) -> None:
        """Judging changes nothing: judging twice gives the same verdict, and update = judge + learn."""
        a, b = AlarmPolicy(warmup=20), AlarmPolicy(warmup=20)
        rng = np.random.default_rng(8)
        for s in rng.normal(0, 1, 300):
            v1, v2 = a.judge(float(s)), a.judge(float(s))
            assert v1 == v2
            a.learn(v1)
            assert b.update(float(s)) == v1

    def test_reports_threshold_and_tail(self) -> None:
        """The verdict says why: the level compared, the threshold in force and the tail probability."""
        pol = AlarmPolicy(average=1, warmup=100, tail=1e-4)
        rng = np.random.default_rng(6)
        for s in rng.normal(0, 1, 1000):
            pol.update(float(s))
        v = pol.update(10.0)
        assert v.above and v.alarm and v.level == 10.0
        assert 2.0 < v.threshold < 10.0 and v.tail < 1e-4
        quiet = pol.update(0.0)
        assert quiet.tail > 0.1 and not quiet.above


class TestDiscordDetector:
    def test_repeating_pattern_scores_low(self) -> None:
        """A square wave finds its twin a period back: after the first periods, no score above 0."""
        det = DiscordDetector(m=8, history=400)
        x = np.where((np.arange(3000) // 50) % 2 == 0, 1.0, 0.0)
        scores = [_step(det, [v])[0] for v in x]
        assert max(scores[200:]) == 0.0

    def test_new_shape_scores_high(self) -> None:
        """A flat stretch in a sine, never seen before, scores above everything before it."""
        det = DiscordDetector(m=8, history=400)
        x = np.sin(np.arange(3000) * 2 * np.pi / 100)
        x[2500:2530] = 0.0
        scores = np.array([_step(det, [v])[0] for v in x])
        assert scores[2500:2540].max() > 2 * scores[500:2500].max()

    def test_flat_line_is_quiet(self) -> None:
        """A constant stream has no spread: its scores stay 0 and nothing is new."""
        det = DiscordDetector()
        out = [_step(det, [3.0]) for _ in range(500)]
        assert all(s == 0.0 and not nv for s, nv in out)

    def test_channels_take_the_highest(self) -> None:
        """With several channels the score is the highest channel's."""
        a, b = DiscordDetector(m=4, history=50), DiscordDetector(m=4, history=50)
        rng = np.random.default_rng(7)
        x = rng.normal(0, 1, (300, 2))
        both = [_step(a, r)[0] for r in x]
        first = [_step(b, r[:1])[0] for r in x]
        assert all(s >= f for s, f in zip(both, first, strict=True))


class TestDiscordPurity:
    def test_score_one_changes_nothing(self) -> None:
        """Scoring a value leaves the detector byte-for-byte as it was (river's pure score_one)."""
        import pickle

        det = DiscordDetector(m=4, history=50)
        rng = np.random.default_rng(9)
        for v in rng.normal(0, 1, 200):
            before = pickle.dumps(det)
            det.score_one([v])
            assert pickle.dumps(det) == before
            det.learn_one([v])


# -- the service path: examples/nab.toml through the engine --------------------------------------
NAB_CONFIG = REPO / "examples" / "nab.toml"


class _Sink:
    def __init__(self) -> None:
        self.msgs: list[tuple[str, dict[str, Any], str]] = []

    def send(self, topic: str, payload: dict[str, Any], kind: str) -> None:
        validate(payload, topic)
        self.msgs.append((topic, payload, kind))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for _, p, k in self.msgs if k == kind]

    def alerts(self, kind: str) -> list[dict[str, Any]]:
        return [p for p in self.of("alert") if p["kind"] == kind]


def _engine() -> tuple[Any, _Sink]:
    cfg, _ = load(str(NAB_CONFIG))
    sink = _Sink()
    return build_engine(cfg, sink, SeqStore(None), wall=lambda t: t), sink


def _feed(engine: Any, t: np.ndarray, v: np.ndarray, chunk: int = 500) -> None:
    for a in range(0, len(t), chunk):
        engine.ingest(Block("file", ("value",), t[a : a + chunk], v[a : a + chunk, None]))


def _stream(n: int = 5000, shift_at: int = 3000, seed: int = 11) -> np.ndarray:
    """A daily-ish cycle in noise that steps up by 6 noise widths at ``shift_at``."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    v = 10 + 3 * np.sin(2 * np.pi * i / 288) + rng.normal(0, 0.5, n)
    v[shift_at:] += 3.0
    return v


class TestServiceAlarms:
    def test_onset_and_cleared_alert_pair(self) -> None:
        """A level shift gives one anomaly alert at its onset and one anomaly_cleared alert, with
        duration, window count and peak score; predictions carry score, threshold and tail."""
        engine, sink = _engine()
        v = _stream()
        t = 1.6e9 + 300.0 * np.arange(len(v))
        _feed(engine, t, v)
        on, off = sink.alerts("anomaly"), sink.alerts("anomaly_cleared")
        shift_ts = t[3000]
        at_shift = [a for a in on if shift_ts <= a["ts"] <= shift_ts + 300 * 20]
        assert len(at_shift) == 1, [a["ts"] for a in on]
        a = at_shift[0]
        assert a["task"] == "maintenance" and a["threshold"] is not None and 0 <= a["tail"] <= 1
        cleared = [c for c in off if c["started"] == a["ts"]]
        assert len(cleared) == 1
        c = cleared[0]
        assert c["duration_s"] == c["ts"] - a["ts"] > 0
        assert c["windows"] == round(c["duration_s"] / 300) and c["peak_score"] >= a["score"]
        assert len(on) - len(off) in (0, 1)  # every alarm but possibly the last one has cleared
        preds = sink.of("prediction")
        assert {"score", "alarm", "threshold", "tail"} <= set(preds[-1]["anomaly"])
        assert preds[0]["anomaly"]["threshold"] is None  # warm-up
        assert preds[-1]["anomaly"]["threshold"] > preds[-1]["anomaly"]["score"]

    def test_debounced_one_alert_per_episode(self) -> None:
        """A burst of crossings closer together than the hold raises one alert, not one per crossing."""
        engine, sink = _engine()
        rng = np.random.default_rng(12)
        v = rng.normal(0, 1, 4000)
        v[3000:3060:6] += 25.0  # ten spikes, six windows apart
        t = 1.6e9 + 60.0 * np.arange(len(v))
        _feed(engine, t, v)
        in_burst = [a for a in sink.alerts("anomaly") if t[2990] <= a["ts"] <= t[3200]]
        assert len(in_burst) == 1
        alarmed = [p["anomaly"]["alarm"] for p in sink.of("prediction") if t[3000] <= p["ts"] <= t[3060]]
        assert all(alarmed)

    def test_one_config_at_any_rate(self) -> None:
        """examples/nab.toml runs unchanged on recordings 1 s, 1 h and irregularly sampled: it
        counts windows, so the same values give the same verdicts at every rate."""
        v = _stream(n=4000, shift_at=3000)
        steps = {
            "1s": np.ones(len(v)),
            "1h": np.full(len(v), 3600.0),
            "irregular": np.random.default_rng(13).choice([60.0, 300.0, 300.0, 900.0, 0.0], len(v)),
        }
        runs = {}
        for name, dt in steps.items():
            engine, sink = _engine()
            _feed(engine, 1.6e9 + np.cumsum(dt), v)
            runs[name] = [(p["anomaly"]["score"], p["anomaly"]["alarm"]) for p in sink.of("prediction")]
            assert any(3000 <= i <= 3020 for i, (_, a) in enumerate(runs[name], start=7) if a)
        assert runs["1s"] == runs["1h"] == runs["irregular"]

    def test_replay_takes_the_rate_from_the_recording(self, tmp_path: Path) -> None:
        """`edged replay -c examples/nab.toml` accepts files of different sampling intervals."""
        cfg, _ = load(str(NAB_CONFIG))
        v = _stream(n=1200, shift_at=1000)
        files = []
        for name, dt in (("fast.csv", 1.0), ("slow.csv", 3600.0)):
            p = tmp_path / name
            t = 1.6e9 + dt * np.arange(len(v))
            p.write_text("t,value\n" + "".join(f"{a:.0f},{b:.6f}\n" for a, b in zip(t, v, strict=True)))
            files.append(p)
        for p in files:
            rep = replay(cfg, [p])
            assert rep["files"][0]["tasks"]["maintenance"]["windows"] == len(v) - 7
