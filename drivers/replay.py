"""Recorded files (the DESIGN.md recorded-file format), streamed in chunks.

CSV or ``.csv.gz`` with a header row: ``t`` (seconds, non-decreasing), channel columns, and
``label.<task>`` columns holding a class name (empty = unlabelled). Files are never loaded
whole: :func:`read_recording` yields :class:`~drivers.base.Block` s of about ``chunk_rows``
rows, parsed by a numba kernel over the raw bytes (:mod:`drivers._csv`). Empty channel cells
become NaN (the engine fills them with the channel's last value and counts them).
"""

from __future__ import annotations

import gzip
import io
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Literal, TextIO

import numpy as np
from pydantic import Field

from drivers.base import Block, SensorConfig
from pipelines.labels import LabelColumn

LABEL_PREFIX = "label."


class RecordingError(Exception):
    """The file does not follow the recorded-file format."""


def _open(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_header(path: Path) -> tuple[list[str], dict[str, int]]:
    """Channel names and ``{task: column}`` of label columns."""
    with _open(path) as f:
        return _parse_header(path, f.readline())


def _parse_header(path: Path, line: str) -> tuple[list[str], dict[str, int]]:
    cols = [c.strip().strip('"') for c in line.rstrip("\r\n").split(",")]
    if not cols or cols[0] != "t":
        raise RecordingError(f"{path}: the first column must be 't', header is {cols[:5]}")
    if len(set(cols)) != len(cols):
        raise RecordingError(f"{path}: duplicate column names in header")
    channels = [c for c in cols[1:] if not c.startswith(LABEL_PREFIX)]
    labels = {c[len(LABEL_PREFIX) :]: i for i, c in enumerate(cols) if c.startswith(LABEL_PREFIX)}
    if any(not c for c in channels) or any(not t for t in labels):
        raise RecordingError(f"{path}: empty column name in header")
    return channels, labels


def _open_binary(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def text_size(path: str | Path) -> int:
    """Size of the text in ``path`` (for a .gz, the uncompressed size from its trailer)."""
    p = Path(path)
    if p.suffix == ".gz":
        with open(p, "rb") as f:
            f.seek(-4, 2)
            return int.from_bytes(f.read(4), "little")  # ISIZE: exact below 4 GiB
    return p.stat().st_size


def read_recording(
    path: str | Path,
    chunk_rows: int = 65536,
    source: str = "file",
    progress: Callable[[int], None] | None = None,
) -> Iterator[Block]:
    """Stream ``path`` as blocks of about ``chunk_rows`` rows; labels arrive as
    ``{task: (codes, vocabulary)}``. Bytes are split and parsed by a numba kernel
    (:mod:`drivers._csv`); unusual number cells go through ``float()``. ``progress`` is
    called with the number of bytes of text consumed per chunk."""
    from drivers._csv import LABEL, NUMBER, parse_rows

    p = Path(path)
    try:
        f = _open_binary(p)
    except OSError as exc:
        raise RecordingError(f"{p}: cannot open: {exc.strerror or exc}") from None
    with f:
        try:
            head = f.readline()
            header = head.decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise RecordingError(f"{p}: cannot read: {exc}") from None
        if progress is not None:
            progress(len(head))
        channels, label_cols = _parse_header(p, header)
        all_cols = [c.strip().strip('"') for c in header.rstrip("\r\n").split(",")]
        kinds = np.zeros(len(all_cols), dtype=np.int64)
        slots = np.zeros(len(all_cols), dtype=np.int64)
        numbers = [0] + [all_cols.index(c) for c in channels]  # t, then the channels
        for j, c in enumerate(numbers):
            kinds[c], slots[c] = NUMBER, j
        for j, c in enumerate(label_cols.values()):
            kinds[c], slots[c] = LABEL, j
        row = 0
        last_t = -math.inf
        approx_bytes = max(4096, chunk_rows * (12 * len(all_cols)))
        rest = b""
        eof = False
        while not eof:
            try:
                data = f.read(approx_bytes)
            except (OSError, EOFError) as exc:
                raise RecordingError(f"{p}: cannot read after data row {row}: {exc}") from None
            if progress is not None:
                progress(len(data))
            eof = not data
            data = rest + data
            cut = len(data) if eof else data.rfind(b"\n") + 1
            if cut <= 0:  # no complete line yet: read on
                rest = data
                continue
            rest = data[cut:]
            buf = np.frombuffer(data, dtype=np.uint8, count=cut)
            try:
                num, labels_raw, cells = parse_rows(buf, kinds, slots, len(numbers), len(label_cols))
            except UnicodeDecodeError as exc:
                raise RecordingError(f"{p}: a label after data row {row} is not UTF-8 text: {exc}") from None
            for r, c, text in cells:
                try:
                    num[r, slots[c]] = float(text)
                except ValueError:
                    raise RecordingError(
                        f"{p}: data row {row + r + 1}, column {c + 1}: not a number: {text[:40]!r}"
                    ) from None
            if num.shape[0] == 0:
                continue
            t = np.ascontiguousarray(num[:, 0])
            if not np.all(np.isfinite(t)):
                bad = int(np.flatnonzero(~np.isfinite(t))[0])
                raise RecordingError(f"{p}: data row {row + bad + 1}: t is not a finite number")
            back = np.flatnonzero(np.diff(np.concatenate(([last_t], t))) < 0)
            if back.size:
                raise RecordingError(
                    f"{p}: data row {row + int(back[0]) + 1}: t goes backwards "
                    "(the format requires non-decreasing t)"
                )
            last_t = float(t[-1])
            labels = (
                {name: LabelColumn(*col) for name, col in zip(label_cols, labels_raw, strict=True)}
                if label_cols
                else None
            )
            yield Block(source, tuple(channels), t, np.ascontiguousarray(num[:, 1:]), labels)
            row += num.shape[0]


class FileSensorConfig(SensorConfig):
    """``driver = "file"``: play a recorded file in real time (``edged run`` on recorded data).

    ``channels`` names the file columns this sensor provides; label columns of the file are
    handed on with the samples, like labels that arrive over MQTT."""

    driver: Literal["file"]
    path: str = Field(min_length=1, description="The recording (CSV or `.csv.gz`) to play in real time.")
    # None: the recording's own rate. Windows, hops and warm-ups count samples, so a task whose
    # features need no frequency axis ("stats", the anomaly detectors) runs on any recording.
    rate_hz: float | None = Field(  # type: ignore[assignment]
        None,
        gt=0,
        le=1_000_000,
        description="Sample rate of the recording in Hz; leave it out to take the recording's own "
        "(then only time-domain features: windows and the anomaly detectors count samples).",
    )
    channels: list[str] = Field(min_length=1, description="File columns this sensor provides.")
    loop: bool = Field(True, description="Start over at the end of the file.")


class FileSensor:
    """Replays a recording against the monotonic clock: a row is due once ``t - t_first`` has
    elapsed since the sensor started (plus one file length per completed loop)."""

    CHANNELS: ClassVar[tuple[str, ...]] = ()
    #: a recording is replayed as it is: no data-quality checks, never degraded
    fault: str | None = None

    def __init__(
        self,
        path: str | Path,
        channels: Sequence[str],
        loop: bool = True,
        start: float | None = None,
        chunk_rows: int = 8192,
    ) -> None:
        self.path = Path(path)
        self.channels = tuple(channels)
        self.loop = loop
        self.chunk_rows = chunk_rows
        self.name = ""
        self.stats: Counter[str] = Counter()  # nothing to count: parse errors raise RecordingError
        self._start = start
        self._offset = 0.0  # added to file time: start - t_first, grows per loop
        self._pending: Block | None = None
        self._it: Iterator[Block] | None = None
        self._t_first: float | None = None
        self._t_last = 0.0
        self._done = False
        self._dt = 1.0
        file_channels, _ = read_header(self.path)
        missing = [c for c in self.channels if c not in file_channels]
        if missing:
            raise RecordingError(f"{self.path}: no column(s) {missing}")
        self._cols = [file_channels.index(c) for c in self.channels]

    def _next_chunk(self) -> Block | None:
        if self._it is None:
            self._it = read_recording(self.path, self.chunk_rows)
        blk = next(self._it, None)
        if blk is None and self.loop and self._t_first is not None:
            # next loop starts one median sample interval after the last row
            self._offset += (self._t_last - self._t_first) + self._dt
            self._it = read_recording(self.path, self.chunk_rows)
            blk = next(self._it, None)
        return blk

    def read_block(self, now: float) -> Block | None:
        if self._start is None:
            self._start = now
        out_t: list[np.ndarray] = []
        out_x: list[np.ndarray] = []
        out_l: list[dict[str, LabelColumn] | None] = []
        while not self._done:
            blk = self._pending or self._next_chunk()
            self._pending = None
            if blk is None:
                self._done = True
                break
            if self._t_first is None:
                self._t_first = float(blk.t[0])
                self._offset = self._start - self._t_first
                steps = np.diff(blk.t)
                steps = steps[steps > 0]
                self._dt = float(np.median(steps)) if steps.size else 1.0
            self._t_last = max(self._t_last, float(blk.t[-1]))
            tm = blk.t + self._offset
            n = int(np.searchsorted(tm, now, "right"))
            if n < len(blk):
                self._pending = Block(
                    blk.source,
                    blk.channels,
                    blk.t[n:],
                    blk.x[n:],
                    {k: col.rows(slice(n, None)) for k, col in blk.labels.items()} if blk.labels else None,
                )
            if n:
                out_t.append(tm[:n])
                out_x.append(blk.x[:n][:, self._cols])
                out_l.append({k: col.rows(slice(n)) for k, col in blk.labels.items()} if blk.labels else None)
            if self._pending is not None:
                break
        if not out_t:
            return None
        labels = None
        if any(out_l):
            labels = {}
            for task in out_l[0] or {}:  # every block of a file has the header's label columns
                labels[task] = LabelColumn.concat(part[task] for part in out_l if part is not None)
        return Block(self.name, self.channels, np.concatenate(out_t), np.concatenate(out_x), labels)

    def close(self) -> None:
        """Nothing to release (the file is opened per chunk iterator)."""
