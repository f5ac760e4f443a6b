"""A light process (issue 11): the read-only CLI loads neither numba nor river, and the
learner allow-list loads river only for the models a config names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

_PROBE = """
import contextlib, io, sys
from edged.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(" ".join(sorted({m.split(".")[0] for m in sys.modules} & {"numba", "river", "scipy", "llvmlite", "pydantic"})))
"""


def _heavy(*argv: str) -> set[str]:
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


class TestReadOnlyCli:
    @pytest.mark.parametrize(
        "argv",
        [("--help",), ("status",), ("status", "--json"), ("model", "show"), ("model", "history")],
        ids=lambda a: " ".join(a),
    )
    def test_imports_neither_numba_nor_river(self, argv: tuple[str, ...]) -> None:
        """--help, status and model show/history answer without numba, river or scipy."""
        args = argv if argv == ("--help",) else (*argv, "-c", str(REPO / "config.toml"))
        assert _heavy(*args) - {"pydantic"} == set()

    @pytest.mark.parametrize("argv", [("--help",), ("status",)], ids=lambda a: " ".join(a))
    def test_help_and_status_skip_the_config_schema(self, argv: tuple[str, ...]) -> None:
        """--help reads no config, status only its status-file path: no pydantic either."""
        args = argv if argv == ("--help",) else (*argv, "-c", str(REPO / "config.toml"))
        assert _heavy(*args) == set()

    def test_status_finds_the_file_the_validated_config_names(self, tmp_path: Path) -> None:
        """The status file read from the raw TOML is the one the validated config names, for a
        relative state dir and for an explicit [ops] status_file."""
        from edged.config import load
        from edged.configfile import read_raw, status_file
        from edged.ops import status_path

        text = (REPO / "config.toml").read_text()
        for extra in ("", '\n[ops]\nstatus_file = "run/st.json"\n'):
            cfg_path = tmp_path / "c.toml"
            cfg_path.write_text(text + extra)
            raw, p = read_raw(str(cfg_path))
            assert status_file(raw, p) == Path(status_path(load(str(cfg_path))[0])).resolve()

    def test_check_imports_no_river(self) -> None:
        """check builds each task's feature extractor to validate it (numba), but no learner."""
        assert "river" not in _heavy("check", "-c", str(REPO / "config.toml"))


class TestAllowList:
    def test_config_layer_imports_no_river(self) -> None:
        """Parsing a config imports the allow-list's params classes, not river."""
        code = (
            "import sys; import edged.config, pipelines.learners, pipelines.task; "
            "print('river' in sys.modules, 'numba' in sys.modules)"
        )
        r = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
        )
        assert r.stdout.split() == ["False", "False"], r.stderr

    def test_a_fast_learner_alone_needs_no_scipy_stats(self) -> None:
        """A fast learner is built without river's models (and so without scipy.stats)."""
        code = (
            "import sys; import pipelines.learners as L; "
            "L.build_classifier(L.FastGaussianNBParams(model='fast_gnb')); "
            "print('scipy.stats' in sys.modules, 'river.tree' in sys.modules)"
        )
        r = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
        )
        assert r.stdout.split() == ["False", "False"], r.stderr
