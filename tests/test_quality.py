"""Code-quality gates that CI runs as part of the suite: ruff lint, ruff format and mypy.

``.ci/run`` runs exactly the README's test command (pytest), so the static checks live here.
Each runs the tool from the test venv on the repository, and fails with the tool's own report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    tool = BIN / argv[0]
    if not tool.exists():
        pytest.fail(f"{argv[0]} is not installed in the test venv: pip install -e '.[test]'")
    return subprocess.run([str(tool), *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=600)


class TestStatic:
    def test_ruff_lint(self) -> None:
        """ruff finds nothing with the rule set chosen in pyproject.toml."""
        r = _run("ruff", "check", "--no-cache", ".")
        assert r.returncode == 0, r.stdout + r.stderr

    def test_ruff_format(self) -> None:
        """Every file is as `ruff format` writes it."""
        r = _run("ruff", "format", "--no-cache", "--check", ".")
        assert r.returncode == 0, r.stdout + r.stderr

    def test_mypy(self) -> None:
        """mypy (pyproject.toml's config with the pydantic plugin, untyped defs disallowed) finds
        nothing in edged/, drivers/ and pipelines/."""
        r = _run("mypy")
        assert r.returncode == 0, r.stdout + r.stderr
