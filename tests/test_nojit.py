"""The kernel-vs-reference tests again with ``NUMBA_DISABLE_JIT=1``: the kernels run as Python.

Compiled kernels are invisible to coverage and to Python tracebacks; run as Python, every line
of ``pipelines/kernels`` and the stream-stage kernels executes under the interpreter, so a
coverage run sees them (stumpy's ``test.sh`` runs its suite the same way). Only the tests that
compare kernels with ``tests/naive.py`` / scipy run here, on their small inputs (well under
60 s), in a subprocess: numba reads the variable when it is first imported.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

KERNEL_TESTS = (
    "tests/test_dsp.py::TestAgainstReferences",
    "tests/test_dsp.py::TestFFT",
    "tests/test_pipelines.py::TestFeatures",
    "tests/test_fusion.py::TestStreamState",
)


def test_kernel_tests_pass_without_jit() -> None:
    """The kernels match their numpy/scipy references when run as plain Python."""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "EDGED_NUMBA_CACHE": "0"}
    probe = "from numba.core import config; import sys; sys.exit(0 if config.DISABLE_JIT else 1)"
    assert subprocess.run([sys.executable, "-c", probe], env=env, timeout=60).returncode == 0
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *KERNEL_TESTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-2000:]
