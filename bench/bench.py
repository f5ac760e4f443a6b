"""edged benchmark: numba kernels vs numpy/scipy, replay throughput by stage, service RSS and start-up.

Run from the repository root (needs the test extras for the numpy/scipy reference, and the
``mosquitto`` binary for the service part)::

    .venv/bin/python bench/bench.py            # table, then one JSON line
    .venv/bin/python bench/bench.py --json     # only the JSON

Everything is measured in one run on the same data, and speed is reported as ratios against
a reference measured alongside (machines are shared and noisy). The data is a labelled
recording of the simulated motor (``drivers/simulator.py``) in the recorded-file format,
generated first and not timed.

(a) ``kernels``: microseconds per window of :class:`pipelines.features.FeatureExtractor`
    (numba) and of ``tests/naive.py`` (numpy/scipy: the references the tests check against)
    on the same windows, interleaved, best of several repetitions; outputs are compared too.
(b) ``replay``: ``edged replay`` of the recording with the default ``config.toml`` pipelines,
    in this process, with each stage timed by wrapping its entry point (read/parse, windowing
    and stream filters, features, feature dict, predict, anomaly score, learn, publish, engine);
    samples per second of wall time and per CPU-second (one core). A second replay with the
    learners replaced by no-ops measures the front end alone.
(c) ``service``: ``edged run`` on ``config.toml`` (simulated sensors, a mosquitto started
    here): time from process start to the first prediction message with an empty numba cache
    (cold) and again with the cache the first run left (warm), and the process's peak RSS
    (VmHWM) after running ``--service-seconds``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

GOALS = {
    "kernel_ratio": 20.0,
    "replay_samples_per_s": 1_000_000,
    "peak_rss_mb": 200.0,
    "warm_first_prediction_s": 3.0,
}


# -- data ------------------------------------------------------------------------------------------
def simulate_recording(path: Path, seconds: float, rate_hz: float = 1000.0, seed: int = 7) -> int:
    """A labelled recording of the simulated motor: t, ax..gz, temperature, label.activity,
    label.maintenance (labels as the simulator's labeler gives them: settled states only,
    no fault onsets). Returns the number of rows."""
    from drivers.simulator import MachineWorld, SimulatorConfig

    world = MachineWorld(SimulatorConfig(seed=seed), 0.0)
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    with open(path, "w") as f:
        f.write("t,ax,ay,az,gx,gy,gz,temperature,label.activity,label.maintenance\n")
        step = int(rate_hz)  # one second per block: one temperature reading, labels per 0.1 s
        for s in range(0, n, step):
            t = np.arange(s, min(n, s + step)) / rate_hz
            x = world.imu(t, rng)
            temp = world.env(float(t[0]), rng)[0]
            lines = []
            for k in range(0, len(t), 100):
                state, fault, sev = world.truth(float(t[k]))
                settled = world.settled(float(t[k]))
                act = state if settled else ""
                mai = "" if (state == "off" or not settled or (fault != "normal" and sev < 0.6)) else fault
                for i in range(k, min(k + 100, len(t))):
                    r = x[i]
                    lines.append(
                        f"{t[i]:.3f},{r[0]:.6g},{r[1]:.6g},{r[2]:.6g},{r[3]:.6g},{r[4]:.6g},{r[5]:.6g},"
                        f"{temp:.3f},{act},{mai}\n"
                    )
            f.writelines(lines)
    return n


# -- (a) kernels -----------------------------------------------------------------------------------
def _time_interleaved(
    fns: dict[str, Callable[[np.ndarray], Any]], wins: np.ndarray, reps: int
) -> dict[str, float]:
    """Best (over ``reps``) mean seconds per window of each function, repetitions interleaved."""
    best = dict.fromkeys(fns, math.inf)
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for w in wins:
                fn(w)
            best[name] = min(best[name], (time.perf_counter() - t0) / len(wins))
    return best


def bench_kernels(data: np.ndarray, reps: int) -> list[dict[str, Any]]:
    """Numba vs numpy/scipy per window on windows cut from the recording (and from CWRU-like
    12 kHz data for the bearing set)."""
    import scipy.signal

    from pipelines.dsp import defect_multiples
    from pipelines.features import FeatureExtractor
    from tests.naive import NaiveFeatures

    imu = ("ax", "ay", "az", "gx", "gy", "gz")
    bands = (0.5, 5, 15, 30, 60, 120, 250, 500)
    skf = defect_multiples(9, 0.3126, 1.537)
    cases: list[tuple[str, dict[str, Any], int]] = [
        (
            "6ch x 1024: stats + bands (default feature sets)",
            {
                "channels": imu,
                "rate_hz": 1000.0,
                "window": 1024,
                "features": ("stats", "bands"),
                "bands_hz": bands,
            },
            0,
        ),
        (
            "6ch x 1024: stats + bands + spectrum + motion",
            {
                "channels": imu,
                "rate_hz": 1000.0,
                "window": 1024,
                "features": ("stats", "bands", "spectrum", "motion"),
                "bands_hz": bands,
            },
            0,
        ),
        (
            "3ch x 1024: maintenance (stats, bands, velocity, shaft, envelope)",
            {
                "channels": imu[:3],
                "rate_hz": 1000.0,
                "window": 1024,
                "features": ("stats", "bands", "velocity", "shaft", "envelope"),
                "bands_hz": (5, 20, 40, 60, 100, 200, 300, 450, 500),
                "shaft_range_hz": (5.0, 40.0),
                "defects": skf,
            },
            3,
        ),
        (
            "2ch x 2048 at 12 kHz: CWRU (stats, velocity, shaft, envelope)",
            {
                "channels": ("de", "fe"),
                "rate_hz": 12000.0,
                "window": 2048,
                "features": ("stats", "velocity", "shaft", "envelope"),
                "shaft_hz": 29.93,
                "defects": skf,
                "accel_unit": "g",
            },
            2,
        ),
    ]
    out = []
    rng = np.random.default_rng(0)
    for label, kw, n_bp in cases:
        n_ch, win = len(kw["channels"]), kw["window"]
        starts = rng.integers(0, data.shape[0] - win, 60)
        if kw["rate_hz"] == 1000.0:
            wins = np.stack([data[s : s + win, :n_ch].T for s in starts])
        else:  # 12 kHz bearing-like: impacts ringing a 3 kHz resonance at BPFI, plus noise
            t = np.arange(win) / kw["rate_hz"]
            ring = np.exp(-(t % (1 / 162.0)) / 0.0015) * np.sin(2 * np.pi * 3000 * t)
            wins = rng.standard_normal((60, n_ch, win)) * 0.05 + ring
        if n_bp:  # band-passed rows, as the stream stage would deliver them
            sos = scipy.signal.butter(
                4,
                [250, 480] if kw["rate_hz"] == 1000.0 else [2000, 5000],
                btype="bandpass",
                fs=kw["rate_hz"],
                output="sos",
            )
            wins = np.concatenate([wins, scipy.signal.sosfilt(sos, wins[:, :n_bp], axis=-1)], axis=1)
        wins = np.ascontiguousarray(wins)
        fx, ref = FeatureExtractor(**kw), NaiveFeatures(**kw)
        err = max(
            float(np.max(np.abs(fx.compute(w) - ref.vector(w)) / (np.abs(ref.vector(w)) + 1e-9)))
            for w in wins[:5]
        )
        t = _time_interleaved({"numba": fx.compute, "numpy": ref.vector}, wins, reps)
        out.append(
            {
                "case": label,
                "features": len(fx.names),
                "numba_us": round(t["numba"] * 1e6, 1),
                "numpy_us": round(t["numpy"] * 1e6, 1),
                "ratio": round(t["numpy"] / t["numba"], 1),
                "max_rel_diff": float(f"{err:.2g}"),
            }
        )
    return out


# -- (b) replay ------------------------------------------------------------------------------------
class Stages:
    """Accumulated seconds per stage, by wrapping entry points."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed

    def wrap_gen(self, name: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def timed(*a: Any, **k: Any) -> Iterator[Any]:
            it = fn(*a, **k)
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    self.seconds[name] += time.perf_counter() - t0
                    return
                self.seconds[name] += time.perf_counter() - t0
                yield item

        return timed


def bench_replay(config: Path, recording: Path, stub_learners: bool = False) -> dict[str, Any]:
    """One instrumented replay; stage seconds are wall time inside each stage."""
    import edged.replay as rp
    from edged.config import load

    cfg, _ = load(str(config))
    st = Stages()
    real_build = rp.build_engine

    def build(*a: Any, **k: Any) -> Any:
        engine = real_build(*a, **k)
        for task in engine.tasks.values():
            task.extractor.compute = st.wrap("features", task.extractor.compute)
            task._as_dict = st.wrap("feature_dict", task._as_dict)
            task.windower.push = st.wrap_gen("windowing_stream", task.windower.push)
            m = task.model
            if stub_learners:
                m.predict = lambda x: (None, {})
                m.score = lambda x: (0.0, False)
                m.learn = lambda x, y, p: None
            m.predict = st.wrap("predict", m.predict)
            m.score = st.wrap("anomaly", m.score)
            m.learn = st.wrap("learn", m.learn)
            task.process = st.wrap("task_total", task.process)
        engine._emit = st.wrap("publish", engine._emit)
        engine.ingest = st.wrap("ingest_total", engine.ingest)
        return engine

    rp.build_engine = build
    rp_read = rp.read_recording
    rp.read_recording = st.wrap_gen("read_parse", rp_read)
    try:
        c0, w0 = time.process_time(), time.perf_counter()
        rep = rp.replay(cfg, [recording])
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    finally:
        rp.build_engine = real_build
        rp.read_recording = rp_read
    s = dict(st.seconds)
    inner = ("features", "feature_dict", "windowing_stream", "predict", "anomaly", "learn")
    stages = {
        "read_parse": s.get("read_parse", 0.0),
        "windowing_stream": s.get("windowing_stream", 0.0),
        "features": s.get("features", 0.0),
        "feature_dict": s.get("feature_dict", 0.0),
        "predict": s.get("predict", 0.0),
        "anomaly": s.get("anomaly", 0.0),
        "learn": s.get("learn", 0.0),
        "publish": s.get("publish", 0.0),
        "task_other": s.get("task_total", 0.0) - sum(s.get(k, 0.0) for k in inner),
        "engine_other": s.get("ingest_total", 0.0) - s.get("task_total", 0.0) - s.get("publish", 0.0),
    }
    stages["replay_other"] = wall - s.get("read_parse", 0.0) - s.get("ingest_total", 0.0)
    n = rep["samples"]
    windows = {k: v["windows"] for k, v in rep["tasks"].items()}
    return {
        "samples": n,
        "windows": windows,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "samples_per_s": round(n / wall),
        "samples_per_cpu_s": round(n / cpu),
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "stages_share": {k: round(v / wall, 3) for k, v in stages.items()},
        "us_per_window": {k: round(v / max(1, sum(windows.values())) * 1e6, 1) for k, v in stages.items()},
        "accuracy": {k: v["accuracy"] for k, v in rep["tasks"].items()},
    }


# -- (c) service -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(exe):
        raise RuntimeError("mosquitto is not installed (apt install mosquitto)")
    port = _free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def _status_kb(pid: int, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else -1


def _service_run(config: Path, port: int, run_s: float, tasks: int) -> dict[str, Any]:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    first: dict[str, float] = {}
    all_seen = threading.Event()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        task = msg.topic.rsplit("/", 1)[-1]
        if task not in first:
            first[task] = time.perf_counter()
            if len(first) == tasks:
                all_seen.set()

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}-{time.time_ns()}")
    sub.on_message = on_message
    ready = threading.Event()
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_connect = lambda c, *a: c.subscribe("edged/+/prediction/#", qos=0)
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    ready.wait(10)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}  # as the unit runs: no kernel cache
    env["PYTHONPATH"] = str(REPO)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged", "run", "-c", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not all_seen.wait(180):
            raise RuntimeError(f"not every task predicted within 180 s (got {sorted(first)})")
        time.sleep(max(0.0, run_s - (time.perf_counter() - t0)))
        hwm, rss = _status_kb(proc.pid, "VmHWM"), _status_kb(proc.pid, "VmRSS")
        anon, file_ = _status_kb(proc.pid, "RssAnon"), _status_kb(proc.pid, "RssFile")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.loop_stop()
        sub.disconnect()
    per_task = {k: round(v - t0, 2) for k, v in sorted(first.items())}
    return {
        "first_prediction_s": min(per_task.values()),
        "every_task_s": max(per_task.values()),
        "first_by_task_s": per_task,
        "peak_rss_mb": round(hwm / 1024, 1),
        "rss_at_end_mb": round(rss / 1024, 1),
        "rss_anon_at_end_mb": round(anon / 1024, 1),
        "rss_file_at_end_mb": round(file_ / 1024, 1),
        "exit_code": rc,
        "ran_s": run_s,
    }


def bench_service(tmp: Path, run_s: float) -> dict[str, Any]:
    broker, port = _mosquitto(tmp)
    try:
        text = (REPO / "config.toml").read_text()
        state = tmp / "service-state"
        text, n1 = re.subn(r"(?m)^port = 1883$", f"port = {port}", text)
        text, n2 = re.subn(r'(?m)^dir = "state"', f'dir = "{state}"', text)
        assert n1 == 1 and n2 == 1, "config.toml changed shape: update the bench's substitutions"
        cfg = tmp / "service.toml"
        cfg.write_text(text)
        n_tasks = len(re.findall(r"(?m)^\[tasks\.[^.\]]+\]$", text))
        cold = _service_run(cfg, port, run_s, n_tasks)
        warm = _service_run(cfg, port, run_s, n_tasks)
        cache = state / "numba-cache"
        files = sum(1 for _ in cache.rglob("*")) if cache.exists() else 0
        return {
            "cold": cold,
            "warm": warm,
            "numba_cache_files": files,
            "first_window_s": 0.512,
        }  # the activity window (512 samples at 1 kHz) must fill first
    finally:
        broker.terminate()
        broker.wait(10)


# -- report ----------------------------------------------------------------------------------------
def _table(res: dict[str, Any]) -> str:
    lines = ["(a) features per window: numba vs numpy/scipy (same windows, best of reps)", ""]
    lines.append(f"  {'case':<66}{'feats':>6}{'numba us':>10}{'numpy us':>10}{'ratio':>8}")
    for k in res["kernels"]:
        lines.append(
            f"  {k['case']:<66}{k['features']:>6}{k['numba_us']:>10}{k['numpy_us']:>10}{k['ratio']:>7}x"
        )
    for key, title in (
        ("replay", "default pipelines"),
        ("replay_front_end", "learners stubbed (front end only)"),
    ):
        r = res.get(key)
        if not r:
            continue
        lines += [
            "",
            f"(b) replay, {title}: {r['samples']:,} samples, windows {r['windows']}",
            f"  {r['samples_per_s']:,} samples/s wall, {r['samples_per_cpu_s']:,} samples per CPU-second",
            f"  {'stage':<20}{'seconds':>9}{'share':>8}{'us/window':>11}",
        ]
        for stage, sec in r["stages_s"].items():
            lines.append(
                f"  {stage:<20}{sec:>9.3f}{r['stages_share'][stage]:>8.1%}{r['us_per_window'][stage]:>11}"
            )
    s = res.get("service")
    if s:
        lines += [
            "",
            "(c) edged run on config.toml (simulated sensors)",
            f"  first prediction: cold cache {s['cold']['first_prediction_s']} s (every task "
            f"{s['cold']['every_task_s']} s), warm cache {s['warm']['first_prediction_s']} s (every task "
            f"{s['warm']['every_task_s']} s); the first {s['first_window_s']} s window must fill first",
            f"  peak RSS (VmHWM): cold {s['cold']['peak_rss_mb']} MB, warm {s['warm']['peak_rss_mb']} MB "
            f"after {s['warm']['ran_s']} s; at the end {s['warm']['rss_anon_at_end_mb']} MB anonymous + "
            f"{s['warm']['rss_file_at_end_mb']} MB file-backed (shared libraries)",
        ]
    lines += ["", "goals: " + ", ".join(f"{k} {v:,}" for k, v in GOALS.items())]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--seconds", type=float, default=600.0, help="length of the simulated recording (s at 1 kHz)"
    )
    ap.add_argument("--reps", type=int, default=7, help="repetitions of the kernel timing")
    ap.add_argument("--service-seconds", type=float, default=20.0, help="how long each service run lasts")
    ap.add_argument("--skip-service", action="store_true", help="skip (c) (needs mosquitto)")
    ap.add_argument("--json", action="store_true", help="print only the JSON")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edged-bench-"))
    os.environ.setdefault("NUMBA_CACHE_DIR", str(tmp / "numba-cache"))  # before pipelines are imported
    try:
        res: dict[str, Any] = {
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "cpu": _cpu_model(),
                "loadavg_at_start": list(os.getloadavg()),
            },
            "goals": GOALS,
        }
        rec = tmp / "sim.csv"
        rows = simulate_recording(rec, args.seconds)
        res["recording"] = {"rows": rows, "bytes": rec.stat().st_size, "rate_hz": 1000, "channels": 6}
        from drivers.replay import read_recording

        data = np.concatenate([b.x[:, :6] for b in read_recording(rec)])
        res["kernels"] = bench_kernels(data, args.reps)
        bench_replay(REPO / "config.toml", rec)  # warm-up: compile every kernel before timing
        res["replay"] = bench_replay(REPO / "config.toml", rec)
        res["replay_front_end"] = bench_replay(REPO / "config.toml", rec, stub_learners=True)
        if not args.skip_service:
            res["service"] = bench_service(tmp, args.service_seconds)
        res["machine"]["loadavg_at_end"] = list(os.getloadavg())
        if not args.json:
            print(_table(res))
            print()
        print(json.dumps(res, separators=(",", ":")))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
