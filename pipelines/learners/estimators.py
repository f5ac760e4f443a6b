"""A task's classifier as a river estimator, so river's tooling and conformance checks apply.

:class:`TaskClassifier` puts :class:`~pipelines.learners.model.TaskModel`'s classifier side
(the allow-listed model with its lifecycle: drift detection, champion/challenger) behind
river's ``Classifier`` interface: ``predict_proba_one`` is :meth:`TaskModel.predict` (pure),
``learn_one`` is test-then-train in one step (predict, then :meth:`TaskModel.learn` with that
prediction), which is what :class:`~pipelines.task.TaskPipeline` does over time.
``tests/test_pipelines.py`` runs ``river.checks.check_estimator`` on it for every allow-listed
model.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

from pydantic import TypeAdapter
from river import base
from river.base.typing import ClfTarget

from pipelines.learners.model import TaskModel
from pipelines.learners.params import CLASSIFIERS, ClassifierParams, LifecycleParams

_CLASSIFIER: TypeAdapter[ClassifierParams] = TypeAdapter(ClassifierParams)


class TaskClassifier(base.Classifier):
    """An allow-listed classifier with edged's lifecycle, as a river classifier.

    Parameters
    ----------
    model
        The ``[tasks.<name>.classifier]`` table, e.g. ``{"model": "gaussian_nb"}`` (validated
        against the allow-list; ``None``: a Hoeffding tree with default parameters).
    lifecycle
        The ``[tasks.<name>.lifecycle]`` table (``None``: the defaults).

    Notes
    -----
    edged's class names are strings; river's labels may be any hashable (``bool``, ``int``):
    they are learned under ``str(y)`` and mapped back in predictions.

    Examples
    --------
    >>> from river import datasets
    >>> clf = TaskClassifier({"model": "gaussian_nb"})
    >>> hits = 0
    >>> for x, y in datasets.Phishing().take(300):
    ...     hits += clf.predict_one(x) == y
    ...     clf.learn_one(x, y)
    >>> hits > 250
    True
    """

    def __init__(self, model: dict[str, Any] | None = None, lifecycle: dict[str, Any] | None = None) -> None:
        self.model = model
        self.lifecycle = lifecycle
        params = _CLASSIFIER.validate_python(model or {"model": "hoeffding_tree"})
        self.task = TaskModel("river", params, lifecycle=LifecycleParams(**(lifecycle or {})))
        self._labels: dict[str, ClfTarget] = {}

    @property
    def _multiclass(self) -> bool:
        return True

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        for name in CLASSIFIERS:
            yield {"model": {"model": name}}

    def learn_one(self, x: dict[Hashable, Any], y: ClfTarget, **kwargs: Any) -> None:
        """Predict ``x``, then learn it with label ``y`` (counting that prediction)."""
        name = str(y)
        self._labels.setdefault(name, y)
        feats = {str(k): v for k, v in x.items()}
        self.task.learn(feats, name, self.task.predict(feats)[0])

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[ClfTarget, float]:
        """Class probabilities (empty before any label was learned); changes nothing."""
        _, proba = self.task.predict({str(k): v for k, v in x.items()})
        return {self._labels.get(k, k): p for k, p in proba.items()}
