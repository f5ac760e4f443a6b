"""Online learners per task, built from an explicit allow-list of river estimators.

* :mod:`~pipelines.learners.params`: the allow-list (:data:`CLASSIFIERS`, :data:`DETECTORS`),
  the typed parameters a config may give, and the builders.
* :mod:`~pipelines.learners.model`: :class:`TaskModel`, the picklable learning state of one task
  (pure ``predict``/``score``, separate ``learn``/``learn_unlabelled``).
* :mod:`~pipelines.learners.explain`: what a classifier relies on, per feature.
* :mod:`~pipelines.learners.estimators`: a task's classifier as a river estimator (river's
  conformance checks run on it).

Checkpoints written before the split name these classes as ``pipelines.learners.<Name>``; the
names below keep them loading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# explain imports nothing heavy; imported here so that the name is the function, not the submodule
from pipelines.learners.explain import explain
from pipelines.learners.params import (
    CLASSIFIERS,
    DETECTORS,
    MEMORY_CHECK_EVERY,
    AnomalyParams,
    ARFParams,
    ClassifierParams,
    FastGaussianNBParams,
    FastSoftmaxParams,
    GaussianNBParams,
    HalfSpaceTreesParams,
    HoeffdingAdaptiveTreeParams,
    HoeffdingTreeParams,
    KNNParams,
    LifecycleParams,
    LogisticParams,
    build_classifier,
    build_detector,
    build_drift_detector,
)

if TYPE_CHECKING:
    from pipelines.learners.model import MAX_EVENTS, TaskModel

# TaskModel (and river, which it needs) loads on first use: the config layer and the read-only
# CLI import this package for the params classes only.
_LAZY = {"MAX_EVENTS": "model", "TaskModel": "model"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CLASSIFIERS",
    "DETECTORS",
    "MAX_EVENTS",
    "MEMORY_CHECK_EVERY",
    "ARFParams",
    "AnomalyParams",
    "ClassifierParams",
    "FastGaussianNBParams",
    "FastSoftmaxParams",
    "GaussianNBParams",
    "HalfSpaceTreesParams",
    "HoeffdingAdaptiveTreeParams",
    "HoeffdingTreeParams",
    "KNNParams",
    "LifecycleParams",
    "LogisticParams",
    "TaskModel",
    "build_classifier",
    "build_detector",
    "build_drift_detector",
    "explain",
]
