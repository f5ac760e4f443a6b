"""Research: carry-over features (pipelines/carryover.py) on the CWRU streams, frozen transfer per learner.

Computes per 2048-sample window: line-to-background ratios per family (mean, max over 3 harmonics),
family shares, shaft speed by search, log kurtosis/crest of raw and band-passed rows, both channels;
then trains each learner prequentially on cwru_dev and predicts the transfer streams frozen.
Run: .venv/bin/python bench/carryover_research.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import gzip
import pickle
from pathlib import Path

import numpy as np
from scipy.signal import butter, hilbert, sosfilt

from pipelines.carryover import _family_lines, _family_summary, _impulsiveness, _speed_search

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
FS = 12000.0
W = 2048
P = 8192
MULTS = np.array([3.5848, 5.4152, 4.7135, 0.39828, 1.0])
STREAMS = {
    "dev": DATA / "cwru_dev" / "stream.csv.gz",
    "s021": DATA / "cwru_transfer" / "sizes_021_0hp.csv.gz",
    "l1": DATA / "cwru_transfer" / "loads_007_1hp.csv.gz",
    "l2": DATA / "cwru_transfer" / "loads_007_2hp.csv.gz",
    "l3": DATA / "cwru_transfer" / "loads_007_3hp.csv.gz",
}


def features(x: np.ndarray, xb: np.ndarray) -> tuple[np.ndarray, float]:
    df = FS / P
    gap = 2 * FS / W
    e = np.abs(hilbert(xb, axis=1))
    e = (e - e.mean(axis=1, keepdims=True)) * np.hanning(W + 2)[1:-1]
    psd = np.abs(np.fft.rfft(e, P, axis=1)) ** 2
    scratch = np.empty(P // 2 + 1)
    hz = _speed_search(
        psd, df, 29.93, MULTS[:3], 3, 0.003, gap, 0.1, 2 * df, 0.93, 1.02, 46, scratch, np.empty((2, 3, 3))
    )
    lines = np.empty((2, 5, 3))
    _family_lines(psd, df, hz, MULTS, 3, 0.005, gap, 0.1, 2 * df, scratch, lines)
    summ = np.empty((2, 13))
    _family_summary(lines, 3, summ)
    imp = np.empty((2, 2))
    impb = np.empty((2, 2))
    _impulsiveness(x, imp)
    _impulsiveness(xb, impb)
    rms = np.log10(np.sqrt(np.mean((x - x.mean(axis=1, keepdims=True)) ** 2, axis=1)))
    return np.concatenate([summ, imp, impb, rms[:, None], lines.reshape(2, 15)], axis=1).ravel(), hz


NAMES = [
    f"{ch}.{n}"
    for ch in ("de", "fe")
    for n in (
        *(f"lbr_{d}_{s}" for d in ("bpfo", "bpfi", "bsf", "ftf", "shaft") for s in ("mean", "max")),
        "share_bpfo",
        "share_bpfi",
        "share_bsf",
        "log_kurt",
        "log_crest",
        "band_log_kurt",
        "band_log_crest",
        "log_rms",
        *(f"line_{d}_{h}" for d in ("bpfo", "bpfi", "bsf", "ftf", "shaft") for h in (1, 2, 3)),
    )
]


def load(key: str, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fn = cache / f"carry2_{key}.pkl"
    if fn.exists():
        return pickle.loads(fn.read_bytes())
    rows = []
    with gzip.open(STREAMS[key], "rt") as f:
        next(f)
        rows = [line.rstrip("\n").split(",") for line in f]
    sos = butter(4, [2000, 5000], btype="band", fs=FS, output="sos")
    raw = np.array([[float(r[1]) for r in rows], [float(r[2]) for r in rows]])
    band = sosfilt(sos, raw, axis=1)
    lab = np.array([r[3] for r in rows])
    xs, ys, hzs = [], [], []
    for i in range(0, raw.shape[1] - W + 1, W):
        v, hz = features(raw[:, i : i + W], band[:, i : i + W])
        xs.append(v)
        ys.append(lab[i + W - 1])
        hzs.append(hz)
    out = (np.array(xs), np.array(ys), np.array(hzs))
    fn.write_bytes(pickle.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/carry_cache")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(exist_ok=True)
    data = {k: load(k, cache) for k in STREAMS}
    for k, (_x, y, hz) in data.items():
        print(k, {c: round(float(np.median(hz[y == c]) / 29.93), 3) for c in sorted(set(y))})


if __name__ == "__main__":
    main()


def evaluate() -> None:
    """Frozen transfer per feature group and learner (printed as a table)."""
    from river import linear_model, naive_bayes, preprocessing, tree

    cache = Path("/tmp/carry_cache")
    data = {k: load(k, cache) for k in STREAMS}
    idx = {n: i for i, n in enumerate(NAMES)}

    def cols(pred: object) -> list[int]:
        return [i for n, i in idx.items() if pred(n)]  # type: ignore[operator]

    groups = {
        "lbr+share+imp": cols(lambda n: "rms" not in n and "ftf" not in n),
        "lbr+share+imp+rms": cols(lambda n: "ftf" not in n),
        "lbr+imp": cols(lambda n: "rms" not in n and "share" not in n and "ftf" not in n),
        "share+imp": cols(lambda n: "share" in n or "kurt" in n or "crest" in n),
        "lbrmax+share+imp": cols(
            lambda n: ("max" in n and "ftf" not in n) or "share" in n or "kurt" in n or "crest" in n
        ),
        "de:lbr+share+imp": cols(lambda n: n.startswith("de") and "rms" not in n and "ftf" not in n),
    }
    learners = {
        "gnb": lambda: naive_bayes.GaussianNB(),
        "softmax": lambda: preprocessing.StandardScaler() | linear_model.SoftmaxRegression(),
        "ht20": lambda: tree.HoeffdingTreeClassifier(grace_period=20),
    }
    for g, c in groups.items():
        for ln, mk in learners.items():
            m = mk()
            x, y, _ = data["dev"]
            ok = []
            seen: set[str] = set()
            after = []
            for xi, yi in zip(x[:, c], y, strict=True):
                d = {NAMES[j]: float(v) for j, v in zip(c, xi, strict=True) if v == v}
                p = m.predict_one(d)
                ok.append(p == yi)
                if yi in seen:
                    after.append(p == yi)
                seen.add(yi)
                m.learn_one(d, yi)
            res = [f"dev {np.mean(ok):.3f}/{np.mean(after):.3f}"]
            for k in ("s021", "l1", "l2", "l3"):
                x2, y2, _ = data[k]
                pr = [
                    m.predict_one({NAMES[j]: float(v) for j, v in zip(c, xi, strict=True) if v == v})
                    for xi in x2[:, c]
                ]
                res.append(f"{k} {np.mean(np.array(pr) == y2):.3f}")
            print(f"{g:22s} {ln:8s}", " ".join(res), flush=True)
