"""Model lifecycle through the CLI: show, history, rollback, export/import; drift and promotion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.simulator import MachineWorld, SimImu, SimLabeler
from edged.app import build_engine
from edged.config import load
from edged.lineage import StateLock, checkpoint_meta
from edged.seq import SeqStore
from edged.state import ModelStore, load_key
from pipelines.learners import (
    GaussianNBParams,
    HoeffdingTreeParams,
    LifecycleParams,
    LogisticParams,
    TaskModel,
)
from tests.conftest import REPO


class _Null:
    def send(self, topic: str, payload: dict[str, Any], kind: str) -> None:
        pass


def _config(tmp_path: Path, device: str = "gw-a") -> Path:
    text = (REPO / "config.toml").read_text().replace('id = "sim-gateway-01"', f'id = "{device}"')
    p = tmp_path / f"{device}.toml"
    text = text.replace('dir = "state"', f'dir = "state-{device}"')
    # versions in these tests come from the test itself, not from drift on the simulator
    text += '\n[tasks.activity.lifecycle]\ndrift_detector = "none"\n'
    text += '\n[tasks.maintenance.lifecycle]\ndrift_detector = "none"\nanomaly_drift = false\n'
    p.write_text(text)
    return p


def _train(cfg_path: Path, seconds: float, versions: int = 1) -> None:
    """Run the engine on the simulator faster than real time and checkpoint `versions` versions."""
    cfg, _ = load(str(cfg_path))
    engine = build_engine(cfg, _Null(), SeqStore(None), wall=lambda t: t)
    world = MachineWorld(cfg.simulator, 0.0)
    imu = SimImu(world, cfg.sensors["imu"].rate_hz, None, 1)
    imu.name = "imu"
    labeler = SimLabeler(world, cfg.simulator, set(cfg.tasks))
    state = Path(cfg.state.dir)
    store = ModelStore(state, load_key(state, None), keep=cfg.state.keep)
    t = 0.0
    for v in range(versions):
        while t < seconds * (v + 1):
            t += 0.1
            block = imu.read_block(t)
            if block is not None:
                engine.ingest(block)
            for task, payload in labeler.poll(t, 0.0):
                engine.on_label(task, payload, t)
        for name, task in engine.tasks.items():
            if v:
                task.model.new_version("promotion", replaced=task.model.version)
            store.save(name, task.model, checkpoint_meta(task.model))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("model-cli")
    cfg = _config(tmp)
    _train(cfg, 60.0, versions=3)
    return cfg


class TestModelCli:
    def test_show_reports_what_the_model_learned(self, trained: Path) -> None:
        """model show: algorithm, version, lineage, learned counts, metrics, reliance, size, checksum."""
        r = _cli("model", "show", "-c", str(trained), "--json")
        assert r.returncode == 0, r.stderr
        act = json.loads(r.stdout)["tasks"]["activity"]
        assert act["algorithm"] == "hoeffding_tree" and act["version"] == 3 and act["parent"] == 2
        assert act["n_learned"] > 100 and set(act["class_counts"]) <= {"off", "idle", "running"}
        assert 0 < act["metrics"]["accuracy"] <= 1 and "recent" in act["metrics"]
        assert act["reliance"]["kind"] in ("split_counts", "class_separation") and act["size_bytes"] > 0
        assert act["reliance"]["features"] and all(
            name.count(".") >= 1 for name in act["reliance"]["features"]
        )
        assert len(act["payload_sha256"]) == 64
        text = _cli("model", "show", "-c", str(trained)).stdout
        assert "relies on" in text and "version 3" in text

    def test_history_lists_lineage(self, trained: Path) -> None:
        """model history: every kept version with its parent."""
        r = _cli("model", "history", "-c", str(trained), "--task", "activity", "--json")
        rows = json.loads(r.stdout)["tasks"]["activity"]
        assert [(h["version"], h["parent"]) for h in rows] == [(3, 2), (2, 1), (1, None)]

    def test_rollback_makes_a_new_version_from_an_old_one(self, trained: Path, tmp_path: Path) -> None:
        """rollback --task T 1: a new version 4 whose parent is 1 and whose state is version 1's."""
        r = _cli("model", "rollback", "-c", str(trained), "--task", "activity", "1")
        assert r.returncode == 0, r.stderr
        rows = json.loads(_cli("model", "history", "-c", str(trained), "--task", "activity", "--json").stdout)
        newest, v1 = rows["tasks"]["activity"][0], rows["tasks"]["activity"][-1]
        assert newest["version"] == 4 and newest["parent"] == 1
        assert newest["n_learned"] == v1["n_learned"]
        assert newest["events"][-1]["kind"] == "rollback" and newest["events"][-1]["replaced"] == 3
        bad = _cli("model", "rollback", "-c", str(trained), "--task", "activity", "99")
        assert bad.returncode == 1 and "no checkpoint of version 99" in bad.stderr

    def test_rollback_refused_while_the_service_runs(self, trained: Path) -> None:
        """With the state directory locked by a running service, rollback refuses clearly."""
        cfg, _ = load(str(trained))
        lock = StateLock(Path(cfg.state.dir))
        r = _cli("model", "rollback", "-c", str(trained), "--task", "activity", "2")
        del lock
        assert r.returncode == 1 and "stop it first" in r.stderr

    def test_export_import_moves_a_model(self, trained: Path, tmp_path: Path) -> None:
        """export (signed with a transfer key) then import on another gateway with the same key."""
        key = tmp_path / "transfer.key"
        key.write_text("k" * 40)
        out = tmp_path / "activity.edgedmodel"
        r = _cli(
            "model", "export", "-c", str(trained), "--task", "activity", "--key-file", str(key), str(out)
        )
        assert r.returncode == 0, r.stderr
        other = _config(tmp_path, "gw-b")
        r = _cli("model", "import", "-c", str(other), "--key-file", str(key), str(out))
        assert r.returncode == 0, r.stderr
        shown = json.loads(_cli("model", "show", "-c", str(other), "--json").stdout)["tasks"]["activity"]
        src = json.loads(_cli("model", "show", "-c", str(trained), "--json").stdout)["tasks"]["activity"]
        assert shown["n_learned"] == src["n_learned"] and shown["parent"] is None
        assert shown["events"][-1]["kind"] == "import" and shown["events"][-1]["source_device"] == "gw-a"
        # wrong key, tampered file, other feature layout: refused, nothing unpickled
        wrong = tmp_path / "wrong.key"
        wrong.write_text("w" * 40)
        r = _cli("model", "import", "-c", str(other), "--key-file", str(wrong), str(out))
        assert r.returncode == 1 and "HMAC does not verify" in r.stderr
        data = bytearray(out.read_bytes())
        data[-3] ^= 1
        out.write_bytes(bytes(data))
        r = _cli("model", "import", "-c", str(other), "--key-file", str(key), str(out))
        assert r.returncode == 1 and "checksum" in r.stderr


def _stream(rng: np.random.Generator, n: int, flip: bool) -> list[tuple[dict[str, float], str]]:
    out = []
    for _ in range(n):
        a = float(rng.uniform())
        y = "hi" if (a > 0.5) != flip else "lo"
        out.append(({"a": a, "b": float(rng.uniform())}, y))
    return out


class TestLifecycle:
    def test_drift_starts_a_challenger_which_is_promoted_when_better(self) -> None:
        """After the concept flips, ADWIN fires, a fresh challenger learns, and it replaces the
        champion only once it beats it by the margin; the promotion makes a new version."""
        rng = np.random.default_rng(0)
        m = TaskModel(
            "t",
            HoeffdingTreeParams(model="hoeffding_tree", grace_period=20),
            lifecycle=LifecycleParams(margin=0.1, min_windows=50),
        )
        for x, y in _stream(rng, 1500, flip=False):
            m.learn(x, y, m.predict(x)[0])
        assert m.version == 1 and not [e for e in m.events if e["kind"] == "drift"]
        for x, y in _stream(rng, 1500, flip=True):
            m.learn(x, y, m.predict(x)[0])
        kinds = [e["kind"] for e in m.events]
        assert "drift" in kinds and "challenger_started" in kinds and "promotion" in kinds
        promo = next(e for e in m.events if e["kind"] == "promotion")
        assert promo["challenger_accuracy"] - promo["champion_accuracy"] >= 0.1
        assert m.version == promo["version"] and m.parent == promo["replaced"]
        assert m.evaluation.report()["recent"]["accuracy"] > 0.9

    def test_no_promotion_without_the_margin(self) -> None:
        """A challenger that is only as good as the champion never replaces it."""
        rng = np.random.default_rng(1)
        m = TaskModel(
            "t",
            GaussianNBParams(model="gaussian_nb"),
            lifecycle=LifecycleParams(
                challenger=GaussianNBParams(model="gaussian_nb"), margin=0.05, min_windows=50
            ),
        )
        for x, y in _stream(rng, 2000, flip=False):
            m.learn(x, y, m.predict(x)[0])
        assert m.version == 1 and not [e for e in m.events if e["kind"] == "promotion"]
        rep = m.challenger_report()
        assert rep is not None and rep["windows"] == 200

    def test_configured_challenger_of_another_kind_can_win(self) -> None:
        """A configured challenger (a different model) is promoted when it is better by the margin."""
        rng = np.random.default_rng(2)
        m = TaskModel(
            "t",
            GaussianNBParams(model="gaussian_nb"),
            lifecycle=LifecycleParams(
                challenger=LogisticParams(model="logistic", lr=0.5),
                margin=0.02,
                min_windows=100,
                drift_detector="none",
            ),
        )
        # an XOR-free but non-Gaussian boundary: label by a + b > 1 (oblique), NB struggles
        for _ in range(3000):
            x = {"a": float(rng.uniform()), "b": float(rng.uniform())}
            y = "hi" if x["a"] + x["b"] > 1 else "lo"
            m.learn(x, y, m.predict(x)[0])
        promos = [e for e in m.events if e["kind"] == "promotion"]
        assert len(promos) >= 1 and promos[0]["model"] == "logistic"
        assert promos[0]["challenger_accuracy"] - promos[0]["champion_accuracy"] >= 0.02
        assert m.classifier_params.model == "logistic" and m.version == 1 + len(promos)
        rep = m.challenger_report()  # a fresh challenger of the configured kind runs again
        assert rep is not None and rep["model"] == "logistic"


class TestBounded:
    def test_tree_memory_stays_within_its_bound(self) -> None:
        """A long stream: the tree's memory stays within max_size_mb (river's estimate, +10%)."""
        rng = np.random.default_rng(0)
        m = TaskModel(
            "t",
            HoeffdingTreeParams(model="hoeffding_tree", max_size_mb=1.0, grace_period=20, delta=0.01),
            lifecycle=LifecycleParams(drift_detector="none"),
        )
        sizes = []
        for i in range(12_000):
            x = {f"f{j}": float(v) for j, v in enumerate(rng.standard_normal(30))}
            y = str(int(x["f0"] > 0) + 2 * int(x["f1"] > 0.5))
            m.learn(x, y, m.predict(x)[0])
            if i % 2000 == 1999:
                sizes.append(m.size_bytes())
        assert max(sizes) <= 1.1 * 1024 * 1024, sizes
        rel = m.reliance()
        assert rel["kind"] == "split_counts" and {"f0", "f1"} & set(rel["features"])
        assert m.evaluation.report()["recent"]["accuracy"] > 0.8

    def test_anomaly_rate_drift_is_reported_on_a_sustained_rise(self) -> None:
        """The anomaly stream's drift detector reports when alarms become frequent, not on noise."""
        from pipelines.anomaly import DiscordParams

        rng = np.random.default_rng(3)
        m = TaskModel("t", GaussianNBParams(model="gaussian_nb"), DiscordParams(model="discord"))
        for _ in range(3000):
            m.learn_unlabelled({}, window=np.array([[rng.normal()]]))
        quiet = [e for e in m.events if e["kind"] == "drift"]
        for k in range(400):  # a growing oscillation: new extremes again and again
            m.learn_unlabelled({}, window=np.array([[rng.normal() * 1.01**k]]))
        loud = [e for e in m.events if e["kind"] == "drift"]
        assert len(quiet) <= 1 and len(loud) > len(quiet)
        assert loud[-1]["stream"] == "anomaly_rate"
