"""The learning state of one task: :class:`TaskModel`.

It holds the task's classifier (with its lifecycle: drift detection, champion/challenger), the
optional unsupervised anomaly detector with its alarm threshold, and the prequential
evaluation. Inference is pure: :meth:`TaskModel.predict` and :meth:`TaskModel.score` change
nothing, so a window can be predicted (and scored) before it is learned, river's test-then-train
order. Learning is separate: :meth:`TaskModel.learn` (a labelled window) and
:meth:`TaskModel.learn_unlabelled` (every window, for the anomaly side).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any

import numpy as np

from pipelines.anomaly import DiscordDetector, Verdict, policy_for
from pipelines.evaluation import Prequential
from pipelines.fastpath import Features, as_dict, learn_one, predict_proba
from pipelines.learners.explain import explain
from pipelines.learners.params import (
    AnomalyParams,
    ClassifierParams,
    LifecycleParams,
    build_classifier,
    build_detector,
    build_drift_detector,
)

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
        classifier: ClassifierParams,
        detector: AnomalyParams | None = None,
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
        self.policy = policy_for(detector) if detector is not None else None
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
        self.challenger_params: ClassifierParams | None = None
        self._champ_hits: deque[bool] = deque(maxlen=self.lifecycle.window)
        self._chall_hits: deque[bool] = deque(maxlen=self.lifecycle.window)
        if self.lifecycle.challenger is not None:
            self._start_challenger("configured")

    # -- identity ---------------------------------------------------------------------------------
    @property
    def algorithm(self) -> str:
        name: str = self.classifier_params.model
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
    def predict(self, x: Features) -> tuple[str | None, dict[str, float]]:
        """Most likely class (``None`` before any label was learned) and class probabilities."""
        return self._predict(self.classifier, x)

    @staticmethod
    def _predict(model: Any, x: Features) -> tuple[str | None, dict[str, float]]:
        proba = predict_proba(model, x)  # the array itself for learners that take arrays (fastpath)
        if not proba:
            return None, {}
        label = max(proba, key=proba.__getitem__)
        return str(label), {str(k): float(v) for k, v in proba.items()}

    def score(self, x: Features, window: np.ndarray | None = None, hop: int = 1) -> Verdict:
        """Anomaly verdict on a window, as if it were the next one: from its features ``x``
        (half-space trees) or from its newest ``hop`` samples, averaged per channel, of
        ``window`` (channels x samples: the discord detector). Changes nothing
        (:meth:`learn_unlabelled` learns it)."""
        assert self.detector is not None and self.policy is not None
        if isinstance(self.detector, DiscordDetector):
            s, novel = self.detector.score_one(self._newest(window, hop))
            return self.policy.judge(s, novel)
        s = float(self.detector.score_one(as_dict(x)))
        return self.policy.judge(s if math.isfinite(s) else 0.0)

    @staticmethod
    def _newest(window: np.ndarray | None, hop: int) -> np.ndarray:
        if window is None:
            raise ValueError("the discord detector needs the window's samples")
        return window[:, -hop:].mean(axis=1) if hop > 1 else window[:, -1]

    def learn_unlabelled(
        self,
        x: Features,
        verdict: Verdict | None = None,
        window: np.ndarray | None = None,
        hop: int = 1,
    ) -> None:
        """Learn one window on the anomaly side (a no-op without a detector): the alarm policy
        (threshold, off-delay), the alarm-rate drift watch and the detector; half-space trees
        skip a window above the threshold (so a developing fault does not become the new
        normal). ``verdict`` is :meth:`score`'s for this window on the current state (computed
        when not given)."""
        if self.detector is None or self.policy is None:
            return
        v = self.score(x, window, hop) if verdict is None else verdict
        ready = self.policy.n >= self.policy.warmup
        above = v.above
        self.policy.learn(v)
        self.n_scored += 1
        if v.alarm:
            self.n_alarms += 1
        if isinstance(self.detector, DiscordDetector):
            self.detector.learn_one(self._newest(window, hop))
        elif not above:
            self.detector.learn_one(as_dict(x))
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

    # -- learning ---------------------------------------------------------------------------------
    def learn(self, x: Features, y: str, y_pred: str | None) -> None:
        """Learn labelled window ``x``, test-then-train: count the earlier prediction ``y_pred``
        (made by :meth:`predict` when the window completed) against ``y``, then learn."""
        self.evaluation.update(y, y_pred)
        if self.challenger is not None:
            c_pred, _ = self._predict(self.challenger, x)
            self._champ_hits.append(y_pred == y)
            self._chall_hits.append(c_pred == y)
            learn_one(self.challenger, x, y)  # the array itself when the learner takes arrays
        learn_one(self.classifier, x, y)
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
        if self.challenger is None or self.challenger_params is None:
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
        if chall - champ < self.lifecycle.margin or self.challenger_params is None:
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
