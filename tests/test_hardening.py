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
