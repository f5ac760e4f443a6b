"""The sensor commands: ``edged sensors scan`` and ``edged sensors read``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edged.cli._common import load_config, setup_logging


def cmd_sensors_scan(args: argparse.Namespace) -> int:
    """Probe each configured I2C bus (and ``--bus N``) and list the chips that answer."""
    cfg = load_config(args.config)
    setup_logging(cfg, "warning")
    import drivers
    from drivers.i2c import I2cSensorConfig
    from drivers.scan import scan
    from edged.app import open_scan_bus

    configured: dict[tuple[str, int], tuple[str, str]] = {}
    buses: list[str] = []
    for name, s in cfg.sensors.items():
        if isinstance(s, I2cSensorConfig):
            configured[(str(s.bus), s.address)] = (name, s.driver)
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
            if b == "sim":
                print(f"edged: bus {b}: {exc.strerror or exc}", file=sys.stderr)
            else:
                from drivers.i2c.bus import explain

                print(f"edged: bus {b}: {explain(int(b), exc.errno, exc.strerror)}", file=sys.stderr)
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


#: units of the contract's channel names (DESIGN: drivers), for ``sensors read``
UNITS = {
    **dict.fromkeys(("ax", "ay", "az"), "m/s²"),
    **dict.fromkeys(("gx", "gy", "gz"), "rad/s"),
    **dict.fromkeys(("mx", "my", "mz"), "µT"),
    "temperature": "°C",
    "pressure": "Pa",
    "humidity": "%RH",
}


def _bus_hint(s: Any, exc: Exception) -> str:
    """The fix for a chip whose ``/dev/i2c-N`` is missing or not ours, else nothing."""
    import errno

    from drivers.i2c import I2cSensorConfig
    from drivers.i2c.bus import explain

    err = getattr(exc, "errno", None)
    if isinstance(s, I2cSensorConfig) and s.bus != "sim" and err in (errno.ENOENT, errno.EACCES, errno.EPERM):
        return f" ({explain(int(s.bus), err)})"
    return ""


def cmd_sensors_read(args: argparse.Namespace) -> int:
    """Read the configured sensors (through the same drivers as ``run``) and print converted values:
    one line per block, ``--count`` lines per sensor (like ``telegraf --test``)."""
    cfg = load_config(args.config)
    setup_logging(cfg, "error")
    import time

    import numpy as np

    from drivers.base import DriverError
    from drivers.simulator import MachineWorld
    from edged.app import build_driver, open_sim_bus, simulated

    wanted = [n for n in cfg.sensors if not args.sensor or n in args.sensor]
    unknown = sorted(set(args.sensor or []) - set(cfg.sensors))
    if unknown:
        print(
            f"edged: no sensor named {', '.join(unknown)} (sensors: {', '.join(cfg.sensors)})",
            file=sys.stderr,
        )
        return 2
    world = (
        MachineWorld(cfg.simulator, time.monotonic())
        if any(simulated(cfg.sensors[n]) for n in wanted)
        else None
    )
    sim = open_sim_bus(cfg, world)
    drvs = {}
    for i, (name, s) in enumerate(cfg.sensors.items()):
        if name in wanted:
            drvs[name] = build_driver(cfg, i, s, world, sim)
            drvs[name].name = name
    left = dict.fromkeys(drvs, args.count)
    failed: set[str] = set()
    deadline = time.monotonic() + args.timeout
    try:
        while any(left.values()) and time.monotonic() < deadline:
            for name, drv in drvs.items():
                if not left[name]:
                    continue
                try:
                    block = drv.read_block(time.monotonic())
                except (OSError, DriverError) as exc:
                    print(f"{name}: ERROR {exc}{_bus_hint(cfg.sensors[name], exc)}", file=sys.stderr)
                    failed.add(name)
                    left[name] = 0
                    continue
                if block is None or not len(block):
                    continue
                left[name] -= 1
                last = block.x[-1]
                if args.json:
                    line = {
                        "sensor": name,
                        "samples": len(block),
                        "values": {c: float(v) for c, v in zip(block.channels, last, strict=True)},
                        "mean": {
                            c: float(v) for c, v in zip(block.channels, np.mean(block.x, axis=0), strict=True)
                        },
                    }
                    print(json.dumps(line, separators=(",", ":")), flush=True)
                else:
                    vals = " ".join(
                        f"{c}={v:.6g}{(' ' + UNITS[c]) if c in UNITS else ''}"
                        for c, v in zip(block.channels, last, strict=True)
                    )
                    print(f"{name} ({len(block)} samples) {vals}", flush=True)
            time.sleep(0.02)
    finally:
        for drv in drvs.values():
            drv.close()
    silent = [n for n, k in left.items() if k and n not in failed]
    for n in silent:
        print(f"{n}: no samples within {args.timeout:g} s", file=sys.stderr)
    return 1 if failed or silent else 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``sensors`` and its actions."""
    sensors = sub.add_parser("sensors", help="inspect the I2C sensors")
    ssub = sensors.add_subparsers(dest="sensors_command", required=True, metavar="ACTION")
    p = ssub.add_parser(
        "scan", parents=[common], help="probe the configured I2C bus(es) and list the chips found"
    )
    p.add_argument("--bus", type=int, action="append", metavar="N", help="also scan /dev/i2c-N (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_sensors_scan)
    p = ssub.add_parser(
        "read",
        parents=[common],
        help="print live converted values from the configured sensors (like telegraf --test)",
        description="Reads through the same drivers as `edged run` and prints one line per block "
        "(the newest sample of each channel, in the contract's units). Stop the service first when "
        "a real chip's FIFO is shared.",
    )
    p.add_argument("--count", type=int, default=1, metavar="N", help="lines per sensor (default 1)")
    p.add_argument("--sensor", action="append", metavar="NAME", help="only this sensor (repeatable)")
    p.add_argument("--timeout", type=float, default=10.0, help="give up after this many seconds (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_sensors_read)
