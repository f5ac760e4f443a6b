"""Pictures of a replay: learning curve with drift points, confusion matrix, anomaly scores.

matplotlib is an optional dependency (``pip install 'edged[plot]'``); it is imported only
here, only when a plot is asked for, and with the non-interactive Agg backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def rolling_accuracy(hits: list[bool], width: int) -> np.ndarray:
    """Accuracy over the last ``width`` labelled windows, at each window (shorter at the start).

    >>> rolling_accuracy([True, False, True, True], 2).tolist()
    [1.0, 0.5, 0.5, 1.0]
    """
    h = np.asarray(hits, dtype=float)
    c = np.concatenate(([0.0], np.cumsum(h)))
    idx = np.arange(1, len(h) + 1)
    lo = np.maximum(0, idx - width)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_replay(
    trace: dict[str, Any],
    report: dict[str, Any],
    path: str | Path,
    width: int = 50,
    windows: list[tuple[float, float]] | None = None,
) -> Path:
    """Draw one row per task: learning curve (or, for an unlabelled task, the anomaly score, the
    threshold in force and the alarms against time, with the labelled anomaly ``windows``
    [start, end] in Unix seconds shaded) and confusion matrix."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("plots need matplotlib: pip install 'edged[plot]'") from None
    tasks = list(trace["tasks"])
    fig, axes = plt.subplots(
        len(tasks), 2, figsize=(13, 4.2 * len(tasks)), squeeze=False, gridspec_kw={"width_ratios": [2.2, 1]}
    )
    for row, name in enumerate(tasks):
        tr = trace["tasks"][name]
        ax, cax = axes[row]
        if tr["hits"]:
            acc = rolling_accuracy(tr["hits"], width)
            ax.plot(np.arange(1, len(acc) + 1), acc, lw=1.4, label=f"rolling accuracy ({width} windows)")
            cum = np.cumsum(tr["hits"]) / np.arange(1, len(tr["hits"]) + 1)
            ax.plot(np.arange(1, len(cum) + 1), cum, lw=1, ls="--", label="prequential accuracy (all so far)")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("labelled windows (each predicted before it was learned)")
            ax.set_ylabel("accuracy")
            for i, (at, fname) in enumerate(trace["file_starts"][name]):
                if i:
                    ax.axvline(at, color="grey", lw=0.8)
                ax.annotate(fname, (at, 0.02), fontsize=7, color="grey")
            for ev in tr["events"]:
                if ev.get("kind") == "drift" and ev.get("stream") == "error":
                    ax.axvline(ev["n_learned"], color="red", lw=0.8, ls=":")
                elif ev.get("kind") in ("promotion", "reset"):
                    ax.axvline(ev["n_learned"], color="green", lw=1.0)
            ax.plot([], [], color="red", ls=":", label="drift detected")
            ax.plot([], [], color="green", label="new model version")
        elif tr["scores"]:
            _anomaly(ax, tr, windows or [])
        rep = report["tasks"][name]
        title = f"{name}: {rep['windows']} windows, {rep['labelled']} labelled"
        if rep["labelled"]:
            title += f", accuracy {rep['accuracy']:.3f}, macro-F1 {rep['macro_f1']:.3f}"
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
        _confusion(cax, tr["confusion"])
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _anomaly(ax: Any, tr: dict[str, Any], windows: list[tuple[float, float]]) -> None:
    """Score, threshold and alarms of an anomaly task against (UTC) time."""
    import datetime as dt

    import matplotlib.dates as mdates

    def when(ts: np.ndarray) -> np.ndarray:
        return np.array([dt.datetime.fromtimestamp(float(v), dt.UTC) for v in ts])

    s = np.asarray(tr["scores"], dtype=float)
    ts = np.asarray(tr.get("times") or np.arange(len(s)), dtype=float)
    x = when(ts)
    alarm = np.asarray(tr["alarms"], dtype=bool)
    ax.plot(x, s, lw=0.6, label="anomaly score")
    thr = np.asarray(tr.get("thresholds") or [], dtype=float)
    if thr.size == s.size and np.isfinite(thr).any():
        ax.plot(x, thr, lw=1.0, color="black", label="threshold in force")
    top = float(np.nanmax(np.concatenate((s, thr[np.isfinite(thr)])))) if s.size else 1.0
    ax.fill_between(x, 0, top, where=alarm, color="red", alpha=0.15, step="post", label="alarm", lw=0)
    onset = np.flatnonzero(alarm & ~np.concatenate(([False], alarm[:-1])))
    ax.scatter(x[onset], s[onset], s=12, color="red", zorder=3, label=f"alarm onsets ({onset.size})")
    lo, hi = (ts.min(), ts.max()) if ts.size else (0.0, 0.0)
    shown = [(a, b) for a, b in windows if b >= lo and a <= hi]
    for i, (a, b) in enumerate(shown):
        ax.axvspan(
            *when(np.array([a, b])),
            color="orange",
            alpha=0.25,
            lw=0,
            label="labelled anomaly" if i == 0 else None,
        )
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("score")


def load_windows(path: str | Path, files: list[str]) -> list[tuple[float, float]]:
    """Labelled anomaly windows, as (start, end) Unix seconds, for the replayed ``files`` from a
    labels file in NAB's format: ``combined_windows.json`` (``{"folder/file.csv": [[start,
    end], ...]}``, times as ``YYYY-MM-DD HH:MM:SS[.ffffff]`` UTC), the shared data's
    ``labels.json`` (``{"files": {"folder/file.csv": {"anomaly_windows": [[s, e], ...]}}}``) or a
    single file's ``{"anomaly_windows": [...]}``. Entries are matched by the end of the path."""
    import datetime as dt
    import json

    def sec(v: Any) -> float:
        if isinstance(v, int | float):
            return float(v)
        return dt.datetime.fromisoformat(str(v)).replace(tzinfo=dt.UTC).timestamp()

    raw = json.loads(Path(path).read_text())
    if "anomaly_windows" in raw:
        return [(sec(a), sec(b)) for a, b in raw["anomaly_windows"]]
    table = raw.get("files", raw)
    out: list[tuple[float, float]] = []
    for f in files:
        name = Path(f).as_posix()
        for key, entry in table.items():
            if name.endswith(key) or Path(key).name == Path(f).name:
                wins = entry.get("anomaly_windows", []) if isinstance(entry, dict) else entry
                out += [(sec(a), sec(b)) for a, b in wins]
                break
    return out


def _confusion(ax: Any, confusion: dict[str, int]) -> None:
    pairs = [(k.split("->", 1)[0], k.split("->", 1)[1], v) for k, v in confusion.items()]
    if not pairs:
        ax.axis("off")
        ax.text(0.5, 0.5, "no labels", ha="center", va="center")
        return
    true = sorted({t for t, _, _ in pairs})
    pred = sorted({p for _, p, _ in pairs if p != "None"} | set(true)) + (
        ["None"] if any(p == "None" for _, p, _ in pairs) else []
    )
    m = np.zeros((len(true), len(pred)), dtype=int)
    for t, p, v in pairs:
        m[true.index(t), pred.index(p)] += v
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(
        range(len(pred)), [p if p != "None" else "(none)" for p in pred], rotation=45, ha="right", fontsize=8
    )
    ax.set_yticks(range(len(true)), true, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (prequential)")
    for i in range(len(true)):
        for j in range(len(pred)):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    str(m[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if m[i, j] > m.max() / 2 else "black",
                )
