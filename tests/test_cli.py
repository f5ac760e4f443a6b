"""The CLI on an operator's mistakes and habits: pipes, bad paths, unknown tasks, no-op commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from edged.app import warm_up
from edged.config import load
from tests.conftest import DATA, REPO
from tests.test_model_cli import _config, _train

BASIC = REPO / "examples" / "basic_motions.toml"
TRAIN = DATA / "basic_motions" / "stream_train.csv"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = _config(tmp_path_factory.mktemp("cli"))
    _train(cfg, 60.0, versions=2)
    return cfg


class TestBrokenPipe:
    @pytest.mark.parametrize("args", [("status", "--json"), ("model", "history", "--json")])
    def test_a_closed_reader_ends_the_command_quietly(self, trained: Path, args: tuple[str, ...]) -> None:
        """`edged ... | head` with the reader already gone: no traceback, exit 141 like SIGPIPE."""
        p = subprocess.Popen(
            [sys.executable, "-m", "edged", *args, "-c", str(trained)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()  # the reader is gone before the first write
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == 141, err
        assert "Traceback" not in err and "BrokenPipe" not in err


class TestOutputPaths:
    @pytest.mark.parametrize("opt", ["--predictions", "--plot"])
    def test_an_unwritable_output_is_refused_before_the_replay(self, tmp_path: Path, opt: str) -> None:
        """--predictions/--plot into a missing directory: exit 2 naming the path, before any work."""
        r = _cli("replay", "-c", str(BASIC), str(TRAIN), opt, "/nonexistent/x.out", "--json")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert f"{opt} /nonexistent/x.out: directory /nonexistent does not exist" in r.stderr
        assert r.stdout == ""  # no report: nothing was replayed


class TestModelCommands:
    @pytest.mark.parametrize("action", [("show",), ("history",), ("rollback", "1"), ("export", "x")])
    def test_an_unknown_task_is_named_as_such(self, trained: Path, action: tuple[str, ...]) -> None:
        """--task nope: "no such task" with the tasks there are, exit 2 (not "no verified checkpoints")."""
        extra = ["--key-file", "/dev/null"] if action[0] == "export" else []
        r = _cli("model", action[0], "-c", str(trained), "--task", "nope", *extra, *action[1:])
        assert r.returncode == 2, r.stderr
        assert "no such task 'nope' (tasks: activity, maintenance)" in r.stderr

    def test_rollback_to_the_current_version_is_a_no_op(self, trained: Path) -> None:
        """Rolling back to the version that is current writes nothing and says so."""
        before = json.loads(_cli("model", "history", "-c", str(trained), "--json").stdout)
        current = before["tasks"]["activity"][0]["version"]
        r = _cli("model", "rollback", "-c", str(trained), "--task", "activity", str(current))
        assert r.returncode == 0, r.stderr
        assert f"version {current} is already the current version; nothing changed" in r.stdout
        after = json.loads(_cli("model", "history", "-c", str(trained), "--json").stdout)
        assert [h["version"] for h in after["tasks"]["activity"]] == [
            h["version"] for h in before["tasks"]["activity"]
        ]

    def test_relies_on_is_ranked_by_weight(self, trained: Path) -> None:
        """model show lists the features the model relies on most first, in text and JSON."""
        shown = json.loads(_cli("model", "show", "-c", str(trained), "--json").stdout)["tasks"]
        for h in shown.values():
            weights = list((h.get("reliance") or {}).get("features", {}).values())
            assert weights == sorted(weights, reverse=True)
        assert any(len(set(h["reliance"].get("features", {}).values())) > 1 for h in shown.values())
        text = _cli("model", "show", "-c", str(trained)).stdout
        line = next(ln for ln in text.splitlines() if "relies on (" in ln)
        values = [float(part.rsplit(" ", 1)[1]) for part in line.split(": ", 1)[1].split(", ")]
        assert values == sorted(values, reverse=True)

    def test_import_lineage_names_the_source_device_and_version(self, trained: Path, tmp_path: Path) -> None:
        """An imported version shows where it came from (device:version) in history, not parent -."""
        key = tmp_path / "transfer.key"
        key.write_text("k" * 40)
        out = tmp_path / "m.edgedmodel"
        r = _cli(
            "model", "export", "-c", str(trained), "--task", "activity", "--key-file", str(key), str(out)
        )
        assert r.returncode == 0, r.stderr
        src_version = json.loads(_cli("model", "show", "-c", str(trained), "--json").stdout)["tasks"][
            "activity"
        ]["version"]
        other = _config(tmp_path, "gw-b")
        assert _cli("model", "import", "-c", str(other), "--key-file", str(key), str(out)).returncode == 0
        rows = json.loads(_cli("model", "history", "-c", str(other), "--json").stdout)["tasks"]["activity"]
        assert rows[0]["source"] == {"device": "gw-a", "version": src_version}
        text = _cli("model", "history", "-c", str(other), "--task", "activity").stdout
        row = text.splitlines()[2].split()
        assert row[1] == f"gw-a:{src_version}" and row[2] == "import"


class TestFirstStart:
    def test_kernel_compilation_is_logged_with_its_duration(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With an empty kernel cache the warm-up says it is compiling, then how long it took."""
        monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba-cache"))
        cfg, _ = load(str(REPO / "config.toml"))
        with structlog.testing.capture_logs() as logs:
            warm_up(cfg)
        events = {e["event"]: e for e in logs}
        assert events["kernels_compiling"]["first_start"] is True
        assert events["kernels_ready"]["seconds"] >= 0
        assert [e["event"] for e in logs].index("kernels_compiling") < [e["event"] for e in logs].index(
            "kernels_ready"
        )


def _recording(tmp_path: Path, header: str, rows: int = 600, relabel: dict[str, str] | None = None) -> Path:
    """The first ``rows`` of the BasicMotions stream under another header (and class names)."""
    lines = TRAIN.read_text().splitlines()[1 : rows + 1]
    for old, new in (relabel or {}).items():
        lines = [ln.replace(f",{old}", f",{new}") for ln in lines]
    extra = header.count(",") - 7
    out = tmp_path / "rec.csv"
    out.write_text(header + "\n" + "\n".join(ln + ",45.0" * extra if extra else ln for ln in lines) + "\n")
    return out


class TestReplayData:
    @pytest.mark.parametrize(
        ("header", "relabel", "column", "problem"),
        [
            ("t,ax,ay,az,gx,gy,gz,label.activty", None, "label.activty", "names no task (tasks: activity)"),
            (
                "t,ax,ay,az,gx,gy,gz,label.activity",
                {"Standing": "Sitting"},
                "label.activity",
                "class 'Sitting'",
            ),
            ("t,ax,ay,az,gx,gy,gz,label.activity,humidity", None, "humidity", "no sensor or task uses"),
        ],
    )
    def test_what_the_config_does_not_know_is_warned_counted_and_strict_refuses(
        self, tmp_path: Path, header: str, relabel: dict[str, str] | None, column: str, problem: str
    ) -> None:
        """A misspelled label column, an unknown class, an extra column: a warning on stderr and a
        count in the report (exit 0); with --strict, exit 2 naming the file and the column."""
        rec = _recording(tmp_path, header, relabel=relabel)
        r = _cli("replay", "-c", str(BASIC), str(rec), "--json", "--no-progress")
        assert r.returncode == 0, r.stderr
        warnings = json.loads(r.stdout)["warnings"]
        assert len(warnings) == 1 and warnings[0]["column"] == column and problem in warnings[0]["problem"]
        assert warnings[0]["count"] >= 1 and warnings[0]["file"] == str(rec)
        assert f"warning: {rec}: column {column}: " in r.stderr
        if relabel:  # counted per sample
            assert warnings[0]["count"] == sum(1 for ln in rec.read_text().splitlines() if "Sitting" in ln)
        r = _cli("replay", "-c", str(BASIC), str(rec), "--json", "--no-progress", "--strict")
        assert r.returncode == 2 and f"{rec}: column {column}: " in r.stderr and r.stdout == ""
        assert "Traceback" not in r.stderr

    def test_a_clean_recording_has_no_warnings(self, tmp_path: Path) -> None:
        """The recording the example is written for passes --strict with no warnings."""
        rec = _recording(tmp_path, "t,ax,ay,az,gx,gy,gz,label.activity")
        r = _cli("replay", "-c", str(BASIC), str(rec), "--json", "--no-progress", "--strict")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["warnings"] == []

    def test_a_replay_only_config_needs_no_recording_of_its_own(self, tmp_path: Path) -> None:
        """sensors.X.path that does not exist: replay runs on the files it is given; run and check
        still refuse it (exit 2 naming the key)."""
        cfg = tmp_path / "replay.toml"
        text = BASIC.read_text().replace(
            'path = "../tests/data/basic_motions/stream_train.csv"', 'path = "/nonexistent/rec.csv"'
        )
        cfg.write_text(text.replace('dir = "../state/basic_motions"', f'dir = "{tmp_path / "state"}"'))
        rec = _recording(tmp_path, "t,ax,ay,az,gx,gy,gz,label.activity")
        r = _cli("replay", "-c", str(cfg), str(rec), "--json", "--no-progress")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["tasks"]["activity"]["windows"] > 0
        for cmd in ("check", "run"):
            r = _cli(cmd, "-c", str(cfg))
            assert (
                r.returncode == 2 and "sensors.watch.path:" in r.stderr and "/nonexistent/rec.csv" in r.stderr
            )
