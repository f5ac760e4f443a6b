"""The array path from a task's features to learners that take arrays (issue 11).

A window's features leave :class:`pipelines.task.TaskPipeline` as a :class:`FeatureVector`:
the vector (NaN = feature absent) and the names of its entries. A learner that declares
``takes_arrays = True`` (:mod:`pipelines.fastlearn`) gets the vector as it is; any other
learner (river's trees, forests, the anomaly detector) gets the usual ``dict``, built once per
window and only when someone asks for it.

This module imports neither numba nor the learners, so the config layer can import
:mod:`pipelines.learners` before the JIT cache directory is set.

>>> import numpy as np
>>> fv = FeatureVector(np.array([1.0, np.nan, 3.0]), ("a", "b", "c"))
>>> as_dict(fv)
{'a': 1.0, 'c': 3.0}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def vector_to_dict(vec: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """``{name: value}`` of the present (non-NaN) entries of ``vec``."""
    return {n: v for n, v in zip(names, vec.tolist(), strict=True) if v == v}  # v == v drops NaN


class FeatureVector:
    """One window's features as an array with their names; the dict is made on first use.

    ``to_dict`` turns the vector into the dict (default :func:`vector_to_dict` over ``names``);
    the task pipeline passes its own so that benchmarks can time it as a stage."""

    __slots__ = ("_dict", "_to_dict", "names", "vec")

    def __init__(
        self,
        vec: np.ndarray,
        names: tuple[str, ...],
        to_dict: Callable[[np.ndarray], dict[str, float]] | None = None,
    ) -> None:
        self.vec = vec
        self.names = names
        self._to_dict = to_dict
        self._dict: dict[str, float] | None = None

    def as_dict(self) -> dict[str, float]:
        if self._dict is None:
            self._dict = (
                self._to_dict(self.vec) if self._to_dict is not None else vector_to_dict(self.vec, self.names)
            )
        return self._dict


Features = Mapping[str, float] | FeatureVector


def as_dict(x: Features) -> Mapping[str, float]:
    """The features as a mapping (what river estimators take)."""
    return x.as_dict() if isinstance(x, FeatureVector) else x


def _array_ready(model: Any, x: Features) -> bool:
    """Whether ``model`` takes ``x`` as an array: it declares ``takes_arrays`` and accepts the
    feature layout (``bind`` adopts it on first use)."""
    return isinstance(x, FeatureVector) and getattr(model, "takes_arrays", False) and model.bind(x.names)


def predict_proba(model: Any, x: Features) -> Mapping[Any, float]:
    """``model.predict_proba_one`` of ``x``, through the array path when the model has one."""
    if _array_ready(model, x):
        assert isinstance(x, FeatureVector)
        return dict(zip(model.classes, model.predict_proba_array(x.vec).tolist(), strict=True))
    return model.predict_proba_one(as_dict(x))


def learn_one(model: Any, x: Features, y: Any) -> None:
    """``model.learn_one(x, y)``, through the array path when the model has one."""
    if _array_ready(model, x):
        assert isinstance(x, FeatureVector)
        model.learn_array(x.vec, y)
    else:
        model.learn_one(as_dict(x), y)
