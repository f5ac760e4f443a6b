"""Recorded-file rows parsed by a numba kernel over raw bytes (``drivers.replay`` uses it).

Imported lazily (on the first file read), after the JIT cache directory is set. The kernel
splits lines and fields (commas, double-quoted fields, surrounding blanks, CRLF, blank lines),
parses numbers and hashes label cells; Python then maps hashes to class names.

Numbers: ``[+-]digits[.digits][(e|E)[+-]digits]`` with at most 19 significant digits and a
decimal exponent within +-22 take Clinger's fast path (an exact integer times or divided by
an exact power of ten: one correctly rounded operation, so the value is the one ``float()``
gives). Anything else (more digits, ``nan``, ``1e-30``, a typo) is handed back to Python's
``float()``, which parses it or names the cell that is not a number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

from pipelines import jit

# The one set of flags, seen as njit's keyword arguments: pipelines.jit.JIT is a dict[str, object],
# which matches none of njit's typed overloads. Once pipelines/jit.py types it (a TypedDict), this
# is a plain import again.
JIT: Mapping[str, Any] = jit.JIT

_POW10 = np.array([10.0**k for k in range(23)])  # all exact in float64
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
IGNORE, NUMBER, LABEL = 0, 1, 2


@njit(**JIT)
def _number(buf: np.ndarray, fs: int, fe: int) -> tuple[float, bool]:  # pragma: no cover - compiled
    """Value of the decimal number in ``buf[fs:fe]`` and whether the fast path could take it."""
    i = fs
    neg = False
    if buf[i] == 43 or buf[i] == 45:  # + -
        neg = buf[i] == 45
        i += 1
    mant = 0
    sig = 0
    exp10 = 0
    digits = 0
    while i < fe and 48 <= buf[i] <= 57:
        d = buf[i] - 48
        if sig > 0 or d > 0:
            sig += 1
        if sig > 19:
            return 0.0, False
        mant = mant * 10 + d
        digits += 1
        i += 1
    if i < fe and buf[i] == 46:  # .
        i += 1
        while i < fe and 48 <= buf[i] <= 57:
            d = buf[i] - 48
            if sig > 0 or d > 0:
                sig += 1
            if sig > 19:
                return 0.0, False
            mant = mant * 10 + d
            exp10 -= 1
            digits += 1
            i += 1
    if digits == 0:
        return 0.0, False
    if i < fe and (buf[i] == 101 or buf[i] == 69):  # e E
        i += 1
        eneg = False
        if i < fe and (buf[i] == 43 or buf[i] == 45):
            eneg = buf[i] == 45
            i += 1
        e = 0
        ed = 0
        while i < fe and 48 <= buf[i] <= 57 and ed < 5:
            e = e * 10 + (buf[i] - 48)
            ed += 1
            i += 1
        if ed == 0:
            return 0.0, False
        exp10 += -e if eneg else e
    if i != fe:
        return 0.0, False
    if mant == 0:
        return -0.0 if neg else 0.0, True
    if mant >= (1 << 53) or exp10 < -22 or exp10 > 22:
        return 0.0, False
    v = mant * _POW10[exp10] if exp10 >= 0 else mant / _POW10[-exp10]
    return -v if neg else v, True


@njit(**JIT)
def _parse(
    buf: np.ndarray,
    kinds: np.ndarray,
    slots: np.ndarray,
    out: np.ndarray,
    hashes: np.ndarray,
    spans: np.ndarray,
    fallback: np.ndarray,
) -> tuple[int, int]:  # pragma: no cover - compiled
    """Parse the complete lines in ``buf`` (uint8).

    ``kinds[c]`` says what column ``c`` is (``IGNORE``, ``NUMBER``, ``LABEL``) and ``slots[c]``
    where it goes: a column of ``out`` (rows, numbers; empty or missing cells are NaN) or of
    ``hashes``/``spans`` (rows, labels; 64-bit FNV-1a of the cell, 0 for an empty one, and its
    byte range). Cells the fast path cannot take go to ``fallback`` (row, column, start, end).
    Returns (rows, fallbacks); fallbacks beyond the capacity of ``fallback`` are counted only.
    """
    n = buf.shape[0]
    n_cols = kinds.shape[0]
    p = 0
    row = 0
    n_fb = 0
    while p < n:
        q = p
        while q < n and (buf[q] == 32 or buf[q] == 9 or buf[q] == 13):
            q += 1
        if q >= n:
            break
        if buf[q] == 10:  # blank line
            p = q + 1
            continue
        col = 0
        while True:  # one field per turn, up to the end of the line
            fs = p
            quoted = False
            while p < n:
                ch = buf[p]
                if ch == 34:
                    quoted = not quoted
                elif ch == 10 or (ch == 44 and not quoted):
                    break
                p += 1
            fe = p
            while fs < fe and (buf[fs] == 32 or buf[fs] == 9):
                fs += 1
            while fe > fs and (buf[fe - 1] == 32 or buf[fe - 1] == 9 or buf[fe - 1] == 13):
                fe -= 1
            if fe - fs >= 2 and buf[fs] == 34 and buf[fe - 1] == 34:
                fs += 1
                fe -= 1
            kind = kinds[col] if col < n_cols else IGNORE
            if kind == NUMBER:
                v, ok = _number(buf, fs, fe) if fe > fs else (math.nan, True)
                out[row, slots[col]] = v if ok else math.nan
                if not ok:
                    if n_fb < fallback.shape[0]:
                        fallback[n_fb, 0] = row
                        fallback[n_fb, 1] = col
                        fallback[n_fb, 2] = fs
                        fallback[n_fb, 3] = fe
                    n_fb += 1
            elif kind == LABEL:
                h = _FNV_OFFSET
                for k in range(fs, fe):
                    h = (h ^ np.uint64(buf[k])) * _FNV_PRIME
                if fe == fs:
                    h = np.uint64(0)  # empty: no label
                elif h == 0:
                    h = np.uint64(1)
                hashes[row, slots[col]] = h
                spans[row, slots[col], 0] = fs
                spans[row, slots[col], 1] = fe
            col += 1
            if p >= n or buf[p] == 10:
                p += 1
                break
            p += 1
        for c in range(col, n_cols):  # a short row: its missing cells are empty
            if kinds[c] == NUMBER:
                out[row, slots[c]] = math.nan
            elif kinds[c] == LABEL:
                hashes[row, slots[c]] = 0
                spans[row, slots[c], 0] = 0
                spans[row, slots[c], 1] = 0
        row += 1
    return row, n_fb


@njit(**JIT)
def _first_mismatch(
    buf: np.ndarray, spans: np.ndarray, codes: np.ndarray, reps: np.ndarray
) -> int:  # pragma: no cover
    """First row whose label bytes differ from the representative of its hash (-1: none);
    guards the hash-to-name mapping against collisions."""
    for r in range(codes.shape[0]):
        c = codes[r]
        if c < 0:
            continue
        a0, a1 = spans[r, 0], spans[r, 1]
        b0, b1 = reps[c, 0], reps[c, 1]
        if a1 - a0 != b1 - b0:
            return r
        for k in range(a1 - a0):
            if buf[a0 + k] != buf[b0 + k]:
                return r
    return -1


def parse_rows(
    buf: np.ndarray, kinds: np.ndarray, slots: np.ndarray, n_numbers: int, n_labels: int
) -> tuple[np.ndarray, list[tuple[np.ndarray, tuple[str, ...]]], list[tuple[int, int, str]]]:
    """Numbers (rows, n_numbers), per label column (codes, names), and the cells the fast path
    left to Python as (row, column, text); see :func:`_parse`."""
    max_rows = int(np.count_nonzero(buf == 10)) + 1
    out = np.empty((max_rows, n_numbers))
    hashes = np.empty((max_rows, n_labels), dtype=np.uint64)  # the kernel sets every row it parses
    spans = np.empty((max_rows, n_labels, 2), dtype=np.int64)
    fallback = np.zeros((1024, 4), dtype=np.int64)
    rows, n_fb = _parse(buf, kinds, slots, out, hashes, spans, fallback)
    if n_fb > fallback.shape[0]:  # many unusual cells: take them all in a second pass
        fallback = np.zeros((n_fb, 4), dtype=np.int64)
        rows, n_fb = _parse(buf, kinds, slots, out, hashes, spans, fallback)
    cells = [(int(r), int(c), bytes(buf[s:e]).decode("utf-8", "replace")) for r, c, s, e in fallback[:n_fb]]
    labels = []
    for j in range(n_labels):
        h = hashes[:rows, j]
        uniq, first, inv = np.unique(h, return_index=True, return_inverse=True)
        sp = spans[:rows, j]
        names: list[str] = []
        remap = np.full(len(uniq), -1, dtype=np.int32)
        for u, (value, i) in enumerate(zip(uniq, first, strict=True)):
            if value != 0:
                remap[u] = len(names)
                names.append(bytes(buf[sp[i, 0] : sp[i, 1]]).decode("utf-8").replace('""', '"'))
        codes = remap[inv]
        reps = np.array(
            [sp[i] for value, i in zip(uniq, first, strict=True) if value != 0], dtype=np.int64
        ).reshape(-1, 2)
        bad = _first_mismatch(buf, sp, codes, reps)
        if bad >= 0:  # two different labels with one 64-bit hash: name every row in Python
            text = [bytes(buf[s:e]).decode("utf-8").replace('""', '"') for s, e in sp]
            vocab = sorted({v for v in text if v})
            index = {v: i for i, v in enumerate(vocab)}
            codes = np.array([index[v] if v else -1 for v in text], dtype=np.int32)
            names = vocab
        labels.append((codes.astype(np.int32), tuple(names)))
    return out[:rows], labels, cells
