"""Docs: the README stays a page, the generated config reference is current, the site builds.

The configuration reference (docs/configuration.md) is generated from the pydantic models'
field descriptions by ``edged.docgen``; the site is built with mkdocs-material in strict mode, so
a broken link or a page missing from the nav fails the suite (and so CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edged import docgen

REPO = Path(__file__).resolve().parent.parent
TEST_COMMAND = (
    "python3.11 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest"
)
REGENERATE = ".venv/bin/python -m edged.docgen > docs/configuration.md"


class TestConfigReference:
    def test_committed_page_is_what_the_generator_writes(self) -> None:
        """docs/configuration.md equals the output of edged.docgen over the current models."""
        committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
        generated = docgen.render()
        assert committed == generated, (
            "docs/configuration.md is out of date with the config models' Field descriptions; "
            f"regenerate it with `{REGENERATE}` and commit the result"
        )


class TestReadme:
    def test_readme_is_one_page_with_the_ci_test_command(self) -> None:
        """README.md has at most 200 lines and the exact test command that .ci/run runs."""
        text = (REPO / "README.md").read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 200, "README.md is a page: move details into docs/"
        assert TEST_COMMAND in text
        assert TEST_COMMAND in (REPO / ".ci" / "run").read_text(encoding="utf-8")


class TestSite:
    def test_mkdocs_build_strict(self, tmp_path: Path) -> None:
        """`mkdocs build --strict` succeeds: every warning (broken link, page not in nav) is an error."""
        mkdocs = Path(sys.executable).parent / "mkdocs"
        if not mkdocs.exists():
            pytest.fail("mkdocs is not installed in the test venv: pip install -e '.[test]'")
        r = subprocess.run(
            [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
            cwd=REPO,
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # the theme's end-of-life banner
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / "site" / "configuration" / "index.html").is_file()
