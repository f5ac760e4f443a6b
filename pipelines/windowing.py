"""Sliding windows over a stream of sample blocks.

A :class:`Windower` keeps one contiguous ring of the channels a task needs and emits a window
every ``hop`` samples once ``window`` samples are there. Windows are views into the ring (no
copy per window); a view is valid until the next call to :meth:`Windower.push`.

Rows marked :data:`DERIVED` are not copied from blocks: the ``derive`` hook (a stream stage,
see :mod:`pipelines.fusion`) writes them from the other rows when new samples arrive, once
per sample, before any window over those samples is emitted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

DERIVED = -2  # a row the derive hook writes


class Derive(Protocol):
    """Writes the derived rows of ``buf`` for the new columns ``[a, b)``, keeping its state."""

    rows: int

    def __call__(self, buf: np.ndarray, a: int, b: int) -> None: ...

    def reset(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Window:
    """One window: ``data`` (rows x window samples, a view), its first and last sample times,
    and the class code of its last sample (``-1``: unlabelled)."""

    data: np.ndarray
    t_start: float
    t_end: float
    label: int


class Windower:
    """Windows of ``window`` samples every ``hop`` samples over selected columns of blocks.

    Examples
    --------
    >>> w = Windower(rows=1, window=4, hop=2)
    >>> t = np.arange(7.0)
    >>> [(float(v.t_start), float(v.t_end)) for v in w.push(t, t[:, None], [0])]
    [(0.0, 3.0), (2.0, 5.0)]
    >>> [(float(v.t_start), float(v.t_end)) for v in w.push(t + 7, (t + 7)[:, None], [0])]
    [(4.0, 7.0), (6.0, 9.0), (8.0, 11.0), (10.0, 13.0)]
    """

    def __init__(
        self, rows: int, window: int, hop: int, capacity: int | None = None, derive: Derive | None = None
    ) -> None:
        if window < 1 or hop < 1 or hop > window:
            raise ValueError(f"need 1 <= hop <= window, got window={window} hop={hop}")
        self.rows = rows
        self.derive = derive
        self._plans: dict[tuple[int, ...], tuple[list[tuple[int, int, int]], list[int]]] = {}
        self.window = window
        self.hop = hop
        cap = capacity or max(4 * window, window + 4096)
        self._buf = np.zeros((rows, cap))
        self._t = np.zeros(cap)
        self._lab = np.full(cap, -1, dtype=np.int32)
        self._n = 0
        self._next_end = window

    def reset(self) -> None:
        """Forget buffered samples (e.g. after a gap in the stream)."""
        self._n = 0
        self._next_end = self.window
        if self.derive is not None:
            self.derive.reset()

    def _plan(self, cols: list[int]) -> tuple[list[tuple[int, int, int]], list[int]]:
        """Runs ``(row, col, length)`` of consecutive columns to copy, and the rows to fill with NaN."""
        key = tuple(cols)
        plan = self._plans.get(key)
        if plan is None:
            if len(cols) != self.rows:
                raise ValueError(f"{len(cols)} columns for {self.rows} rows")
            n_derived = cols.count(DERIVED)
            if n_derived != (self.derive.rows if self.derive is not None else 0):
                raise ValueError(
                    f"{n_derived} derived rows, but the derive hook writes "
                    f"{self.derive.rows if self.derive is not None else 0}"
                )
            runs: list[tuple[int, int, int]] = []
            r = 0
            while r < len(cols):
                c = cols[r]
                if c < 0:
                    r += 1
                    continue
                length = 1
                while r + length < len(cols) and cols[r + length] == c + length:
                    length += 1
                runs.append((r, c, length))
                r += length
            plan = self._plans[key] = (runs, [r for r, c in enumerate(cols) if c == -1])
        return plan

    def _compact(self) -> None:
        keep = self._next_end - self.window
        if keep <= 0:
            return
        n = self._n - keep
        self._buf[:, :n] = self._buf[:, keep : self._n]
        self._t[:n] = self._t[keep : self._n]
        self._lab[:n] = self._lab[keep : self._n]
        self._n = n
        self._next_end -= keep

    def push(
        self, t: np.ndarray, x: np.ndarray, cols: list[int], labels: np.ndarray | None = None
    ) -> Iterator[Window]:
        """Append samples ``t`` (n,) and, as rows, the columns ``cols`` of ``x`` (n, any) (a column
        of ``-1`` gives a row of NaN, :data:`DERIVED` a row the derive hook writes), with
        optional label codes (n,); yield every window that completes."""
        runs, nan_rows = self._plan(cols)
        n = t.shape[0]
        cap = self._t.shape[0]
        i = 0
        while i < n:
            if self._n == cap:
                self._compact()
            m = min(cap - self._n, n - i)
            a, b = self._n, self._n + m
            for r, c, length in runs:
                self._buf[r : r + length, a:b] = x[i : i + m, c : c + length].T
            for r in nan_rows:
                self._buf[r, a:b] = np.nan
            if self.derive is not None:
                self.derive(self._buf, a, b)
            self._t[a:b] = t[i : i + m]
            self._lab[a:b] = -1 if labels is None else labels[i : i + m]
            self._n = b
            i += m
            while self._next_end <= self._n:
                e = self._next_end
                s = e - self.window
                yield Window(
                    self._buf[:, s:e], float(self._t[s]), float(self._t[e - 1]), int(self._lab[e - 1])
                )
                self._next_end += self.hop
