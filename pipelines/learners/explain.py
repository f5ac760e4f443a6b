"""Explanations: what an allow-listed classifier relies on, per feature.

Trees and forests: how often each feature is split on. A naive-Bayes model (or a Hoeffding
tree that is still one naive-Bayes leaf): the Fisher ratio of each feature, the variance of the
class means over the mean class variance (Fisher 1936). The linear model: the mean absolute
weight per (standardised) feature.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any


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
    """Per-feature, per-class Gaussians (feature -> class -> Gaussian) of a naive-Bayes model:
    GaussianNB, or a Hoeffding tree that is still a single (naive-Bayes) leaf."""
    per_class = getattr(est, "gaussians", None)
    if isinstance(per_class, dict):
        # river's GaussianNB keys them the other way round: class -> feature -> Gaussian
        by_feature: dict[str, dict[str, Any]] = {}
        for c, per_feature in per_class.items():
            for f, g in per_feature.items():
                by_feature.setdefault(f, {})[c] = g
        return by_feature
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
    if getattr(est, "takes_arrays", False):  # pipelines.fastlearn: the learner explains itself
        return dict(est.reliance(top))
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
        agg: dict[str, float] = {}
        for per_class in weights.values():
            for f, w in per_class.items():
                agg[str(f)] = agg.get(str(f), 0) + abs(float(w)) / len(weights)
        ranked = sorted(agg.items(), key=lambda kv: kv[1], reverse=True)[:top]  # = Counter.most_common
        return {"kind": "mean_abs_weight", "features": {k: round(v, 4) for k, v in ranked}}
    return {"kind": "none", "features": {}, "note": f"{type(est).__name__} has no per-feature reliance"}
