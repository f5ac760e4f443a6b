"""The sensor commands: ``edged sensors scan``."""

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
