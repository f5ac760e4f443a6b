"""Soak: 24 simulated hours of the service's long-lived parts at full speed, watching RSS.

What runs, as in ``edged run``: the simulated motor (IMU at 1000 Hz, environment at 1 Hz, from
``config.toml``), the engine with both tasks (features, learning from the simulator's labels,
anomaly scores), summaries every simulated minute through the summary policy, checkpoints every
5 simulated minutes, and every payload through the disk spool and paho to a real mosquitto
(started here on a free port). What is not exercised: the sensor threads and the main-loop
timers (they hold no growing state); time is simulated, so the run takes minutes, not a day.

RSS (VmRSS) is sampled every simulated hour; growth is measured from the end of the warm-up
(default: 2 simulated hours, when the models have seen every state and fault) to the end.

    .venv/bin/python scripts/soak.py [--hours 24] [--warmup 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    ap.add_argument("--warmup", type=float, default=2.0, help="simulated hours before RSS growth is measured")
    ap.add_argument("--step", type=float, default=0.5, help="simulated seconds per sensor read")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edged-soak-"))
    os.environ.setdefault("NUMBA_CACHE_DIR", str(work / "numba-cache"))
    from drivers.simulator import MachineWorld, SimEnv, SimImu, SimLabeler
    from edged.app import build_engine, open_spool, summary_policy
    from edged.config import load
    from edged.lineage import checkpoint_meta
    from edged.logs import configure
    from edged.mqtt import Publisher
    from edged.seq import SpoolSeq
    from edged.state import ModelStore, load_key

    configure("warning", "json")
    cfg, _ = load(str(REPO / "config.toml"))
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cfg = cfg.model_copy(
        update={
            "mqtt": cfg.mqtt.model_copy(update={"port": port}),
            "state": cfg.state.model_copy(update={"dir": str(work / "state")}),
        }
    )
    state = work / "state"
    state.mkdir()
    key = load_key(state, None)
    store = ModelStore(state, key, keep=2)
    spool = open_spool(cfg, state)
    seq = SpoolSeq(spool, state / "seq.json")
    t0_wall = time.time()
    publisher = Publisher(
        cfg.mqtt,
        cfg.device.id,
        lambda s: {"schema": "edged.status.v1", "state": s, "version": "soak", "device": cfg.device.id},
        lambda task, payload: None,
        spool,
    )
    time.sleep(0.3)
    publisher.start()
    engine = build_engine(cfg, publisher, seq, wall=lambda t: t0_wall + t)
    policy = summary_policy(cfg, key)
    world = MachineWorld(cfg.simulator, 0.0)
    imu = SimImu(world, cfg.sensors["imu"].rate_hz, None, seed=1)
    env = SimEnv(world, cfg.sensors["env"].rate_hz, None, seed=2)
    labeler = SimLabeler(world, cfg.simulator, set(cfg.tasks))

    total = args.hours * 3600.0
    samples: list[tuple[float, float, float, float]] = []  # (sim hour, rss MB, wall s, model MB)

    def model_mb() -> float:
        return sum(task.model.size_bytes() for task in engine.tasks.values()) / (1 << 20)

    started = time.perf_counter()
    next_summary, next_ckpt, next_sample = 60.0, 300.0, 0.0
    t = 0.0
    n_samples = 0
    while t < total:
        t += args.step
        for drv in (imu, env):
            block = drv.read_block(t)
            if block is not None and len(block):
                engine.ingest(block)
                n_samples += len(block)
        for task, payload in labeler.poll(t, t0_wall):
            engine.on_label(task, payload, t, "simulator")
        if t >= next_summary:
            next_summary += 60.0
            publisher.send(
                "summary", policy.apply(engine.summary(t0_wall + t, {"mqtt": publisher.stats()})), "summary"
            )
        if t >= next_ckpt:
            next_ckpt += 300.0
            for name, task in engine.tasks.items():
                store.save(name, task.model, checkpoint_meta(task.model))
        if t >= next_sample:
            next_sample += 3600.0
            samples.append((t / 3600.0, rss_mb(), time.perf_counter() - started, model_mb()))
            if not args.json:
                st = spool.stats()
                print(
                    f"sim {t / 3600:5.1f} h  rss {samples[-1][1]:7.1f} MB  models {samples[-1][3]:6.2f} MB  "
                    f"wall {samples[-1][2]:6.0f} s  "
                    f"spool queued {st['queued']:6d}  sent {sum(st['sent'].values()):8d}  "
                    f"dropped {st['dropped']}",
                    flush=True,
                )
    samples.append((t / 3600.0, rss_mb(), time.perf_counter() - started, model_mb()))
    deadline = time.monotonic() + 60
    while len(spool) and time.monotonic() < deadline:
        time.sleep(0.1)
    st = spool.stats()
    publisher.stop(timeout=2.0)
    broker.terminate()
    broker.wait()
    warm = min(samples, key=lambda s: abs(s[0] - args.warmup))
    end = samples[-1]
    result = {
        "simulated_hours": round(t / 3600.0, 2),
        "wall_s": round(end[2], 1),
        "samples": n_samples,
        "speedup": round(t / end[2], 1),
        "rss_mb_at_warmup": round(warm[1], 1),
        "rss_mb_at_end": round(end[1], 1),
        "rss_growth_pct": round(100.0 * (end[1] - warm[1]) / warm[1], 2),
        "warmup_hours": warm[0],
        # what the models themselves grew by (river's own estimate, capped by max_size_mb): learning, not a leak
        "model_mb_at_warmup": round(warm[3], 2),
        "model_mb_at_end": round(end[3], 2),
        "rss_growth_pct_excluding_models": round(
            100.0 * ((end[1] - warm[1]) - (end[3] - warm[3])) / warm[1], 2
        ),
        "predictions": {n: engine.seq.peek(n) for n in engine.tasks},
        "model_bytes": {n: task.model.size_bytes() for n, task in engine.tasks.items()},
        "n_learned": {n: task.model.n_learned for n, task in engine.tasks.items()},
        "spool": {"left": st["queued"], "sent": st["sent"], "dropped": st["dropped"]},
        "rss_mb_hourly": [round(s[1], 1) for s in samples],
        "model_mb_hourly": [round(s[3], 2) for s in samples],
    }
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
