"""Command line: ``edged run | check | status | replay | model ... | sensors scan``.

Exit codes: 0 success, 1 failure at run time (state, files, broker refused), 2 invalid config
or usage. Every subcommand takes ``-c/--config`` (default ``./config.toml``, then
``/etc/edged/config.toml``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from edged import __version__
from edged.config import Config, ConfigError, find_config, parse, read_raw


def set_jit_cache(state_dir: str | Path) -> None:
    """Keep numba's compiled kernels under the state directory, so a restart does not
    recompile (must run before :mod:`pipelines.features` is imported)."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = str(Path(state_dir) / "numba-cache")


def load_config(path: str | None) -> Config:
    """The config at ``path`` (or the default places); raises ConfigError."""
    raw, p = read_raw(path)
    state = raw.get("state")
    if isinstance(state, dict) and isinstance(state.get("dir"), str):
        set_jit_cache(p.resolve().parent / state["dir"])  # before any numba kernel is imported
    return parse(raw, str(p), p.resolve().parent)


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


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    print(f"config OK: {find_config(args.config)}")
    print(f"  device {cfg.device.id}, broker {cfg.mqtt.host}:{cfg.mqtt.port}, state {cfg.state.dir}")
    from drivers.i2c import I2cSensorConfig
    from edged import security
    from edged.app import driver_name, sensor_configs

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
    for name, s in sensor_configs(cfg).items():
        where = f" on bus {s.bus} at 0x{s.address:02x}" if isinstance(s, I2cSensorConfig) else ""
        print(
            f"  sensor {name}: {driver_name(s)}{where} at {s.rate_hz:g} Hz -> {', '.join(cfg.sensor_channels()[name])}"
        )
    for name, t in cfg.tasks.items():
        extra = f" + anomaly {t.anomaly.model}" if t.anomaly else ""
        print(
            f"  task {name}: {t.classifier.model}{extra} on {', '.join(t.channels)}, window {t.window}/{t.hop}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg)
    from edged.app import build_daemon

    return build_daemon(cfg).run()


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg, "error")  # drift and model events are in the report (and the plot)
    from edged.replay import format_report, replay

    out = open(args.predictions, "w", encoding="utf-8") if args.predictions else None  # noqa: SIM115
    trace: dict[str, Any] | None = {} if args.plot else None
    try:
        rep = replay(cfg, args.files, out, progress=not args.no_progress, trace=trace)
    finally:
        if out is not None:
            out.close()
    if args.plot:
        from edged.plots import PlotUnavailable, plot_replay

        try:
            plot_replay(trace or {}, rep, args.plot)
        except PlotUnavailable as exc:
            print(f"edged: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(rep, separators=(",", ":")))
    else:
        print(format_report(rep))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    from edged.ops import format_status, read_status, status_path

    snap, verdict = read_status(status_path(cfg))
    if args.json:
        print(json.dumps({"verdict": verdict, "status": snap}, separators=(",", ":")))
    elif snap is None:
        print(f"edged: {verdict}", file=sys.stderr)
    else:
        print(format_status(snap, verdict))
    return 0 if verdict == "running" and snap is not None and snap.get("healthy") else 1


def _model_rows(cfg: Config, task: str | None) -> tuple[dict[str, Any], list[str]]:
    from edged.lineage import open_store
    from edged.state import StateError

    store = open_store(cfg)
    names = [task] if task else sorted(set(store.tasks()) | set(cfg.tasks))
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name in names:
        for path in store.files(name):
            try:
                header, _ = store.read_header(path)
            except StateError as exc:  # shown, then the previous file is tried
                problems.append(str(exc))
                continue
            header["path"] = str(path)
            header["configured"] = name in cfg.tasks
            out[name] = header
            break
    return out, problems


def cmd_model_show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg, "warning")
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
        print(
            f"  learned {h.get('n_learned')} labelled windows, scored {h.get('n_scored')}, "
            f"alarms {h.get('n_alarms')}, size {h.get('size_bytes', 0) / 1024:.0f} KiB"
        )
        print(
            f"  prequential: accuracy {m.get('accuracy', 0):.4f}  macro-F1 {m.get('macro_f1', 0):.4f}  "
            f"kappa {m.get('kappa', 0):.3f}  (recent {rec.get('n', 0)}: accuracy {rec.get('accuracy', 0):.4f})"
        )
        counts = ", ".join(f"{k}={v}" for k, v in h.get("class_counts", {}).items()) or "none yet"
        print(f"  classes learned: {counts}")
        rel = h.get("reliance") or {}
        what = {"split_counts": "splits per feature", "mean_abs_weight": "mean |weight| per feature"}
        if rel.get("features"):
            feats = ", ".join(f"{k} {v}" for k, v in rel["features"].items())
            kind = rel.get("kind")
            print(f"  relies on ({what.get(str(kind), kind)}): {feats}")
        elif rel.get("kind") == "split_counts":
            print("  relies on: no split yet (one leaf; it predicts from every feature's class statistics)")
        if rel.get("inactive_leaves"):
            print(
                f"  size limit reached: {rel['inactive_leaves']} of {rel['inactive_leaves'] + rel['active_leaves']} "
                "leaves no longer grow (raise max_size_mb to let the tree grow)"
            )
        else:
            print(f"  relies on: {rel.get('note', 'unknown')}")
        ch = h.get("challenger")
        if ch:
            print(
                f"  challenger {ch['model']}: {ch['windows']} windows, accuracy {ch['challenger_accuracy']:.4f} "
                f"vs champion {ch['champion_accuracy']:.4f}"
            )
        events = h.get("events") or []
        drifts = [e for e in events if e.get("kind") == "drift"]
        last = f" (last at n_learned {drifts[-1].get('n_learned')})" if drifts else ""
        print(f"  drift events: {len(drifts)}{last}")
        print(
            f"  checkpoint: {h['path']}  sha256 {h.get('payload_sha256', '')[:16]}...  "
            f"saved {iso(h.get('created'))}"
        )
        if not h.get("configured"):
            print("  (this task is no longer in the config)")
    return 0


def cmd_model_history(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg, "warning")
    from edged.lineage import open_store

    store = open_store(cfg)
    names = [args.task] if args.task else sorted(set(store.tasks()) | set(cfg.tasks))
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name in names:
        hist, probs = store.history(name)
        problems += probs
        out[name] = [dict(c.header, path=str(c.path)) for c in hist]
    if args.json:
        print(json.dumps({"tasks": out, "problems": problems}, separators=(",", ":")))
        return 0
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    for name, rows in out.items():
        print(f"{name}:")
        if not rows:
            print("  no checkpoints")
        print(
            f"  {'version':>7} {'parent':>6}  {'how':<16}{'saved':<22}{'learned':>8}{'accuracy':>10}{'drifts':>7}"
        )
        for h in rows:
            events = h.get("events") or []
            origin = next(
                (
                    e
                    for e in reversed(events)
                    if e.get("version") == h["version"]
                    and e.get("kind") in ("promotion", "rollback", "import", "reset", "recovery")
                ),
                None,
            )
            how = origin["kind"] if origin else ("new" if h.get("parent") is None else "?")
            drifts = sum(1 for e in events if e.get("kind") == "drift")
            acc = h.get("metrics", {}).get("accuracy", 0.0)
            print(
                f"  {h['version']:>7} {h.get('parent') or '-':>6}  {how:<16}{iso(h.get('created')):<22}"
                f"{h.get('n_learned', 0):>8}{acc:>10.4f}{drifts:>7}"
            )
    return 0


def cmd_model_rollback(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg, "warning")
    from edged.lineage import rollback

    done = rollback(cfg, args.task, args.version)
    print(
        f"{args.task}: version {done.model.version} is version {args.version} again (replacing {done.replaced}); "
        f"the service loads it at its next start\n  {done.path}"
    )
    return 0


def cmd_model_export(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg, "warning")
    from edged.lineage import export_model

    header = export_model(cfg, args.task, args.version, Path(args.out), args.key_file)
    print(
        f"{args.task} version {header.get('version')} ({header.get('n_learned')} windows learned) -> {args.out}, "
        "signed with the transfer key"
    )
    return 0


def cmd_model_import(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg, "warning")
    from edged.lineage import import_model

    done = import_model(cfg, args.file, args.key_file, args.task)
    print(
        f"{done.task}: imported as version {done.model.version} ({done.model.n_learned} windows learned); "
        f"the service loads it at its next start\n  {done.path}"
    )
    return 0


def cmd_sensors_scan(args: argparse.Namespace) -> int:
    """Probe each configured I2C bus (and ``--bus N``) and list the chips that answer."""
    cfg = load_config(args.config)
    setup_logging(cfg, "warning")
    import drivers
    from drivers.i2c import I2cSensorConfig
    from drivers.scan import scan
    from edged.app import driver_name, open_scan_bus, sensor_configs

    configured: dict[tuple[str, int], tuple[str, str]] = {}
    buses: list[str] = []
    for name, s in sensor_configs(cfg).items():
        if isinstance(s, I2cSensorConfig):
            configured[(str(s.bus), s.address)] = (name, driver_name(s))
            if str(s.bus) not in buses:
                buses.append(str(s.bus))
    buses += [str(b) for b in args.bus or [] if str(b) not in buses]
    if not buses:
        print("no I2C sensors in the config; name a bus with --bus N", file=sys.stderr)
        return 1
    rows: list[dict[str, Any]] = []
    for b in buses:
        bus = open_scan_bus(cfg, b)
        try:
            found = scan(bus, drivers.CHIPS, bus_name=b)
        except OSError as exc:
            print(f"edged: bus {b}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        finally:
            bus.close()
        seen = set()
        for f in found:
            seen.add(f.address)
            name, want = configured.get((b, f.address), ("", ""))
            status = "" if not name else ("ok" if f.driver == want else f"expected {want}")
            rows.append(
                {
                    "bus": b,
                    "address": f"0x{f.address:02x}",
                    "chip": f.part or "unknown",
                    "driver": f.driver or "",
                    "sensor": name,
                    "status": status,
                }
            )
        for (cb, addr), (name, want) in configured.items():
            if cb == b and addr not in seen:
                rows.append(
                    {
                        "bus": b,
                        "address": f"0x{addr:02x}",
                        "chip": "",
                        "driver": "",
                        "sensor": name,
                        "status": f"no answer (expected {want})",
                    }
                )
    bad = [r for r in rows if r["sensor"] and r["status"] != "ok"]
    if args.json:
        print(json.dumps({"devices": rows}, separators=(",", ":")))
        return 1 if bad else 0
    cols = ["bus", "address", "chip", "driver", "sensor", "status"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) if rows else len(c) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
    for r in sorted(rows, key=lambda r: (r["bus"], r["address"])):
        print("  ".join(r[c].ljust(widths[c]) for c in cols).rstrip())
    if not rows:
        print("(nothing answers)")
    return 1 if bad else 0


# -- parser ----------------------------------------------------------------------------------------
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
        "--plot", metavar="FILE.png", help="draw learning curves, drift points and confusion matrices"
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

    model = sub.add_parser("model", help="inspect the models in the state directory")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = msub.add_parser("show", parents=[common], help="state of the latest verified checkpoint per task")
    p.add_argument("--task", help="only this task")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_model_show)
    p = msub.add_parser("history", parents=[common], help="kept versions per task with their lineage")
    p.add_argument("--task", help="only this task")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_model_history)
    p = msub.add_parser(
        "rollback", parents=[common], help="make an earlier version current again (service stopped)"
    )
    p.add_argument("--task", required=True)
    p.add_argument("version", type=int, metavar="VERSION")
    p.set_defaults(func=cmd_model_rollback)
    p = msub.add_parser(
        "export", parents=[common], help="write a model for another gateway, signed with a transfer key"
    )
    p.add_argument("--task", required=True)
    p.add_argument("--version", type=int, help="default: the newest")
    p.add_argument(
        "--key-file", required=True, help="transfer key (>= 16 bytes) shared with the importing gateway"
    )
    p.add_argument("out", metavar="OUT")
    p.set_defaults(func=cmd_model_export)
    p = msub.add_parser(
        "import", parents=[common], help="take a model exported by another gateway (service stopped)"
    )
    p.add_argument("--key-file", required=True, help="the transfer key the model was exported with")
    p.add_argument("--task", help="task to import into (default: the exported task)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_model_import)

    sensors = sub.add_parser("sensors", help="inspect the I2C sensors")
    ssub = sensors.add_subparsers(dest="sensors_command", required=True, metavar="ACTION")
    p = ssub.add_parser(
        "scan", parents=[common], help="probe the configured I2C bus(es) and list the chips found"
    )
    p.add_argument("--bus", type=int, action="append", metavar="N", help="also scan /dev/i2c-N (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_sensors_scan)
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
    except Exception as exc:
        from edged.replay import ReplayError

        if isinstance(exc, ReplayError):
            print(f"edged: replay: {exc}", file=sys.stderr)
            return 1
        raise
