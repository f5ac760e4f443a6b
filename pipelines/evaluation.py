"""Prequential (test-then-train) evaluation of a classifier.

Every labelled window was predicted before its label was learned; :class:`Prequential` keeps
the confusion counts of those predictions over all time and over the most recent windows.
A window predicted before the model knew any class (prediction ``None``) counts as wrong.
Macro-F1 averages over the classes that occurred as true labels, so a class the model never
saw is not rewarded and "no prediction" does not become a class of its own.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any


def _scores(cm: Counter[tuple[str, str | None]]) -> dict[str, float]:
    n = sum(cm.values())
    if n == 0:
        return {"accuracy": 0.0, "macro_f1": 0.0, "kappa": 0.0}
    true_counts: Counter[str] = Counter()
    pred_counts: Counter[str | None] = Counter()
    correct: Counter[str] = Counter()
    for (y, p), c in cm.items():
        true_counts[y] += c
        pred_counts[p] += c
        if y == p:
            correct[y] += c
    acc = sum(correct.values()) / n
    f1s = []
    for y, support in true_counts.items():
        tp = correct[y]
        denom = support + pred_counts[y]
        f1s.append(2 * tp / denom if denom else 0.0)
    macro_f1 = sum(f1s) / len(f1s)
    expected = sum(true_counts[c] * pred_counts[c] for c in true_counts) / (n * n)
    kappa = (acc - expected) / (1 - expected) if expected < 1 else 0.0
    return {"accuracy": acc, "macro_f1": macro_f1, "kappa": kappa}


class Prequential:
    """Confusion counts of prequential predictions, all-time and over the last ``recent``.

    Examples
    --------
    >>> m = Prequential(recent=2)
    >>> for y, p in [("a", None), ("a", "a"), ("b", "b"), ("b", "a")]:
    ...     m.update(y, p)
    >>> r = m.report()
    >>> r["n"], r["accuracy"], r["recent"]["accuracy"]
    (4, 0.5, 0.5)
    """

    def __init__(self, recent: int = 200) -> None:
        self.recent = recent
        self.cm: Counter[tuple[str, str | None]] = Counter()
        self._window: deque[tuple[str, str | None]] = deque(maxlen=recent)
        self._recent_cm: Counter[tuple[str, str | None]] = Counter()

    def update(self, y_true: str, y_pred: str | None) -> None:
        """Count one labelled window that was predicted as ``y_pred`` before learning."""
        self.cm[(y_true, y_pred)] += 1
        if len(self._window) == self._window.maxlen:
            old = self._window[0]
            self._recent_cm[old] -= 1
            if self._recent_cm[old] <= 0:
                del self._recent_cm[old]
        self._window.append((y_true, y_pred))
        self._recent_cm[(y_true, y_pred)] += 1

    @property
    def n(self) -> int:
        return sum(self.cm.values())

    def report(self) -> dict[str, Any]:
        """Accuracy, macro-F1, Cohen's kappa (all-time and recent), per-class counts."""
        out: dict[str, Any] = {"n": self.n, **_scores(self.cm)}
        out["recent"] = {"n": len(self._window), **_scores(self._recent_cm)}
        classes: Counter[str] = Counter()
        for (y, _), c in self.cm.items():
            classes[y] += c
        out["class_counts"] = dict(sorted(classes.items()))
        out["confusion"] = {
            f"{y}->{p}": c for (y, p), c in sorted(self.cm.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
        }
        return out
