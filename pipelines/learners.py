"""Online learners per task, built from an explicit allow-list of river estimators.

Config names a model and its parameters (``[tasks.<name>.classifier] model = "hoeffding_tree"``);
only the models below can be built, with typed parameters, so a config file can never import
or call arbitrary code. :class:`TaskModel` is the picklable learning state of one task: the
classifier, the optional unsupervised anomaly detector with its alarm threshold, and the
prequential evaluation.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from river import anomaly, forest, linear_model, naive_bayes, neighbors, optim, preprocessing, stats, tree

from pipelines.evaluation import Prequential


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class HoeffdingTreeParams(_Params):
    """Hoeffding tree (river.tree.HoeffdingTreeClassifier), memory capped at ``max_size_mb``."""

    model: Literal["hoeffding_tree"]
    grace_period: int = Field(50, ge=1)
    delta: float = Field(1e-5, gt=0, lt=1)
    max_depth: int | None = Field(None, ge=1)
    leaf_prediction: Literal["mc", "nb", "nba"] = "nba"
    max_size_mb: float = Field(10.0, gt=0)


class HoeffdingAdaptiveTreeParams(HoeffdingTreeParams):
    """Hoeffding adaptive tree: replaces branches whose error drifts (ADWIN per node)."""

    model: Literal["hoeffding_adaptive_tree"]  # type: ignore[assignment]
    seed: int = 1


class ARFParams(_Params):
    """Adaptive random forest (river.forest.ARFClassifier); ``max_size_mb`` is per tree."""

    model: Literal["arf"]
    n_models: int = Field(10, ge=1, le=100)
    grace_period: int = Field(50, ge=1)
    max_depth: int | None = Field(None, ge=1)
    max_size_mb: float = Field(5.0, gt=0)
    seed: int = 1


class LogisticParams(_Params):
    """Multinomial logistic regression on standardised features (SoftmaxRegression, SGD)."""

    model: Literal["logistic"]
    lr: float = Field(0.05, gt=0)
    l2: float = Field(0.0, ge=0)


class GaussianNBParams(_Params):
    """Gaussian naive Bayes."""

    model: Literal["gaussian_nb"]


class KNNParams(_Params):
    """k nearest neighbours over the last ``window_size`` standardised windows."""

    model: Literal["knn"]
    n_neighbors: int = Field(5, ge=1)
    window_size: int = Field(500, ge=1, le=100_000)


ClassifierParams = Annotated[
    HoeffdingTreeParams | HoeffdingAdaptiveTreeParams | ARFParams | LogisticParams | GaussianNBParams | KNNParams,
    Field(discriminator="model"),
]


class HalfSpaceTreesParams(_Params):
    """Half-space trees on min-max scaled features; an alarm is a score above the running
    ``quantile`` of past scores, after ``warmup`` windows. Windows that raise an alarm are
    not learned, so a developing fault does not become the new normal."""

    model: Literal["half_space_trees"]
    n_trees: int = Field(25, ge=1, le=200)
    height: int = Field(8, ge=2, le=16)
    window_size: int = Field(250, ge=10)
    seed: int = 1
    quantile: float = Field(0.99, gt=0.5, lt=1)
    warmup: int = Field(500, ge=0)


AnomalyParams = Annotated[HalfSpaceTreesParams, Field(discriminator="model")]

_MB = 1024 * 1024


def build_classifier(p: Any) -> Any:
    """River classifier for validated parameters ``p`` (one of the allow-listed models)."""
    if isinstance(p, HoeffdingAdaptiveTreeParams):
        return tree.HoeffdingAdaptiveTreeClassifier(
            grace_period=p.grace_period, delta=p.delta, max_depth=p.max_depth,
            leaf_prediction=p.leaf_prediction, max_size=p.max_size_mb, seed=p.seed)
    if isinstance(p, HoeffdingTreeParams):
        return tree.HoeffdingTreeClassifier(
            grace_period=p.grace_period, delta=p.delta, max_depth=p.max_depth,
            leaf_prediction=p.leaf_prediction, max_size=p.max_size_mb)
    if isinstance(p, ARFParams):
        return forest.ARFClassifier(n_models=p.n_models, grace_period=p.grace_period, max_depth=p.max_depth,
                                    max_size=p.max_size_mb, seed=p.seed)
    if isinstance(p, LogisticParams):
        return preprocessing.StandardScaler() | linear_model.SoftmaxRegression(optimizer=optim.SGD(p.lr), l2=p.l2)
    if isinstance(p, GaussianNBParams):
        return naive_bayes.GaussianNB()
    if isinstance(p, KNNParams):
        engine = neighbors.LazySearch(window_size=p.window_size)
        return preprocessing.StandardScaler() | neighbors.KNNClassifier(n_neighbors=p.n_neighbors, engine=engine)
    raise TypeError(f"not an allow-listed classifier: {p!r}")


def build_detector(p: Any) -> Any:
    """River anomaly detector for validated parameters ``p``."""
    if isinstance(p, HalfSpaceTreesParams):
        return preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=p.n_trees, height=p.height, window_size=p.window_size, seed=p.seed)
    raise TypeError(f"not an allow-listed anomaly detector: {p!r}")


class TaskModel:
    """Everything one task has learned; pickled (behind an HMAC) into checkpoints."""

    def __init__(self, task: str, classifier: Any, detector: Any | None = None,
                 recent: int = 200, fingerprint: str = "") -> None:
        self.task = task
        self.classifier_params = classifier
        self.detector_params = detector
        self.fingerprint = fingerprint  # identifies the feature layout the model was trained on
        self.classifier = build_classifier(classifier)
        self.detector = build_detector(detector) if detector is not None else None
        self._threshold = stats.Quantile(detector.quantile) if detector is not None else None
        self.version = 1
        self.parent: int | None = None
        self.n_learned = 0
        self.n_scored = 0
        self.n_alarms = 0
        self.label_counts: Counter[str] = Counter()
        self.evaluation = Prequential(recent=recent)

    @property
    def algorithm(self) -> str:
        name = self.classifier_params.model
        if self.detector_params is not None:
            name += f" + {self.detector_params.model}"
        return name

    def predict(self, x: dict[str, float]) -> tuple[str | None, dict[str, float]]:
        """Most likely class (``None`` before any label was learned) and class probabilities."""
        if self.n_learned == 0:
            return None, {}
        proba = self.classifier.predict_proba_one(x)
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
        alarm = bool(ready and thr is not None and s > thr)
        self._threshold.update(s)
        self.n_scored += 1
        if alarm:
            self.n_alarms += 1
        else:
            self.detector.learn_one(x)
        return s, alarm

    def learn(self, x: dict[str, float], y: str, y_pred: str | None) -> None:
        """Test-then-train: count the earlier prediction ``y_pred`` against ``y``, then learn."""
        self.evaluation.update(y, y_pred)
        self.classifier.learn_one(x, y)
        self.n_learned += 1
        self.label_counts[y] += 1

    def size_bytes(self) -> int:
        """Approximate memory of the learners (river's own estimate)."""
        total = 0
        for m in (self.classifier, self.detector):
            if m is not None:
                try:
                    total += int(m._raw_memory_usage)  # noqa: SLF001 - river's documented estimate
                except AttributeError:
                    total += 0
        return total
