"""Command line: ``edged run | check | status | replay | model show``.

Exit codes: 0 success, 1 failure at run time (state, files, broker refused), 2 invalid config
or usage. Every subcommand takes ``-c/--config`` (default ``./config.toml``, then
``/etc/edged/config.toml``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edged import __version__
from edged.config import Config, ConfigError, find_config, parse, read_raw


def _load(path: str | None) -> Config:
    raw, p = read_raw(path)
    state = raw.get("state")
    if isinstance(state, dict) and isinstance(state.get("dir"), str):
        from edged.app import set_jit_cache  # before any numba kernel is imported

        set_jit_cache(p.resolve().parent / state["dir"])
    return parse(raw, str(p), p.resolve().parent)


def _setup_logging(cfg: Config | None, level: str | None = None) -> None:
    from edged import logs

    if cfg is None:
        logs.configure(level or "info", "auto")
    else:
        logs.configure(level or cfg.log.level, cfg.log.format)


# -- commands --------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    print(f"config OK: {find_config(args.config)}")
    print(f"  device {cfg.device.id}, broker {cfg.mqtt.host}:{cfg.mqtt.port}, state {cfg.state.dir}")
    from edged import security

    auth = security.mqtt_auth(cfg.mqtt, str(find_config(args.config)))
    security.tls_context(cfg.mqtt.tls, str(find_config(args.config)))
    tls = "off" if cfg.mqtt.tls is None else f"on (CA {cfg.mqtt.tls.ca_file or 'system'}, " + (
        "client certificate, " if cfg.mqtt.tls.cert_file else "") + (
        "hostname verified)" if cfg.mqtt.tls.verify_hostname else "hostname NOT verified)")
    print(f"  mqtt {cfg.mqtt.protocol}, tls {tls}, user {auth.username or '(none)'}, "
          f"password {'from ' + auth.source if auth.source else '(none)'}")
    for name, s in cfg.sensors.items():
        print(f"  sensor {name}: {s.driver} at {s.rate_hz:g} Hz -> {', '.join(cfg.sensor_channels()[name])}")
    for name, t in cfg.tasks.items():
        extra = f" + anomaly {t.anomaly.model}" if t.anomaly else ""
        print(f"  task {name}: {t.classifier.model}{extra} on {', '.join(t.channels)}, window {t.window}/{t.hop}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging(cfg)
    from edged.app import build_daemon

    daemon = build_daemon(cfg)
    return daemon.run()


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging(cfg, "warning")
    from edged.replay import format_report, replay

    out = open(args.predictions, "w", encoding="utf-8") if args.predictions else None  # noqa: SIM115
    try:
        rep = replay(cfg, args.files, out)
    finally:
        if out is not None:
            out.close()
    if args.json:
        print(json.dumps(rep, separators=(",", ":")))
    else:
        print(format_report(rep))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    from edged.app import status_path
    from edged.ops import format_status, read_status

    snap, verdict = read_status(status_path(cfg))
    if args.json:
        print(json.dumps({"verdict": verdict, "status": snap}, separators=(",", ":")))
    elif snap is None:
        print(f"edged: {verdict}", file=sys.stderr)
    else:
        print(format_status(snap, verdict))
    return 0 if verdict == "running" and snap is not None and snap.get("healthy") else 1


def _model_rows(cfg: Config, task: str | None) -> tuple[dict[str, Any], list[str]]:
    from edged.state import ModelStore, StateError, load_key

    state_dir = Path(cfg.state.dir)
    if not state_dir.is_dir():
        raise StateError(f"no state directory at {state_dir} (has the service run yet?)")
    store = ModelStore(state_dir, load_key(state_dir, cfg.state.key_file, create=False))
    names = [task] if task else sorted(set(store.tasks()) | set(cfg.tasks))
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name in names:
        for path in store.files(name):
            try:
                header, _ = store.read_header(path)
            except StateError as exc:
                problems.append(str(exc))
                continue
            header["path"] = str(path)
            header["configured"] = name in cfg.tasks
            out[name] = header
            break
    return out, problems


def cmd_model_show(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging(cfg, "warning")
    rows, problems = _model_rows(cfg, args.task)
    if args.json:
        print(json.dumps({"tasks": rows, "problems": problems}, separators=(",", ":")))
        return 0 if rows else 1
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if not rows:
        print(f"no verified checkpoints in {cfg.state.dir}", file=sys.stderr)
        return 1
    for name, h in rows.items():
        m = h.get("metrics", {})
        rec = m.get("recent", {})
        print(f"{name}: {h.get('algorithm')}  version {h.get('version')} (parent {h.get('parent')})")
        print(f"  learned {h.get('n_learned')} labelled windows, scored {h.get('n_scored')}, "
              f"alarms {h.get('n_alarms')}, size {h.get('size_bytes', 0) / 1024:.0f} KiB")
        print(f"  prequential: accuracy {m.get('accuracy', 0):.4f}  macro-F1 {m.get('macro_f1', 0):.4f}  "
              f"kappa {m.get('kappa', 0):.3f}  (recent {rec.get('n', 0)}: accuracy {rec.get('accuracy', 0):.4f})")
        counts = ", ".join(f"{k}={v}" for k, v in h.get("class_counts", {}).items()) or "none yet"
        print(f"  classes learned: {counts}")
        events = h.get("events") or []
        print(f"  drift events: {len([e for e in events if e.get('kind') == 'drift'])}")
        print(f"  checkpoint: {h['path']}  sha256 {h.get('payload_sha256', '')[:16]}...  "
              f"saved {_iso(h.get('created'))}")
        if not h.get("configured"):
            print("  (this task is no longer in the config)")
    return 0


def _iso(ts: Any) -> str:
    import datetime as dt

    try:
        return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError):
        return "?"


# -- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="PATH",
                        help="config file (default: ./config.toml, then /etc/edged/config.toml)")
    parser = argparse.ArgumentParser(prog="edged", description="On-device sensor learning service.")
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run the service in the foreground")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check", parents=[common], help="validate the config (exit 2 if invalid)")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("replay", parents=[common], help="run the pipelines over recorded files, as fast as possible")
    p.add_argument("files", nargs="+", metavar="FILE", help="recorded CSV (.csv or .csv.gz), in order")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--predictions", metavar="OUT.jsonl", help="write every prediction payload as a JSON line")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("status", parents=[common], help="delivery, sensor and model health of the running service")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    model = sub.add_parser("model", help="inspect the models in the state directory")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = msub.add_parser("show", parents=[common], help="state of the latest verified checkpoint per task")
    p.add_argument("--task", help="only this task")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_model_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edged.state import StateError

    try:
        return int(args.func(args))
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
    except Exception as exc:  # noqa: BLE001 - replay/recording errors: a message, not a traceback
        from edged.replay import ReplayError

        if isinstance(exc, ReplayError):
            print(f"edged: replay: {exc}", file=sys.stderr)
            return 1
        raise
