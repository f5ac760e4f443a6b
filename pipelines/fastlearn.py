"""Array-based online classifiers compiled with numba, that are still river classifiers (issue 11).

:class:`FastGaussianNB` and :class:`FastSoftmax` keep their state in numpy arrays (one row per
class, one column per feature) and learn and predict in ``@njit`` kernels. They implement river's
classifier interface (``learn_one``/``predict_proba_one``/``predict_one`` over ``dict`` features,
so they drop into a river pipeline and pass ``river.checks``) and an array path that edged uses:
``bind(names)`` fixes the feature layout, then ``learn_array(vec, y)`` and
``predict_proba_array(vec)`` take the feature vector as it is (NaN = feature absent, like a key
missing from the dict).

* :class:`FastGaussianNB` is river's ``naive_bayes.GaussianNB`` with its sufficient statistics
  as arrays: count, mean and M2 per class and feature, updated the way ``river.stats.Var`` does
  (Welford). Two models merge exactly (:meth:`FastGaussianNB.merge`, Chan et al.).
* :class:`FastSoftmax` is river's ``preprocessing.StandardScaler() |
  linear_model.SoftmaxRegression()``: running mean and variance per feature, then multinomial
  logistic regression by plain SGD (no intercept, the same defaults: ``lr=0.01``, ``l2=0``).

Classes and features appear online. Both serialise without pickle: :meth:`state_dict` gives
numpy arrays, numbers, strings and lists of strings (for npz or JSON) and ``from_state_dict``
rebuilds the model; both still pickle (checkpoints pickle the whole ``TaskModel``).

Kernels are underscore-named ``@njit(**JIT)`` functions over arrays; the classes validate and
own the state. Importing this module imports numba: :mod:`pipelines.learners` imports it only
when a config asks for one of these learners.

>>> model = FastGaussianNB()
>>> for x, y in [({"a": 1.0, "b": 0.1}, "on"), ({"a": 1.2, "b": 0.0}, "on"),
...              ({"a": 0.0, "b": 0.9}, "off"), ({"a": 0.1, "b": 1.1}, "off")]:
...     model.learn_one(x, y)
>>> model.predict_one({"a": 0.9, "b": 0.2})
'on'
>>> model.bind(("a", "b"))
True
>>> model.predict_proba_array(np.array([0.05, 1.0])).round(3)
array([0., 1.])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
from numba import njit
from river import base

from pipelines.jit import JIT

__all__ = ["FastGaussianNB", "FastSoftmax"]

STATE_FORMAT = 1
_PDF_EPS = 10e-10  # river.naive_bayes.gaussian: a feature adds log(1e-9 + pdf)
_LOG_PDF_EPS = math.log(_PDF_EPS)
_SQRT_TAU = math.sqrt(2.0 * math.pi)
_P_MIN = 1e-15  # river.optim.losses.clamp_proba


# -- kernels ---------------------------------------------------------------------------------------
@njit(**JIT)
def _normalise_log(ll: np.ndarray, k: int) -> None:
    """Turn the first ``k`` log-likelihoods into probabilities in place (log-sum-exp); uniform
    when they are not finite."""
    if k == 0:
        return
    m = ll[0]
    for c in range(1, k):
        if ll[c] > m:
            m = ll[c]
    total = 0.0
    for c in range(k):
        ll[c] = math.exp(ll[c] - m)
        total += ll[c]
    if not (total > 0.0 and math.isfinite(total)):
        for c in range(k):
            ll[c] = 1.0 / k
        return
    for c in range(k):
        ll[c] /= total


@njit(**JIT)
def _gnb_learn(
    x: np.ndarray, c: int, class_count: np.ndarray, n: np.ndarray, mean: np.ndarray, m2: np.ndarray
) -> None:
    """Welford update of class ``c`` with the present entries of ``x`` (river.stats.Var)."""
    class_count[c] += 1.0
    for f in range(x.shape[0]):
        v = x[f]
        if v != v:
            continue
        old = mean[c, f]
        nn = n[c, f] + 1.0
        n[c, f] = nn
        new = old + (1.0 / nn) * (v - old)
        mean[c, f] = new
        m2[c, f] += (v - old) * (v - new)


@njit(**JIT)
def _gnb_proba(
    x: np.ndarray,
    extra: float,
    class_count: np.ndarray,
    n: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
) -> np.ndarray:
    """Class probabilities of ``x``: log prior plus, per present feature, log(1e-9 + pdf) of the
    class's Gaussian (population variance; log(1e-9) for a feature the class never saw), plus
    ``extra``, then normalised (river.naive_bayes.GaussianNB)."""
    n_classes = class_count.shape[0]
    out = np.empty(n_classes)
    total = 0.0
    for c in range(n_classes):
        total += class_count[c]
    for c in range(n_classes):
        s = 0.0
        for f in range(x.shape[0]):
            v = x[f]
            if v != v:
                continue
            nf = n[c, f]
            if nf == 0.0:
                s += _LOG_PDF_EPS
                continue
            var = m2[c, f] / nf
            pdf = 0.0
            if var > 0.0:
                sigma = math.sqrt(var)
                z = (v - mean[c, f]) / sigma
                pdf = math.exp(-0.5 * z * z) / _SQRT_TAU / sigma
            s += math.log(_PDF_EPS + pdf)
        out[c] = math.log(class_count[c] / total) + (s + extra)
    _normalise_log(out, n_classes)
    return out


@njit(**JIT)
def _gnb_merge(
    class_count: np.ndarray,
    n: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
    o_count: np.ndarray,
    o_n: np.ndarray,
    o_mean: np.ndarray,
    o_m2: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
) -> None:
    """Add the other model's statistics (its class i is row ``rows[i]``, its feature j column
    ``cols[j]``): Chan et al.'s parallel update, as river.stats.Var.__iadd__."""
    for i in range(o_count.shape[0]):
        c = rows[i]
        class_count[c] += o_count[i]
        for j in range(cols.shape[0]):
            f = cols[j]
            nb = o_n[i, j]
            if nb == 0.0:
                continue
            na = n[c, f]
            if na == 0.0:
                n[c, f], mean[c, f], m2[c, f] = nb, o_mean[i, j], o_m2[i, j]
                continue
            d = mean[c, f] - o_mean[i, j]
            m2[c, f] = m2[c, f] + o_m2[i, j] + d**2 * na * nb / (na + nb)
            n[c, f] = na + nb
            mean[c, f] = (na * mean[c, f] + nb * o_mean[i, j]) / (na + nb)


@njit(**JIT)
def _standardise(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """(x - mean) / std per present entry, 0 where the variance is 0, NaN stays NaN
    (river.preprocessing.StandardScaler.transform_one)."""
    z = np.empty(x.shape[0])
    for f in range(x.shape[0]):
        v = x[f]
        if v != v:
            z[f] = v
        elif var[f] != 0.0:
            z[f] = (v - mean[f]) / var[f] ** 0.5
        else:
            z[f] = 0.0
    return z


@njit(**JIT)
def _softmax_of(z: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """Softmax over the first ``k`` classes of the logits w @ z (present entries only); the
    other rows are 0."""
    out = np.zeros(w.shape[0])
    for c in range(k):
        s = 0.0
        for f in range(z.shape[0]):
            v = z[f]
            if v == v:
                s += w[c, f] * v
        out[c] = s
    _normalise_log(out, k)
    return out


@njit(**JIT)
def _softmax_proba(x: np.ndarray, mean: np.ndarray, var: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Class probabilities of ``x``: standardise, then softmax of the logits."""
    return _softmax_of(_standardise(x, mean, var), w, w.shape[0])


@njit(**JIT)
def _softmax_learn(
    x: np.ndarray,
    c: int,
    k: int,
    lr: float,
    l2: float,
    count: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    w: np.ndarray,
) -> None:
    """One SGD step on ``x`` of class ``c``: update the scaler with ``x`` and standardise it, predict
    over the ``k`` classes known before this sample, then step every class's weights of the present
    features along the cross-entropy gradient (probability clamped to [1e-15, 1 - 1e-15], minus 1
    for the true class, times the feature, plus ``l2`` times the weight)."""
    for f in range(x.shape[0]):
        v = x[f]
        if v != v:
            continue
        count[f] += 1.0
        old = mean[f]
        mean[f] += (v - old) / count[f]
        var[f] += ((v - old) * (v - mean[f]) - var[f]) / count[f]
    z = _standardise(x, mean, var)
    p = _softmax_of(z, w, k)
    for j in range(w.shape[0]):
        g = min(max(p[j], _P_MIN), 1.0 - _P_MIN) - (1.0 if j == c else 0.0)
        for f in range(z.shape[0]):
            v = z[f]
            if v == v:
                w[j, f] -= lr * (v * g + l2 * w[j, f])


# -- keys of classes and features in a state dict ---------------------------------------------------
def _encode_keys(keys: Iterable[Hashable], what: str) -> tuple[list[str], list[str]]:
    values, kinds = [], []
    for k in keys:
        if isinstance(k, bool | np.bool_):
            values.append(str(bool(k)))
            kinds.append("bool")
        elif isinstance(k, int | np.integer):
            values.append(str(int(k)))
            kinds.append("int")
        elif isinstance(k, float | np.floating):
            values.append(repr(float(k)))
            kinds.append("float")
        elif isinstance(k, str):
            values.append(k)
            kinds.append("str")
        else:
            raise ValueError(f"a {what} of type {type(k).__name__} cannot go in a state dict: {k!r}")
    return values, kinds


def _decode_keys(values: Any, kinds: Any, what: str) -> list[Hashable]:
    values, kinds = _str_list(values, what), _str_list(kinds, f"{what} kinds")
    if len(values) != len(kinds):
        raise ValueError(f"{len(values)} {what}s but {len(kinds)} kinds")
    out: list[Hashable] = []
    for v, k in zip(values, kinds, strict=True):
        if k == "str":
            out.append(v)
        elif k == "int":
            out.append(int(v))
        elif k == "float":
            out.append(float(v))
        elif k == "bool" and v in ("True", "False"):
            out.append(v == "True")
        else:
            raise ValueError(f"bad {what} {v!r} of kind {k!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate {what}s")
    return out


def _str_list(v: Any, what: str) -> list[str]:
    """A list of str from a list (JSON) or a numpy string array (npz)."""
    items = v.tolist() if isinstance(v, np.ndarray) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ValueError(f"{what}: expected a list of strings")
    return items


def _array(d: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float64 array of ``shape`` from ``d[key]`` (array or nested lists), copied."""
    try:
        a = np.array(d[key], dtype=np.float64)
    except KeyError:
        raise ValueError(f"state dict has no {key!r}") from None
    except (TypeError, ValueError):
        raise ValueError(f"{key!r} is not numeric") from None
    if a.size == 0:
        a = a.reshape(shape)  # JSON writes an empty (0, F) array as []
    if a.shape != shape:
        raise ValueError(f"{key!r} has shape {a.shape}, expected {shape}")
    return np.ascontiguousarray(a)


def _number(d: Mapping[str, Any], key: str) -> float:
    v = d.get(key)
    v = v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{key!r} must be a finite number, got {v!r}")
    return float(v)


def _text(d: Mapping[str, Any], key: str) -> str:
    v = d.get(key)
    v = v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v
    if not isinstance(v, str):
        raise ValueError(f"{key!r} must be a string, got {v!r}")
    return v


# -- the shared part ---------------------------------------------------------------------------------
class _ArrayClassifier(base.Classifier):
    """Classes and features that appear online, mapped to rows and columns of the state arrays."""

    takes_arrays: ClassVar[bool] = True
    _kind: ClassVar[str]

    def __init__(self) -> None:
        self.classes: list[Hashable] = []
        self.features: list[Hashable] = []
        self._class_index: dict[Hashable, int] = {}
        self._feature_index: dict[Hashable, int] = {}
        self._bound: tuple[Hashable, ...] | None = None

    @property
    def _multiclass(self) -> bool:
        return True

    # state arrays, per subclass: (C,) or (F,) vectors and (C, F) tables
    def _class_arrays(self) -> list[str]:
        raise NotImplementedError

    def _feature_arrays(self) -> list[str]:
        raise NotImplementedError

    def _table_arrays(self) -> list[str]:
        raise NotImplementedError

    def _add_class(self, y: Hashable) -> int:
        c = len(self.classes)
        self.classes.append(y)
        self._class_index[y] = c
        for name in self._class_arrays():
            setattr(self, name, np.append(getattr(self, name), 0.0))
        for name in self._table_arrays():
            a = getattr(self, name)
            setattr(self, name, np.concatenate([a, np.zeros((1, a.shape[1]))]))
        return c

    def _add_features(self, names: list[Hashable]) -> None:
        if not names:
            return
        for f in names:
            self._feature_index[f] = len(self.features)
            self.features.append(f)
        k = len(names)
        for name in self._feature_arrays():
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(k)]))
        for name in self._table_arrays():
            a = getattr(self, name)
            setattr(self, name, np.ascontiguousarray(np.concatenate([a, np.zeros((a.shape[0], k))], 1)))
        self._bound = None

    # -- array path -------------------------------------------------------------------------------
    def bind(self, names: tuple[Hashable, ...]) -> bool:
        """Take feature vectors laid out as ``names`` from now on: adopted when the model has no
        features yet or its features are a prefix of ``names``; otherwise (another layout)
        ``False``, and the caller falls back to dicts."""
        if names is self._bound:
            return True
        k = len(self.features)
        if tuple(self.features) != tuple(names[:k]):
            return False
        self._add_features([n for n in names[k:] if n not in self._feature_index])
        if len(self.features) != len(names):  # a name repeated in ``names``
            return False
        self._bound = names
        return True

    def _check(self, vec: np.ndarray) -> np.ndarray:
        v = np.asarray(vec, dtype=np.float64)
        if v.shape != (len(self.features),):
            raise ValueError(
                f"feature vector of shape {v.shape}, the model has {len(self.features)} features"
            )
        return v

    def learn_array(self, vec: np.ndarray, y: Hashable) -> None:
        """Learn the feature vector ``vec`` (laid out as :attr:`features`, NaN = absent) of class ``y``."""
        c = self._class_index.get(y)
        self._learn(self._check(vec), self._add_class(y) if c is None else c)

    def predict_proba_array(self, vec: np.ndarray) -> np.ndarray:
        """Probabilities of :attr:`classes` for the feature vector ``vec`` (empty before any label)."""
        return self._proba(self._check(vec), 0)

    def _learn(self, vec: np.ndarray, c: int) -> None:
        raise NotImplementedError

    def _proba(self, vec: np.ndarray, unknown: int) -> np.ndarray:
        raise NotImplementedError

    # -- river's interface --------------------------------------------------------------------------
    def _vector(self, x: Mapping[Hashable, Any], learn: bool) -> tuple[np.ndarray, int]:
        """``x`` as a vector over :attr:`features` (new ones added when learning) and the number
        of present features the model does not know."""
        index = self._feature_index
        if learn:
            self._add_features([k for k in x if k not in index])
        vec = np.full(len(self.features), np.nan)
        unknown = 0
        for k, v in x.items():
            i = index.get(k)
            if i is None:
                unknown += v == v
            else:
                vec[i] = v
        return vec, unknown

    def learn_one(self, x: Mapping[Hashable, Any], y: Hashable) -> None:
        vec, _ = self._vector(x, True)
        self.learn_array(vec, y)

    def predict_proba_one(self, x: Mapping[Hashable, Any]) -> dict[Hashable, float]:  # type: ignore[override]
        vec, unknown = self._vector(x, False)
        return dict(zip(self.classes, self._proba(vec, unknown).tolist(), strict=True))

    # -- serialisation and introspection ------------------------------------------------------------
    def _params_state(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The model as numpy arrays, numbers and (lists of) strings: no pickle needed.

        Classes and features must be str, int, float or bool (their kinds are stored)."""
        classes, class_kinds = _encode_keys(self.classes, "class")
        features, feature_kinds = _encode_keys(self.features, "feature")
        d: dict[str, Any] = {
            "kind": self._kind,
            "format": STATE_FORMAT,
            **self._params_state(),
            "classes": classes,
            "class_kinds": class_kinds,
            "features": features,
            "feature_kinds": feature_kinds,
        }
        for name in self._class_arrays() + self._feature_arrays() + self._table_arrays():
            d[name.lstrip("_")] = getattr(self, name).copy()
        return d

    @classmethod
    def _from_params(cls, d: Mapping[str, Any]) -> _ArrayClassifier:
        return cls()

    @classmethod
    def from_state_dict(cls, d: Mapping[str, Any]) -> Any:
        """Rebuild a model from :meth:`state_dict` (or its npz/JSON form); raises ValueError on
        anything malformed."""
        if _text(d, "kind") != cls._kind:
            raise ValueError(f"state dict of a {d.get('kind')!r}, not a {cls._kind!r}")
        if _number(d, "format") != STATE_FORMAT:
            raise ValueError(f"state format {d.get('format')!r}, this software reads {STATE_FORMAT}")
        model = cls._from_params(d)
        classes = _decode_keys(d.get("classes"), d.get("class_kinds"), "class")
        features = _decode_keys(d.get("features"), d.get("feature_kinds"), "feature")
        nc, nf = len(classes), len(features)
        for name in model._class_arrays():
            setattr(model, name, _array(d, name.lstrip("_"), (nc,)))
        for name in model._feature_arrays():
            setattr(model, name, _array(d, name.lstrip("_"), (nf,)))
        for name in model._table_arrays():
            setattr(model, name, _array(d, name.lstrip("_"), (nc, nf)))
        model.classes, model.features = classes, features
        model._class_index = {c: i for i, c in enumerate(classes)}
        model._feature_index = {f: i for i, f in enumerate(features)}
        return model

    @property
    def nbytes(self) -> int:
        """Bytes held by the state arrays."""
        names = self._class_arrays() + self._feature_arrays() + self._table_arrays()
        return sum(int(getattr(self, n).nbytes) for n in names)

    def _top(self, scores: np.ndarray, top: int, digits: int) -> dict[str, float]:
        order = sorted(
            (i for i in range(len(self.features)) if math.isfinite(scores[i])), key=lambda i: -scores[i]
        )
        return {str(self.features[i]): round(float(scores[i]), digits) for i in order[:top]}


class FastGaussianNB(_ArrayClassifier):
    """Gaussian naive Bayes on arrays: river's ``naive_bayes.GaussianNB``, compiled.

    Per class and feature it keeps the count, mean and M2 (sum of squared deviations) of the
    values seen (Welford's update, as ``river.stats.Var``), so the model is its sufficient
    statistics: :meth:`merge` adds another model's exactly. Prediction is river's: the log prior
    plus, per present feature, ``log(1e-9 + pdf)`` of the class's Gaussian (population variance;
    ``log(1e-9)`` for a feature the class never saw), normalised by log-sum-exp.

    Examples
    --------

    >>> from river import datasets
    >>> model = FastGaussianNB()
    >>> for x, y in datasets.Phishing().take(200):
    ...     p = model.predict_one(x)
    ...     model.learn_one(x, y)
    >>> model.classes
    [True, False]
    >>> half = FastGaussianNB()
    >>> for x, y in datasets.Phishing().take(100):
    ...     half.learn_one(x, y)
    >>> rest = FastGaussianNB()
    >>> for x, y in list(datasets.Phishing().take(200))[100:]:
    ...     rest.learn_one(x, y)
    >>> bool(np.allclose(half.merge(rest).m2, model.m2))
    True
    """

    _kind = "fast_gnb"

    def __init__(self) -> None:
        super().__init__()
        self.class_count = np.zeros(0)
        self.n = np.zeros((0, 0))
        self.mean = np.zeros((0, 0))
        self.m2 = np.zeros((0, 0))

    def _class_arrays(self) -> list[str]:
        return ["class_count"]

    def _feature_arrays(self) -> list[str]:
        return []

    def _table_arrays(self) -> list[str]:
        return ["n", "mean", "m2"]

    def _learn(self, vec: np.ndarray, c: int) -> None:
        _gnb_learn(vec, c, self.class_count, self.n, self.mean, self.m2)

    def _proba(self, vec: np.ndarray, unknown: int) -> np.ndarray:
        # river adds log(1e-9) per class for a feature no class has seen: no effect on the
        # probabilities, kept so that the numbers match
        return _gnb_proba(vec, unknown * _LOG_PDF_EPS, self.class_count, self.n, self.mean, self.m2)

    @property
    def var(self) -> np.ndarray:
        """Population variance per class and feature (0 where fewer than one value)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.m2 / np.where(self.n > 0, self.n, 1.0), 0.0)

    def merge(self, other: FastGaussianNB) -> FastGaussianNB:
        """A new model holding both models' statistics: equal (up to rounding) to one model that
        learned both streams. Classes and features are matched by name."""
        if not isinstance(other, FastGaussianNB):
            raise TypeError(f"cannot merge a {type(other).__name__} into a FastGaussianNB")
        out = copy.deepcopy(self)
        out._add_features([f for f in other.features if f not in out._feature_index])
        rows = np.array(
            [out._class_index[c] if c in out._class_index else out._add_class(c) for c in other.classes],
            dtype=np.int64,
        )
        cols = np.array([out._feature_index[f] for f in other.features], dtype=np.int64)
        _gnb_merge(
            out.class_count,
            out.n,
            out.mean,
            out.m2,
            other.class_count,
            other.n,
            other.mean,
            other.m2,
            rows,
            cols,
        )
        return out

    def reliance(self, top: int = 10) -> dict[str, Any]:
        """Fisher ratio per feature (between-class over mean within-class variance, classes with
        more than one value), as ``pipelines.learners.explain`` reports river's GaussianNB."""
        w = np.where(self.n > 1, self.n, 0.0)
        total = w.sum(0)
        scores = np.full(len(self.features), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (w * self.mean).sum(0) / total
            between = (w * (self.mean - mean) ** 2).sum(0) / total
            within = (w * self.var).sum(0) / total
            ratio = between / within
        ok = ((w > 0).sum(0) >= 2) & (within > 0) & np.isfinite(ratio)
        scores[ok] = ratio[ok]
        return {
            "kind": "class_separation",
            "features": self._top(scores, top, 3),
            "note": "Gaussian naive Bayes: between-class / within-class variance of each feature",
        }


class FastSoftmax(_ArrayClassifier):
    """Multinomial logistic regression on standardised features, on arrays: river's
    ``preprocessing.StandardScaler() | linear_model.SoftmaxRegression(optim.SGD(lr), l2=l2)``.

    Each learned sample first updates the running mean and population variance of its features
    and is standardised with them (a feature of variance 0 becomes 0), then every class's
    weights take one SGD step along the cross-entropy gradient. Like river there is no
    intercept, and a class starts with zero weights when it is first learned.

    Parameters
    ----------
    lr
        SGD learning rate (river's default: 0.01).
    l2
        L2 regularisation of the weights.

    Examples
    --------

    >>> from river import datasets
    >>> model = FastSoftmax(lr=0.05)
    >>> hits = 0
    >>> for x, y in datasets.ImageSegments().take(300):
    ...     hits += model.predict_one(x) == y
    ...     model.learn_one(x, y)
    >>> hits > 200
    True
    """

    _kind = "fast_softmax"

    def __init__(self, lr: float = 0.01, l2: float = 0.0) -> None:
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if not (isinstance(l2, int | float) and math.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be a non-negative number, got {l2!r}")
        super().__init__()
        self.lr = lr
        self.l2 = l2
        self.count = np.zeros(0)
        self.mean = np.zeros(0)
        self.var = np.zeros(0)
        self.weights = np.zeros((0, 0))

    def _class_arrays(self) -> list[str]:
        return []

    def _feature_arrays(self) -> list[str]:
        return ["count", "mean", "var"]

    def _table_arrays(self) -> list[str]:
        return ["weights"]

    def _params_state(self) -> dict[str, float]:
        return {"lr": float(self.lr), "l2": float(self.l2)}

    @classmethod
    def _from_params(cls, d: Mapping[str, Any]) -> FastSoftmax:
        return cls(lr=_number(d, "lr"), l2=_number(d, "l2"))

    def learn_array(self, vec: np.ndarray, y: Hashable) -> None:
        vec = self._check(vec)
        c = self._class_index.get(y)
        k = len(self.classes)  # the classes predicted before this sample (a new one is not)
        if c is None:
            c = self._add_class(y)
        _softmax_learn(
            vec, c, k, float(self.lr), float(self.l2), self.count, self.mean, self.var, self.weights
        )

    def _proba(self, vec: np.ndarray, unknown: int) -> np.ndarray:
        # an unknown feature standardises to 0 in river (no mean, no variance): no effect
        return _softmax_proba(vec, self.mean, self.var, self.weights)

    def reliance(self, top: int = 10) -> dict[str, Any]:
        """Mean absolute weight per (standardised) feature over the classes, as
        ``pipelines.learners.explain`` reports river's SoftmaxRegression."""
        scores = np.abs(self.weights).mean(0) if self.classes else np.full(len(self.features), np.nan)
        return {"kind": "mean_abs_weight", "features": self._top(scores, top, 4)}

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"lr": 0.1, "l2": 0.001}
