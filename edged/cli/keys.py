"""The key commands: ``edged keys init``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from edged.cli._common import load_config


def cmd_keys_init(args: argparse.Namespace) -> int:
    """Create the checkpoint HMAC key; never replaces one, and never silently discards models."""
    from edged.lineage import offline_lock
    from edged.state import COUNTER_FILE, StateError, new_key, signed_state

    cfg = load_config(args.config)
    state_dir = Path(cfg.state.dir)
    path = Path(args.key_file or cfg.state.key_file or state_dir / "state.key")
    if path.exists():
        raise StateError(f"{path} exists; `edged keys init` never replaces a key")
    signed = signed_state(state_dir) if state_dir.is_dir() else None
    if signed and not args.discard_models:
        raise StateError(
            f"{signed} in {state_dir} was signed with a key that is missing: restore that key instead. "
            "`--discard-models` makes a new key anyway: the models start over, and the old checkpoints "
            "are moved aside (kept, but no longer verifiable)"
        )
    if signed:
        with offline_lock(cfg):
            aside = state_dir / f"discarded-{int(time.time())}"
            aside.mkdir(mode=0o700)
            for name in ("models", COUNTER_FILE):
                if (state_dir / name).exists():
                    (state_dir / name).rename(aside / name)
        print(f"old checkpoints moved to {aside}")
    new_key(path)
    print(f"new state key {path} (mode 0600)")
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser("keys", help="the checkpoint signing key")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = ksub.add_parser(
        "init", parents=[common], help="create the state key (state.key_file, else <state.dir>/state.key)"
    )
    p.add_argument("--key-file", help="where to create it instead (e.g. the file LoadCredential= reads)")
    p.add_argument(
        "--discard-models",
        action="store_true",
        help="also when checkpoints signed with a lost key exist: they are moved aside, models start over",
    )
    p.set_defaults(func=cmd_keys_init)
