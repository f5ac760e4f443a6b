"""Issue 17: no code execution from the state directory or an import, labels that cannot poison
a model, identities that cannot be borrowed, monotonic truth across restores, bounds.

Each class is one finding of the issue; the code-execution tests assert that a marker file was
NOT created by a payload that would create it if it were ever interpreted.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import REPO


def _recording(path: Path, seconds: float = 3.0, rate: float = 1000.0) -> Path:
    """A small recording with the shipped config's channels (IMU at 1 kHz, temperature)."""
    rng = np.random.default_rng(1)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = rng.standard_normal((n, 6))
    with open(path, "w") as f:
        f.write("t,ax,ay,az,gx,gy,gz,temperature\n")
        for i in range(n):
            f.write(f"{t[i]:.4f}," + ",".join(f"{v:.4f}" for v in x[i]) + ",21.5\n")
    return path


class TestNumbaCacheIsNotLoadedFromTheStateDir:
    """Finding 1: a poisoned ``.nbi`` under ``<state dir>/numba-cache`` never runs."""

    def test_poisoned_index_in_state_dir_is_never_unpickled(self, tmp_path: Path) -> None:
        """The kernels of a replay are compiled, not loaded from ``state/numba-cache``, whose index
        files were replaced by pickles that call ``os.system``; the control run (the same files,
        named explicitly as numba's cache) shows the files would run if ever loaded."""
        import numba

        cfg = tmp_path / "config.toml"
        cfg.write_text((REPO / "config.toml").read_text())
        rec = _recording(tmp_path / "rec.csv")
        cache = tmp_path / "state" / "numba-cache"
        base = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "EDGED_NUMBA_CACHE")}
        argv = [sys.executable, "-m", "edged", "replay", "-c", str(cfg), str(rec), "--json", "--no-progress"]

        def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)

        built = run(dict(base, NUMBA_CACHE_DIR=str(cache)))  # a genuine cache where the old code kept it
        assert built.returncode == 0, built.stderr
        index = list(cache.rglob("*.nbi"))
        assert index, "no numba index files were written"
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):  # type: ignore[no-untyped-def]
                return (os.system, (f"touch {marker}",))

        for p in index:
            p.write_bytes(pickle.dumps(numba.__version__) + pickle.dumps(Evil()))
        out = run(dict(base))
        assert out.returncode == 0, out.stderr
        assert not marker.exists(), "a numba index file in the state directory was unpickled"
        control = run(dict(base, NUMBA_CACHE_DIR=str(cache)))  # explicitly trusted by the launcher
        assert marker.exists(), (control.returncode, control.stderr[-2000:])


# -- finding 2: no pickle code path that a file can steer ------------------------------------------------
def _small_model(n: int = 6) -> Any:
    from pipelines.learners import HalfSpaceTreesParams, HoeffdingTreeParams, TaskModel

    m = TaskModel(
        "activity",
        HoeffdingTreeParams(model="hoeffding_tree"),
        HalfSpaceTreesParams(model="half_space_trees", warmup=0),
        fingerprint="fp1",
    )
    for i in range(n):
        x = {"a": float(i % 2), "b": 1.0 - i % 2}
        m.score(x)
        m.learn(x, "on" if i % 2 else "off", m.predict(x)[0])
    return m


def _global(module: str, name: str) -> bytes:
    """Protocol-4 opcodes pushing ``module.name`` (STACK_GLOBAL: dotted names allowed by pickle)."""
    return _str(module) + _str(name) + pickle.STACK_GLOBAL


def _str(s: str) -> bytes:
    b = s.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(b)]) + b


def _call(func: bytes, *args: bytes) -> bytes:
    return func + pickle.MARK + b"".join(args) + pickle.TUPLE + pickle.REDUCE


def _program(body: bytes) -> bytes:
    return pickle.PROTO + b"\x04" + body + pickle.STOP


class _Reduce:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (self.cmd,))


class _Nested:  # the gadget hidden inside an otherwise plausible object
    def __init__(self, cmd: str) -> None:
        self.inner = [1.0, {"x": _Reduce(cmd)}]


def _gadgets(cmd: str) -> dict[str, bytes]:
    """Pickles that run ``cmd`` if the unpickler lets them."""

    getattr_ = _global("builtins", "getattr")
    # getattr(getattr(getattr(random.Random.__init__, "__globals__"), "get")("_os"), "system")(cmd)
    init = _call(getattr_, _global("random", "Random"), _str("__init__"))
    glob = _call(getattr_, init, _str("__globals__"))
    os_mod = _call(_call(getattr_, glob, _str("get")), _str("_os"))
    via_getattr = _call(_call(getattr_, os_mod, _str("system")), _str(cmd))
    # operator.attrgetter("__init__.__globals__")(random.Random)["_os"] ... through attrgetter
    ag = _call(_call(_global("operator", "attrgetter"), _str("_os.system")), _global("random", "Random"))
    via_attrgetter = _call(
        _call(_global("operator", "attrgetter"), _str("__init__.__globals__")), _global("random", "Random")
    )
    return {
        "reduce": pickle.dumps(_Reduce(cmd), protocol=pickle.HIGHEST_PROTOCOL),
        "nested_reduce": pickle.dumps(_Nested(cmd), protocol=pickle.HIGHEST_PROTOCOL),
        "dotted_in_river_module": _program(_call(_global("river.datasets.base", "os.system"), _str(cmd))),
        "dotted_in_allowed_module": _program(_call(_global("random", "_os.system"), _str(cmd))),
        "dotted_in_model_module": _program(_call(_global("pipelines.learners", "os.system"), _str(cmd))),
        "dotted_from_model_class": _program(
            _call(_global("river.naive_bayes.gaussian", "GaussianNB.__init__.__globals__.get"), _str("os"))
        ),
        "builtins_getattr": _program(via_getattr),
        "operator_attrgetter": _program(_call(ag, _str(cmd))),
        "operator_attrgetter_globals": _program(via_attrgetter),
        "eval": _program(_call(_global("builtins", "eval"), _str(f"__import__('os').system({cmd!r})"))),
        "partial_of_system": _program(
            _call(_call(_global("functools", "partial"), _global("os", "system"), _str(cmd)))
        ),
        "deepcopy_of_reduce": _program(
            _call(_global("copy", "deepcopy"), pickle.dumps(_Reduce(cmd), protocol=0)[:-1])
        ),
    }


class TestRestrictedUnpickler:
    """Finding 2: a verified payload (signed with the right key) never runs code; a verified
    payload that is not a model falls back like a corrupt file."""

    def test_every_learner_configuration_still_round_trips(self) -> None:
        """The exact allow-list covers every configurable learner, detector and lifecycle."""
        import random

        from edged.state import unpickle_model
        from pipelines.learners import (
            ARFParams,
            GaussianNBParams,
            HalfSpaceTreesParams,
            HoeffdingAdaptiveTreeParams,
            HoeffdingTreeParams,
            KNNParams,
            LifecycleParams,
            LogisticParams,
            TaskModel,
        )

        rng = random.Random(2)
        clfs: list[Any] = [
            HoeffdingTreeParams(model="hoeffding_tree", leaf_prediction=lp, grace_period=20)
            for lp in ("mc", "nb", "nba")
        ]
        clfs += [
            HoeffdingAdaptiveTreeParams(model="hoeffding_adaptive_tree", grace_period=20),
            ARFParams(model="arf", n_models=2, grace_period=20),
            LogisticParams(model="logistic"),
            GaussianNBParams(model="gaussian_nb"),
            KNNParams(model="knn", window_size=50),
        ]
        for c in clfs:
            for lc in (
                LifecycleParams(),
                LifecycleParams(drift_detector="page_hinkley", challenger=c, min_windows=10, window=20),
            ):
                m = TaskModel(
                    "t",
                    c,
                    HalfSpaceTreesParams(model="half_space_trees", warmup=5, window_size=20),
                    fingerprint="x",
                    lifecycle=lc,
                )
                for i in range(600):
                    k = i % 3 if i < 300 else (i // 3) % 3
                    x = {"a": rng.gauss(k * 3, 1), "b": rng.gauss(-k, 1), "c": float(i % 5)}
                    m.score(x)
                    m.learn(x, ["off", "idle", "run"][k], m.predict(x)[0])
                back = unpickle_model(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL), "test")
                x = {"a": 3.0, "b": -1.0, "c": 1.0}
                assert back.predict(x) == m.predict(x), (c, lc)

    def test_fast_learners_and_discord_detector_round_trip(self) -> None:
        """The allow-list also covers the compiled fast learners and the discord detector with its
        alarm policy (numpy arrays inside them are rebuilt from bytes, nothing more)."""
        import random

        import numpy as np

        from edged.state import unpickle_model
        from pipelines.learners import HalfSpaceTreesParams, LifecycleParams, TaskModel
        from pipelines.learners.params import DiscordParams, FastGaussianNBParams, FastSoftmaxParams

        rng = random.Random(3)
        for c in (FastGaussianNBParams(model="fast_gnb"), FastSoftmaxParams(model="fast_softmax")):
            for a in (
                HalfSpaceTreesParams(model="half_space_trees", warmup=5, window_size=20),
                DiscordParams(model="discord", warmup=5),
            ):
                m = TaskModel("t", c, a, fingerprint="x", lifecycle=LifecycleParams())
                for i in range(300):
                    k = i % 3
                    x = {"a": rng.gauss(k * 3, 1), "b": rng.gauss(-k, 1)}
                    w = np.array([[x["a"]], [x["b"]]])
                    m.learn_unlabelled(x, m.score(x, w), w)
                    m.learn(x, ["off", "idle", "run"][k], m.predict(x)[0])
                back = unpickle_model(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL), "test")
                x, w = {"a": 3.0, "b": -1.0}, np.array([[3.0], [-1.0]])
                assert back.predict(x) == m.predict(x), (c, a)
                assert back.score(x, w) == m.score(x, w), (c, a)

    def test_signed_gadgets_never_run_and_the_older_checkpoint_loads(self, tmp_path: Path) -> None:
        """Each gadget, signed with the state key as the newest checkpoint, is refused at start
        (load_latest) and the previous good checkpoint is used; no marker file appears."""
        from edged.state import ModelStore, load_key

        store = ModelStore(tmp_path / "state", load_key(tmp_path / "state", None), keep=50)
        good = _small_model()
        store.save("activity", good, {"fingerprint": "fp1", "version": 1, "n": "good"})
        for name, payload in _gadgets(f"touch {tmp_path}/pwned").items():
            marker = tmp_path / "pwned"
            path = store.save("activity", good, {"fingerprint": "fp1", "version": 1, "n": name})
            header, _ = store.read_header(path)
            _resign(store, path, header, payload)
            ckpt, model, problems = store.load_latest("activity", "fp1")
            assert not marker.exists(), f"gadget {name} ran"
            assert model is not None and ckpt is not None and ckpt.header["n"] == "good", name
            assert problems and "verified but" in problems[0], (name, problems)
            path.unlink()

    def test_signed_payload_that_is_not_a_model_falls_back(self, tmp_path: Path) -> None:
        """A verified payload holding plain data (no gadget) is refused like a corrupt file."""
        from edged.state import ModelStore, load_key

        store = ModelStore(tmp_path / "state", load_key(tmp_path / "state", None))
        store.save("activity", _small_model(), {"fingerprint": "fp1", "n": "good"})
        for data in ({"a": 1}, 42, [1.0, 2.0], None):
            path = store.save("activity", _small_model(), {"fingerprint": "fp1", "n": "bad"})
            header, _ = store.read_header(path)
            _resign(store, path, header, pickle.dumps(data))
            ckpt, _, problems = store.load_latest("activity", "fp1")
            assert ckpt is not None and ckpt.header["n"] == "good" and "not a model" in problems[0]
            path.unlink()

    def test_import_signed_with_the_transfer_key_never_runs_a_gadget(self, tmp_path: Path) -> None:
        """``edged model import`` of gadget files signed with the transfer key: refused, no marker."""
        from edged.app import fingerprint, task_rate
        from edged.config import load
        from edged.state import encode_checkpoint

        cfg_path = tmp_path / "config.toml"
        cfg_path.write_text((REPO / "config.toml").read_text())
        cfg, _ = load(str(cfg_path))
        fp = fingerprint(cfg.tasks["activity"], task_rate(cfg, cfg.tasks["activity"]))
        key = tmp_path / "transfer.key"
        key.write_text("t" * 32)
        env = dict(os.environ, EDGED_NUMBA_CACHE="0")
        gadgets = _gadgets(f"touch {tmp_path}/pwned")
        for name in ("reduce", "dotted_in_river_module", "builtins_getattr", "operator_attrgetter"):
            f = tmp_path / f"{name}.edgedmodel"
            header = {"task": "activity", "fingerprint": fp, "version": 1, "number": 1}
            f.write_bytes(encode_checkpoint(header, gadgets[name], b"t" * 32))
            argv = ["model", "import", str(f), "--key-file", str(key), "-c", str(cfg_path)]
            r = subprocess.run(
                [sys.executable, "-m", "edged", *argv],
                capture_output=True,
                text=True,
                cwd=REPO,
                env=env,
                timeout=120,
            )
            assert not (tmp_path / "pwned").exists(), f"gadget {name} ran on import"
            assert r.returncode == 1 and "verified but" in r.stderr, (name, r.stderr[-1000:])


def _resign(store: Any, path: Path, header: dict[str, Any], payload: bytes) -> None:
    """Replace a checkpoint's payload and sign it properly with the store's key (a leaked key)."""
    from edged.state import encode_checkpoint

    h = {k: v for k, v in header.items() if k not in ("hmac", "payload_bytes", "payload_sha256")}
    path.write_bytes(encode_checkpoint(h, payload, store.key))


# -- finding 5 (checkpoints) and 6 (key): monotonic truth across file manipulation -------------------------
def _store(state: Path) -> Any:
    from edged.state import ModelStore, load_key

    return ModelStore(state, load_key(state, None), keep=10)


def _save(store: Any, task: str, version: int, tag: str) -> Path:
    m = _small_model()
    m.version = version
    m.max_version = max(m.max_version, version)
    return store.save(task, m, {"fingerprint": "fp1", "version": version, "tag": tag})


class TestCheckpointRollback:
    """Checkpoint numbers and task names are bound under the signature; a rollback by file
    manipulation is detected with a counter kept apart from the checkpoints."""

    def test_renamed_to_a_higher_number_is_refused(self, tmp_path: Path) -> None:
        """An old genuine file renamed to look newest is refused; the true newest loads."""
        store = _store(tmp_path / "state")
        old = _save(store, "activity", 1, "old")
        _save(store, "activity", 2, "new")
        os.replace(old, old.with_name("ckpt-00000009-v1.edgedmodel"))
        ckpt, _, problems = store.load_latest("activity", "fp1")
        assert ckpt is not None and ckpt.header["tag"] == "new"
        assert any("renamed or copied" in q for q in problems), problems

    def test_deleting_newer_checkpoints_is_detected_and_versions_not_reused(self, tmp_path: Path) -> None:
        """Deleting the newest saves is reported as a rollback; the restored model's next version
        is above every version handed out before."""
        store = _store(tmp_path / "state")
        for v in (1, 2, 3):
            _save(store, "activity", v, f"v{v}")
        for p in store.files("activity")[:2]:
            p.unlink()
        ckpt, model, problems = store.load_latest("activity", "fp1")
        assert ckpt is not None and ckpt.header["tag"] == "v1"
        assert any("rollback" in q for q in problems), problems
        model.new_version("recovery")
        assert model.version == 4
        again = _store(tmp_path / "state")  # a save after the rollback continues the numbering
        path = again.save("activity", model, {"fingerprint": "fp1", "version": model.version})
        assert path.name == "ckpt-00000004-v4.edgedmodel"

    def test_checkpoint_copied_between_tasks_is_refused(self, tmp_path: Path) -> None:
        """Two tasks with the same layout: a file of one copied into the other's directory is refused."""
        store = _store(tmp_path / "state")
        _save(store, "maintenance", 1, "maint")
        src = _save(store, "activity", 7, "act")
        for _ in range(3):
            _save(store, "maintenance", 1, "maint")
        dst = store.root / "maintenance" / "ckpt-00000050-v7.edgedmodel"
        dst.write_bytes(src.read_bytes())
        ckpt, _, problems = store.load_latest("maintenance", "fp1")
        assert ckpt is not None and ckpt.header["tag"] == "maint"
        assert any("renamed or copied" in q for q in problems), problems

    def test_tampered_or_deleted_counter_is_reported(self, tmp_path: Path) -> None:
        """The counter is signed: an edited counter, or a deleted one, is a reported problem."""
        state = tmp_path / "state"
        store = _store(state)
        _save(store, "activity", 1, "a")
        counter = state / "checkpoints.counter"
        counter.write_text(counter.read_text().replace('"number":1', '"number":0'))
        _, _, problems = _store(state).load_latest("activity", "fp1")
        assert any("does not verify" in q for q in problems), problems
        counter.unlink()
        _, _, problems = _store(state).load_latest("activity", "fp1")
        assert any("counter" in q and "missing" in q for q in problems), problems


class TestMissingKey:
    """Finding 6: deleting the key never silently makes a new one that discards the models."""

    def test_missing_key_with_checkpoints_is_an_error_with_the_fix(self, tmp_path: Path) -> None:
        """No key but signed checkpoints: StateError naming ``edged keys init``; files untouched."""
        import pytest

        from edged.state import StateError, load_key

        state = tmp_path / "state"
        store = _store(state)
        _save(store, "activity", 1, "a")
        before = sorted(p.name for p in store.files("activity"))
        (state / "state.key").unlink()
        with pytest.raises(StateError, match="edged keys init"):
            load_key(state, None)
        assert not (state / "state.key").exists()
        assert sorted(p.name for p in store.files("activity")) == before

    def test_fresh_state_dir_gets_a_key(self, tmp_path: Path) -> None:
        """A state directory without any checkpoint (a fresh clone, a new gateway) gets a key."""
        from edged.state import load_key

        key = load_key(tmp_path / "fresh", None)
        assert len(key) == 64 and (tmp_path / "fresh" / "state.key").stat().st_mode & 0o077 == 0
        assert load_key(tmp_path / "fresh", None) == key


# -- finding 4: seq never repeats after an older spool is restored; any corrupt spool is moved aside ------
def _emit(spool: Any, seq: Any, n: int) -> list[int]:
    out = []
    for _ in range(n):
        s = seq.next("activity")
        spool.put("edged/gw/prediction/activity", b'{"seq": %d}' % s, "prediction")
        out.append(s)
    return out


class TestSeqAcrossRestores:
    def test_restored_older_spool_never_repeats_seq_and_is_reported(self, tmp_path: Path) -> None:
        """spool.db replaced by an older copy (clean stops around it): seq continues from the
        highest durable floor, not the old spool's counter, and the restore is reported."""
        import shutil

        from edged.seq import SpoolSeq
        from edged.spool import Spool

        db, floor = tmp_path / "spool.db", tmp_path / "seq.json"
        spool = Spool(db)
        seq = SpoolSeq(spool, floor)
        _emit(spool, seq, 40)
        seq.close()
        spool.close()
        backup = tmp_path / "backup"
        backup.mkdir()
        for p in tmp_path.glob("spool.db*"):
            shutil.copy(p, backup / p.name)
        spool = Spool(db)
        seq = SpoolSeq(spool, floor)
        issued = _emit(spool, seq, 198)
        seq.close()
        spool.close()
        for p in tmp_path.glob("spool.db*"):
            p.unlink()
        for p in backup.iterdir():
            shutil.copy(p, tmp_path / p.name)
        restored = Spool(db)
        seq = SpoolSeq(restored, floor)
        assert seq.next("activity") == max(issued) + 1
        assert seq.problems and "older spool" in seq.problems[0]

    def test_restore_across_a_crash_is_also_caught(self, tmp_path: Path) -> None:
        """Without clean stops (floor = a reservation), an older spool copy still never repeats seq."""
        import shutil

        from edged.seq import SpoolSeq
        from edged.spool import Spool

        db, floor = tmp_path / "spool.db", tmp_path / "seq.json"
        spool = Spool(db)
        seq = SpoolSeq(spool, floor)
        _emit(spool, seq, 40)
        spool.close()  # no seq.close(): a crash
        backup = tmp_path / "backup"
        backup.mkdir()
        for p in tmp_path.glob("spool.db*"):
            shutil.copy(p, backup / p.name)
        spool = Spool(db)
        seq = SpoolSeq(spool, floor)
        issued = _emit(spool, seq, 1500)
        spool.close()
        for p in tmp_path.glob("spool.db*"):
            p.unlink()
        for p in backup.iterdir():
            shutil.copy(p, tmp_path / p.name)
        seq = SpoolSeq(Spool(db), floor)
        assert seq.next("activity") > max(issued)
        assert seq.problems and "older spool" in seq.problems[0]


class TestCorruptSpoolContents:
    """A valid SQLite spool with contents this code never writes is moved aside with a problem
    (an alert), never a crash at start."""

    def _spool(self, tmp_path: Path, sql: str) -> Any:
        import sqlite3

        from edged.seq import SpoolSeq
        from edged.spool import Spool

        db = tmp_path / "spool.db"
        s = Spool(db)
        seq = SpoolSeq(s, tmp_path / "seq.json")
        _emit(s, seq, 3)
        s.close()
        con = sqlite3.connect(db)
        con.executescript(sql)
        con.commit()
        con.close()
        return Spool(db)

    def test_bad_values_are_moved_aside(self, tmp_path: Path) -> None:
        """seq.next = 'abc', a text meta counter, an unknown kind, a dropped column: each moved aside."""
        cases = {
            "seq_text": "UPDATE seq SET next = 'abc';",
            "seq_negative": "UPDATE seq SET next = -5;",
            "meta_text": "INSERT OR REPLACE INTO meta (key, value) VALUES ('sent.alert', 'lots');",
            "meta_huge": "INSERT OR REPLACE INTO meta (key, value) VALUES ('clock', 1e300);",
            "kind": "UPDATE msg SET kind = 'evil';",
            "payload_type": "UPDATE msg SET payload = 3.5;",
            "schema": "DROP TABLE seq; CREATE TABLE seq (task TEXT PRIMARY KEY, nxt INTEGER);",
        }
        for name, sql in cases.items():
            d = tmp_path / name
            d.mkdir()
            spool = self._spool(d, sql)
            assert spool.problems and "moved aside" in spool.problems[0], name
            assert spool.unwritable is None and len(spool) == 0, name
            assert spool.put("edged/gw/alert", b"{}", "alert"), name
            assert list(d.glob("spool.db.corrupt-*")), name
            spool.close()


# -- finding 3: label authority ---------------------------------------------------------------------------
class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, topic: str, payload: dict[str, Any], kind: str) -> None:
        self.sent.append((topic, payload))


class _Plant:
    """The shipped config's engine on the simulated machine, faster than real time; wall = stream time."""

    def __init__(self, tmp_path: Path, overrides: str = "") -> None:
        from drivers.simulator import MachineWorld, SimImu, SimLabeler
        from edged.app import build_engine
        from edged.config import load
        from edged.seq import SeqStore

        p = tmp_path / "plant.toml"
        p.write_text((REPO / "config.toml").read_text() + overrides)
        cfg, _ = load(str(p))
        self.sink = _Sink()
        self.engine = build_engine(cfg, self.sink, SeqStore(None), wall=lambda t: t)
        self.world = MachineWorld(cfg.simulator, 0.0)
        self.imu = SimImu(world=self.world, rate_hz=cfg.sensors["imu"].rate_hz, channels=None, seed=1)
        self.imu.name = "imu"
        self.labeler = SimLabeler(self.world, cfg.simulator, {"activity"})
        self.t = 0.0

    def run(self, seconds: float, origin: str | None, extra: Any = None) -> list[dict[str, Any]]:
        """Advance; ground-truth labels arrive from ``origin`` (None: no labels); ``extra(t, preds)``
        may return more (payload, origin) label messages. Returns the activity predictions."""
        start = len(self.sink.sent)
        end = self.t + seconds
        while self.t < end:
            self.t += 0.1
            block = self.imu.read_block(self.t)
            if block is not None:
                self.engine.ingest(block)
            if origin is not None:
                for task, payload in self.labeler.poll(self.t, 0.0):
                    self.engine.on_label(task, payload, self.t, origin)
            if extra is not None:
                preds = [p for t, p in self.sink.sent[start:] if t == "prediction/activity"]
                for payload, src in extra(self.t, preds):
                    self.engine.on_label("activity", payload, self.t, src)
        return [p for t, p in self.sink.sent[start:] if t == "prediction/activity"]

    @staticmethod
    def mix(preds: list[dict[str, Any]]) -> dict[str, float]:
        from collections import Counter

        c = Counter(p["label"] for p in preds)
        return {k: round(v / len(preds), 3) for k, v in sorted(c.items())}

    def accuracy(self, preds: list[dict[str, Any]]) -> float:
        """Share of predictions equal to the simulated machine's true state at the window end."""
        ok = sum(p["label"] == self.world.truth(p["ts"])[0] for p in preds)
        return round(ok / len(preds), 3)

    def alerts(self, problem: str) -> list[dict[str, Any]]:
        return [p for t, p in self.sink.sent if t == "alert" and p.get("problem") == problem]


class TestLabelAuthority:
    def test_the_poisoning_message_is_refused_and_predictions_keep_their_mix(self, tmp_path: Path) -> None:
        """Measured on the issue's message ``{"label":"off","from":now-1,"to":now+3000}``: before
        the fix it was learned for every window for the next hour (469/469 predictions "off");
        now it is refused (span), learns 0 windows, the prediction mix stays, and the real
        labeller's labels are learned, not rejected as duplicates."""
        import json

        plant = _Plant(tmp_path)
        plant.run(300, "simulator")  # trained on ground truth
        before = plant.run(120, "mqtt:truth")
        task = plant.engine.tasks["activity"]
        learned0 = task.labels.counts["windows_learned"]
        now = plant.t
        poison = json.dumps({"label": "off", "from": now - 1, "to": now + 3000}).encode()
        outcome = plant.engine.on_label("activity", poison, now, "mqtt")
        after = plant.run(120, "mqtt:truth")
        learned = task.labels.counts["windows_learned"] - learned0
        print(
            f"poison: {outcome}; mix before {plant.mix(before)} after {plant.mix(after)}; learned {learned}"
        )
        assert outcome.startswith("rejected:range of 3001 s")
        assert not task.open_labels
        assert plant.mix(after).get("off", 0.0) < 0.9
        assert abs(plant.mix(after).get("off", 0.0) - plant.mix(before).get("off", 0.0)) < 0.35
        assert learned > 100 and plant.engine.counters["labels.duplicate"] == 0

    def test_a_burst_that_flips_the_model_is_held_back_and_alerted(self, tmp_path: Path) -> None:
        """Within the span limit, a publisher labelling every new window "off" against a model that
        was right: after ``hold_flips`` flipped windows the rest are held, a ``labels_held`` alert
        names the source, and the predictions do not turn into "off"."""
        import json

        plant = _Plant(tmp_path)
        plant.run(300, "simulator")
        before = plant.run(60, "mqtt:truth")
        task = plant.engine.tasks["activity"]
        seen: set[float] = set()

        def attacker(t: float, preds: list[dict[str, Any]]) -> list[tuple[bytes, str]]:
            out = []
            for p in preds[-4:]:
                if p["ts"] not in seen and p["label"] != "off":
                    seen.add(p["ts"])
                    out.append((json.dumps({"label": "off", "ts": p["ts"] - 0.01}).encode(), "mqtt:rogue"))
            return out

        held0 = task.labels.counts["windows_held"]
        after = plant.run(180, None, attacker)
        held = task.labels.counts["windows_held"] - held0
        alerts = plant.alerts("labels_held")
        print(
            f"burst: held {held}, alerts {alerts[:1]}, mix before {plant.mix(before)} after {plant.mix(after)}"
        )
        acc_before, acc_after = plant.accuracy(before), plant.accuracy(after)
        print(f"burst: accuracy against the simulated truth {acc_before} before, {acc_after} during")
        assert alerts and alerts[0]["source"] == "mqtt:rogue" and alerts[0]["label"] == "off"
        assert (
            held > 100 and task.limits.hold_flips <= alerts[0]["flipped_windows"] < 2 * task.limits.hold_flips
        )
        assert acc_after > 0.6

    def test_one_message_teaches_at_most_label_max_windows(self, tmp_path: Path) -> None:
        """A range label within the span limit still teaches at most ``max_windows`` windows."""
        import json

        plant = _Plant(tmp_path)
        plant.run(60, None)
        task = plant.engine.tasks["activity"]
        lim = task.limits.max_windows
        now = plant.t
        out = plant.engine.on_label(
            "activity", json.dumps({"label": "idle", "from": now - 29, "to": now}).encode(), now, "mqtt"
        )
        assert out == "applied" and task.labels.counts["windows_learned"] == lim
        assert task.labels.counts["windows_over_label_limit"] > 0

    def test_labels_are_rate_limited_per_publisher(self, tmp_path: Path) -> None:
        """A flood from one publisher exhausts its own bucket only; another publisher's label still
        applies; 3.1.1 publishers (no identity) share one bucket."""
        import json

        plant = _Plant(tmp_path)
        plant.run(30, None)
        e = plant.engine
        now = plant.t
        flood = [e.on_label("activity", b'{"label": "idle", "ts": 1}', now, "mqtt:flood") for _ in range(500)]
        assert sum(o == "rejected:rate limit exceeded" for o in flood) >= 400  # burst: 2 s worth
        good = json.dumps({"label": "running", "from": now - 5, "to": now}).encode()
        assert e.on_label("activity", good, now, "mqtt:line-lead") == "applied"
        anon = [e.on_label("activity", b'{"label": "idle", "ts": 1}', now, "mqtt") for _ in range(500)]
        assert anon[-1] == "rejected:rate limit exceeded"
        many = [e.on_label("activity", b'{"label": "idle", "ts": 1}', now, f"mqtt:n{i}") for i in range(5000)]
        assert len(e._buckets) <= 65 and many[-1] == "rejected:rate limit exceeded"

    def test_only_configured_label_sources(self, tmp_path: Path) -> None:
        """With label sources configured, labels from any other (or no) source are rejected."""
        plant = _Plant(tmp_path)
        plant.engine.label_sources = {"line-lead"}
        e, now = plant.engine, 10.0
        assert e.on_label("activity", b'{"label": "idle", "ts": 1}', now, "mqtt").startswith(
            "rejected:not from"
        )
        assert e.on_label("activity", b'{"label": "idle", "ts": 1}', now, "mqtt:x").startswith(
            "rejected:not from"
        )
        assert not e.on_label("activity", b'{"label": "idle", "ts": 1}', now, "mqtt:line-lead").startswith(
            "rejected:"
        )

    def test_oversize_payload_is_dropped_before_parsing_or_queueing(self) -> None:
        """The 3.1.1 path: a 32 MiB label never reaches the queue or the parser; it is counted."""
        from edged.mqtt import LabelInbox

        inbox = LabelInbox(max_bytes=1024)
        inbox.put("activity", b"x" * (32 << 20), "mqtt")
        inbox.put("activity", b'{"label": "idle", "ts": 1}', "mqtt")
        assert inbox.oversize == 1 and [p for _, p, _ in inbox.drain()] == [b'{"label": "idle", "ts": 1}']

    def test_one_publisher_cannot_fill_the_inbox(self) -> None:
        """A flood from one origin fills at most a quarter of the hand-over queue."""
        from edged.mqtt import LabelInbox

        inbox = LabelInbox(capacity=100)
        for _ in range(1000):
            inbox.put("activity", b"{}", "mqtt:flood")
        inbox.put("activity", b"{}", "mqtt:line-lead")
        got = inbox.drain()
        assert len(got) == 26 and got[-1][2] == "mqtt:line-lead"


class TestAlertThrottling:
    def test_repeated_checkpoint_failures_are_throttled(self, tmp_path: Path) -> None:
        """A checkpoint that keeps failing (full disk) alerts once per interval, then reports how
        many were left out; a different problem is not held back by it."""
        plant = _Plant(tmp_path)

        def checkpoint() -> None:  # what Daemon.checkpoint does when every save fails (full disk)
            for name in plant.engine.tasks:
                plant.engine.alert(
                    "state", task=name, problem="checkpoint_failed", error="No space left on device"
                )

        for _ in range(20):
            checkpoint()
        failed = plant.alerts("checkpoint_failed")
        assert len(failed) == len(plant.engine.tasks)  # one per task, not one per attempt
        plant.engine.alert("state", problem="spool_unwritable", error="x")
        assert len(plant.alerts("spool_unwritable")) == 1
        plant.engine.alert_min_interval_s = 0.0
        checkpoint()
        again = plant.alerts("checkpoint_failed")[-1]
        assert again["suppressed"] == 19 and plant.engine.counters["alerts_suppressed.state"] == 19 * 2


# -- finding 5 (identities) and the ACL roles, against a real mosquitto -------------------------------------
class TestBrokerIdentities:
    """The shipped broker settings bind the client id to the user: a second gateway cannot take
    over the first's session; consumers cannot label; a label role labels one gateway only."""

    def _broker(self, tmp_path: Path, shipped: bool) -> Any:
        import getpass
        import subprocess as sp

        from tests.conftest import Broker, _mosquitto_or_skip, free_port

        _mosquitto_or_skip()
        pw = tmp_path / "passwd"
        users = {"gw-a": "pa55-a", "gw-b": "pa55-b", "factory": "pa55-f", "gw-a-labels": "pa55-l"}
        for i, (u, p) in enumerate(users.items()):
            sp.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), u, p], check=True)
        acl = tmp_path / "acl"
        acl.write_text(
            (REPO / "systemd" / "mosquitto-edged.acl").read_text()
            + "\nuser factory\ntopic read edged/#\n\nuser gw-a-labels\ntopic write edged/gw-a/label/+\n"
        )
        lines = (REPO / "systemd" / "mosquitto-edged.conf").read_text().splitlines()
        if not shipped:
            lines = [ln for ln in lines if not ln.startswith("use_username_as_clientid")]
        port = free_port()
        conf_lines = [f"user {getpass.getuser()}"]
        for ln in lines:
            ln = ln.split(" #")[0].strip()
            if (
                not ln
                or ln.startswith("#")
                or ln.split()[0] in ("cafile", "certfile", "keyfile", "tls_version")
            ):
                continue
            if ln.startswith("persistence"):
                ln = "persistence false"
            elif ln.startswith("listener"):
                ln = f"listener {port} 127.0.0.1"
            conf_lines.append(
                ln.replace("/etc/mosquitto/passwd", str(pw)).replace("/etc/mosquitto/edged.acl", str(acl))
            )
        conf = tmp_path / "mosquitto.conf"
        conf.write_text("\n".join(conf_lines) + "\n")
        b = Broker(conf, port, tmp_path / "mosquitto.log")
        b.start()
        return b, users

    def _client(self, port: int, user: str, password: str, cid: str) -> Any:
        import threading

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv5)
        c.username_pw_set(user, password)
        c.connected = threading.Event()  # type: ignore[attr-defined]
        c.dropped = threading.Event()  # type: ignore[attr-defined]
        c.on_connect = lambda cl, u, f, rc, p: (not rc.is_failure) and cl.connected.set()
        c.on_disconnect = lambda cl, u, f, rc, p: cl.dropped.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert c.connected.wait(5), f"{user} did not connect"
        return c

    def _takeover(self, tmp_path: Path, shipped: bool) -> bool:
        import time

        b, users = self._broker(tmp_path, shipped)
        try:
            a = self._client(b.port, "gw-a", users["gw-a"], "edged-gw-a")
            intruder = self._client(b.port, "gw-b", users["gw-b"], "edged-gw-a")  # gw-a's client id
            time.sleep(1.0)
            taken = a.dropped.is_set()
            for c in (a, intruder):
                c.loop_stop()
                c.disconnect()
            return taken
        finally:
            b.stop()

    def test_second_gateway_cannot_take_over_the_first_session(self, tmp_path: Path) -> None:
        """With the shipped settings gw-b connecting as client id ``edged-gw-a`` does not disconnect
        gw-a; without ``use_username_as_clientid`` (the old README config) it does."""
        (tmp_path / "shipped").mkdir()
        (tmp_path / "old").mkdir()
        assert self._takeover(tmp_path / "shipped", shipped=True) is False
        assert self._takeover(tmp_path / "old", shipped=False) is True

    def test_consumers_cannot_label_and_label_roles_label_one_gateway(self, tmp_path: Path) -> None:
        """The documented roles: the consumer's label publish is refused, the label role's is
        accepted for its gateway and refused for another."""
        b, users = self._broker(tmp_path, True)
        try:
            consumer = self._client(b.port, "factory", users["factory"], "x1")
            role = self._client(b.port, "gw-a-labels", users["gw-a-labels"], "x2")
            acks: dict[str, str] = {}

            def pub(c: Any, topic: str) -> None:
                info = c.publish(topic, b'{"label": "idle", "ts": 1}', qos=1)
                info.wait_for_publish(5)
                acks[topic + str(id(c))] = info.rc

            results = {}
            for name, c, topic in (
                ("consumer", consumer, "edged/gw-a/label/activity"),
                ("role-own", role, "edged/gw-a/label/activity"),
                ("role-other", role, "edged/gw-b/label/activity"),
            ):
                got: list[str] = []
                c.on_publish = lambda cl, u, mid, rc, p, got=got: got.append(str(rc))
                pub(c, topic)
                import time

                deadline = time.monotonic() + 5
                while not got and time.monotonic() < deadline:
                    time.sleep(0.02)
                results[name] = got[0] if got else None
            assert results["consumer"] == "Not authorized" and results["role-other"] == "Not authorized"
            assert results["role-own"] in ("Success", "No matching subscribers"), results
            for c in (consumer, role):
                c.loop_stop()
                c.disconnect()
        finally:
            b.stop()


# -- finding 7 (bounds): every config number has a finite, stated range -------------------------------------
class TestConfigBounds:
    def test_every_config_number_has_a_finite_stated_range(self) -> None:
        """Every integer and number in the config schema (drivers, learners, DSP included, list
        items too) has a lower and an upper bound, or is one of a few listed values."""
        from edged.config import Config

        missing: list[str] = []

        def walk(node: Any, path: str) -> None:
            if isinstance(node, dict):
                if node.get("type") in ("integer", "number") and "enum" not in node and "const" not in node:
                    lo = "minimum" in node or "exclusiveMinimum" in node
                    hi = "maximum" in node or "exclusiveMaximum" in node
                    if not (lo and hi):
                        missing.append(path)
                for k, v in node.items():
                    walk(v, f"{path}/{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{path}[{i}]")

        walk(Config.model_json_schema(), "Config")
        assert missing == []

    def _problems(self, tmp_path: Path, edit: Any) -> list[str]:
        import tomllib

        from edged.config import ConfigError, parse

        raw = tomllib.loads((REPO / "config.toml").read_text())
        edit(raw)
        try:
            parse(raw, "t", tmp_path)
        except ConfigError as exc:
            return exc.problems
        return []

    def test_values_that_crashed_or_starved_run_are_refused(self, tmp_path: Path) -> None:
        """inf / nan / absurd values that used to pass `edged check` and then crash `run` or grow
        without limit are config errors naming the key."""
        inf, nan = float("inf"), float("nan")
        cases = {
            "mqtt.reconnect_max_s": ("mqtt", "reconnect_max_s", inf),
            "spool.max_mb": ("spool", "max_mb", inf),
            "ops.min_free_mb": ("ops", "min_free_mb", inf),
            "summary.interval_s": ("summary", "interval_s", 1e-9),
            "state.checkpoint_interval_s": ("state", "checkpoint_interval_s", 1e-6),
            "mqtt.labels_per_s": ("mqtt", "labels_per_s", nan),
        }
        for key, (section, name, value) in cases.items():

            def edit(
                raw: dict[str, Any], section: str = section, name: str = name, value: float = value
            ) -> None:
                raw.setdefault(section, {})[name] = value

            problems = self._problems(tmp_path, edit)
            assert any(p.startswith(key) for p in problems), (key, problems)

        def horizon(raw: dict[str, Any]) -> None:
            raw["tasks"]["activity"]["label_horizon_s"] = inf

        assert any("label_horizon_s" in p for p in self._problems(tmp_path, horizon))

        def bands(raw: dict[str, Any]) -> None:
            raw["tasks"]["activity"]["bands_hz"] = [0.5, 5, inf]

        assert any("bands_hz" in p for p in self._problems(tmp_path, bands))

    def test_window_that_never_fills_is_refused(self, tmp_path: Path) -> None:
        """A window that takes more than a week to fill (1 Mi samples of a 1 Hz sensor) is refused."""

        def edit(raw: dict[str, Any]) -> None:
            raw["tasks"]["env"] = {"channels": ["temperature"], "window": 1 << 20, "hop": 1 << 19}

        assert any("tasks.env.window" in p and "a week" in p for p in self._problems(tmp_path, edit))

    def test_state_dir_under_proc_or_on_a_file_is_refused(self, tmp_path: Path) -> None:
        """`edged check` refuses a state directory on a pseudo filesystem or on a regular file."""
        afile = tmp_path / "afile"
        afile.write_text("x")
        for where in ("/proc/self/edged", str(afile), str(afile / "sub")):

            def edit(raw: dict[str, Any], where: str = where) -> None:
                raw["state"]["dir"] = where

            assert any(p.startswith("state.dir") for p in self._problems(tmp_path, edit)), where
        cfg = tmp_path / "c.toml"
        cfg.write_text((REPO / "config.toml").read_text().replace('dir = "state"', 'dir = "/proc/edged"'))
        r = subprocess.run(
            [sys.executable, "-m", "edged", "check", "-c", str(cfg)], capture_output=True, text=True, cwd=REPO
        )
        assert r.returncode == 2 and "state.dir" in r.stderr


class TestKeysInit:
    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, EDGED_NUMBA_CACHE="0")
        return subprocess.run(
            [sys.executable, "-m", "edged", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )

    def test_keys_init_makes_a_key_and_refuses_to_discard_models_silently(self, tmp_path: Path) -> None:
        """`edged keys init`: a key on a fresh state dir; never over an existing key; with signed
        checkpoints and no key only with --discard-models, which moves them aside."""
        cfg = tmp_path / "config.toml"
        cfg.write_text((REPO / "config.toml").read_text())
        state = tmp_path / "state"
        r = self._cli("keys", "init", "-c", str(cfg))
        assert r.returncode == 0, r.stderr
        key = (state / "state.key").read_bytes()
        assert self._cli("keys", "init", "-c", str(cfg)).returncode == 1
        assert (state / "state.key").read_bytes() == key
        _save(_store(state), "activity", 1, "a")
        (state / "state.key").unlink()
        r = self._cli("keys", "init", "-c", str(cfg))
        assert r.returncode == 1 and "restore that key" in r.stderr and not (state / "state.key").exists()
        r = self._cli("keys", "init", "-c", str(cfg), "--discard-models")
        assert r.returncode == 0, r.stderr
        assert (state / "state.key").exists() and not (state / "models").exists()
        assert list(state.glob("discarded-*/models/activity/ckpt-*"))
        assert _store(state).load_latest("activity", "fp1")[2] == []  # a clean start, nothing flagged
