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
