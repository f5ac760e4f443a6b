"""Checkpoints: atomic, verified before loading, tampering refused, fallback to older files."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from edged.seq import SeqStore
from edged.state import MAGIC, ModelStore, StateError, atomic_write, load_key
from pipelines.learners import HalfSpaceTreesParams, HoeffdingTreeParams, TaskModel


def _model(n: int = 3) -> TaskModel:
    m = TaskModel(
        "activity",
        HoeffdingTreeParams(model="hoeffding_tree"),
        HalfSpaceTreesParams(model="half_space_trees", warmup=0),
        fingerprint="fp1",
    )
    for i in range(n):
        x = {"a": float(i % 2), "b": 1.0 - i % 2}
        m.learn_unlabelled(x, m.score(x))
        m.learn(x, "on" if i % 2 else "off", m.predict(x)[0])
    return m


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path, load_key(tmp_path, None), keep=3)


class TestCheckpoints:
    def test_roundtrip(self, store: ModelStore) -> None:
        """A saved model loads back with its learned state."""
        m = _model(10)
        store.save(
            "activity", m, {"version": m.version, "fingerprint": m.fingerprint, "n_learned": m.n_learned}
        )
        ckpt, loaded, problems = store.load_latest("activity", "fp1")
        assert problems == [] and ckpt is not None
        assert (
            loaded.n_learned == 10
            and loaded.predict({"a": 1.0, "b": 0.0})[0] == m.predict({"a": 1.0, "b": 0.0})[0]
        )
        assert ckpt.header["n_learned"] == 10

    def test_key_file_is_private(self, tmp_path: Path, store: ModelStore) -> None:
        """The generated key and the state files are readable by the owner only."""
        assert (tmp_path / "state.key").stat().st_mode & 0o077 == 0
        p = store.save("activity", _model(), {"fingerprint": "fp1"})
        assert p.stat().st_mode & 0o077 == 0

    def test_tampered_payload_is_refused_and_older_used(self, store: ModelStore) -> None:
        """A flipped payload byte is refused (never unpickled); the previous checkpoint loads."""
        store.save("activity", _model(2), {"fingerprint": "fp1", "n": 2})
        p = store.save("activity", _model(4), {"fingerprint": "fp1", "n": 4})
        data = bytearray(p.read_bytes())
        data[-5] ^= 0xFF
        p.write_bytes(bytes(data))
        ckpt, model, problems = store.load_latest("activity", "fp1")
        assert ckpt is not None and ckpt.header["n"] == 2 and model.n_learned == 2
        assert any("checksum" in q or "HMAC" in q for q in problems)

    def test_resigned_with_other_key_is_refused(self, tmp_path: Path, store: ModelStore) -> None:
        """A well-formed checkpoint signed with another key is refused."""
        other = ModelStore(tmp_path / "other", b"k" * 32)
        p = other.save("activity", _model(), {"fingerprint": "fp1"})
        target = store.root / "activity"
        target.mkdir(parents=True, exist_ok=True)
        (target / p.name).write_bytes(p.read_bytes())
        _, model, problems = store.load_latest("activity", "fp1")
        assert model is None and any("HMAC does not verify" in q for q in problems)

    def test_unsigned_pickle_is_never_loaded(self, tmp_path: Path, store: ModelStore) -> None:
        """A header without an HMAC (e.g. a hand-made file carrying a malicious pickle) is refused."""
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):  # type: ignore[no-untyped-def]
                return (os.system, (f"touch {marker}",))

        payload = pickle.dumps(Evil())
        header = json.dumps({"payload_bytes": len(payload), "fingerprint": "fp1"}).encode()
        d = store.root / "activity"
        d.mkdir(parents=True, exist_ok=True)
        (d / "ckpt-00000009-v1.edgedmodel").write_bytes(MAGIC + header + b"\n" + payload)
        _, model, problems = store.load_latest("activity", "fp1")
        assert model is None and "unsigned" in problems[0]
        assert not marker.exists()

    def test_signed_but_foreign_globals_are_refused(self, tmp_path: Path, store: ModelStore) -> None:
        """Even a correctly signed file cannot make the loader call os.system (leaked key)."""
        marker = tmp_path / "pwned2"

        class Evil:
            def __reduce__(self):  # type: ignore[no-untyped-def]
                return (os.system, (f"touch {marker}",))

        p = store.save("activity", Evil(), {"fingerprint": "fp1"})
        with pytest.raises(StateError, match="never contains"):
            store.load(p)
        assert not marker.exists()

    def test_truncated_file_falls_back(self, store: ModelStore) -> None:
        """A torn newest file (e.g. disk trouble) is refused and the previous one is used."""
        store.save("activity", _model(2), {"fingerprint": "fp1"})
        p = store.save("activity", _model(5), {"fingerprint": "fp1"})
        p.write_bytes(p.read_bytes()[:-100])
        _, model, problems = store.load_latest("activity", "fp1")
        assert model.n_learned == 2 and "truncated" in problems[0]

    def test_crash_before_rename_leaves_a_loadable_model(self, store: ModelStore) -> None:
        """A temp file left by a crash between write and rename is ignored; the last good file loads."""
        store.save("activity", _model(3), {"fingerprint": "fp1"})
        (store.root / "activity" / ".ckpt-00000002.edgedmodel.tmp").write_bytes(b"EDGEDCKPT1\n{half")
        _, model, problems = store.load_latest("activity", "fp1")
        assert model.n_learned == 3 and problems == []

    def test_keep_prunes_to_versions_and_the_save_before(self, store: ModelStore) -> None:
        """Kept: the two newest saves, and the newest save of each of the `keep` newest versions."""
        for v in (1, 1, 2, 2, 2, 3, 4):
            store.save("activity", _model(1), {"fingerprint": "fp1", "version": v})
        assert [p.name for p in store.files("activity")] == [
            "ckpt-00000007-v4.edgedmodel",
            "ckpt-00000006-v3.edgedmodel",
            "ckpt-00000005-v2.edgedmodel",
        ]
        store.save("activity", _model(1), {"fingerprint": "fp1", "version": 4})
        assert [p.name for p in store.files("activity")] == [
            "ckpt-00000008-v4.edgedmodel",
            "ckpt-00000007-v4.edgedmodel",
            "ckpt-00000006-v3.edgedmodel",
            "ckpt-00000005-v2.edgedmodel",
        ]
        hist, problems = store.history("activity")
        assert [c.header["version"] for c in hist] == [4, 3, 2] and not problems
        assert store.find_version("activity", 3).name == "ckpt-00000006-v3.edgedmodel"
        with pytest.raises(StateError, match="kept versions"):
            store.find_version("activity", 1)

    def test_other_feature_layout_is_not_loaded(self, store: ModelStore) -> None:
        """A model trained on another feature layout (config changed) is not used."""
        store.save("activity", _model(), {"fingerprint": "old"})
        _, model, problems = store.load_latest("activity", "new")
        assert model is None and "different feature layout" in problems[0]

    def test_atomic_write_replaces(self, tmp_path: Path) -> None:
        """atomic_write leaves exactly the new content and no temp file."""
        p = tmp_path / "f"
        atomic_write(p, b"one")
        atomic_write(p, b"two")
        assert p.read_bytes() == b"two" and os.listdir(tmp_path) == ["f"]


class TestSeq:
    def test_seq_continues_after_clean_stop(self, tmp_path: Path) -> None:
        """After close(), a new store continues exactly."""
        s = SeqStore(tmp_path / "seq.json")
        assert [s.next("a") for _ in range(3)] == [0, 1, 2]
        s.close()
        assert SeqStore(tmp_path / "seq.json").next("a") == 3

    def test_seq_never_repeats_after_crash(self, tmp_path: Path) -> None:
        """Without close() (a crash), seq jumps ahead rather than repeating."""
        s = SeqStore(tmp_path / "seq.json", reserve=10)
        issued = [s.next("a") for _ in range(25)]
        resumed = SeqStore(tmp_path / "seq.json", reserve=10).next("a")
        assert resumed > max(issued)

    @pytest.mark.parametrize(
        "content", ["{", '{"next": {"a": -1}}', '{"next": {"a": true}}', '{"x": 1}', "\xff"]
    )
    def test_corrupt_seq_file_is_reported_and_moved_aside(self, tmp_path: Path, content: str) -> None:
        """A corrupt counter file is reported and moved aside (kept for inspection), never a crash loop."""
        (tmp_path / "seq.json").write_text(content, errors="surrogateescape")
        s = SeqStore(tmp_path / "seq.json")
        assert len(s.problems) == 1 and "unreadable seq counters" in s.problems[0]
        assert not (tmp_path / "seq.json").exists()
        assert [p.name.startswith("seq.json.corrupt-") for p in tmp_path.iterdir()] == [True]
        assert s.next("a") == 0
