"""Fast learners (pipelines.fastlearn): river's conventions, river's predictions, exact merges,
serialisation without pickle, and checkpoints through the ModelStore (issue 11)."""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from river import checks, datasets, linear_model, naive_bayes, optim, preprocessing

from edged.config import parse
from edged.replay import replay
from edged.state import ModelStore, load_key
from pipelines.fastlearn import FastGaussianNB, FastSoftmax
from pipelines.fastpath import FeatureVector
from pipelines.learners import (
    FastGaussianNBParams,
    FastSoftmaxParams,
    LifecycleParams,
    LogisticParams,
    TaskModel,
    explain,
)
from pipelines.learners.explain import _separation
from tests.conftest import DATA, REPO

Row = tuple[np.ndarray, tuple[str, ...], dict[str, float], str]

STREAMS = {
    # BasicMotions train then test stream as the example config windows them (320 windows, 84 features)
    "basic_motions": (
        "examples/basic_motions.toml",
        [DATA / "basic_motions" / "stream_train.csv", DATA / "basic_motions" / "stream_test.csv"],
        {},
    ),
    # the CWRU excerpt with the example's envelope features, hop 512 for more windows (221, 10 features)
    "cwru": ("examples/cwru.toml", [DATA / "cwru" / "excerpt.csv.gz"], {"hop": 512}),
}


def _config(config: str, over: dict[str, Any], classifier: dict[str, Any]) -> Any:
    raw = tomllib.loads((REPO / config).read_text())
    task = next(iter(raw["tasks"]))
    raw["tasks"][task].update(over, classifier=classifier)
    return parse(raw, config, (REPO / config).parent)


@pytest.fixture(scope="module")
def streams() -> dict[str, list[Row]]:
    """Each labelled window's features as edged computes them (vector, names, dict) and its label,
    in replay order, captured at TaskModel.learn."""
    out: dict[str, list[Row]] = {}
    original = TaskModel.learn

    def capture(self: TaskModel, x: Any, y: str, y_pred: str | None) -> None:
        assert isinstance(x, FeatureVector)
        rows.append((x.vec.copy(), x.names, dict(x.as_dict()), y))
        original(self, x, y, y_pred)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TaskModel, "learn", capture)
        for name, (config, files, over) in STREAMS.items():
            rows: list[Row] = []
            replay(_config(config, over, {"model": "fast_gnb"}), files)
            out[name] = rows
    return out


def _label(proba: dict[Any, float]) -> Any:
    return max(proba, key=proba.__getitem__) if proba else None


def _prequential(river_model: Any, fast: Any, rows: list[Row]) -> tuple[float, float, float]:
    """Share of windows where the fast model (array path) predicts river's label, the same through
    its dict path, and the largest probability difference; each window predicted, then learned."""
    by_dict = copy.deepcopy(fast)
    fast.bind(rows[0][1])
    same = same_dict = 0
    worst = 0.0
    for vec, _, x, y in rows:
        want = river_model.predict_proba_one(x)
        got = dict(zip(fast.classes, fast.predict_proba_array(vec).tolist(), strict=True))
        same += _label(want) == _label(got)
        same_dict += _label(want) == _label(by_dict.predict_proba_one(x))
        if want:
            assert set(want) == set(got)
            worst = max(worst, max(abs(want[k] - got[k]) for k in want))
        river_model.learn_one(x, y)
        fast.learn_array(vec, y)
        by_dict.learn_one(x, y)
    return same / len(rows), same_dict / len(rows), worst


# -- river's conventions -----------------------------------------------------------------------------
def _river_checks() -> list[Any]:
    """river.checks.check_estimator's checks, one test each, for both learners and each set of
    _unit_test_params. river.checks imports sklearn, for its regression datasets only; classifiers
    never use it, so without sklearn a stand-in module spares the test dependency."""
    stub = None
    if importlib.util.find_spec("sklearn") is None:
        stub = types.ModuleType("sklearn")
        stub.datasets = types.ModuleType("sklearn.datasets")  # type: ignore[attr-defined]
        sys.modules["sklearn"] = stub
    try:
        out = []
        for cls in (FastGaussianNB, FastSoftmax):
            for params in cls._unit_test_params():
                model = cls(**params)
                for check in checks.yield_checks(model):  # datasets are made here, sklearn not needed later
                    if check.__name__ not in model._unit_test_skips():
                        out.append(
                            pytest.param(model, check, id=f"{cls.__name__}{params or ''}-{check.__name__}")
                        )
        return out
    finally:
        if stub is not None:
            del sys.modules["sklearn"]


class TestRiverConventions:
    @pytest.mark.parametrize("model, check", _river_checks())
    def test_river_check(self, model: Any, check: Any) -> None:
        """Every check of river.checks passes (run as check_estimator runs them: on a clone)."""
        check(model.clone())

    def test_a_river_pipeline_takes_them(self) -> None:
        """They compose like any river classifier and predict exactly river's on river's datasets."""
        ours = preprocessing.StandardScaler() | FastGaussianNB()
        theirs = preprocessing.StandardScaler() | naive_bayes.GaussianNB()
        for x, y in datasets.ImageSegments().take(500):
            assert ours.predict_one(x) == theirs.predict_one(x)
            ours.learn_one(x, y)
            theirs.learn_one(x, y)

    def test_clone_keeps_hyperparameters(self) -> None:
        """Hyperparameters are __init__ arguments: clone() rebuilds an untrained copy with them."""
        m = FastSoftmax(lr=0.2, l2=0.01)
        m.learn_one({"a": 1.0}, "x")
        c = m.clone()
        assert (c.lr, c.l2, c.classes, c.features) == (0.2, 0.01, [], [])
        with pytest.raises(ValueError, match="lr"):
            FastSoftmax(lr=0.0)


# -- river's predictions on edged's features -----------------------------------------------------------
class TestAgreementWithRiver:
    @pytest.mark.parametrize("stream", list(STREAMS))
    def test_gaussian_nb_predicts_what_river_predicts(
        self, streams: dict[str, list[Row]], stream: str
    ) -> None:
        """FastGaussianNB vs river's GaussianNB, test-then-train on edged's features: 100 % of the
        labels the same (measured: 320/320 BasicMotions, 221/221 CWRU) and probabilities within 1e-9
        (measured: 3e-14)."""
        same, same_dict, worst = _prequential(naive_bayes.GaussianNB(), FastGaussianNB(), streams[stream])
        assert same == 1.0 and same_dict == 1.0
        assert worst < 1e-9

    def test_gaussian_nb_reliance_is_the_fisher_ratio_of_river_gaussians(
        self, streams: dict[str, list[Row]]
    ) -> None:
        """class_separation per feature equals _separation over river's GaussianNB's Gaussians
        arranged feature -> class, and explain() of river's GaussianNB reports the same features
        (river keys them class -> feature; explain once read that as feature -> class and so
        ranked classes, not features)."""
        river_model, fast = naive_bayes.GaussianNB(), FastGaussianNB()
        for _, _, x, y in streams["basic_motions"]:
            river_model.learn_one(x, y)
            fast.learn_one(x, y)
        by_feature: dict[str, dict[str, Any]] = {}
        for c, per_feature in river_model.gaussians.items():
            for f, g in per_feature.items():
                by_feature.setdefault(f, {})[c] = g
        want = _separation(by_feature, 10)
        got = fast.reliance(10)
        assert got["kind"] == "class_separation" and list(got["features"]) == list(want)
        assert got["features"] == pytest.approx(want, rel=1e-3)
        of_river = explain(river_model, 10)
        assert of_river["kind"] == "class_separation" and of_river["features"] == want
        assert set(of_river["features"]) <= set(fast.features)

    @pytest.mark.parametrize("stream", list(STREAMS))
    @pytest.mark.parametrize("lr", [0.05, 0.01])  # edged's `logistic` default, river's default
    def test_softmax_predicts_what_river_predicts(
        self, streams: dict[str, list[Row]], stream: str, lr: float
    ) -> None:
        """FastSoftmax vs StandardScaler | SoftmaxRegression(SGD(lr)): measured 100 % of the labels
        the same on both streams at both rates, probabilities within 1e-16; asserted >= 99 % (summation
        order may flip a near tie) and within 1e-6."""
        river_model = preprocessing.StandardScaler() | linear_model.SoftmaxRegression(optimizer=optim.SGD(lr))
        same, same_dict, worst = _prequential(river_model, FastSoftmax(lr=lr), streams[stream])
        assert same >= 0.99 and same_dict >= 0.99
        assert worst < 1e-6

    @pytest.mark.parametrize(
        "fast, slow",
        [
            ({"model": "fast_gnb"}, {"model": "gaussian_nb"}),
            ({"model": "fast_softmax", "lr": 0.1}, {"model": "logistic", "lr": 0.1}),
        ],
    )
    def test_replay_through_the_service_code_path(self, fast: dict[str, Any], slow: dict[str, Any]) -> None:
        """edged replay with a fast learner (array path in TaskModel) gives the river learner's
        metrics and explains itself in the same terms (reliance kind), with a size."""
        config, files, over = STREAMS["basic_motions"]
        a = replay(_config(config, over, fast), files)["tasks"]["activity"]
        b = replay(_config(config, over, slow), files)["tasks"]["activity"]
        for key in ("accuracy", "macro_f1", "kappa", "confusion", "windows", "n_learned"):
            assert a[key] == b[key], key
        assert a["model"]["algorithm"] == fast["model"]
        assert a["model"]["reliance"]["kind"] == b["model"]["reliance"]["kind"]
        # the same features in the same order (gaussian_nb's too, since explain reads river's
        # class -> feature Gaussians the right way round)
        assert list(a["model"]["reliance"]["features"]) == list(b["model"]["reliance"]["features"])
        assert a["model"]["reliance"]["features"] == pytest.approx(
            b["model"]["reliance"]["features"], rel=1e-3
        )
        assert 0 < a["model"]["size_bytes"] < b["model"]["size_bytes"]


# -- merge ---------------------------------------------------------------------------------------------
class TestMerge:
    @pytest.mark.parametrize("stream", list(STREAMS))
    def test_two_halves_merge_into_the_whole(self, streams: dict[str, list[Row]], stream: str) -> None:
        """Two models trained on the two halves of a stream, merged, equal one model trained on the
        whole stream: statistics allclose, every prediction the same."""
        rows = streams[stream]
        half = len(rows) // 2
        whole, first, second = FastGaussianNB(), FastGaussianNB(), FastGaussianNB()
        for i, (vec, names, _, y) in enumerate(rows):
            part = first if i < half else second
            for m in (whole, part):
                assert m.bind(names)
                m.learn_array(vec, y)
        merged = first.merge(second)
        order = [merged.classes.index(c) for c in whole.classes]
        assert merged.features == whole.features
        np.testing.assert_array_equal(merged.class_count[order], whole.class_count)
        np.testing.assert_array_equal(merged.n[order], whole.n)
        np.testing.assert_allclose(merged.mean[order], whole.mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(merged.m2[order], whole.m2, rtol=1e-9, atol=1e-9)
        for vec, _, _, _ in rows:
            a, b = whole.predict_proba_array(vec), merged.predict_proba_array(vec)[order]
            assert np.argmax(a) == np.argmax(b)
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)

    def test_classes_and_features_are_matched_by_name(self) -> None:
        """Models that met different classes and features, in other orders, merge by name; neither
        input changes."""
        rng = np.random.default_rng(7)
        data = [
            ({"a": rng.normal(c), "b": rng.normal(-c), "c": rng.normal()}, c) for c in rng.integers(0, 3, 300)
        ]
        whole = FastGaussianNB()
        for x, y in data:
            whole.learn_one(x, y)
        left, right = FastGaussianNB(), FastGaussianNB()
        for x, y in data:
            if y == 0 or x["c"] > 0:
                left.learn_one({k: x[k] for k in ("a", "b")}, y)
            else:
                right.learn_one({k: x[k] for k in ("c", "b", "a")}, y)
        before = pickle_bytes(left), pickle_bytes(right)
        merged = left.merge(right)
        assert (pickle_bytes(left), pickle_bytes(right)) == before
        assert sorted(merged.classes) == [0, 1, 2] and sorted(merged.features) == ["a", "b", "c"]
        assert merged.class_count.sum() == 300
        for f in ("a", "b"):
            j, k = merged.features.index(f), whole.features.index(f)
            for c in (0, 1, 2):
                i, m = merged.classes.index(c), whole.classes.index(c)
                assert merged.n[i, j] == whole.n[m, k]
                assert merged.mean[i, j] == pytest.approx(whole.mean[m, k], rel=1e-12)
                assert merged.m2[i, j] == pytest.approx(whole.m2[m, k], rel=1e-9)

    def test_merging_into_an_empty_model_copies(self) -> None:
        """An empty model merged with a trained one predicts exactly what the trained one does."""
        m = FastGaussianNB()
        for x, y in datasets.Phishing().take(100):
            m.learn_one(x, y)
        e = FastGaussianNB().merge(m)
        for x, _ in datasets.Phishing().take(50):
            assert e.predict_proba_one(x) == m.predict_proba_one(x)


def pickle_bytes(obj: Any) -> bytes:
    import pickle

    return pickle.dumps(obj)


# -- serialisation without pickle ------------------------------------------------------------------------
def _npz_roundtrip(d: dict[str, Any]) -> Any:
    buf = io.BytesIO()
    np.savez(buf, **d)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _json_roundtrip(d: dict[str, Any]) -> Any:
    return json.loads(json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in d.items()}))


class TestStateDict:
    @pytest.mark.parametrize("cls", [FastGaussianNB, FastSoftmax])
    @pytest.mark.parametrize("via", [_npz_roundtrip, _json_roundtrip], ids=["npz", "json"])
    def test_roundtrip_gives_identical_predictions(
        self, cls: Any, via: Any, streams: dict[str, list[Row]]
    ) -> None:
        """state_dict -> npz (allow_pickle=False) or JSON -> from_state_dict: the same probabilities,
        bit for bit, and the same model after more learning."""
        rows = streams["basic_motions"]
        m = cls()
        for x, y in ((r[2], r[3]) for r in rows[:200]):
            m.learn_one(x, y)
        d = m.state_dict()
        assert all(
            isinstance(v, np.ndarray | int | float | str)
            or (isinstance(v, list) and all(isinstance(s, str) for s in v))
            for v in d.values()
        )
        back = cls.from_state_dict(via(d))
        assert back.classes == m.classes and back.features == m.features
        for _, _, x, y in rows[200:]:
            assert back.predict_proba_one(x) == m.predict_proba_one(x)
            back.learn_one(x, y)
            m.learn_one(x, y)
        assert pickle_bytes(back.state_dict()) == pickle_bytes(m.state_dict())

    def test_label_and_feature_kinds_survive(self) -> None:
        """Integer, boolean and float labels and feature keys come back as what they were."""
        m = FastGaussianNB()
        m.learn_one({0: 1.0, "x": 2.0, 1.5: 0.0}, True)
        m.learn_one({0: 2.0, "x": 1.0}, 7)
        back = FastGaussianNB.from_state_dict(_json_roundtrip(m.state_dict()))
        assert back.classes == [True, 7] and [type(c) for c in back.classes] == [bool, int]
        assert back.features == [0, "x", 1.5]
        with pytest.raises(ValueError, match="cannot go in a state dict"):
            bad = FastGaussianNB()
            bad.learn_one({"a": 1.0}, ("a", "tuple"))
            bad.state_dict()

    @pytest.mark.parametrize(
        "change, match",
        [
            ({"kind": "fast_softmax"}, "not a 'fast_gnb'"),
            ({"format": 99}, "format"),
            ({"m2": np.zeros((1, 1))}, "shape"),
            ({"classes": ["a", "a"]}, "duplicate"),
            ({"class_kinds": ["tuple", "str"]}, "kind"),
            ({"mean": "not numbers"}, "not numeric"),
            ({"features": [1, 2]}, "list of strings"),
        ],
    )
    def test_malformed_state_is_refused(self, change: dict[str, Any], match: str) -> None:
        """A state dict with the wrong kind, format, shapes, keys or types raises ValueError, naming it."""
        m = FastGaussianNB()
        m.learn_one({"u": 1.0, "v": 2.0}, "a")
        m.learn_one({"u": 2.0, "v": 1.0}, "b")
        with pytest.raises(ValueError, match=match):
            FastGaussianNB.from_state_dict({**m.state_dict(), **change})


# -- the array path in edged --------------------------------------------------------------------------
class TestArrayPath:
    def test_numba_is_imported_only_when_a_fast_learner_is_built(self) -> None:
        """The allow-list and the task pipeline import neither numba nor pipelines.fastlearn (the
        config is validated before the JIT cache directory is set); building a fast learner does."""
        code = (
            "import sys; import pipelines.learners as L, pipelines.task; "
            "a = 'numba' in sys.modules or 'pipelines.fastlearn' in sys.modules; "
            "L.build_classifier(L.FastGaussianNBParams(model='fast_gnb')); "
            "print(a, 'numba' in sys.modules)"
        )
        r = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
        )
        assert r.stdout.split() == ["False", "True"], r.stderr

    def test_nan_is_an_absent_feature(self) -> None:
        """A NaN entry of the vector acts as the key missing from the dict (river's convention)."""
        a, b = FastSoftmax(), FastSoftmax()
        a.bind(("p", "q"))
        for i in range(30):
            x = {"p": float(i % 3), "q": float(i % 5)} if i % 4 else {"q": float(i % 5)}
            vec = np.array([x.get("p", np.nan), x["q"]])
            np.testing.assert_array_equal(a.predict_proba_array(vec), list(b.predict_proba_one(x).values()))
            a.learn_array(vec, i % 2)
            b.learn_one(x, i % 2)

    def test_layout_is_adopted_extended_or_refused(self) -> None:
        """bind() adopts a layout, extends a prefix of it, and refuses another order (the caller then
        falls back to dicts, which map features by name)."""
        m = FastGaussianNB()
        assert m.bind(("a", "b")) and m.features == ["a", "b"]
        assert m.bind(("a", "b", "c")) and m.features == ["a", "b", "c"]
        assert not m.bind(("b", "a", "c"))
        with pytest.raises(ValueError, match="shape"):
            m.predict_proba_array(np.zeros(2))

    def test_task_model_falls_back_to_dicts_for_another_layout(self) -> None:
        """A TaskModel whose fast learner was trained on another layout still predicts by name."""
        tm = TaskModel("t", FastGaussianNBParams(model="fast_gnb"))
        for e in (0.0, 0.1, 0.2):
            tm.classifier.learn_one({"b": 1.0 + e, "a": 0.0 - e}, "x")
            tm.classifier.learn_one({"b": 0.0 - e, "a": 1.0 + e}, "y")
        assert tm.predict(FeatureVector(np.array([1.0, 0.0]), ("a", "b")))[0] == "y"
        assert tm.predict({"a": 1.0, "b": 0.0})[0] == "y"

    def test_challenger_and_detector_get_what_they_take(self) -> None:
        """A fast champion with a river challenger and anomaly detector: the first gets arrays, the
        others dicts; both learn the same windows."""
        from pipelines.learners import HalfSpaceTreesParams

        tm = TaskModel(
            "t",
            FastSoftmaxParams(model="fast_softmax"),
            HalfSpaceTreesParams(model="half_space_trees", warmup=0),
            lifecycle=LifecycleParams(challenger=LogisticParams(model="logistic")),
        )
        names = ("a", "b")
        for i in range(50):
            fv = FeatureVector(np.array([float(i % 2), float(1 - i % 2)]), names)
            tm.score(fv)
            tm.learn(fv, "on" if i % 2 else "off", tm.predict(fv)[0])
        assert tm.classifier._bound is names and tm.n_learned == 50
        report = tm.challenger_report()
        assert report is not None and report["windows"] == 50
        assert tm.predict(FeatureVector(np.array([1.0, 0.0]), names))[0] == "on"
        assert tm._predict(tm.challenger, {"a": 1.0, "b": 0.0})[0] == "on"


# -- checkpoints -----------------------------------------------------------------------------------------
def _task_model(params: Any, n: int) -> TaskModel:
    m = TaskModel("activity", params, fingerprint="fp1")
    names = ("a", "b")
    for i in range(n):
        fv = FeatureVector(np.array([float(i % 2), 1.0 - i % 2]), names)
        m.learn(fv, "on" if i % 2 else "off", m.predict(fv)[0])
    return m


FAST = [FastGaussianNBParams(model="fast_gnb"), FastSoftmaxParams(model="fast_softmax")]


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path, load_key(tmp_path, None), keep=3)


class TestCheckpoints:
    """tests/test_state.py's tamper and crash cases, with a task on a fast learner."""

    @pytest.mark.parametrize("params", FAST, ids=lambda p: p.model)
    def test_roundtrip(self, store: ModelStore, params: Any) -> None:
        """A saved model loads back (through the restricted unpickler) and predicts the same."""
        m = _task_model(params, 10)
        store.save("activity", m, {"version": m.version, "fingerprint": m.fingerprint})
        ckpt, loaded, problems = store.load_latest("activity", "fp1")
        assert problems == [] and ckpt is not None and loaded.n_learned == 10
        fv = FeatureVector(np.array([1.0, 0.0]), ("a", "b"))
        assert loaded.predict(fv) == m.predict(fv)
        assert pickle_bytes(loaded.classifier.state_dict()) == pickle_bytes(m.classifier.state_dict())

    @pytest.mark.parametrize("params", FAST, ids=lambda p: p.model)
    def test_tampered_payload_is_refused_and_older_used(self, store: ModelStore, params: Any) -> None:
        """A flipped payload byte is refused (never unpickled); the previous checkpoint loads."""
        store.save("activity", _task_model(params, 2), {"fingerprint": "fp1", "n": 2})
        p = store.save("activity", _task_model(params, 4), {"fingerprint": "fp1", "n": 4})
        data = bytearray(p.read_bytes())
        data[-5] ^= 0xFF
        p.write_bytes(bytes(data))
        ckpt, model, problems = store.load_latest("activity", "fp1")
        assert ckpt is not None and ckpt.header["n"] == 2 and model.n_learned == 2
        assert any("checksum" in q or "HMAC" in q for q in problems)

    @pytest.mark.parametrize("params", FAST, ids=lambda p: p.model)
    def test_truncated_file_falls_back(self, store: ModelStore, params: Any) -> None:
        """A torn newest file is refused and the previous one is used."""
        store.save("activity", _task_model(params, 2), {"fingerprint": "fp1"})
        p = store.save("activity", _task_model(params, 5), {"fingerprint": "fp1"})
        p.write_bytes(p.read_bytes()[:-100])
        _, model, problems = store.load_latest("activity", "fp1")
        assert model.n_learned == 2 and "truncated" in problems[0]

    @pytest.mark.parametrize("params", FAST, ids=lambda p: p.model)
    def test_crash_before_rename_leaves_a_loadable_model(self, store: ModelStore, params: Any) -> None:
        """A temp file left by a crash between write and rename is ignored; the last good file loads."""
        store.save("activity", _task_model(params, 3), {"fingerprint": "fp1"})
        (store.root / "activity" / ".ckpt-00000002.edgedmodel.tmp").write_bytes(b"EDGEDCKPT1\n{half")
        _, model, problems = store.load_latest("activity", "fp1")
        assert model.n_learned == 3 and problems == []
