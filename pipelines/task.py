"""One task's pipeline: windows -> features -> predict (and anomaly score) -> learn from labels.

Test-then-train: every window is predicted when it is complete; the prediction is kept with
the window for ``horizon_s`` seconds, and when a label for that window arrives (at once for a
replayed file, later over MQTT) the kept prediction is scored against it and only then is the
label learned. A window is learned at most once.

Label matching (wall-clock Unix seconds, the same ``ts`` that predictions carry):

* a range label ``[from, to]`` labels every window whose last sample lies in the range (the
  recorded-file rule: a window's label is the label of its last sample);
* a point label ``ts`` labels the window(s) containing ``ts``;
* a label reaching beyond the newest window stays open and labels windows as they complete,
  until they pass its end (or it expires after ``horizon_s``).

Label authority (issue 17). Labels from outside (``source`` other than ``simulator``) are bounded
and watched, because one label message used to be able to teach a model a wrong class for every
window of the next hour:

* one message teaches at most ``label_max_windows`` windows (the engine also refuses a range
  longer than ``label_max_span_s``);
* a burst that would flip the model wholesale is held back: when, within ``hold_window_s``,
  at least ``hold_flips`` windows learned from outside labels got a label other than the model's
  prediction, while the model had been right on at least ``hold_baseline`` of the windows learned
  before that period, then for ``hold_s`` a label that
  disagrees with the prediction is not learned (counted ``windows_held``; the window stays
  unlearned, so a later label can still teach it) and a ``labels_held`` event is raised for an
  alert. Labels that agree are learned as usual. A genuine change that one labeller reports
  against a confident model is therefore learned at a bounded rate, and shows up as an alert to
  look at rather than silently.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pipelines.evaluation import Prequential
from pipelines.fastpath import FeatureVector
from pipelines.windowing import DERIVED, Windower

if TYPE_CHECKING:  # not at run time: importing numba here would precede set_jit_cache (edged.app)
    from pipelines.anomaly import Verdict
    from pipelines.features import FeatureExtractor
    from pipelines.learners import TaskModel  # river: loaded by whoever builds the model

MAX_OPEN_LABELS = 64


class _Slope:
    """Rate of change of a slow channel at window ends: the difference to the newest value at
    least ``horizon_s`` older (or the oldest kept), per second; NaN until there are two times."""

    __slots__ = ("hist", "horizon_s")

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self.hist: deque[tuple[float, float]] = deque()

    def update(self, t: float, v: float) -> float:
        h = self.hist
        if not math.isfinite(v):
            return math.nan
        if h and t < h[-1][0]:
            h.clear()  # time went back: a new stream (the next replayed file)
        h.append((t, v))
        while len(h) > 2 and t - h[1][0] >= self.horizon_s:
            h.popleft()
        t0, v0 = h[0]
        return (v - v0) / (t - t0) if t > t0 else math.nan


@dataclass(slots=True)
class Record:
    """A predicted window waiting for its label."""

    t_end: float  # stream time of the last sample (for expiry)
    ts_start: float  # wall clock
    ts_end: float
    x: np.ndarray  # feature vector (NaN = feature absent)
    pred: str | None
    learned: bool = False


@dataclass(slots=True)
class Prediction:
    """What one window produced, before it becomes a payload."""

    ts: float
    ts_start: float
    label: str | None
    scores: dict[str, float]
    anomaly: Verdict | None
    version: int
    n_learned: int


@dataclass(slots=True)
class _OpenLabel:
    label: str
    lo: float
    hi: float
    point: bool
    t_added: float
    source: str = "mqtt"
    left: int = 1 << 30  # windows this message may still teach


@dataclass(frozen=True, slots=True)
class LabelLimits:
    """Bounds on what outside labels may teach (see the module docstring)."""

    max_windows: int = 64
    max_span_s: float = 30.0
    hold_flips: int = 48
    hold_window_s: float = 60.0
    hold_s: float = 300.0
    hold_baseline: float = 0.6


@dataclass
class LabelStats:
    """What became of labels: windows learned and the reasons labels were not used."""

    counts: Counter[str] = field(default_factory=Counter)


class TaskPipeline:
    """Windows, features and the model of one task."""

    def __init__(
        self,
        name: str,
        model: TaskModel,
        extractor: FeatureExtractor,
        windower: Windower,
        context: Sequence[str] = (),
        horizon_s: float = 600.0,
        context_rate_s: float | None = None,
        limits: LabelLimits | None = None,
    ) -> None:
        self.name = name
        self.limits = limits or LabelLimits()
        self.label_max_span_s = self.limits.max_span_s
        self._flips: deque[tuple[float, bool]] = deque()  # (time, label != prediction), outside labels
        self._learned: deque[tuple[float, bool]] = deque(maxlen=400)  # (time, prediction was right)
        self._hold_until = -math.inf
        self._label_events: list[dict[str, object]] = []
        self.model = model
        self.extractor = extractor
        self.windower = windower
        self.channels = extractor.channels
        self.context = tuple(context)
        self._rows = extractor.rows  # sensor channels, then derived rows (written by the windower's hook)
        if windower.rows != self._rows + len(self.context):
            raise ValueError("the windower needs a row per channel, per derived row and per context channel")
        self.horizon_s = horizon_s
        self._slopes = [_Slope(context_rate_s) for _ in self.context] if context_rate_s else []
        self.names: tuple[str, ...] = (
            extractor.names
            + tuple(f"ctx.{c}" for c in self.context)
            + tuple(f"ctx.{c}.rate" for c in self.context if self._slopes)
        )
        self._vec = np.zeros(len(self.names))
        self._bindings: dict[tuple[str, ...], list[int] | None] = {}
        self.pending: deque[Record] = deque()
        self.open_labels: deque[_OpenLabel] = deque()
        self.labels = LabelStats()
        self.vocab: list[str] = []
        self._codes: dict[str, int] = {}
        self.segment_eval: Prequential | None = None  # extra evaluation (e.g. per replayed file)
        self.run_eval: Prequential | None = None  # evaluation of this run only (replay from a saved model)
        self.learning = True  # False: labelled windows are scored, never learned (a frozen model)
        self.trace: list[bool] | None = None  # when a list: correctness of each learned window, in order
        self.windows = 0

    def reset_stream(self) -> None:
        """A new stream starts (e.g. the next replayed file): forget the buffered samples, the
        windows waiting for labels and the open labels. The model and its metrics carry on."""
        self.windower.reset()
        self.pending.clear()
        self.open_labels.clear()

    def begin_segment(self) -> Prequential:
        """Also evaluate the windows learned from now on on their own (e.g. per replayed file);
        returns that evaluation, which :meth:`end_segment` stops."""
        self.segment_eval = Prequential(recent=self.model.evaluation.recent)
        return self.segment_eval

    def end_segment(self) -> None:
        """Stop the evaluation :meth:`begin_segment` started."""
        self.segment_eval = None

    def bind(self, channels: tuple[str, ...]) -> list[int] | None:
        """Columns of a block with ``channels`` that feed this task's rows (context channels the
        block lacks become -1: their latest value from elsewhere is used); ``None`` when the
        block does not carry the windowed channels."""
        cols = self._bindings.get(channels)
        if cols is None and channels not in self._bindings:
            index = {c: i for i, c in enumerate(channels)}
            if all(c in index for c in self.channels):
                cols = (
                    [index[c] for c in self.channels]
                    + [DERIVED] * (self._rows - len(self.channels))
                    + [index.get(c, -1) for c in self.context]
                )
            self._bindings[channels] = cols
        return cols

    # -- label codes for labels that travel with the samples (replay) --------------------------
    def code(self, label: str) -> int:
        """Integer code of a class name (stable within this pipeline)."""
        c = self._codes.get(label)
        if c is None:
            c = self._codes[label] = len(self.vocab)
            self.vocab.append(label)
        return c

    def _features(self, data: np.ndarray, t_end: float, latest: dict[str, float]) -> FeatureVector:
        rows = self._rows
        k = len(self.extractor.names)
        vec = self._vec
        vec[:k] = self.extractor.compute(data[:rows])
        n_ctx = len(self.context)
        for i, name in enumerate(self.context):
            v = float(data[rows + i, -1])
            if not math.isfinite(v):
                v = latest.get(name, math.nan)
            vec[k + i] = v
            if self._slopes:
                vec[k + n_ctx + i] = self._slopes[i].update(t_end, v)
        # the vector itself: learners that take arrays get it as is, the others a dict made from it
        return FeatureVector(vec.copy(), self.names, self._as_dict)

    def _as_dict(self, vec: np.ndarray) -> dict[str, float]:
        return {n: v for n, v in zip(self.names, vec.tolist(), strict=True) if v == v}  # v == v drops NaN

    def process(
        self,
        t: np.ndarray,
        x: np.ndarray,
        cols: list[int],
        label_codes: np.ndarray | None,
        wall: Callable[[float], float],
        latest: dict[str, float],
    ) -> list[Prediction]:
        """Feed one block (already sanitised; ``cols`` from :meth:`bind`); returns a prediction
        per completed window."""
        out: list[Prediction] = []
        model = self.model
        for win in self.windower.push(t, x, cols, label_codes):
            self.windows += 1
            feats = self._features(win.data, win.t_end, latest)
            label, scores = model.predict(feats)  # predict (and score), then learn: test-then-train
            anomaly = None
            if model.detector is not None:
                recent = win.data[: len(self.channels)]
                anomaly = model.score(feats, recent, self.windower.hop)
                if self.learning:
                    model.learn_unlabelled(feats, anomaly, recent, self.windower.hop)
            ts_end = wall(win.t_end)
            rec = Record(win.t_end, wall(win.t_start), ts_end, feats.vec, label)
            out.append(
                Prediction(ts_end, rec.ts_start, label, scores, anomaly, model.version, model.n_learned)
            )
            if win.label >= 0:
                self._learn(rec, self.vocab[win.label], feats, win.t_end)
            else:
                self._apply_open_labels(rec, feats)
            self.pending.append(rec)  # learned or not: kept so that a repeated label is seen as one
            self._expire(win.t_end)
        return out

    # -- labels -----------------------------------------------------------------------------------
    def pop_label_events(self) -> list[dict[str, object]]:
        """``labels_held`` events since the last call (for alerts)."""
        out, self._label_events = self._label_events, []
        return out

    def _admit(self, rec: Record, label: str, source: str, now: float) -> bool:
        """Whether an outside label may be learned for ``rec`` (see the module docstring); also
        updates the flip statistics and starts a hold when a burst would flip the model."""
        if source == "simulator":
            return True
        flipped = rec.pred is not None and label != rec.pred
        lim = self.limits
        if flipped and now < self._hold_until:
            self.labels.counts["windows_held"] += 1
            return False
        flips = self._flips
        flips.append((now, flipped))
        while flips and flips[0][0] < now - lim.hold_window_s:
            flips.popleft()
        n_flips = sum(1 for _, f in flips if f)
        if flipped and n_flips >= lim.hold_flips:
            before = [ok for t, ok in self._learned if t < now - lim.hold_window_s]
            baseline = sum(before) / len(before) if len(before) >= 20 else 0.0
            if baseline >= lim.hold_baseline:
                self._hold_until = now + lim.hold_s
                mix = Counter(str(r.pred) for r in list(self.pending)[-200:])
                self._label_events.append(
                    {
                        "source": source[:80],
                        "label": label,
                        "flipped_windows": n_flips,
                        "labelled_windows": len(flips),
                        "model_accuracy_before": round(baseline, 3),
                        "recent_predictions": dict(mix.most_common(8)),
                        "hold_s": lim.hold_s,
                    }
                )
                flips.clear()
                self.labels.counts["windows_held"] += 1
                return False
        return True

    def _learn(self, rec: Record, label: str, feats: FeatureVector | None = None, now: float = 0.0) -> None:
        self._learned.append((now, label == rec.pred))
        if self.learning:
            x = feats if feats is not None else FeatureVector(rec.x, self.names, self._as_dict)
            self.model.learn(x, label, rec.pred)
            self.labels.counts["windows_learned"] += 1
        else:
            self.labels.counts["windows_scored_frozen"] += 1
        for ev in (self.segment_eval, self.run_eval):
            if ev is not None:
                ev.update(label, rec.pred)
        if self.trace is not None:
            self.trace.append(label == rec.pred)
        rec.learned = True

    def _apply_open_labels(self, rec: Record, feats: FeatureVector) -> None:
        for ol in self.open_labels:
            hit = (
                (ol.lo >= rec.ts_start and ol.lo <= rec.ts_end)
                if ol.point
                else (ol.lo <= rec.ts_end <= ol.hi)
            )
            if hit:
                if ol.left <= 0:
                    self.labels.counts["windows_over_label_limit"] += 1
                    continue
                if self._admit(rec, ol.label, ol.source, rec.t_end):
                    ol.left -= 1
                    self._learn(rec, ol.label, feats, rec.t_end)
                return

    def _expire(self, t_now: float) -> None:
        limit = t_now - self.horizon_s
        while self.pending and self.pending[0].t_end < limit:
            rec = self.pending.popleft()
            if not rec.learned:
                self.labels.counts["windows_expired_unlabelled"] += 1
        newest = self.pending[-1].ts_end if self.pending else -math.inf
        while self.open_labels and (
            self.open_labels[0].t_added < limit
            or (not self.open_labels[0].point and self.open_labels[0].hi < newest)
        ):
            self.open_labels.popleft()

    def apply_label(
        self, label: str, lo: float, hi: float, point: bool, t_now: float, source: str = "simulator"
    ) -> str:
        """Apply a label (wall-clock range ``[lo, hi]`` or point ``lo``) from ``source``; returns
        the outcome: ``applied``, ``open`` (waiting for its windows), ``held`` (suspicious, not
        learned: see the module docstring), ``duplicate`` (windows already learned), ``too_late``
        (older than the kept windows) or ``unmatched``."""
        matched = learned_now = held = 0
        left = (1 << 30) if source == "simulator" else self.limits.max_windows
        for rec in self.pending:
            hit = (rec.ts_start <= lo <= rec.ts_end) if point else (lo <= rec.ts_end <= hi)
            if hit:
                matched += 1
                if not rec.learned:
                    if left <= 0:
                        self.labels.counts["windows_over_label_limit"] += 1
                    elif self._admit(rec, label, source, t_now):
                        self._learn(rec, label, None, t_now)
                        learned_now += 1
                        left -= 1
                    else:
                        held += 1
        newest_end = self.pending[-1].ts_end if self.pending else -math.inf
        reaches_future = (lo > newest_end) if point else (hi > newest_end)
        if reaches_future and left > 0:
            if len(self.open_labels) >= MAX_OPEN_LABELS:
                self.open_labels.popleft()
                self.labels.counts["open_labels_dropped"] += 1
            self.open_labels.append(_OpenLabel(label, lo, hi, point, t_now, source, left))
        if learned_now:
            outcome = "applied"
        elif held:
            outcome = "held"
        elif reaches_future:
            outcome = "open"
        elif matched:
            outcome = "duplicate"
        elif self.pending and hi < self.pending[0].ts_start:
            outcome = "too_late"
        else:
            outcome = "unmatched"
        self.labels.counts[f"labels_{outcome}"] += 1
        return outcome
