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


def bus_problems(cfg: Any) -> list[str]:
    """Each configured I2C bus that cannot be opened, named by its key, with the fix."""
    from drivers.i2c import I2cSensorConfig
    from drivers.i2c.bus import bus_problem

    out = []
    for name, s in cfg.sensors.items():
        if isinstance(s, I2cSensorConfig) and s.bus != "sim":
            problem = bus_problem(int(s.bus))
            if problem:
                out.append(f"sensors.{name}.bus = {s.bus}: {problem}")
    return out


def cmd_check(args: argparse.Namespace) -> int:
    from edged.config import find_config

    cfg = load_config(args.config)
    _recordings(cfg, args.config)
    problems = bus_problems(cfg)
    if problems:
        from edged.config import ConfigError

        raise ConfigError(str(find_config(args.config)), problems)
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
    if cfg.sparkplug is not None:
        sp = cfg.sparkplug
        host = f", waits for primary host {sp.primary_host_id}" if sp.primary_host_id else ""
        print(f"  sparkplug: spBv1.0/{sp.group_id}/+/{sp.edge_node_id or cfg.device.id}{host}")
    if cfg.metrics is not None:
        print(f"  metrics: http://{cfg.metrics.bind}:{cfg.metrics.port}/metrics")
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
        rep = replay(
            cfg,
            args.files,
            out,
            progress=not args.no_progress,
            trace=trace,
            from_state=args.from_state,
            learn=not args.no_learn,
            save=args.save,
            strict=args.strict,
        )
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
    from edged.configfile import read_raw, status_file
    from edged.ops import format_status, read_status, status_code, status_path

    # status needs one path from the config: read it from the TOML, without validating the whole
    # file (pydantic, the drivers, numpy: most of the start-up); `edged check` validates
    raw, p = read_raw(args.config)
    path = status_file(raw, p)
    if path is None:  # the keys are missing or malformed: the full validation names the problem
        path = status_path(load_config(args.config, dsp=False))
    snap, verdict = read_status(path)
    if args.json:
        print(json.dumps({"verdict": verdict, "status": snap}, separators=(",", ":")))
    elif snap is None:
        print(f"edged: {verdict}", file=sys.stderr)
    else:
        print(format_status(snap, verdict))
    return status_code(snap, verdict)


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
    p.add_argument(
        "--from-state",
        action="store_true",
        help="start from the current models in the state directory (read only) instead of fresh ones",
    )
    p.add_argument(
        "--no-learn", action="store_true", help="predict only: labelled windows are scored, never learned"
    )
    p.add_argument(
        "--save",
        action="store_true",
        help="save the models at the end as new versions of kind 'replay' (refused while the service runs)",
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "status", parents=[common], help="delivery, sensor and model health of the running service"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)
