"""Fast research loop for the NAB detector: the 33 files as numpy arrays, a candidate's alarm
flags per row, NAB's scorer. Not the service path (bench/nab_corpus.py is); used to choose the
detector and its defaults before porting them.

    python -m bench.nab_research
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.nab_score import normalise, null_score, onset_rows, score_file

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "nab"


def load() -> dict[str, tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]]:
    lab = json.loads((DATA / "labels.json").read_text())["files"]
    out = {}
    for f in sorted(lab):
        a = np.loadtxt(DATA / f, delimiter=",", skiprows=1)
        out[f] = (a[:, 0], a[:, 1], [tuple(w) for w in lab[f]["anomaly_windows"]])
    return out


def corpus(
    files: dict[str, tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]],
    alarms: Callable[[np.ndarray, np.ndarray], np.ndarray],
    verbose: bool = False,
) -> tuple[float, dict[str, float]]:
    raw = null = 0.0
    nw = 0
    per: dict[str, float] = {}
    for f, (t, v, w) in files.items():
        a = alarms(t, v)
        s = score_file(t, onset_rows(a), w)
        raw += s.score
        null += null_score(t, w)
        nw += len(w)
        per[f] = s.score
        if verbose:
            print(f"  {f:60s} {s.score:7.3f} tp={s.tp} fn={s.fn} fp={s.fp}")
    return normalise(raw, null, nw), per


def discord_alarms(t: np.ndarray, v: np.ndarray, **kw: float) -> np.ndarray:
    """The shipped detector (defaults, or the DiscordParams ``kw``), one value per window (hop 1)."""
    from pipelines.anomaly import DiscordParams, DiscordScorer

    sc = DiscordScorer(DiscordParams(model="discord", **kw))  # type: ignore[arg-type]
    det, pol = sc.detector, sc.policy
    out = np.zeros(len(v), dtype=bool)
    for i, x in enumerate(v.tolist()):
        s, novel = det.score_one([x])
        det.learn_one([x])
        out[i] = pol.update(s, novel).alarm
    return out


if __name__ == "__main__":
    files = load()
    t0 = time.perf_counter()
    # python -m bench.nab_research [-v] [key=value ...]: DiscordParams to try (JSON values)
    kw = {k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[1:] if "=" in a)}
    sc, _ = corpus(files, lambda t, v: discord_alarms(t, v, **kw), verbose="-v" in sys.argv)
    n = sum(len(v) for _, v, _ in files.values())
    dt = time.perf_counter() - t0
    print(f"score {sc:.1f} ({dt:.1f} s, {1e6 * dt / n:.0f} us per sample with scoring)")
