"""A fair benchmark (issue 11): edged replay vs a plain numpy + river pipeline, same window,
hop and model family, alternating A B A B in one run; then the service's start-up, memory and
CPU share at the shipped config.

Run from the repository root (test extras; ``mosquitto`` for the service part)::

    .venv/bin/python -m bench.fair                 # table, then one JSON line
    .venv/bin/python -m bench.fair --quick         # fewer repetitions, a smaller IMU stream

Datasets: BasicMotions (train + test streams, repeated 50 times, window 25 hop 25), a generated
1 kHz 6-axis IMU stream of the simulated motor (2,000,000 rows, window 512 hop 256) and the CWRU
dev stream (window 2048 hop 2048). Model families: Gaussian naive Bayes (edged ``fast_gnb`` vs
river's ``GaussianNB``) and the Hoeffding tree (river's, on both sides).

Each measurement runs in its own process (``--one``), after a warm-up process that fills numba's
cache; inside it, one file is run untimed first (numba's cached kernels load, numpy and river
warm up), then the whole dataset is timed. It reports the wall time of the pipeline (reading the CSV, windows, features, predict,
learn; not the interpreter start), its samples per second and the process's peak RSS. The plain
pipeline is what one writes for an evaluation: ``np.loadtxt`` over the file, every window at once
with ``sliding_window_view``, the features in numpy (per channel mean, std, min, max, RMS, skew,
kurtosis, peak-to-peak and FFT band powers), then river's ``predict_proba_one``/``learn_one`` per
window on a dict, test-then-train, as edged does.

Service (``edged run`` on ``config.toml``, simulated sensors, a local mosquitto): time from process
start to the first prediction with an empty and with a warm numba cache; after a warm-up, RSS and
anonymous memory from ``/proc/PID/smaps_rollup``, and CPU per thread from
``/proc/PID/task/*/stat``: the sensor threads (``edged-sensor-*``, which also run the sensor
emulation: the simulated motor and the emulated I2C chips) vs everything else (the pipeline:
windows, features, learners, publishing).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
CACHE = Path(tempfile.gettempdir()) / "edged-bench-fair"
IMU_BANDS = [0.5, 5, 15, 30, 60, 120, 250, 500]

DATASETS: dict[str, dict[str, Any]] = {
    "basic_motions_x50": {
        "rate_hz": 10.0,
        "channels": ["ax", "ay", "az", "gx", "gy", "gz"],
        "label": "label.activity",
        "window": 25,
        "hop": 25,
        "bands_hz": [0, 1, 2, 3, 5],
        "classes": ["Standing", "Walking", "Running", "Badminton"],
        "features": ["stats", "bands"],
    },
    "imu_1khz": {
        "rate_hz": 1000.0,
        "channels": ["ax", "ay", "az", "gx", "gy", "gz"],
        "label": "label.activity",
        "window": 512,
        "hop": 256,
        "bands_hz": IMU_BANDS,
        "classes": ["off", "idle", "running"],
        "features": ["stats", "bands"],
    },
    "cwru_dev": {
        "rate_hz": 12000.0,
        "channels": ["de", "fe"],
        "label": "label.maintenance",
        "window": 2048,
        "hop": 2048,
        "bands_hz": [0, 500, 1000, 2000, 3000, 4000, 5000, 6000],
        "classes": ["normal", "inner_race", "ball", "outer_race"],
        "features": ["stats", "bands"],
        "accel_unit": "g",
    },
}
MODELS = {"gnb": ("fast_gnb", "gaussian_nb"), "hoeffding_tree": ("hoeffding_tree", "hoeffding_tree")}


def _files(name: str, imu_rows: int) -> list[Path]:
    if name == "basic_motions_x50":
        d = SHARED / "basic_motions"
        if not d.exists():
            d = REPO / "tests" / "data" / "basic_motions"
        return [d / "stream_train.csv", d / "stream_test.csv"] * 50
    if name == "cwru_dev":
        return [SHARED / "cwru_dev" / "stream.csv.gz"]
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"imu_{imu_rows}.csv"
    if not path.exists():
        from bench.bench import simulate_recording

        tmp = path.with_suffix(".tmp")
        simulate_recording(tmp, imu_rows / 1000.0)
        tmp.replace(path)
    return [path]


def _head(path: Path, rows: int) -> Path:
    """The first ``rows`` rows of a recording (for the untimed warm-up), cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"head{rows}_{path.name.removesuffix('.gz')}"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        with _open(path) as f, open(tmp, "w") as g:
            for i, line in enumerate(f):
                if i > rows:
                    break
                g.write(line)
        tmp.replace(out)
    return out


# -- A: edged replay --------------------------------------------------------------------------------
def _edged_config(name: str, files: list[Path], model: str) -> Any:
    from edged.config import parse

    d = DATASETS[name]
    header = _open(files[0]).readline().strip().split(",")
    task: dict[str, Any] = {
        "channels": d["channels"],
        "window": d["window"],
        "hop": d["hop"],
        "features": d["features"],
        "bands_hz": d["bands_hz"],
        "classes": d["classes"],
        "classifier": {"model": model},
    }
    if "accel_unit" in d:
        task["accel_unit"] = d["accel_unit"]
    raw = {
        "device": {"id": "bench"},
        "mqtt": {"host": "127.0.0.1", "port": 1883},
        "state": {"dir": str(CACHE / "state")},
        "sensors": {
            "s": {
                "driver": "file",
                "path": str(files[0]),
                "rate_hz": d["rate_hz"],
                "channels": [c for c in header[1:] if not c.startswith("label.")][: len(d["channels"])]
                if name != "imu_1khz"
                else d["channels"],
            }
        },
        "tasks": {d["label"].split(".", 1)[1]: task},
    }
    return parse(raw, "<bench>", REPO)


def run_edged(name: str, files: list[Path], model: str) -> dict[str, Any]:
    from edged.replay import replay

    cfg = _edged_config(name, files, model)
    t0 = time.perf_counter()
    rep = replay(cfg, files)
    wall = time.perf_counter() - t0
    task = next(iter(rep["tasks"].values()))
    return {
        "wall_s": wall,
        "samples": rep["samples"],
        "windows": task["windows"],
        "accuracy": task["accuracy"],
    }


# -- B: the plain numpy + river pipeline ------------------------------------------------------------
def _open(path: Path) -> Any:
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _read(path: Path, channels: list[str], label: str) -> tuple[np.ndarray, np.ndarray]:
    with _open(path) as f:
        header = f.readline().strip().split(",")
        lines = f.read().splitlines()
    cols = [header.index(c) for c in channels]
    x = np.loadtxt(lines, delimiter=",", usecols=cols, dtype=np.float64, ndmin=2)
    y = np.loadtxt(lines, delimiter=",", usecols=[header.index(label)], dtype=str, ndmin=1)
    return x, y


def plain_features(w: np.ndarray, rate_hz: float, bands_hz: list[float]) -> tuple[np.ndarray, list[str]]:
    """Features of windows ``w`` (n_windows, window, channels), all at once."""
    mean = w.mean(1)
    c = w - mean[:, None, :]
    var = (c**2).mean(1)
    std = np.sqrt(var)
    with np.errstate(invalid="ignore", divide="ignore"):
        skew = np.where(var > 0, (c**3).mean(1) / var**1.5, 0.0)
        kurt = np.where(var > 0, (c**4).mean(1) / var**2 - 3.0, 0.0)
    feats = [mean, std, w.min(1), w.max(1), np.sqrt((w**2).mean(1)), skew, kurt, np.ptp(w, 1)]
    names = ["mean", "std", "min", "max", "rms", "skew", "kurtosis", "ptp"]
    power = np.abs(np.fft.rfft(c, axis=1)) ** 2
    freqs = np.fft.rfftfreq(w.shape[1], 1.0 / rate_hz)
    for lo, hi in itertools.pairwise(bands_hz):
        sel = (freqs >= lo) & (freqs < hi)
        feats.append(power[:, sel, :].sum(1))
        names.append(f"band_{lo:g}_{hi:g}")
    out = np.stack(feats, 2)  # (n, channels, features)
    return out.reshape(len(w), -1), names


def run_plain(name: str, files: list[Path], family: str) -> dict[str, Any]:
    from river import naive_bayes, tree

    d = DATASETS[name]
    model = naive_bayes.GaussianNB() if family == "gnb" else tree.HoeffdingTreeClassifier()
    win, hop = d["window"], d["hop"]
    t0 = time.perf_counter()
    samples = windows = hits = learned = 0
    for path in files:
        x, y = _read(path, d["channels"], d["label"])
        samples += len(x)
        if len(x) < win:
            continue
        w = np.lib.stride_tricks.sliding_window_view(x, win, axis=0)[::hop].transpose(0, 2, 1)
        labels = y[win - 1 :: hop][: len(w)]
        feats, fnames = plain_features(w, d["rate_hz"], d["bands_hz"])
        keys = [f"{ch}.{f}" for ch in d["channels"] for f in fnames]
        for row, lab in zip(feats.tolist(), labels.tolist(), strict=True):
            xd = dict(zip(keys, row, strict=True))
            proba = model.predict_proba_one(xd)
            pred = max(proba, key=proba.__getitem__) if proba else None
            windows += 1
            if lab:
                hits += pred == lab
                learned += 1
                model.learn_one(xd, lab)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "samples": samples, "windows": windows, "accuracy": hits / max(1, learned)}


# -- one measurement in its own process -------------------------------------------------------------
def _smaps_kb(pid: int | str = "self") -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def _one(side: str, name: str, family: str, imu_rows: int) -> dict[str, Any]:
    import resource

    files = _files(name, imu_rows)
    # the first 50,000 rows, untimed, on both sides: loads numba's cached kernels (edged) and
    # warms numpy and river (both), so the timed run is the steady state (reported: first_run_s)
    warm = [_head(files[0], 50_000)]
    t0 = time.perf_counter()
    first = run_edged(name, warm, MODELS[family][0]) if side == "edged" else run_plain(name, warm, family)
    first_s = time.perf_counter() - t0
    r = run_edged(name, files, MODELS[family][0]) if side == "edged" else run_plain(name, files, family)
    r["first_run_s"] = round(first_s, 3)
    r["first_run_samples"] = first["samples"]
    sm = _smaps_kb()
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r["anon_mb"] = sm.get("Anonymous", -1) / 1024
    r["imported"] = sorted({m.split(".")[0] for m in sys.modules} & {"numba", "river", "scipy"})
    return r


def _spawn(side: str, name: str, family: str, imu_rows: int) -> dict[str, Any]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(CACHE / "numba-cache"), PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "bench.fair", "--one", side, name, family, "--imu-rows", str(imu_rows)]
    r = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"{side} {name} {family}: {r.stderr[-2000:]}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def bench_pipelines(
    reps: int, imu_rows: int, datasets: list[str], families: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for name in datasets:
        _files(name, imu_rows)  # generate first, untimed
        for family in families:
            _spawn("edged", name, family, imu_rows)  # warm-up: numba's cache
            a: list[dict[str, Any]] = []
            b: list[dict[str, Any]] = []
            for _ in range(reps):  # A B A B
                a.append(_spawn("edged", name, family, imu_rows))
                b.append(_spawn("plain", name, family, imu_rows))
            ta = statistics.median(r["wall_s"] for r in a)
            tb = statistics.median(r["wall_s"] for r in b)
            pairs = [rb["wall_s"] / ra["wall_s"] for ra, rb in zip(a, b, strict=True)]
            rows.append(
                {
                    "dataset": name,
                    "family": family,
                    "samples": a[0]["samples"],
                    "windows": [a[0]["windows"], b[0]["windows"]],
                    "edged_s": round(ta, 3),
                    "plain_s": round(tb, 3),
                    "ratio": round(tb / ta, 2),
                    "ratio_per_pair": [round(p, 2) for p in pairs],
                    "edged_samples_per_s": round(a[0]["samples"] / ta),
                    "plain_samples_per_s": round(b[0]["samples"] / tb),
                    "edged_peak_rss_mb": round(max(r["peak_rss_mb"] for r in a), 1),
                    "plain_peak_rss_mb": round(max(r["peak_rss_mb"] for r in b), 1),
                    "accuracy": [round(a[0]["accuracy"], 3), round(b[0]["accuracy"], 3)],
                    "edged_imports": a[0]["imported"],
                }
            )
    return rows


# -- the service ---------------------------------------------------------------------------------------
_WRAPPER = """
import json, os, sys, threading, time
out = sys.argv[1]
def names():
    while True:
        with open(out + '.tmp', 'w') as f:
            json.dump({t.native_id: t.name for t in threading.enumerate()}, f)
        os.replace(out + '.tmp', out)
        time.sleep(0.5)
threading.Thread(target=names, name='bench-names', daemon=True).start()
from edged.cli import main
sys.exit(main(['run', '-c', sys.argv[2]]))
"""


def _thread_cpu(pid: int) -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = d.joinpath("stat").read_text().rsplit(")", 1)[1].split()
            out[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return out


def _service_run(config: Path, port: int, warm_s: float, measure_s: float, tmp: Path) -> dict[str, Any]:
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    first: list[float] = []
    seen = threading.Event()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        if not first:
            first.append(time.perf_counter())
            seen.set()

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fair-{os.getpid()}-{time.time_ns()}")
    sub.on_message = on_message
    ready = threading.Event()
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_connect = lambda c, *a: c.subscribe("edged/+/prediction/#", qos=0)
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    ready.wait(10)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = str(REPO)
    names_file = tmp / "threads.json"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, str(names_file), str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not seen.wait(300):
            raise RuntimeError("no prediction within 300 s")
        first_s = first[0] - t0
        time.sleep(warm_s)
        c0, w0 = _thread_cpu(proc.pid), time.perf_counter()
        time.sleep(measure_s)
        c1, w1 = _thread_cpu(proc.pid), time.perf_counter()
        sm = _smaps_kb(proc.pid)
        names = {int(k): v for k, v in json.loads(names_file.read_text()).items()}
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sub.loop_stop()
        sub.disconnect()
    span = w1 - w0
    sensor = pipeline = 0.0
    for tid, cpu in c1.items():
        d = cpu - c0.get(tid, 0.0)
        name = names.get(tid, "")
        if name.startswith("edged-sensor-"):
            sensor += d
        elif name != "bench-names":
            pipeline += d
    return {
        "first_prediction_s": round(first_s, 2),
        "rss_mb": round(sm.get("Rss", -1) / 1024, 1),
        "anonymous_mb": round(sm.get("Anonymous", -1) / 1024, 1),
        "private_dirty_mb": round(sm.get("Private_Dirty", -1) / 1024, 1),
        "peak_rss_mb": round(hwm / 1024, 1),
        "sensor_cpu_pct": round(100 * sensor / span, 2),
        "pipeline_cpu_pct": round(100 * pipeline / span, 2),
        "measured_s": round(span, 1),
    }


def bench_service(warm_s: float, measure_s: float) -> dict[str, Any]:
    from bench.bench import _mosquitto

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker, port = _mosquitto(tmp)
        try:
            text = (REPO / "config.toml").read_text()
            text, n1 = re.subn(r"(?m)^port = 1883$", f"port = {port}", text)
            text, n2 = re.subn(r'(?m)^dir = "state"', f'dir = "{tmp / "state"}"', text)
            assert n1 == 1 and n2 == 1, "config.toml changed shape: update the substitutions"
            cfg = tmp / "service.toml"
            cfg.write_text(text)
            classifiers = sorted(set(re.findall(r'(?m)^model = "([a-z_]+)"', text)))
            cold = _service_run(cfg, port, warm_s, measure_s, tmp)
            warm = _service_run(cfg, port, warm_s, measure_s, tmp)
            return {"cold": cold, "warm": warm, "models": classifiers}
        finally:
            broker.terminate()
            broker.wait(10)


# -- report -----------------------------------------------------------------------------------------
def table(res: dict[str, Any]) -> str:
    lines = [
        "| dataset | model family | samples | edged s | plain s | ratio (A/B pairs) | edged samples/s | "
        "peak RSS edged / plain MB | accuracy edged / plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["pipelines"]:
        lines.append(
            f"| {r['dataset']} | {r['family']} | {r['samples']:,} | {r['edged_s']} | {r['plain_s']} | "
            f"**{r['ratio']}x** ({', '.join(map(str, r['ratio_per_pair']))}) | {r['edged_samples_per_s']:,} | "
            f"{r['edged_peak_rss_mb']} / {r['plain_peak_rss_mb']} | {r['accuracy'][0]} / {r['accuracy'][1]} |"
        )
    s = res.get("service")
    if s:
        lines += [
            "",
            f"Service (`edged run`, config.toml: {', '.join(s['models'])}):",
            "",
            "| cache | first prediction s | RSS MB | anonymous MB | private dirty MB | peak RSS MB | "
            "sensor threads CPU % | pipeline CPU % |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for k in ("cold", "warm"):
            v = s[k]
            lines.append(
                f"| {k} | {v['first_prediction_s']} | {v['rss_mb']} | {v['anonymous_mb']} | "
                f"{v['private_dirty_mb']} | {v['peak_rss_mb']} | {v['sensor_cpu_pct']} | {v['pipeline_cpu_pct']} |"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--one", nargs=3, metavar=("SIDE", "DATASET", "FAMILY"), help=argparse.SUPPRESS)
    ap.add_argument("--imu-rows", type=int, default=2_000_000, help="rows of the generated IMU stream")
    ap.add_argument("--reps", type=int, default=2, help="A B pairs per dataset and model family")
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--families", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--skip-service", action="store_true")
    ap.add_argument("--service-warm-s", type=float, default=20.0, help="service warm-up before measuring")
    ap.add_argument("--service-measure-s", type=float, default=30.0, help="CPU measured over this long")
    ap.add_argument("--json", action="store_true", help="print only the JSON")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(*args.one, args.imu_rows)))
        return 0
    res: dict[str, Any] = {
        "command": "python -m bench.fair " + " ".join(sys.argv[1:]),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "pipelines": bench_pipelines(args.reps, args.imu_rows, args.datasets, args.families),
    }
    if not args.skip_service:
        res["service"] = bench_service(args.service_warm_s, args.service_measure_s)
    res["loadavg_end"] = os.getloadavg()
    if not args.json:
        print(table(res))
    print(json.dumps(res, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
