"""Command line: ``edged run | check | status | replay | model ... | sensors scan|read | label``.

Exit codes: 0 success, 1 failure at run time (state, files, broker refused), 2 invalid config
or usage. Every subcommand takes ``-c/--config`` (default ``./config.toml``, then
``/etc/edged/config.toml``).

One module per command group: :mod:`edged.cli.run` (run, check, replay, status),
:mod:`edged.cli.model`, :mod:`edged.cli.sensors` and :mod:`edged.cli.label`; each adds its own parsers.
"""

from __future__ import annotations

import argparse
import os
import sys

from edged import __version__
from edged.cli import keys, label, model, run, sensors
from edged.cli._common import UsageError, load_config

__all__ = ["build_parser", "load_config", "main"]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help="config file (default: ./config.toml, then /etc/edged/config.toml)",
    )
    parser = argparse.ArgumentParser(prog="edged", description="On-device sensor learning service.")
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_parsers(sub, common)
    model.add_parsers(sub, common)
    keys.add_parsers(sub, common)
    sensors.add_parsers(sub, common)
    label.add_parsers(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edged.configfile import ConfigError  # after parsing: --help needs neither
    from edged.state import StateError

    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except BrokenPipeError:
        # `edged status | head -3`: the reader has all it wanted. Point stdout at /dev/null so the
        # exit flush cannot fail again, and exit as a process killed by SIGPIPE would (128 + 13).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except UsageError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"edged: invalid config {exc.path}:", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    except StateError as exc:
        print(f"edged: state: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from edged.replay import ReplayError

        if isinstance(exc, ReplayError):
            print(f"edged: replay: {exc}", file=sys.stderr)
            return exc.exit_code
        raise
