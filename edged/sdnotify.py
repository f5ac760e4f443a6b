"""sd_notify(3) without a dependency: a datagram to $NOTIFY_SOCKET (no-op when unset)."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd; returns whether it was sent."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            # Never block the main loop on a receiver that does not read (a full datagram queue):
            # a lost ping is harmless, a stalled loop is not.
            s.setblocking(False)
            s.connect(addr)
            s.send(state.encode())
    except OSError:  # includes BlockingIOError (queue full)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of WatchdogSec when systemd asked for pings (sd_watchdog_enabled(3)), else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
