"""``edged label TASK CLASS``: publish a ground-truth label the way the service expects it.

The payload is built and checked here with the service's own validator (the DESIGN contract:
``{"label", "ts"}`` or ``{"label", "from", "to"}``) and sent to ``edged/<id>/label/<task>``
with the config's MQTT settings (host, port, protocol, TLS, username and password, exactly as
the service connects), QoS 1. The command waits for the broker's PUBACK, so exit 0 means the
broker has the label; an MQTT v5 broker that refuses it (ACL) is an error. Its own client id
(``edged-label-<id>-<pid>``) never takes over the service's session.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import threading
import time
from typing import Any

from edged.cli._common import load_config, setup_logging

_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([smh])$")


def parse_time(text: str, now: float) -> float:
    """Unix seconds from ``now``, ``90s`` / ``5m`` / ``1h`` ago (also ``-5m``, written ``--from=-5m``
    on a command line), Unix seconds, or ISO 8601 (``2026-12-02T10:00:00Z``; without a zone: UTC).

    >>> parse_time("5m", 1000.0), parse_time("1700000000.5", 0.0), parse_time("1970-01-01T00:01:00Z", 0.0)
    (700.0, 1700000000.5, 60.0)
    """
    if text == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use now, 30s/5m/1h (ago), Unix seconds or ISO 8601"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def label_payload(args: argparse.Namespace, now: float) -> dict[str, Any]:
    """The label message for the command line (raises ValueError on a bad time or range)."""
    if (args.start is None) != (args.end is None):
        raise ValueError("--from and --to go together")
    if args.start is not None:
        if args.ts is not None:
            raise ValueError("give either --ts or --from/--to")
        lo, hi = parse_time(args.start, now), parse_time(args.end, now)
        return {"label": args.label, "from": round(lo, 3), "to": round(hi, 3)}
    return {"label": args.label, "ts": round(parse_time(args.ts or "now", now), 3)}


def cmd_label(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg, "warning")
    from edged.config import find_config
    from edged.engine import parse_label

    if args.task not in cfg.tasks:
        print(f"edged: label: no task named {args.task!r} (tasks: {', '.join(cfg.tasks)})", file=sys.stderr)
        return 2
    classes = cfg.tasks[args.task].classes
    if classes and args.label not in classes:
        print(
            f"edged: label: {args.label!r} is not a class of task {args.task} "
            f"(tasks.{args.task}.classes: {', '.join(classes)})",
            file=sys.stderr,
        )
        return 2
    try:
        payload = label_payload(args, time.time())
        body = json.dumps(payload, separators=(",", ":")).encode()
        parse_label(body, cfg.mqtt.label_max_bytes)  # what the service will check
        max_span = cfg.tasks[args.task].label_max_span_s  # the service refuses longer ranges
        if "from" in payload and payload["to"] - payload["from"] > max_span:
            raise ValueError(
                f"the range spans {payload['to'] - payload['from']:.0f} s, more than "
                f"tasks.{args.task}.label_max_span_s ({max_span:g} s): the service would refuse it"
            )
    except ValueError as exc:
        print(f"edged: label: {exc}", file=sys.stderr)
        return 2
    topic = f"edged/{cfg.device.id}/label/{args.task}"
    err = publish_once(cfg, str(find_config(args.config)), topic, body, args.timeout)
    if err:
        print(f"edged: label: {err}", file=sys.stderr)
        return 1
    print(f"{topic} {body.decode()} (acknowledged by {cfg.mqtt.host}:{cfg.mqtt.port})")
    return 0


def publish_once(cfg: Any, source: str, topic: str, body: bytes, timeout: float) -> str | None:
    """Publish ``body`` QoS 1 with the config's MQTT settings and wait for the PUBACK; the problem
    (refused, unreachable, no acknowledgement) or None."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from edged import security

    auth = security.mqtt_auth(cfg.mqtt, source)
    tls = security.tls_context(cfg.mqtt.tls, source)
    v5 = cfg.mqtt.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"edged-label-{cfg.device.id}-{os.getpid()}",
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
    )
    if tls is not None:
        client.tls_set_context(tls)
    if auth.username is not None:
        client.username_pw_set(auth.username, auth.password)
    connected, acked = threading.Event(), threading.Event()
    result: dict[str, str] = {}

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            result["connect"] = str(rc)
        connected.set()

    def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        if getattr(rc, "is_failure", False):
            result["publish"] = str(rc)
        acked.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    where = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=30)
    except OSError as exc:
        return f"cannot reach the broker at {where}: {exc.strerror or exc}"
    client.loop_start()
    try:
        if not connected.wait(timeout):
            return f"no answer from the broker at {where} within {timeout:g} s"
        if "connect" in result:
            return f"the broker at {where} refused the connection: {result['connect']}"
        client.publish(topic, body, qos=1)
        if not acked.wait(timeout):
            return f"no PUBACK from {where} within {timeout:g} s"
        if "publish" in result:
            return f"the broker refused the label: {result['publish']}"
        return None
    finally:
        client.disconnect()
        client.loop_stop()


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``label``."""
    p = sub.add_parser(
        "label",
        parents=[common],
        help="publish a ground-truth label for a task (QoS 1, waits for the broker's PUBACK)",
        description="Publish {label, ts} (default: now) or {label, from, to} to edged/<id>/label/<task>. "
        "Times: now, 30s / 5m / 1h (ago), Unix seconds, or ISO 8601 (UTC unless a zone is given).",
    )
    p.add_argument("task", metavar="TASK", help="a task of the config")
    p.add_argument("label", metavar="CLASS", help="the class (one of the task's classes, if it lists them)")
    p.add_argument("--ts", metavar="T", help="label the window containing T (default: now)")
    p.add_argument("--from", dest="start", metavar="T", help="label every window ending in [T, --to]")
    p.add_argument("--to", dest="end", metavar="T", help="end of the --from range")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker (default 10)")
    p.set_defaults(func=cmd_label)
