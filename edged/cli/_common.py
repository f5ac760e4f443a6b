"""What every command does first: find and parse the config, set up logging."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged import jitcache

if TYPE_CHECKING:  # edged.config (pydantic, the drivers, numpy) loads when a command reads a config
    from edged.config import Config


class UsageError(Exception):
    """An operator's mistake on the command line (exit 2): an unknown task, an output path that
    cannot be written."""


def known_task(cfg: Config, task: str | None, stored: list[str] | None = None) -> None:
    """Raise :class:`UsageError` unless ``task`` is configured or has checkpoints (``stored``)."""
    if task is None or task in cfg.tasks or task in (stored or []):
        return
    names = sorted(set(cfg.tasks) | set(stored or []))
    raise UsageError(f"no such task {task!r} (tasks: {', '.join(names) or 'none'})")


def writable_output(path: str | None, what: str) -> None:
    """Raise :class:`UsageError` unless ``path`` can be created (checked before any work)."""
    if path is None:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise UsageError(f"{what} {path}: is a directory")
    if not parent.is_dir():
        raise UsageError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"{what} {path}: not writable")


def set_jit_cache(state_dir: str | Path) -> None:
    """Decide where numba's kernels come from before :mod:`pipelines.features` is imported: never
    from the state directory, which the service can write (see :mod:`edged.jitcache`)."""
    del state_dir  # kept for callers; the state directory is no place for executable code
    jitcache.configure()


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
