"""The allow-list: which river models a config may build, with their typed parameters.

Config names a model and its parameters (``[tasks.<name>.classifier] model = "hoeffding_tree"``);
only the models in :data:`CLASSIFIERS` and :data:`DETECTORS` can be built, with typed parameters,
so a config file can never import or call arbitrary code. To allow a model: add its params
class (a ``_Params`` with a ``model`` literal) to the ``ClassifierParams`` (or ``AnomalyParams``)
union, and its builder to the dict below; ``tests/test_pipelines.py`` checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

# river (and with it scipy.stats) is imported by the builders, not here: the config layer and the
# read-only CLI import these params classes, and a process loads only the models its config names.
from pipelines.anomaly import AlarmParams, DiscordDetector, DiscordParams


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class HoeffdingTreeParams(_Params):
    """Hoeffding tree (river.tree.HoeffdingTreeClassifier), memory capped at ``max_size_mb``."""

    model: Literal["hoeffding_tree"]
    grace_period: int = Field(
        50, ge=1, description="Windows a leaf sees between split attempts.", le=1_000_000
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="Split confidence (Hoeffding bound).")
    max_depth: int | None = Field(None, ge=1, description="Depth limit; unset: none.", le=1000)
    leaf_prediction: Literal["mc", "nb", "nba"] = Field(
        "nba", description="Leaf prediction: majority class, naive Bayes, or naive Bayes adaptive."
    )
    max_size_mb: float = Field(10.0, gt=0, description="Memory bound; at it, leaves stop growing.", le=4096)


class HoeffdingAdaptiveTreeParams(HoeffdingTreeParams):
    """Hoeffding adaptive tree: replaces branches whose error drifts (ADWIN per node)."""

    model: Literal["hoeffding_adaptive_tree"]  # type: ignore[assignment]
    seed: int = Field(1, description="Random seed.", ge=0, le=2**32 - 1)


class ARFParams(_Params):
    """Adaptive random forest (river.forest.ARFClassifier); ``max_size_mb`` is per tree."""

    model: Literal["arf"]
    n_models: int = Field(10, ge=1, le=100, description="Trees in the forest.")
    grace_period: int = Field(
        50, ge=1, description="Windows a leaf sees between split attempts.", le=1_000_000
    )
    max_depth: int | None = Field(None, ge=1, description="Depth limit per tree; unset: none.", le=1000)
    max_size_mb: float = Field(5.0, gt=0, description="Memory bound per tree.", le=4096)
    seed: int = Field(1, description="Random seed.", ge=0, le=2**32 - 1)


class LogisticParams(_Params):
    """Multinomial logistic regression on standardised features (SoftmaxRegression, SGD)."""

    model: Literal["logistic"]
    lr: float = Field(0.05, gt=0, description="SGD learning rate.", le=100)
    l2: float = Field(0.0, ge=0, description="L2 regularisation.", le=100)


class GaussianNBParams(_Params):
    """Gaussian naive Bayes."""

    model: Literal["gaussian_nb"]


class FastGaussianNBParams(_Params):
    """Gaussian naive Bayes on arrays, compiled (pipelines.fastlearn): river's GaussianNB's
    predictions, with statistics that merge exactly."""

    model: Literal["fast_gnb"]


class FastSoftmaxParams(_Params):
    """Softmax regression on standardised features, on arrays, compiled (pipelines.fastlearn):
    the predictions of ``logistic``."""

    model: Literal["fast_softmax"]
    lr: float = Field(0.05, gt=0, description="SGD learning rate.", le=100)
    l2: float = Field(0.0, ge=0, description="L2 regularisation.", le=100)


class KNNParams(_Params):
    """k nearest neighbours over the last ``window_size`` standardised windows."""

    model: Literal["knn"]
    n_neighbors: int = Field(5, ge=1, description="Neighbours that vote.", le=1000)
    window_size: int = Field(500, ge=1, le=100_000, description="Windows remembered.")


ClassifierParams = Annotated[
    HoeffdingTreeParams
    | HoeffdingAdaptiveTreeParams
    | ARFParams
    | LogisticParams
    | GaussianNBParams
    | FastGaussianNBParams
    | FastSoftmaxParams
    | KNNParams,
    Field(discriminator="model"),
]


class HalfSpaceTreesParams(AlarmParams):
    """Half-space trees on min-max scaled features, behind the forgetting alarm policy
    (:class:`pipelines.anomaly.AlarmPolicy`). Windows that cross the threshold are not learned,
    so a developing fault does not become the new normal."""

    model: Literal["half_space_trees"]
    n_trees: int = Field(25, ge=1, le=200, description="Trees in the ensemble.")
    height: int = Field(8, ge=2, le=16, description="Height of each tree.")
    window_size: int = Field(250, ge=10, description="Windows in the reference window.", le=1_000_000)
    seed: int = Field(1, description="Random seed.", ge=0, le=2**32 - 1)


AnomalyParams = Annotated[HalfSpaceTreesParams | DiscordParams, Field(discriminator="model")]

# river checks a tree's size every `memory_estimate_period` learned samples (default 1e6, which
# windows never reach): check often enough that max_size_mb is a real bound.
MEMORY_CHECK_EVERY = 500

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class Allowed(Generic[P]):
    """One allow-listed model: its params class and the builder of the river estimator."""

    params: type[P]
    build: Callable[[P], Any]


def _hoeffding_tree(p: HoeffdingTreeParams) -> Any:
    from river import tree

    return tree.HoeffdingTreeClassifier(
        grace_period=p.grace_period,
        delta=p.delta,
        max_depth=p.max_depth,
        leaf_prediction=p.leaf_prediction,
        max_size=p.max_size_mb,
        memory_estimate_period=MEMORY_CHECK_EVERY,
    )


def _hoeffding_adaptive_tree(p: HoeffdingAdaptiveTreeParams) -> Any:
    from river import tree

    return tree.HoeffdingAdaptiveTreeClassifier(
        grace_period=p.grace_period,
        delta=p.delta,
        max_depth=p.max_depth,
        leaf_prediction=p.leaf_prediction,
        max_size=p.max_size_mb,
        seed=p.seed,
        memory_estimate_period=MEMORY_CHECK_EVERY,
    )


def _arf(p: ARFParams) -> Any:
    from river import forest

    return forest.ARFClassifier(
        n_models=p.n_models,
        grace_period=p.grace_period,
        max_depth=p.max_depth,
        max_size=p.max_size_mb,
        seed=p.seed,
        memory_estimate_period=MEMORY_CHECK_EVERY,
    )


def _logistic(p: LogisticParams) -> Any:
    from river import linear_model, optim, preprocessing

    return preprocessing.StandardScaler() | linear_model.SoftmaxRegression(optimizer=optim.SGD(p.lr), l2=p.l2)


def _gaussian_nb(p: GaussianNBParams) -> Any:
    from river import naive_bayes

    return naive_bayes.GaussianNB()


def _fast_gnb(p: FastGaussianNBParams) -> Any:
    from pipelines import fastlearn  # imports numba: only when a config asks for it

    return fastlearn.FastGaussianNB()


def _fast_softmax(p: FastSoftmaxParams) -> Any:
    from pipelines import fastlearn

    return fastlearn.FastSoftmax(lr=p.lr, l2=p.l2)


def _knn(p: KNNParams) -> Any:
    from river import neighbors, preprocessing

    engine = neighbors.LazySearch(window_size=p.window_size)
    return preprocessing.StandardScaler() | neighbors.KNNClassifier(n_neighbors=p.n_neighbors, engine=engine)


def _half_space_trees(p: HalfSpaceTreesParams) -> Any:
    from river import anomaly, preprocessing

    return preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
        n_trees=p.n_trees, height=p.height, window_size=p.window_size, seed=p.seed
    )


def _discord(p: DiscordParams) -> DiscordDetector:
    return DiscordDetector(
        m=p.m,
        history=p.history,
        scale_span=p.scale_span,
        novelty=p.novelty,
        shift_span=p.shift_span,
        shift_long=p.shift_long,
        shift_z=p.shift_z,
        novelty_lag=p.novelty_lag,
    )


CLASSIFIERS: dict[str, Allowed[Any]] = {
    "hoeffding_tree": Allowed(HoeffdingTreeParams, _hoeffding_tree),
    "hoeffding_adaptive_tree": Allowed(HoeffdingAdaptiveTreeParams, _hoeffding_adaptive_tree),
    "arf": Allowed(ARFParams, _arf),
    "logistic": Allowed(LogisticParams, _logistic),
    "gaussian_nb": Allowed(GaussianNBParams, _gaussian_nb),
    "knn": Allowed(KNNParams, _knn),
    "fast_gnb": Allowed(FastGaussianNBParams, _fast_gnb),
    "fast_softmax": Allowed(FastSoftmaxParams, _fast_softmax),
}
"""The allow-list of classifiers: ``model`` name -> params class and builder."""

DETECTORS: dict[str, Allowed[Any]] = {
    "half_space_trees": Allowed(HalfSpaceTreesParams, _half_space_trees),
    "discord": Allowed(DiscordParams, _discord),
}
"""The allow-list of unsupervised anomaly detectors."""


def _build(allowed: dict[str, Allowed[Any]], p: Any, what: str) -> Any:
    entry = allowed.get(getattr(p, "model", None) or "")
    if entry is None or type(p) is not entry.params:
        raise TypeError(f"not an allow-listed {what}: {p!r}")
    return entry.build(p)


def build_classifier(p: ClassifierParams) -> Any:
    """River classifier for validated parameters ``p`` (one of :data:`CLASSIFIERS`)."""
    return _build(CLASSIFIERS, p, "classifier")


def build_detector(p: AnomalyParams) -> Any:
    """Anomaly detector (river's, or edged's discord detector) for validated parameters ``p``
    (one of :data:`DETECTORS`)."""
    return _build(DETECTORS, p, "anomaly detector")


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
    min_windows: int = Field(
        100, ge=1, description="Windows both must have seen before a promotion.", le=10_000_000
    )
    window: int = Field(200, ge=10, description="Latest shared windows compared.", le=10_000_000)
    # Also watch the anomaly stream: a sustained rise in the share of windows whose score
    # crosses the alarm threshold (alert + event; the detector is not reset).
    anomaly_drift: bool = Field(True, description="Also watch the rate of high anomaly scores.")


def build_drift_detector(p: LifecycleParams) -> Any:
    """A river.drift detector for ``p`` (``None`` when disabled). Only a rise of the watched
    rate matters (Page-Hinkley ``mode="up"``; ADWIN's cuts are checked by direction)."""
    from river import drift

    if p.drift_detector == "adwin":
        return drift.ADWIN(delta=p.drift_delta)
    if p.drift_detector == "page_hinkley":
        return drift.PageHinkley(delta=p.drift_delta, mode="up")
    return None
