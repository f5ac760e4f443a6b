"""The service commands: ``edged run | check | replay | status``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from edged.cli._common import load_config, setup_logging, writable_output

if TYPE_CHECKING:
    from edged.config import Config


def _recordings(cfg: Config, path: str | None) -> None:
    """``run`` and ``check`` play the file sensors' recordings: they must be there."""
    from edged.config import ConfigError, find_config, recording_problems

    problems = recording_problems(cfg)
    if problems:
        raise ConfigError(str(find_config(path)), problems)


def cmd_check(args: argparse.Namespace) -> int:
    from edged.config import find_config

    cfg = load_config(args.config)
    _recordings(cfg, args.config)
    print(f"config OK: {find_config(args.config)}")
    print(f"  device {cfg.device.id}, broker {cfg.mqtt.host}:{cfg.mqtt.port}, state {cfg.state.dir}")
    from drivers.i2c import I2cSensorConfig
    from edged import security

    auth = security.mqtt_auth(cfg.mqtt, str(find_config(args.config)))
    security.tls_context(cfg.mqtt.tls, str(find_config(args.config)))
    tls = (
        "off"
        if cfg.mqtt.tls is None
        else f"on (CA {cfg.mqtt.tls.ca_file or 'system'}, "
        + ("client certificate, " if cfg.mqtt.tls.cert_file else "")
        + ("hostname verified)" if cfg.mqtt.tls.verify_hostname else "hostname NOT verified)")
    )
    print(
        f"  mqtt {cfg.mqtt.protocol}, tls {tls}, user {auth.username or '(none)'}, "
        f"password {'from ' + auth.source if auth.source else '(none)'}"
    )
    for name, s in cfg.sensors.items():
        where = f" on bus {s.bus} at 0x{s.address:02x}" if isinstance(s, I2cSensorConfig) else ""
        rate = f"{s.rate_hz:g} Hz" if s.rate_hz else "the recording's rate"
        print(f"  sensor {name}: {s.driver}{where} at {rate} -> {', '.join(cfg.sensor_channels()[name])}")
    for name, t in cfg.tasks.items():
        extra = f" + anomaly {t.anomaly.model}" if t.anomaly else ""
        print(
            f"  task {name}: {t.classifier.model}{extra} on {', '.join(t.channels)}, window {t.window}/{t.hop}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    _recordings(cfg, args.config)
    setup_logging(cfg)
    from edged.app import build_daemon

    return build_daemon(cfg).run()


def cmd_replay(args: argparse.Namespace) -> int:
    writable_output(args.predictions, "--predictions")  # before the replay, not after it
    writable_output(args.plot, "--plot")
    if args.plot:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            print("edged: plots need matplotlib: pip install 'edged[plot]'", file=sys.stderr)
            return 2
    cfg = load_config(args.config)
    setup_logging(cfg, "error")  # drift and model events are in the report (and the plot)
    from edged.replay import format_report, replay

    out = open(args.predictions, "w", encoding="utf-8") if args.predictions else None  # noqa: SIM115
    trace: dict[str, Any] | None = {} if args.plot else None
    try:
        rep = replay(cfg, args.files, out, progress=not args.no_progress, trace=trace, strict=args.strict)
    finally:
        if out is not None:
            out.close()
    for w in rep["warnings"]:
        print(
            f"edged: warning: {w['file']}: column {w['column']}: {w['problem']} ({w['count']}x)",
            file=sys.stderr,
        )
    if args.plot:
        from edged.plots import PlotUnavailable, load_windows, plot_replay

        try:
            windows = load_windows(args.windows, [str(f) for f in args.files]) if args.windows else None
            plot_replay(trace or {}, rep, args.plot, windows=windows)
        except PlotUnavailable as exc:
            print(f"edged: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(rep, separators=(",", ":")))
    else:
        print(format_report(rep))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, dsp=False)  # reads the status file only: no numba
    from edged.ops import format_status, read_status, status_path

    snap, verdict = read_status(status_path(cfg))
    if args.json:
        print(json.dumps({"verdict": verdict, "status": snap}, separators=(",", ":")))
    elif snap is None:
        print(f"edged: {verdict}", file=sys.stderr)
    else:
        print(format_status(snap, verdict))
    return 0 if verdict == "running" and snap is not None and snap.get("healthy") else 1


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``run``, ``check``, ``replay`` and ``status``."""
    p = sub.add_parser("run", parents=[common], help="run the service in the foreground")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check", parents=[common], help="validate the config (exit 2 if invalid)")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser(
        "replay", parents=[common], help="run the pipelines over recorded files, as fast as possible"
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="recorded CSV (.csv or .csv.gz), in order")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--predictions", metavar="OUT.jsonl", help="write every prediction payload as a JSON line")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw learning curves, drift points and confusion matrices; for an unlabelled task the "
        "anomaly score, the threshold in force and the alarms against time",
    )
    p.add_argument(
        "--windows",
        metavar="LABELS.json",
        help="with --plot: shade these labelled anomaly windows (NAB's combined_windows.json format, or "
        "../shared/data/nab/labels.json)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="label columns naming no task, unknown classes and unknown columns are errors (exit 2)",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (it only shows on a terminal anyway)"
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "status", parents=[common], help="delivery, sensor and model health of the running service"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)
