"""Online learners per task, built from an explicit allow-list of river estimators.

Config names a model and its parameters (``[tasks.<name>.classifier] model = "hoeffding_tree"``);
only the models below can be built, with typed parameters, so a config file can never import
or call arbitrary code. :class:`TaskModel` is the picklable learning state of one task: the
classifier, the optional unsupervised anomaly detector with its alarm threshold, and the
prequential evaluation.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from river import (
    anomaly,
    drift,
    forest,
    linear_model,
    naive_bayes,
    neighbors,
    optim,
    preprocessing,
    stats,
    tree,
)

from pipelines.evaluation import Prequential


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class HoeffdingTreeParams(_Params):
    """Hoeffding tree (river.tree.HoeffdingTreeClassifier), memory capped at ``max_size_mb``."""

    model: Literal["hoeffding_tree"]
    grace_period: int = Field(50, ge=1, description="Windows a leaf sees between split attempts.")
    delta: float = Field(1e-5, gt=0, lt=1, description="Split confidence (Hoeffding bound).")
    max_depth: int | None = Field(None, ge=1, description="Depth limit; unset: none.")
    leaf_prediction: Literal["mc", "nb", "nba"] = Field(
        "nba", description="Leaf prediction: majority class, naive Bayes, or naive Bayes adaptive."
    )
    max_size_mb: float = Field(10.0, gt=0, description="Memory bound; at it, leaves stop growing.")


class HoeffdingAdaptiveTreeParams(HoeffdingTreeParams):
    """Hoeffding adaptive tree: replaces branches whose error drifts (ADWIN per node)."""

    model: Literal["hoeffding_adaptive_tree"]  # type: ignore[assignment]
    seed: int = Field(1, description="Random seed.")


class ARFParams(_Params):
    """Adaptive random forest (river.forest.ARFClassifier); ``max_size_mb`` is per tree."""

    model: Literal["arf"]
    n_models: int = Field(10, ge=1, le=100, description="Trees in the forest.")
    grace_period: int = Field(50, ge=1, description="Windows a leaf sees between split attempts.")
    max_depth: int | None = Field(None, ge=1, description="Depth limit per tree; unset: none.")
    max_size_mb: float = Field(5.0, gt=0, description="Memory bound per tree.")
    seed: int = Field(1, description="Random seed.")


class LogisticParams(_Params):
    """Multinomial logistic regression on standardised features (SoftmaxRegression, SGD)."""

    model: Literal["logistic"]
    lr: float = Field(0.05, gt=0, description="SGD learning rate.")
    l2: float = Field(0.0, ge=0, description="L2 regularisation.")


class GaussianNBParams(_Params):
    """Gaussian naive Bayes."""

    model: Literal["gaussian_nb"]


class KNNParams(_Params):
    """k nearest neighbours over the last ``window_size`` standardised windows."""

    model: Literal["knn"]
    n_neighbors: int = Field(5, ge=1, description="Neighbours that vote.")
    window_size: int = Field(500, ge=1, le=100_000, description="Windows remembered.")


ClassifierParams = Annotated[
    HoeffdingTreeParams
    | HoeffdingAdaptiveTreeParams
    | ARFParams
    | LogisticParams
    | GaussianNBParams
    | KNNParams,
    Field(discriminator="model"),
]


class HalfSpaceTreesParams(_Params):
    """Half-space trees on min-max scaled features; an alarm is a score above the running
    ``quantile`` of past scores, after ``warmup`` windows. Windows that raise an alarm are
    not learned, so a developing fault does not become the new normal."""

    model: Literal["half_space_trees"]
    n_trees: int = Field(25, ge=1, le=200, description="Trees in the ensemble.")
    height: int = Field(8, ge=2, le=16, description="Height of each tree.")
    window_size: int = Field(250, ge=10, description="Windows in the reference window.")
    seed: int = Field(1, description="Random seed.")
    quantile: float = Field(
        0.99, gt=0.5, lt=1, description="Alarm above this running quantile of past scores."
    )
    warmup: int = Field(500, ge=0, description="Windows scored before any alarm.")
    # Off-delay (alarm management practice): an alarm stays on this many windows after the last
    # window above the threshold, so one episode is one alarm, not a flicker of many.
    hold: int = Field(
        0, ge=0, description="Alarm off-delay: windows an alarm stays on after the last high score."
    )


AnomalyParams = Annotated[HalfSpaceTreesParams, Field(discriminator="model")]

_MB = 1024 * 1024
MEMORY_CHECK_EVERY = 500


def build_classifier(p: Any) -> Any:
    """River classifier for validated parameters ``p`` (one of the allow-listed models)."""
    # river checks a tree's size every `memory_estimate_period` learned samples (default 1e6,
    # which windows never reach): check often enough that max_size_mb is a real bound.
    if isinstance(p, HoeffdingAdaptiveTreeParams):
        return tree.HoeffdingAdaptiveTreeClassifier(
            grace_period=p.grace_period,
            delta=p.delta,
            max_depth=p.max_depth,
            leaf_prediction=p.leaf_prediction,
            max_size=p.max_size_mb,
            seed=p.seed,
            memory_estimate_period=MEMORY_CHECK_EVERY,
        )
    if isinstance(p, HoeffdingTreeParams):
        return tree.HoeffdingTreeClassifier(
            grace_period=p.grace_period,
            delta=p.delta,
            max_depth=p.max_depth,
            leaf_prediction=p.leaf_prediction,
            max_size=p.max_size_mb,
            memory_estimate_period=MEMORY_CHECK_EVERY,
        )
    if isinstance(p, ARFParams):
        return forest.ARFClassifier(
            n_models=p.n_models,
            grace_period=p.grace_period,
            max_depth=p.max_depth,
            max_size=p.max_size_mb,
            seed=p.seed,
            memory_estimate_period=MEMORY_CHECK_EVERY,
        )
    if isinstance(p, LogisticParams):
        return preprocessing.StandardScaler() | linear_model.SoftmaxRegression(
            optimizer=optim.SGD(p.lr), l2=p.l2
        )
    if isinstance(p, GaussianNBParams):
        return naive_bayes.GaussianNB()
    if isinstance(p, KNNParams):
        engine = neighbors.LazySearch(window_size=p.window_size)
        return preprocessing.StandardScaler() | neighbors.KNNClassifier(
            n_neighbors=p.n_neighbors, engine=engine
        )
    raise TypeError(f"not an allow-listed classifier: {p!r}")


def build_detector(p: Any) -> Any:
    """River anomaly detector for validated parameters ``p``."""
    if isinstance(p, HalfSpaceTreesParams):
        return preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=p.n_trees, height=p.height, window_size=p.window_size, seed=p.seed
        )
    raise TypeError(f"not an allow-listed anomaly detector: {p!r}")


class LifecycleParams(_Params):
    """How a task's model may change: drift detection, its reaction, champion/challenger.

    A challenger learns beside the champion on the same labelled windows (each predicted before
    it is learned, like the champion). It replaces the champion only when its accuracy on the
    last ``window`` windows they both saw beats the champion's by at least ``margin``, after at
    least ``min_windows`` of them. With ``challenger`` set, a challenger of that model always
    runs; otherwise one of the champion's kind starts fresh when drift is detected
    (``reaction = "challenger"``)."""

    drift_detector: Literal["adwin", "page_hinkley", "none"] = Field(
        "adwin", description="Detector on the error stream; only a rise counts."
    )
    drift_delta: float = Field(
        0.002, gt=0, lt=1, description="Detector sensitivity (ADWIN `delta`, Page-Hinkley `delta`)."
    )
    reaction: Literal["alert", "challenger", "reset"] = Field(
        "challenger",
        description="On drift: an alert only, start a fresh challenger, or replace the model at once.",
    )
    challenger: ClassifierParams | None = Field(
        None,
        description="A classifier table (as `classifier`) that always runs as challenger; unset: one of "
        "the champion's kind starts on drift.",
    )
    margin: float = Field(
        0.02, ge=0, lt=1, description="Accuracy margin by which the challenger must beat the champion."
    )
    min_windows: int = Field(100, ge=1, description="Windows both must have seen before a promotion.")
    window: int = Field(200, ge=10, description="Latest shared windows compared.")
    # Also watch the anomaly stream: a sustained rise in the share of windows whose score
    # crosses the alarm threshold (alert + event; the detector is not reset).
    anomaly_drift: bool = Field(True, description="Also watch the rate of high anomaly scores.")


def build_drift_detector(p: LifecycleParams) -> Any:
    """A river.drift detector for ``p`` (``None`` when disabled). Only a rise of the watched
    rate matters (Page-Hinkley ``mode="up"``; ADWIN's cuts are checked by direction)."""
    if p.drift_detector == "adwin":
        return drift.ADWIN(delta=p.drift_delta)
    if p.drift_detector == "page_hinkley":
        return drift.PageHinkley(delta=p.drift_delta, mode="up")
    return None


MAX_EVENTS = 100


class TaskModel:
    """Everything one task has learned; pickled (behind an HMAC) into checkpoints.

    ``version`` names the deployed model: it changes on promotion, reset, rollback, import and
    recovery after an unclean stop, never while the model just keeps learning (``n_learned``
    says how far it got). ``events`` is the recent history (drift, promotions, ...);
    ``pop_events()`` hands new ones to the service for alerts.
    """

    def __init__(
        self,
        task: str,
        classifier: Any,
        detector: Any | None = None,
        recent: int = 200,
        fingerprint: str = "",
        lifecycle: LifecycleParams | None = None,
    ) -> None:
        self.task = task
        self.classifier_params = classifier
        self.detector_params = detector
        self.lifecycle = lifecycle or LifecycleParams()
        self.fingerprint = fingerprint  # identifies the feature layout the model was trained on
        self.classifier = build_classifier(classifier)
        self.detector = build_detector(detector) if detector is not None else None
        self._threshold = stats.Quantile(detector.quantile) if detector is not None else None
        self._hold_left = 0
        self.version = 1
        self.max_version = 1
        self.parent: int | None = None
        self.n_learned = 0  # labelled windows learned by this model, across versions
        self.n_scored = 0
        self.n_alarms = 0
        self.label_counts: Counter[str] = Counter()
        self.evaluation = Prequential(recent=recent)
        self.events: list[dict[str, Any]] = []
        self._new_events: list[dict[str, Any]] = []
        self._drift = build_drift_detector(self.lifecycle)
        self._score_drift = (
            build_drift_detector(self.lifecycle)
            if detector is not None and self.lifecycle.anomaly_drift
            else None
        )
        self.challenger: Any | None = None
        self.challenger_params: Any | None = None
        self._champ_hits: deque[bool] = deque(maxlen=self.lifecycle.window)
        self._chall_hits: deque[bool] = deque(maxlen=self.lifecycle.window)
        if self.lifecycle.challenger is not None:
            self._start_challenger("configured")

    # -- identity ---------------------------------------------------------------------------------
    @property
    def algorithm(self) -> str:
        name = self.classifier_params.model
        if self.detector_params is not None:
            name += f" + {self.detector_params.model}"
        return name

    def new_version(self, reason: str, **detail: Any) -> int:
        """Give the model a new version (parent = the current one) and record why."""
        self.parent = self.version
        self.max_version += 1
        self.version = self.max_version
        self.record(reason, parent=self.parent, **detail)
        return self.version

    def record(self, kind: str, **detail: Any) -> None:
        """Append an event to the model's history (bounded) and queue it for alerting."""
        event = {"kind": kind, "version": self.version, "n_learned": self.n_learned, **detail}
        self.events.append(event)
        del self.events[:-MAX_EVENTS]
        self._new_events.append(event)

    def pop_events(self) -> list[dict[str, Any]]:
        out, self._new_events = self._new_events, []
        return out

    # -- inference --------------------------------------------------------------------------------
    def predict(self, x: dict[str, float]) -> tuple[str | None, dict[str, float]]:
        """Most likely class (``None`` before any label was learned) and class probabilities."""
        return self._predict(self.classifier, x)

    @staticmethod
    def _predict(model: Any, x: dict[str, float]) -> tuple[str | None, dict[str, float]]:
        proba = model.predict_proba_one(x)
        if not proba:
            return None, {}
        label = max(proba, key=proba.__getitem__)
        return str(label), {str(k): float(v) for k, v in proba.items()}

    def score(self, x: dict[str, float]) -> tuple[float, bool]:
        """Anomaly score of ``x`` (then learned unless it raised an alarm) and the alarm flag."""
        assert self.detector is not None and self._threshold is not None
        s = float(self.detector.score_one(x))
        if not math.isfinite(s):
            s = 0.0
        ready = self.n_scored >= self.detector_params.warmup
        thr = self._threshold.get()
        above = bool(ready and thr is not None and s > thr)
        self._threshold.update(s)
        self.n_scored += 1
        if above:
            self._hold_left = self.detector_params.hold
        elif self._hold_left > 0:
            self._hold_left -= 1
        alarm = above or self._hold_left > 0
        if alarm:
            self.n_alarms += 1
        if not above:
            self.detector.learn_one(x)
        if self._score_drift is not None and ready:
            # The raw score of half-space trees moves whenever its reference window turns over,
            # so the drift detector watches the alarm rate instead: only a rise is reported.
            before = getattr(self._score_drift, "estimation", None)
            self._score_drift.update(1.0 if above else 0.0)
            after = getattr(self._score_drift, "estimation", None)
            if self._score_drift.drift_detected and (before is None or after is None or after > before):
                self.record(
                    "drift",
                    stream="anomaly_rate",
                    n_scored=self.n_scored,
                    alarm_rate=round(after, 4) if after is not None else None,
                )
        return s, alarm

    # -- learning ---------------------------------------------------------------------------------
    def learn(self, x: dict[str, float], y: str, y_pred: str | None) -> None:
        """Test-then-train: count the earlier prediction ``y_pred`` against ``y``, then learn."""
        self.evaluation.update(y, y_pred)
        if self.challenger is not None:
            c_pred, _ = self._predict(self.challenger, x)
            self._champ_hits.append(y_pred == y)
            self._chall_hits.append(c_pred == y)
            self.challenger.learn_one(x, y)
        self.classifier.learn_one(x, y)
        self.n_learned += 1
        self.label_counts[y] += 1
        if self._drift is not None:
            before = getattr(self._drift, "estimation", None)
            self._drift.update(0.0 if y_pred == y else 1.0)
            if self._drift.drift_detected:
                after = getattr(self._drift, "estimation", None)
                # ADWIN also cuts when the error *falls* (the model got better): not a drift to act on
                if before is None or after is None or after > before:
                    self._on_drift()
        if self.challenger is not None:
            self._maybe_promote()

    def _on_drift(self) -> None:
        reaction = self.lifecycle.reaction
        self.record(
            "drift",
            stream="error",
            reaction=reaction,
            recent_accuracy=round(self.evaluation.report()["recent"]["accuracy"], 4),
        )
        if reaction == "challenger":
            self._start_challenger("drift")
        elif reaction == "reset":
            self.classifier = build_classifier(self.classifier_params)
            self.new_version("reset", cause="drift")

    def _start_challenger(self, cause: str) -> None:
        self.challenger_params = self.lifecycle.challenger or self.classifier_params
        self.challenger = build_classifier(self.challenger_params)
        self._champ_hits.clear()
        self._chall_hits.clear()
        self.record("challenger_started", cause=cause, model=self.challenger_params.model)

    def challenger_report(self) -> dict[str, Any] | None:
        """Champion vs challenger accuracy on the windows both have seen (latest ``window``)."""
        if self.challenger is None:
            return None
        n = len(self._chall_hits)
        return {
            "model": self.challenger_params.model,
            "windows": n,
            "champion_accuracy": sum(self._champ_hits) / n if n else 0.0,
            "challenger_accuracy": sum(self._chall_hits) / n if n else 0.0,
        }

    def _maybe_promote(self) -> None:
        n = len(self._chall_hits)
        if n < self.lifecycle.min_windows:
            return
        champ = sum(self._champ_hits) / n
        chall = sum(self._chall_hits) / n
        if chall - champ < self.lifecycle.margin:
            return
        old = self.version
        self.classifier, self.classifier_params = self.challenger, self.challenger_params
        self.challenger = None
        self.new_version(
            "promotion",
            replaced=old,
            windows=n,
            champion_accuracy=round(champ, 4),
            challenger_accuracy=round(chall, 4),
            model=self.classifier_params.model,
        )
        if self.lifecycle.challenger is not None:
            self._start_challenger("configured")

    # -- introspection ----------------------------------------------------------------------------
    def size_bytes(self) -> int:
        """Approximate memory of the learners (river's own estimate)."""
        total = 0
        for m in (self.classifier, self.detector, self.challenger):
            if m is not None:
                total += int(getattr(m, "_raw_memory_usage", 0))
        return total

    def reliance(self, top: int = 10) -> dict[str, Any]:
        """What the classifier relies on: split counts per feature for trees and forests, mean
        absolute weight per (standardised) feature for the linear model."""
        return explain(self.classifier, top)


def _unwrap(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return list(steps.values())[-1] if steps else model


def _count_splits(node: Any, acc: Counter[str]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if n is None:
            continue
        feature = getattr(n, "feature", None)
        if feature is not None and getattr(n, "children", None):
            acc[str(feature)] += 1
        stack.extend(getattr(n, "children", None) or [])


def _leaf_gaussians(est: Any) -> dict[str, dict[str, Any]]:
    """Per-feature, per-class Gaussians of a naive-Bayes model: GaussianNB, or a Hoeffding tree
    that is still a single (naive-Bayes) leaf."""
    if isinstance(getattr(est, "gaussians", None), dict):
        return est.gaussians
    root = getattr(est, "_root", None)
    splitters = getattr(root, "splitters", None)
    if isinstance(splitters, dict):
        return {
            f: sp._att_dist_per_class
            for f, sp in splitters.items()
            if isinstance(getattr(sp, "_att_dist_per_class", None), dict)
        }
    return {}


def _separation(gaussians: dict[str, dict[str, Any]], top: int) -> dict[str, float]:
    """Fisher ratio per feature: variance of the class means over the mean class variance."""
    out: dict[str, float] = {}
    for feature, per_class in gaussians.items():
        stats_ = [(g.n_samples, g.mu, g.sigma**2) for g in per_class.values() if g.n_samples > 1]
        n = sum(c for c, _, _ in stats_)
        if len(stats_) < 2 or n == 0:
            continue
        mean = sum(c * m for c, m, _ in stats_) / n
        between = sum(c * (m - mean) ** 2 for c, m, _ in stats_) / n
        within = sum(c * v for c, _, v in stats_) / n
        if within > 0 and math.isfinite(between / within):
            out[str(feature)] = round(between / within, 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:top])


def explain(model: Any, top: int = 10) -> dict[str, Any]:
    """Feature reliance of an allow-listed classifier (see :meth:`TaskModel.reliance`)."""
    est = _unwrap(model)
    splits: Counter[str] = Counter()
    if hasattr(est, "_root") and getattr(est._root, "children", None):
        _count_splits(est._root, splits)
        # inactive leaves: the tree hit max_size_mb and stopped growing there (river's bound)
        return {
            "kind": "split_counts",
            "features": dict(splits.most_common(top)),
            "nodes": est.n_nodes,
            "depth": est.height,
            "active_leaves": int(getattr(est, "_n_active_leaves", 0)),
            "inactive_leaves": int(getattr(est, "_n_inactive_leaves", 0)),
        }
    if hasattr(est, "models") and est.models and hasattr(est.models[0], "_root"):
        for m in est.models:
            _count_splits(m._root, splits)
        return {"kind": "split_counts", "features": dict(splits.most_common(top)), "trees": len(est.models)}
    gaussians = _leaf_gaussians(est)
    if gaussians:
        return {
            "kind": "class_separation",
            "features": _separation(gaussians, top),
            "note": "one naive-Bayes leaf: between-class / within-class variance of each feature",
        }
    weights = getattr(est, "weights", None)
    if isinstance(weights, dict) and weights and all(isinstance(v, dict) for v in weights.values()):
        agg: Counter[str] = Counter()
        for per_class in weights.values():
            for f, w in per_class.items():
                agg[str(f)] += abs(float(w)) / len(weights)
        return {"kind": "mean_abs_weight", "features": {k: round(v, 4) for k, v in agg.most_common(top)}}
    return {"kind": "none", "features": {}, "note": f"{type(est).__name__} has no per-feature reliance"}
