"""What every command does first: find and parse the config, set up logging."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # edged.config (pydantic, the drivers, numpy) loads when a command reads a config
    from edged.config import Config


def set_jit_cache(state_dir: str | Path) -> None:
    """Keep numba's compiled kernels under the state directory, so a restart does not
    recompile (must run before :mod:`pipelines.features` is imported)."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = str(Path(state_dir) / "numba-cache")


def load_config(path: str | None, dsp: bool = True) -> Config:
    """The config at ``path`` (or the default places); raises ConfigError. ``dsp=False``: the
    feature extractors are not built to check them (no numba; see :func:`edged.config.parse`)."""
    from edged.config import parse, read_raw

    raw, p = read_raw(path)
    state = raw.get("state")
    if isinstance(state, dict) and isinstance(state.get("dir"), str):
        set_jit_cache(p.resolve().parent / state["dir"])  # before any numba kernel is imported
    return parse(raw, str(p), p.resolve().parent, dsp)


def setup_logging(cfg: Config | None, level: str | None = None) -> None:
    from edged import logs

    if cfg is None:
        logs.configure(level or "info", "auto")
    else:
        logs.configure(level or cfg.log.level, cfg.log.format)


def iso(ts: Any) -> str:
    """A Unix time as ``YYYY-MM-DDTHH:MM:SSZ`` (``?`` if it is not one)."""
    try:
        return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError):
        return "?"
