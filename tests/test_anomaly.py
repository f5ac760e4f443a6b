"""The discord detector and the forgetting alarm policy (pipelines/anomaly.py) on synthetic streams."""

from __future__ import annotations

import math

import numpy as np

from pipelines.anomaly import AlarmPolicy, DiscordDetector


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
