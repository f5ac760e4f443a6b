"""The config file itself: where it is, reading it as TOML, and the error for a bad one.

This module imports no pydantic and no drivers, so that commands that need only a path from the
config (``edged status``) answer quickly; :mod:`edged.config` validates the whole file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

DEFAULT_PATHS = (Path("config.toml"), Path("/etc/edged/config.toml"))
MAX_CONFIG_BYTES = 1 << 20

__all__ = ["DEFAULT_PATHS", "MAX_CONFIG_BYTES", "ConfigError", "find_config", "read_raw", "status_file"]


class ConfigError(Exception):
    """The config file is missing, unreadable or invalid; ``problems`` lists each finding."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


def find_config(path: str | None) -> Path:
    """The config file to use: ``path`` if given, else the first default that exists."""
    if path is not None:
        return Path(path)
    for p in DEFAULT_PATHS:
        if p.is_file():
            return p
    raise ConfigError(
        DEFAULT_PATHS[0], [f"no config file given and none found at {', '.join(map(str, DEFAULT_PATHS))}"]
    )


def read_raw(path: str | None = None) -> tuple[dict[str, Any], Path]:
    """Find and read the config file as a TOML document (not yet validated)."""
    p = find_config(path)
    try:
        if p.exists() and not p.is_file():
            raise ConfigError(p, ["not a regular file"])
        if p.exists() and p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                p, [f"{p.stat().st_size} bytes; a config file is at most {MAX_CONFIG_BYTES} bytes"]
            )
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(p, [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        return tomllib.loads(data.decode("utf-8")), p
    except UnicodeDecodeError as exc:
        raise ConfigError(p, [f"not UTF-8 text: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(p, [f"not valid TOML: {exc}"]) from None


def status_file(raw: dict[str, Any], path: Path) -> Path | None:
    """The status file a config at ``path`` names (``[ops] status_file``, else
    ``<state.dir>/status.json``, relative paths from the file's directory), read from the raw
    TOML without validating the rest; ``None`` when those keys are missing or not strings (the
    caller then validates the whole file, which names the problem)."""
    state, ops = raw.get("state"), raw.get("ops", {})
    if not isinstance(state, dict) or not isinstance(ops, dict):
        return None
    d, f = state.get("dir"), ops.get("status_file")
    if not isinstance(d, str) or not d or not (f is None or isinstance(f, str)):
        return None
    base = path.resolve().parent
    if f is not None:
        return (base / os.path.expanduser(f)).resolve()
    return (base / os.path.expanduser(d)).resolve() / "status.json"
