"""What the people who run the gateway see: a status file, disk-space alerts, health, loop lag.

* Every ``ops.status_interval_s`` the main loop writes a JSON status file (``ops.status_file``,
  default ``<state dir>/status.json``; the unit points it at ``/run/edged``, a tmpfs, so it costs
  no flash writes): delivery (connected, refused, spooled / sent / dropped per kind and reason,
  queue depth and age), sensor health, model versions, ``seq`` per task, loop lag, free disk.
  ``edged status`` prints it; ``--json`` prints it raw. The file is written with a rename and no
  fsync: it is a view, not state.
* The free space of the state directory's filesystem is checked at the same pace; falling below
  ``ops.min_free_mb`` sends a ``state`` alert (``disk_low``), getting above it again ``disk_ok``.
* Health, for the systemd watchdog: the main loop pings ``WATCHDOG=1`` only while every sensor
  thread and the MQTT sender thread are alive and the last loop iterations kept up. A loop that
  hangs, or acquisition that silently died, therefore gets the service restarted by systemd.
  A broker outage or a full disk is *not* unhealthy: restarting would not help.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from edged import sdnotify

if TYPE_CHECKING:
    from edged.config import Config

log = structlog.get_logger("edged.ops")

MAX_LAG_S = 5.0  # an iteration of the main loop that takes longer than this is unhealthy


class Ops:
    """Status file, disk watch and health for one :class:`~edged.runtime.Daemon`."""

    def __init__(
        self, status_file: Path | None, state_dir: Path, min_free_bytes: int, interval_s: float = 5.0
    ) -> None:
        self.status_file = status_file
        self.state_dir = state_dir
        self.min_free_bytes = min_free_bytes
        self.interval_s = interval_s
        self.next_at = 0.0
        self.started = time.monotonic()
        self.lag_max = 0.0
        self.lag_sum = 0.0
        self.iterations = 0
        self.last_lag = 0.0
        self.disk_low = False
        self.free_bytes: int | None = None
        self.write_failures = 0

    # -- called by the main loop ----------------------------------------------------------------------
    def tick(self, daemon: Any, started: float, idle_s: float) -> None:
        """One main-loop iteration ended; ``started`` when it began, ``idle_s`` its nominal wait."""
        now = time.monotonic()
        lag = max(0.0, now - started - idle_s)
        self.last_lag = lag
        self.lag_max = max(self.lag_max, lag)
        self.lag_sum += lag
        self.iterations += 1
        if now >= self.next_at:
            self.next_at = now + self.interval_s
            self.check_disk(daemon)
            self.write(daemon, "running")

    def healthy(self, daemon: Any) -> tuple[bool, str]:
        """Whether the watchdog may be pinged, and why not."""
        for s in daemon.sensors:
            if s.died():
                return False, f"sensor thread {s.name} died"
        if daemon.publisher.died():
            return False, "mqtt sender thread died"
        if self.last_lag > MAX_LAG_S:
            return False, f"main loop iteration lagged {self.last_lag:.1f} s"
        return True, "ok"

    def check_disk(self, daemon: Any) -> None:
        try:
            st = os.statvfs(self.state_dir)
        except OSError as exc:
            log.warning("disk_check_failed", error=str(exc))
            return
        self.free_bytes = st.f_bavail * st.f_frsize
        low = self.free_bytes < self.min_free_bytes
        if low != self.disk_low:
            self.disk_low = low
            problem = "disk_low" if low else "disk_ok"
            (log.error if low else log.info)(
                problem,
                path=str(self.state_dir),
                free_bytes=self.free_bytes,
                min_free_bytes=self.min_free_bytes,
            )
            daemon.engine.alert(
                "state", problem=problem, free_bytes=self.free_bytes, min_free_bytes=self.min_free_bytes
            )

    # -- the status view ----------------------------------------------------------------------------------
    def snapshot(self, daemon: Any, state: str) -> dict[str, Any]:
        """The status view. While running, ``healthy`` is the watchdog's verdict and every sensor's
        and task's computed health (edged/health.py); once stopped, nothing is judged: threads
        that ended because the service stopped are not a fault."""
        engine = daemon.engine
        report = daemon.status.health
        running = state == "running"
        if running:
            ok, why = self.healthy(daemon)
            problems = ([] if ok else [why]) + report.problems()
        else:
            problems = []
        return {
            "schema": "edged.localstatus.v1",
            "state": state,
            "pid": os.getpid(),
            "ts": round(time.time(), 3),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "interval_s": self.interval_s,
            "healthy": (not problems) if running else None,
            "problems": problems,
            "device": engine.device_id,
            "mqtt": {**daemon.publisher.stats(), "last_error": daemon.publisher.last_error},
            "sensors": {
                s.name: {
                    **_verdict(report.sensors.get(s.name), running),
                    "failures": s.failures,
                    "dropped_blocks": s.dropped_blocks,
                }
                for s in daemon.sensors
            },
            "tasks": {
                n: {
                    **_verdict(report.tasks.get(n), running),
                    "model_version": t.model.version,
                    "n_learned": t.model.n_learned,
                    "next_seq": daemon.seq.peek(n),
                }
                for n, t in engine.tasks.items()
            },
            "loop": {
                "lag_max_s": round(self.lag_max, 4),
                "lag_mean_s": round(self.lag_sum / self.iterations, 5) if self.iterations else 0.0,
                "blocks_queued": daemon.blocks.qsize(),
            },
            "disk": {
                "free_bytes": self.free_bytes,
                "min_free_bytes": self.min_free_bytes,
                "low": self.disk_low,
            },
            "labels": {
                k.removeprefix("labels."): v
                for k, v in sorted(engine.counters.items())
                if k.startswith("labels.")
            },
        }

    def write(self, daemon: Any, state: str) -> None:
        snap = self.snapshot(daemon, state)
        self.lag_max = 0.0  # lag figures are per status interval
        self.lag_sum, self.iterations = 0.0, 0
        m = snap["mqtt"]
        dropped = sum(n for kinds in m["dropped"].values() for n in kinds.values())
        sensors = ",".join(f"{k}={v['health']}" for k, v in snap["sensors"].items()) or "none"
        link = "connected" if m["connected"] else "broker unreachable"
        sdnotify.notify(f"STATUS={link}, {m['queued']} queued, {dropped} dropped, sensors {sensors}")
        if self.status_file is None:
            return
        tmp = self.status_file.with_name(f".{self.status_file.name}.tmp")
        try:
            tmp.write_text(json.dumps(snap, separators=(",", ":")))
            os.replace(tmp, self.status_file)
        except OSError as exc:  # a full disk must not stop the loop
            self.write_failures += 1
            if self.write_failures in (1, 10) or self.write_failures % 100 == 0:
                log.warning("status_file_write_failed", path=str(self.status_file), error=str(exc))
            with contextlib.suppress(OSError):
                tmp.unlink()


def _verdict(v: Any, running: bool) -> dict[str, str]:
    """``{"health": state[, "reason": why]}`` of one sensor or task (``stopped`` after a stop)."""
    if not running:
        return {"health": "stopped"}
    if v is None:
        return {"health": "ok"}
    return {"health": v.state, **({"reason": v.reason} if v.reason else {})}


def status_path(cfg: Config) -> Path:
    """Where the status file lives (the service writes it, ``edged status`` reads it)."""
    return Path(cfg.ops.status_file) if cfg.ops.status_file else Path(cfg.state.dir) / "status.json"


def read_status(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The status file and a verdict: ``running``, or why the service seems not to be."""
    try:
        snap = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"no status file at {path} (is the service running with this config?)"
    except (OSError, ValueError) as exc:
        return None, f"unreadable status file {path}: {exc}"
    if not isinstance(snap, dict):
        return None, f"unreadable status file {path}"
    if snap.get("state") != "running":
        return snap, f"service {snap.get('state', 'unknown')}"
    pid = snap.get("pid")
    try:
        os.kill(int(pid), 0)  # type: ignore[arg-type]
    except PermissionError:
        pass  # alive, owned by another user
    except (OSError, TypeError, ValueError):
        return snap, f"not running (pid {pid} is gone; the service stopped without updating its status)"
    age = time.time() - path.stat().st_mtime
    if age > 3 * float(snap.get("interval_s", 5)) + 5:
        return snap, f"status is {age:.0f} s old: the main loop may be stuck"
    return snap, "running"


def status_code(snap: dict[str, Any] | None, verdict: str) -> int:
    """LSB exit code of ``edged status``: 0 running and healthy, 1 running but unhealthy (a stuck
    main loop included), 3 not running (stopped, gone, or no status file)."""
    if snap is None:
        return 3
    if verdict == "running":
        return 0 if snap.get("healthy") is True else 1
    if verdict.startswith("status is"):  # the process lives but its loop stopped writing
        return 1
    return 3


def format_status(snap: dict[str, Any], verdict: str) -> str:
    """Human-readable ``edged status``."""
    m = snap.get("mqtt", {})
    code = status_code(snap, verdict)
    head = f"edged {snap.get('device')}: {verdict}"
    if code == 0:
        head += ", healthy"
    elif verdict == "running":
        head += ", UNHEALTHY"
    lines = [head]
    lines += [f"  ! {p}" for p in snap.get("problems", []) if code == 1]
    lines += [
        f"  uptime {snap.get('uptime_s')} s, pid {snap.get('pid')}",
        f"  mqtt: {'connected' if m.get('connected') else 'NOT connected'}"
        + (f", refused: {m['refused']}" if m.get("refused") else "")
        + (f", last error: {m['last_error']}" if m.get("last_error") and not m.get("connected") else ""),
        f"  spool: {m.get('queued', 0)} queued ({m.get('queued_bytes', 0)} bytes"
        + (f", oldest {m['oldest_age_s']} s" if m.get("oldest_age_s") is not None else "")
        + f"), sent {m.get('sent', {})}, dropped {m.get('dropped', {})}"
        + (f", DISK UNWRITABLE: {m['unwritable']}" if m.get("unwritable") else ""),
    ]
    for name, s in snap.get("sensors", {}).items():
        lines.append(
            f"  sensor {name}: {s.get('health')}"
            + (f" ({s['reason']})" if s.get("reason") else "")
            + f", failures {s.get('failures')}, "
            f"dropped blocks {s.get('dropped_blocks')}"
        )
    for name, t in snap.get("tasks", {}).items():
        lines.append(
            f"  task {name}: {t.get('health', '?')}"
            + (f" ({t['reason']})" if t.get("reason") else "")
            + f", model v{t.get('model_version')}, learned {t.get('n_learned')}, "
            f"next seq {t.get('next_seq')}"
        )
    loop, disk = snap.get("loop", {}), snap.get("disk", {})
    lines.append(
        f"  loop lag max {loop.get('lag_max_s')} s, mean {loop.get('lag_mean_s')} s, "
        f"{loop.get('blocks_queued')} blocks queued"
    )
    free = disk.get("free_bytes")
    lines.append(f"  disk free {free / 1e6:.1f} MB" if isinstance(free, int) else "  disk free unknown")
    if disk.get("low"):
        lines[-1] += " (LOW)"
    return "\n".join(lines)
