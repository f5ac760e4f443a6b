"""``edged replay --from-state / --no-learn / --save``: bootstrap a model from recordings (issue 10)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.replay import read_recording
from edged.app import build_engine
from edged.config import load
from edged.lineage import StateLock
from edged.replay import ReplayError, _Collector, replay
from edged.seq import SeqStore
from edged.state import ModelStore, load_key
from tests.conftest import DATA, REPO

TRAIN = DATA / "basic_motions" / "stream_train.csv"
TEST = DATA / "basic_motions" / "stream_test.csv"


def _config(tmp_path: Path) -> Path:
    """The BasicMotions example with its state directory in ``tmp_path``."""
    text = (REPO / "examples" / "basic_motions.toml").read_text()
    text = text.replace('dir = "../state/basic_motions"', f'dir = "{tmp_path / "state"}"')
    text = text.replace('path = "../tests/data/', f'path = "{REPO / "tests" / "data"}/')
    p = tmp_path / "bm.toml"
    p.write_text(text)
    return p


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", "replay", "-c", str(cfg), "--no-progress", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def _labels(path: Path) -> list[str | None]:
    return [json.loads(line)["label"] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config whose state directory holds the model trained by ``replay --save`` on the train stream."""
    tmp = tmp_path_factory.mktemp("replay-state")
    cfg = _config(tmp)
    r = _cli(cfg, str(TRAIN), "--save", "--json")
    assert r.returncode == 0, r.stderr
    return cfg


class TestReplayState:
    def test_save_writes_a_replay_version_whose_lineage_names_the_files(self, saved: Path) -> None:
        """--save: a new checkpoint of kind ``replay``; its event names the replayed file."""
        cfg, _ = load(str(saved))
        state = Path(cfg.state.dir)
        store = ModelStore(state, load_key(state, None, create=False))
        header, _ = store.read_header(store.files("activity")[0])
        event = header["events"][-1]
        assert event["kind"] == "replay" and event["files"] == [str(TRAIN)]
        assert event["learned"] is True and event["from_state"] is False
        assert header["n_learned"] == 160  # 40 cases x 4 windows of 2.5 s

    def test_saved_model_reloads_and_predicts_the_same_labels(self, saved: Path, tmp_path: Path) -> None:
        """--from-state --no-learn predicts exactly what the model predicted before it was saved."""
        cfg, _ = load(str(saved))
        sink = _Collector(io.StringIO())
        engine = build_engine(cfg, sink, SeqStore(None), wall=lambda t: t)
        for block in read_recording(TRAIN):
            engine.ingest(block)
        for t in engine.tasks.values():  # the model as it was saved, now frozen
            t.reset_stream()
            t.learning = False
        sink.out = io.StringIO()
        for block in read_recording(TEST):
            engine.ingest(block)
        assert sink.out is not None
        before = [json.loads(line)["label"] for line in sink.out.getvalue().splitlines()]

        out = tmp_path / "pred.jsonl"
        r = _cli(saved, str(TEST), "--from-state", "--no-learn", "--json", "--predictions", str(out))
        assert r.returncode == 0, r.stderr
        assert _labels(out) == before and len(before) == 160
        rep = json.loads(r.stdout)["tasks"]["activity"]
        assert rep["labelled"] == 160 and rep["accuracy"] > 0.9

    def test_no_learn_leaves_n_learned_unchanged(self, saved: Path) -> None:
        """--no-learn: every payload and the report carry the saved n_learned; learning on moves it."""
        frozen = json.loads(_cli(saved, str(TEST), "--from-state", "--no-learn", "--json").stdout)
        learning = json.loads(_cli(saved, str(TEST), "--from-state", "--json").stdout)
        assert frozen["tasks"]["activity"]["n_learned"] == 160
        assert learning["tasks"]["activity"]["n_learned"] == 320

    def test_from_state_only_reads(self, saved: Path) -> None:
        """Without --save, replaying from the state directory leaves its files untouched."""
        cfg, _ = load(str(saved))
        state = Path(cfg.state.dir)
        before = {p: p.read_bytes() for p in state.rglob("*.edgedmodel")}
        assert before
        assert _cli(saved, str(TEST), "--from-state").returncode == 0
        assert {p: p.read_bytes() for p in state.rglob("*.edgedmodel")} == before

    def test_save_refused_while_the_service_runs(self, saved: Path) -> None:
        """With the state directory locked (as by a running service), --save refuses before replaying."""
        cfg, _ = load(str(saved))
        lock = StateLock(Path(cfg.state.dir))
        r = _cli(saved, str(TEST), "--from-state", "--save")
        del lock
        assert r.returncode == 1 and "service is running" in r.stderr and "stop it first" in r.stderr

    def test_from_state_without_a_model_is_an_error(self, tmp_path: Path) -> None:
        """An empty state directory is not silently a fresh start."""
        cfg, _ = load(str(_config(tmp_path)))
        with pytest.raises(ReplayError, match=r"no state directory|no model here"):
            replay(cfg, [TEST], from_state=True)
