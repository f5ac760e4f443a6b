"""A light process (issue 11): the read-only CLI loads neither numba nor river, and the
learner allow-list loads river only for the models a config names."""

from __future__ import annotations

import subprocess
import sys

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
print(" ".join(sorted({m.split(".")[0] for m in sys.modules} & {"numba", "river", "scipy", "llvmlite"})))
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
        assert _heavy(*args) == set()

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
