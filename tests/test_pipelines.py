"""Windowing, feature kernels against numpy/scipy references, prequential metrics, labels."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import scipy.stats

from pipelines.evaluation import Prequential
from pipelines.features import STATS, FeatureExtractor
from pipelines.learners import GaussianNBParams, TaskModel
from pipelines.task import TaskPipeline
from pipelines.windowing import Windower


class TestWindower:
    def test_windows_match_a_naive_slicer_across_blocks(self) -> None:
        """Windows over arbitrary block splits equal slicing the whole stream."""
        rng = np.random.default_rng(1)
        x = rng.standard_normal((5000, 3))
        t = np.arange(5000) / 100.0
        w = Windower(rows=2, window=256, hop=100, capacity=600)
        got = []
        i = 0
        for size in rng.integers(1, 700, size=100):
            if i >= 5000:
                break
            for win in w.push(t[i : i + size], x[i : i + size], [2, 0]):
                got.append((win.t_end, win.data.copy()))
            i += size
        ends = list(range(256, 5001, 100))
        assert [g[0] for g in got] == [t[e - 1] for e in ends]
        for (_, data), e in zip(got, ends, strict=True):
            np.testing.assert_array_equal(data, x[e - 256 : e][:, [2, 0]].T)

    def test_missing_column_is_nan_row(self) -> None:
        """A column index of -1 yields a NaN row (context channel from another source)."""
        w = Windower(rows=2, window=4, hop=4)
        wins = list(w.push(np.arange(4.0), np.ones((4, 1)), [0, -1]))
        assert len(wins) == 1 and np.isnan(wins[0].data[1]).all()

    def test_label_of_window_is_label_of_last_sample(self) -> None:
        """The recorded-file rule."""
        w = Windower(rows=1, window=3, hop=3)
        wins = list(
            w.push(np.arange(6.0), np.zeros((6, 1)), [0], np.array([0, 0, 1, 1, 1, -1], dtype=np.int32))
        )
        assert [v.label for v in wins] == [1, -1]


class TestFeatures:
    @pytest.fixture
    def signal(self) -> np.ndarray:
        rng = np.random.default_rng(7)
        t = np.arange(1000) / 1000.0
        return np.stack(
            [
                rng.standard_normal(1000) * 2 + 1,
                np.sin(2 * np.pi * 50 * t) + 0.1 * rng.standard_normal(1000),
                rng.exponential(1.0, 1000),
            ]
        )

    def test_time_stats_match_numpy_and_scipy(self, signal: np.ndarray) -> None:
        """Each statistic equals its numpy/scipy reference (rtol 1e-9)."""
        fx = FeatureExtractor(("a", "b", "c"), 1000.0, 1000, features=("stats",))
        f = dict(zip(fx.names, fx.compute(signal), strict=True))
        for name, x in zip("abc", signal, strict=True):
            rms = np.sqrt(np.mean(x**2))
            d = x - x.mean()
            zc = np.count_nonzero(np.diff(np.sign(d[d != 0])) != 0) / (len(x) - 1)
            ref = {
                "mean": x.mean(),
                "std": x.std(),
                "rms": rms,
                "min": x.min(),
                "max": x.max(),
                "ptp": np.ptp(x),
                "skew": scipy.stats.skew(x),
                "kurt": scipy.stats.kurtosis(x),
                "crest": np.abs(x).max() / rms,
                "zcr": zc,
            }
            for s in STATS:
                np.testing.assert_allclose(
                    f[f"{name}.{s}"], ref[s], rtol=1e-9, atol=1e-12, err_msg=f"{name}.{s}"
                )

    def test_band_power_matches_numpy_fft(self, signal: np.ndarray) -> None:
        """Band powers equal the integral of a numpy Hann-window periodogram (rtol 1e-9)."""
        edges = (0.0, 10.0, 45.0, 55.0, 200.0, 500.0)
        fx = FeatureExtractor(
            ("a", "b", "c"), 1000.0, 1000, features=("bands",), bands_hz=edges, log_bands=False
        )
        f = dict(zip(fx.names, fx.compute(signal), strict=True))
        w = np.hanning(1002)[1:-1]
        p = 1024
        freqs = np.fft.rfftfreq(p, 1 / 1000.0)
        for name, x in zip("abc", signal, strict=True):
            spec = np.abs(np.fft.rfft((x - x.mean()) * w, p)) ** 2
            weight = np.full(spec.shape, 2.0)
            weight[0] = weight[-1] = 1.0
            psd = weight * spec / (p * np.sum(w**2))
            for lo, hi in itertools.pairwise(edges):
                sel = (freqs >= lo) & ((freqs < hi) | ((hi == 500.0) & (freqs <= hi)))
                np.testing.assert_allclose(
                    f[f"{name}.band_{lo:g}_{hi:g}"], psd[sel].sum(), rtol=1e-9, atol=1e-15
                )
        # the 50 Hz sine puts its power in the 45-55 band
        assert f["b.band_45_55"] > 10 * f["b.band_55_200"]

    def test_constant_signal_is_finite(self) -> None:
        """A constant channel gives finite features (no NaN from 0/0)."""
        fx = FeatureExtractor(("a",), 100.0, 64, bands_hz=(0.0, 10.0, 50.0))
        v = fx.compute(np.full((1, 64), 3.0))
        assert np.isfinite(v).all()
        f = dict(zip(fx.names, v, strict=True))
        assert f["a.std"] == 0 and f["a.skew"] == 0 and f["a.kurt"] == 0

    def test_invalid_specs_raise(self) -> None:
        """Bands above Nyquist or with no FFT bin are rejected with a reason."""
        with pytest.raises(ValueError, match="Nyquist"):
            FeatureExtractor(("a",), 100.0, 64, bands_hz=(0.0, 60.0))
        with pytest.raises(ValueError, match="no FFT bin"):
            FeatureExtractor(("a",), 100.0, 16, bands_hz=(1.0, 1.1, 50.0))


class TestPrequential:
    def test_metrics_by_hand(self) -> None:
        """Accuracy, macro-F1 and kappa on a hand-computed confusion matrix."""
        m = Prequential()
        pairs = [("a", "a")] * 4 + [("a", "b")] + [("b", "b")] * 3 + [("b", "a")] * 2
        for y, p in pairs:
            m.update(y, p)
        r = m.report()
        assert r["accuracy"] == pytest.approx(0.7)
        f1_a = 2 * 4 / (5 + 6)
        f1_b = 2 * 3 / (5 + 4)
        assert r["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)
        pe = (5 * 6 + 5 * 4) / 100
        assert r["kappa"] == pytest.approx((0.7 - pe) / (1 - pe))

    def test_no_prediction_counts_as_wrong(self) -> None:
        """A window predicted before any class was known is an error, not skipped."""
        m = Prequential()
        m.update("a", None)
        m.update("a", "a")
        assert m.report()["accuracy"] == 0.5 and m.report()["macro_f1"] == pytest.approx(2 / 3)


def _pipeline(horizon: float = 100.0) -> TaskPipeline:
    fx = FeatureExtractor(("x",), 10.0, 10, features=("stats",))
    model = TaskModel("t", GaussianNBParams(model="gaussian_nb"))
    return TaskPipeline("t", model, fx, Windower(1, 10, 10), (), horizon)


def _feed(p: TaskPipeline, t0: float, n: int, level: float) -> list:
    t = t0 + np.arange(n) / 10.0
    rng = np.random.default_rng(int(t0 * 10))
    x = np.full((n, 1), level) + rng.normal(0.0, 0.3, (n, 1))
    return p.process(t, x, [0], None, lambda v: v, {})


class TestLabels:
    def test_late_label_trains_the_window_it_belongs_to(self) -> None:
        """A label arriving after the window was predicted is learned, prequentially scored."""
        p = _pipeline()
        preds = _feed(p, 0.0, 50, 1.0)  # 5 windows, ends at 0.9, 1.9, ...
        assert len(preds) == 5 and all(pr.label is None for pr in preds)
        assert p.apply_label("one", 0.0, 2.0, False, 5.0) == "applied"
        assert p.model.n_learned == 2  # windows ending at 0.9 and 1.9
        assert p.model.evaluation.n == 2

    def test_label_is_not_learned_twice(self) -> None:
        """Repeating a label for windows already learned changes nothing."""
        p = _pipeline()
        _feed(p, 0.0, 30, 1.0)
        p.apply_label("one", 0.0, 3.0, False, 5.0)
        n = p.model.n_learned
        assert p.apply_label("one", 0.0, 2.9, False, 5.0) == "duplicate"
        assert p.model.n_learned == n

    def test_point_label_labels_the_containing_window(self) -> None:
        """{"label", "ts"} labels the window whose span contains ts."""
        p = _pipeline()
        _feed(p, 0.0, 30, 1.0)  # windows [0,0.9], [1,1.9], [2,2.9]
        assert p.apply_label("one", 1.5, 1.5, True, 5.0) == "applied"
        assert p.model.n_learned == 1

    def test_label_for_the_future_waits_for_its_windows(self) -> None:
        """A range reaching past the newest window labels windows as they complete."""
        p = _pipeline()
        _feed(p, 0.0, 10, 1.0)
        assert p.apply_label("one", 0.5, 3.5, False, 1.0) == "applied"
        _feed(p, 1.0, 30, 1.0)  # windows end at 1.9, 2.9, 3.9
        assert p.model.n_learned == 3  # 0.9, 1.9, 2.9 ; 3.9 is outside

    def test_label_older_than_horizon_is_too_late(self) -> None:
        """Windows older than the horizon are gone: the label is reported too_late."""
        p = _pipeline(horizon=2.0)
        _feed(p, 0.0, 100, 1.0)
        assert p.apply_label("one", 0.0, 1.0, False, 10.0) == "too_late"
        assert p.model.n_learned == 0

    def test_test_then_train(self) -> None:
        """The prediction scored is the one made before learning that window."""
        p = _pipeline()
        for k in range(20):
            level = 1.0 if k % 2 else 5.0
            _feed(p, k * 1.0, 10, level)
            p.apply_label("hi" if level > 2 else "lo", k * 1.0, k * 1.0 + 0.95, False, k + 1.0)
        r = p.model.evaluation.report()
        assert r["n"] == 20 and r["confusion"].get("lo->None", 0) + r["confusion"].get("hi->None", 0) == 1
        assert r["recent"]["accuracy"] > 0.8


class TestLearners:
    def test_allow_list_and_config_union_agree(self) -> None:
        """Every params class in the config unions has a builder in the allow-list, and back."""
        from typing import get_args

        from pipelines.learners import CLASSIFIERS, DETECTORS, AnomalyParams, ClassifierParams

        def members(annotated: object) -> set[type]:
            inner = get_args(annotated)[0]
            return set(get_args(inner)) or {inner}

        assert members(ClassifierParams) == {a.params for a in CLASSIFIERS.values()}
        assert members(AnomalyParams) == {a.params for a in DETECTORS.values()}
        for name, allowed in {**CLASSIFIERS, **DETECTORS}.items():
            assert allowed.params.model_fields["model"].annotation.__args__ == (name,)  # type: ignore[union-attr]

    def test_gaussian_nb_reliance_ranks_features(self) -> None:
        """explain() of river's GaussianNB ranks features, not classes (river keys its Gaussians
        class -> feature; read the other way round the ranking was of the classes)."""
        from river import naive_bayes

        from pipelines.learners import explain

        m = naive_bayes.GaussianNB()
        for i in range(40):
            c = i % 3
            m.learn_one({"sep": float(c) + 0.01 * (i % 5), "noise": float(i % 7)}, f"class{c}")
        r = explain(m)
        assert r["kind"] == "class_separation"
        assert list(r["features"]) == ["sep", "noise"]

    def test_predict_and_score_change_nothing(self) -> None:
        """predict and score are pure (the pickled state is unchanged); learning is separate.

        From the second window on: river's MinMaxScaler reads its running min/max from
        defaultdicts, so transforming a feature it never learned adds an empty entry (which
        changes no value). There is no river switch for this (0.26 lists ``pure_inference_mode``
        in ``river.compose.__all__`` but does not define it), and none is needed."""
        import pickle

        from pipelines.learners import HalfSpaceTreesParams, LifecycleParams

        m = TaskModel(
            "t",
            GaussianNBParams(model="gaussian_nb"),
            HalfSpaceTreesParams(model="half_space_trees", warmup=5, hold=2, n_trees=3),
            lifecycle=LifecycleParams(challenger=GaussianNBParams(model="gaussian_nb")),
        )
        rng = np.random.default_rng(0)
        for i in range(60):
            x = {"a": float(rng.normal(i % 2)), "b": float(rng.normal())}
            before = pickle.dumps(m)
            pred, _ = m.predict(x)
            v = m.score(x)
            assert i == 0 or pickle.dumps(m) == before
            m.learn_unlabelled(x, v)
            m.learn(x, str(i % 2), pred)
        assert m.n_scored == 60 and m.n_learned == 60

    def test_score_alarm_matches_what_learning_records(self) -> None:
        """The alarm flag score() predicts is the one learn_unlabelled counts (off-delay included)."""
        from pipelines.learners import HalfSpaceTreesParams

        m = TaskModel(
            "t",
            GaussianNBParams(model="gaussian_nb"),
            HalfSpaceTreesParams(model="half_space_trees", warmup=20, hold=3, tail=0.05),
        )
        rng = np.random.default_rng(1)
        alarms = 0
        for i in range(300):
            x = {"a": float(rng.normal(8 if i % 50 == 49 else 0)), "b": float(rng.normal())}
            alarm = m.score(x).alarm
            m.learn_unlabelled(x)
            alarms += alarm
        assert alarms == m.n_alarms > 0


@pytest.fixture
def _river_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    """river.checks' data for a multiclass classifier, without its module-level sklearn import.

    river's ``_yield_datasets`` imports scikit-learn first thing, for regression data
    (``load_linnerud``) that a classifier never gets; scikit-learn is not a dependency here.
    These are the datasets it yields for a classifier, all shipped inside river."""
    import river.checks
    from river import datasets

    def classifier_datasets(model: object, scale: int = 1) -> Iterator[Any]:
        yield datasets.Phishing().take(200 * scale)
        yield ((x, np.bool_(y)) for x, y in datasets.Phishing().take(200 * scale))
        yield datasets.ImageSegments().take(200 * scale)

    monkeypatch.setattr(river.checks, "_yield_datasets", classifier_datasets)


@pytest.mark.usefixtures("_river_datasets")
@pytest.mark.parametrize(
    "model",
    [
        "hoeffding_tree",
        "hoeffding_adaptive_tree",
        "arf",
        "logistic",
        "gaussian_nb",
        "knn",
        "fast_gnb",
        "fast_softmax",
    ],
)
def test_river_estimator_checks(model: str) -> None:
    """edged's wrapped classifier (TaskModel behind river's Classifier API) passes river's
    check_estimator for every allow-listed model."""
    from river.checks import check_estimator

    from pipelines.learners import CLASSIFIERS
    from pipelines.learners.estimators import TaskClassifier

    assert model in CLASSIFIERS
    params: dict[str, Any] = {"model": model}
    if model == "arf":
        params["n_models"] = 2  # 10 trees check the same code ten times over, 5x slower
    check_estimator(TaskClassifier(params))
