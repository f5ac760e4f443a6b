"""Command line: ``edged run | check | status | replay | model ... | sensors scan``.

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
        where = f" on bus {s.bus} at 0x{s.address:02x}" if hasattr(s, "address") else ""
        print(
            f"  sensor {name}: {s.driver}{where} at {s.rate_hz:g} Hz -> {', '.join(cfg.sensor_channels()[name])}"
        )
    for name, t in cfg.tasks.items():
        extra = f" + anomaly {t.anomaly.model}" if t.anomaly else ""
        print(
            f"  task {name}: {t.classifier.model}{extra} on {', '.join(t.channels)}, window {t.window}/{t.hop}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging(cfg)
    from edged.app import build_daemon

    daemon = build_daemon(cfg)
    return daemon.run()


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging(cfg, "error")  # drift and model events are in the report (and the plot)
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
    from edged.state import StateError

    store = _store(cfg)
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
            print(f"  relies on ({what.get(rel.get('kind'), rel.get('kind'))}): {feats}")
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
            f"saved {_iso(h.get('created'))}"
        )
        if not h.get("configured"):
            print("  (this task is no longer in the config)")
    return 0


def _store(cfg: Config, create_key: bool = False) -> Any:
    from edged.state import ModelStore, StateError, ensure_dir, load_key

    state_dir = Path(cfg.state.dir)
    if create_key:
        ensure_dir(state_dir)
    if not state_dir.is_dir():
        raise StateError(f"no state directory at {state_dir} (has the service run yet?)")
    return ModelStore(
        state_dir, load_key(state_dir, cfg.state.key_file, create=create_key), keep=cfg.state.keep
    )


def cmd_model_history(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging(cfg, "warning")
    store = _store(cfg)
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
                f"  {h['version']:>7} {h.get('parent') or '-':>6}  {how:<16}{_iso(h.get('created')):<22}"
                f"{h.get('n_learned', 0):>8}{acc:>10.4f}{drifts:>7}"
            )
    return 0


def _locked(cfg: Config) -> Any:
    from edged.app import StateLock
    from edged.state import StateError

    try:
        return StateLock(Path(cfg.state.dir))
    except StateError:
        raise StateError(
            "the service is running on this state directory; stop it first "
            "(systemctl stop edged), then run this command again"
        ) from None


def _save_cli(store: Any, task: str, model: Any) -> Path:
    from edged.app import checkpoint_meta

    return store.save(task, model, checkpoint_meta(model))


def cmd_model_rollback(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging(cfg, "warning")
    store = _store(cfg)
    lock = _locked(cfg)
    header, model = store.load(store.find_version(args.task, args.version))
    from edged.app import fingerprint, task_rate
    from edged.state import StateError

    if args.task in cfg.tasks and header.get("fingerprint") != fingerprint(
        cfg.tasks[args.task], task_rate(cfg, cfg.tasks[args.task])
    ):
        raise StateError(
            f"version {args.version} of {args.task!r} was trained on another feature layout than "
            "the current config; the service would not load it"
        )
    current = store.max_version(args.task)
    newest = store.version_of(store.files(args.task)[0])
    model.max_version = max(model.max_version, current)
    model.new_version("rollback", to=args.version, replaced=newest)
    path = _save_cli(store, args.task, model)
    del lock
    print(
        f"{args.task}: version {model.version} is version {args.version} again (replacing {newest}); "
        f"the service loads it at its next start\n  {path}"
    )
    return 0


def _transfer_key(path: str) -> bytes:
    from edged.state import StateError

    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise StateError(f"cannot read transfer key {path}: {exc.strerror or exc}") from None
    if len(key) < 16:
        raise StateError(f"transfer key {path} is too short ({len(key)} bytes, need >= 16)")
    return key


def cmd_model_export(args: argparse.Namespace) -> int:
    import time as _time

    from edged.state import atomic_write, encode_checkpoint

    cfg = _load(args.config)
    _setup_logging(cfg, "warning")
    store = _store(cfg)
    path = (
        store.find_version(args.task, args.version) if args.version else (store.files(args.task) or [None])[0]
    )
    if path is None:
        from edged.state import StateError

        raise StateError(f"task {args.task!r} has no checkpoint to export")
    header, payload = store.read_header(path)
    header["exported"] = {
        "device": cfg.device.id,
        "version": header.get("version"),
        "at": round(_time.time(), 3),
    }
    atomic_write(Path(args.out), encode_checkpoint(header, payload, _transfer_key(args.key_file)))
    print(
        f"{args.task} version {header.get('version')} ({header.get('n_learned')} windows learned) -> {args.out}, "
        "signed with the transfer key"
    )
    return 0


def cmd_model_import(args: argparse.Namespace) -> int:
    from edged.app import fingerprint, task_rate
    from edged.state import StateError, decode_checkpoint, unpickle_model

    cfg = _load(args.config)
    _setup_logging(cfg, "warning")
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise StateError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    header, payload = decode_checkpoint(data, _transfer_key(args.key_file), args.file)
    task = args.task or str(header.get("task"))
    if task not in cfg.tasks:
        raise StateError(f"{args.file}: task {task!r} is not configured here (tasks: {', '.join(cfg.tasks)})")
    want = fingerprint(cfg.tasks[task], task_rate(cfg, cfg.tasks[task]))
    if header.get("fingerprint") != want:
        raise StateError(
            f"{args.file}: the model was trained on another feature layout than task {task!r} "
            "here (channels, window, features or rate differ); refusing it"
        )
    store = _store(cfg, create_key=True)
    lock = _locked(cfg)
    model = unpickle_model(payload, args.file)
    model.task = task
    model.max_version = max(model.max_version, store.max_version(task))
    source = header.get("exported", {})
    model.new_version("import", source_device=source.get("device"), source_version=source.get("version"))
    model.parent = None  # lineage here starts at the import; the source is in the event
    path = _save_cli(store, task, model)
    del lock
    print(
        f"{task}: imported as version {model.version} ({model.n_learned} windows learned); "
        f"the service loads it at its next start\n  {path}"
    )
    return 0


def cmd_sensors_scan(args: argparse.Namespace) -> int:
    """Probe each configured I2C bus (and ``--bus N``) and list the chips that answer."""
    cfg = _load(args.config)
    _setup_logging(cfg, "warning")
    import time

    import drivers
    from drivers.scan import scan
    from drivers.simulator import MachineWorld
    from edged.app import open_bus, open_sim_bus

    configured: dict[tuple[str, int], tuple[str, str]] = {}
    buses: list[str] = []
    for name, s in cfg.sensors.items():
        if hasattr(s, "address"):
            configured[(str(s.bus), s.address)] = (name, s.driver)
            if str(s.bus) not in buses:
                buses.append(str(s.bus))
    buses += [str(b) for b in args.bus or [] if str(b) not in buses]
    if not buses:
        print("no I2C sensors in the config; name a bus with --bus N", file=sys.stderr)
        return 1
    rows: list[dict[str, Any]] = []
    for b in buses:
        if b == "sim":
            bus = open_sim_bus(cfg, MachineWorld(cfg.simulator, time.monotonic()))
        else:
            bus = open_bus(int(b))
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


def _iso(ts: Any) -> str:
    import datetime as dt

    try:
        return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError):
        return "?"


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
