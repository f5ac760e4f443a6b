"""Unsupervised alarms that adapt to each stream: a discord score and a forgetting alarm policy.

Two parts, each usable on its own:

* :class:`DiscordDetector`: how unlike anything in the recent past is the newest stretch of
  the stream? For each new value it finds the nearest neighbour of the last ``m`` values among
  all stretches ending in the last ``history`` values (trivial matches, overlapping the newest,
  excluded), as an RMS distance in units of the stream's recent standard deviation; the score
  is ``log1p`` of that. A repeating pattern (daily cycles, square waves) finds its twin a period
  back and scores low; a new shape, level or burst scores high. Values beyond the range seen so
  far by more than ``novelty`` x that range are flagged as new outright (Numenta's detector has
  this spatial check; here the range is of values at least ``novelty_lag`` old, so a fast
  climb past the old extremes counts even though each step edges only past the last), and so is a lasting level shift (a short mean far from a long
  one, in units of how far apart they usually are). The search is a numba kernel with early abandoning: about
  ``m x history`` multiply-adds per value at worst.
* :class:`AlarmPolicy`: turns any score into alarms with no per-stream setting. The mean of the
  last ``average`` scores is compared with the long-run distribution of that mean, an
  exponentially forgetting mean and variance over about ``span`` windows (so a stream whose
  score level drifts is judged against its recent self, not its whole past). The Gaussian tail
  probability of the recent mean is what Numenta's anomaly likelihood computes
  (``nupic/algorithms/anomaly_likelihood.py``: moving average of raw scores, normal tail
  against a rolling estimate); the variance is bias-corrected (divided by the weight its terms
  have so far, as Adam does), so the threshold is not too low while the estimate is young. An alarm starts when that tail falls below ``tail`` (after
  ``warmup`` windows), and is held ``hold`` windows past the last such window, so one episode
  raises one alarm. The threshold in force is the smallest mean score that would alarm now.

The numba kernels live in :mod:`pipelines._discord` and are imported on first use, so importing
this module (the config does) does not import numba. Everything counts windows, never seconds, so the same settings work at any sampling rate.
The defaults were chosen on the 33 NAB development files with ``bench/nab_research.py`` and
``bench/nab_corpus.py`` (docs/anomaly.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class AlarmParams(BaseModel):
    """Score-to-alarm settings every detector shares (:class:`AlarmPolicy`), all in windows."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    tail: float = Field(
        1e-4,
        gt=0,
        lt=0.5,
        description="An alarm starts when the recent score level's tail probability, against the "
        "long-run (forgetting) score distribution, falls below this.",
    )
    average: int = Field(
        5, ge=1, le=1000, description="Windows averaged into the score level that is judged."
    )
    span: int = Field(
        2000,
        ge=10,
        le=10_000_000,
        description="Windows the long-run score distribution forgets over (EW mean and variance).",
    )
    warmup: int = Field(200, ge=0, le=10_000_000, description="Windows learned before any alarm.")
    hold: int = Field(
        100,
        ge=0,
        le=1_000_000,
        description="Off-delay: windows an alarm stays on after its last crossing (one episode, one alarm).",
    )


class DiscordParams(AlarmParams):
    """The discord detector (:class:`DiscordDetector`) on the newest value of each window: the
    mean of its last ``hop`` samples per channel."""

    model: Literal["discord"]
    m: int = Field(8, ge=1, le=256, description="Length of the compared stretch, in windows.")
    history: int = Field(
        1000, ge=16, le=100_000, description="Windows searched for the stretch's nearest neighbour."
    )
    scale_span: int = Field(
        200, ge=2, le=1_000_000, description="Windows of the spread that scales distances."
    )
    novelty: float = Field(
        0.05,
        ge=-1,
        le=100,
        description="A value beyond the range seen so far by this fraction of the range alarms outright "
        "(negative: off).",
    )
    novelty_lag: int = Field(
        300,
        ge=0,
        le=100_000,
        description="That range is of values at least this many windows old (at most `history`).",
    )
    shift_span: int = Field(
        16, ge=1, le=1_000_000, description="Windows of the short mean of the level-shift check."
    )
    shift_long: int = Field(
        1000, ge=2, le=10_000_000, description="Windows of the long mean of the level-shift check."
    )
    shift_z: float = Field(
        6.0,
        ge=-1000,
        le=1000,
        description="A level shift alarms outright when the short mean leaves the long one by this many "
        "of their usual gaps (<= 0: off).",
    )


def policy_for(p: AlarmParams) -> AlarmPolicy:
    """The alarm policy configured by ``p``."""
    return AlarmPolicy(tail=p.tail, average=p.average, span=p.span, warmup=p.warmup, hold=p.hold)


_SQRT2 = math.sqrt(2.0)


class DiscordDetector:
    """Nearest-neighbour distance of the newest ``m`` values to the last ``history`` values,
    per channel (the highest channel score counts).

    Parameters
    ----------
    m
        Length of the compared stretch, in values (windows).
    history
        How far back the nearest neighbour is searched, in values.
    scale_span
        Span (values) of the exponentially weighted standard deviation that scales distances.
    novelty
        A value beyond the range seen so far by this fraction of the range is new outright;
        negative turns the check off.
    novelty_lag
        That range is of the values at least this many values old, so a fast climb past the
        old extremes is new even though each step edges only a little past the one before.
    shift_span, shift_long, shift_z
        A level shift is new outright too: the EW mean over ``shift_span`` values departs from
        the one over ``shift_long`` values by more than ``shift_z`` times the usual (EW, bias
        corrected) spread of that difference; ``shift_z <= 0`` turns it off. It catches a
        small, lasting shift inside noise, whose stretches each still look familiar.

    Examples
    --------
    >>> d = DiscordDetector(m=4, history=64)
    >>> scores = []
    >>> for v in np.sin(np.arange(200) * 2 * np.pi / 16):
    ...     scores.append(d.score_one([v])[0])  # score, then learn (river's order)
    ...     d.learn_one([v])
    >>> jump, novel = d.score_one([3.0])  # beyond the range seen by far more than 5 %
    >>> round(max(scores[40:]), 6), bool(jump > 0.5), novel  # the second period on repeats the first
    (0.0, True, True)
    """

    def __init__(
        self,
        m: int = 8,
        history: int = 1000,
        scale_span: int = 200,
        novelty: float = 0.05,
        shift_span: int = 16,
        shift_long: int = 1000,
        shift_z: float = 6.0,
        novelty_lag: int = 300,
    ) -> None:
        if m < 1 or history < 2 * m:
            raise ValueError(f"need m >= 1 and history >= 2 m, got m={m} history={history}")
        if novelty_lag < 0:
            raise ValueError(f"need novelty_lag >= 0, got {novelty_lag}")
        self.m = m
        self.history = history
        self.scale_span = scale_span
        self.novelty = novelty
        self.shift_span = shift_span
        self.shift_long = shift_long
        self.shift_z = shift_z
        self._alpha = 2.0 / (scale_span + 1.0)
        self._a_short = 2.0 / (shift_span + 1.0)
        self._a_long = 2.0 / (shift_long + 1.0)
        self.novelty_lag = min(novelty_lag, history)  # the ring holds `history` values back
        self._bufs: list[np.ndarray] = []
        self._state: list[np.ndarray] = []

    def _ensure(self, n_channels: int) -> None:
        if len(self._bufs) != n_channels:
            self._bufs = [np.zeros(self.history + self.m + 1) for _ in range(n_channels)]
            self._state = [np.zeros(9) for _ in range(n_channels)]

    def score_one(self, values: list[float] | np.ndarray) -> tuple[float, bool]:
        """Score the next value of each channel: (highest channel score, any channel novel).
        Pure: nothing is learned."""
        from pipelines._discord import _discord_score

        score, novel = 0.0, False
        if len(self._bufs) != len(values):  # nothing learned yet (or another channel count)
            return score, novel
        for buf, st, v in zip(self._bufs, self._state, values, strict=True):
            s, nv = _discord_score(
                buf, st, float(v), self.m, self.history, self.novelty, self._a_short, self.shift_z
            )
            score = max(score, s)
            novel = novel or nv
        return score, novel

    def learn_one(self, values: list[float] | np.ndarray) -> None:
        """Remember the next value of each channel."""
        from pipelines._discord import _discord_learn

        self._ensure(len(values))
        for buf, st, v in zip(self._bufs, self._state, values, strict=True):
            _discord_learn(buf, st, float(v), self._alpha, self._a_short, self._a_long, self.novelty_lag)

    def reset(self) -> None:
        """Forget everything (a new stream)."""
        self._bufs, self._state = [], []


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the alarm policy made of one window's score."""

    score: float  # the window's score
    level: float  # mean of the last ``average`` scores: what is compared
    threshold: float  # the smallest level that alarms now (inf before warm-up)
    tail: float  # Gaussian upper-tail probability of ``level`` against the long run
    alarm: bool  # on (including the hold)
    above: bool  # this window itself crossed (tail < eps, or a novel value)
    novel: bool = False  # the detector flagged this window as new outright


class AlarmPolicy:
    """Forgetting likelihood threshold with warm-up and hold (see the module docstring).

    Examples
    --------
    >>> p = AlarmPolicy(tail=1e-4, average=1, span=200, warmup=50, hold=3)
    >>> rng = np.random.default_rng(1)
    >>> flags = [p.update(float(s)).alarm for s in rng.normal(0, 1, 300)]
    >>> sum(flags[:50]), p.update(12.0).alarm, [p.update(0.0).alarm for _ in range(4)]
    (0, True, [True, True, True, False])
    """

    def __init__(
        self, tail: float = 1e-4, average: int = 5, span: int = 2000, warmup: int = 200, hold: int = 100
    ) -> None:
        self.eps = tail
        self.average = average
        self.span = span
        self.warmup = warmup
        self.hold = hold
        self._z = _upper_z(tail)
        self._alpha = 2.0 / (span + 1.0)
        self._ring = np.zeros(average)
        self._sum = 0.0
        self._mean = 0.0
        self._var = 0.0
        self._weight = 0.0  # total weight of the variance's terms: its bias correction
        self.n = 0
        self._left = 0

    def judge(self, score: float, novel: bool = False) -> Verdict:
        """What ``score`` (and ``novel``: forces an alarm after warm-up) would mean now. Pure."""
        if not math.isfinite(score):
            score = 0.0
        i = self.n
        k = min(i + 1, self.average)
        level = (self._sum - (self._ring[i % self.average] if i >= self.average else 0.0) + score) / k
        sd = math.sqrt(self._var / self._weight if self._weight > 0 else 0.0) + 1e-9
        tail = 0.5 * math.erfc((level - self._mean) / (sd * _SQRT2))
        ready = i >= self.warmup
        threshold = self._mean + self._z * sd if ready else math.inf
        above = ready and (tail < self.eps or novel)
        return Verdict(score, level, threshold, tail, above or self._left > 0, above, ready and novel)

    def learn(self, v: Verdict) -> None:
        """Take the judged window in: its score into the level, the level into the long run,
        and the off-delay forward."""
        i = self.n
        j = i % self.average
        self._sum += v.score - self._ring[j]
        self._ring[j] = v.score
        if i == 0:
            self._mean = v.level
        else:
            d = v.level - self._mean
            self._mean += self._alpha * d
            self._var = (1.0 - self._alpha) * (self._var + self._alpha * d * d)
            self._weight = 1.0 - (1.0 - self._alpha) * (1.0 - self._weight)
        self.n += 1
        if v.above:
            self._left = self.hold
        elif self._left > 0:
            self._left -= 1

    def update(self, score: float, novel: bool = False) -> Verdict:
        """:meth:`judge` then :meth:`learn`."""
        v = self.judge(score, novel)
        self.learn(v)
        return v


def _upper_z(p: float) -> float:
    """z with a standard normal upper tail of ``p`` (bisection on erfc; p in (0, 0.5))."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(mid / _SQRT2) > p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class DiscordScorer:
    """A task's discord detector and its alarm policy, fed one window at a time."""

    def __init__(self, p: DiscordParams) -> None:
        self.detector = DiscordDetector(
            m=p.m,
            history=p.history,
            scale_span=p.scale_span,
            novelty=p.novelty,
            shift_span=p.shift_span,
            shift_long=p.shift_long,
            shift_z=p.shift_z,
            novelty_lag=p.novelty_lag,
        )
        self.policy = policy_for(p)

    def score_window(self, window: np.ndarray, hop: int) -> Verdict:
        """Judge a window (channels x samples): its newest ``hop`` samples, averaged per channel."""
        newest = window[:, -hop:].mean(axis=1) if hop > 1 else window[:, -1]
        score, novel = self.detector.score_one(newest)
        self.detector.learn_one(newest)
        return self.policy.update(score, novel)
