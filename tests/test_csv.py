"""The byte-level CSV kernel behind read_recording: exact numbers, the format's corner cases."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers._csv import LABEL, NUMBER, _first_mismatch, parse_rows
from drivers.replay import RecordingError, read_recording
from tests.conftest import DATA


def _parse(text: str, kinds: list[int], n_numbers: int, n_labels: int) -> tuple:
    slots, kn, kl = [], 0, 0
    for k in kinds:
        slots.append(kn if k == NUMBER else kl if k == LABEL else 0)
        kn += k == NUMBER
        kl += k == LABEL
    buf = np.frombuffer(text.encode(), dtype=np.uint8)
    return parse_rows(buf, np.array(kinds), np.array(slots), n_numbers, n_labels)


class TestNumbers:
    @settings(max_examples=300, deadline=None)
    @given(st.floats(allow_nan=False, allow_infinity=False))
    def test_repr_round_trips_exactly(self, v: float) -> None:
        """Every float written by repr() parses to the same bits (fast path or float() fallback)."""
        num, _, cells = _parse(f"{v!r}\n", [NUMBER], 1, 0)
        for r, c, text in cells:
            num[r, c] = float(text)
        assert num[0, 0] == v and math.copysign(1, num[0, 0]) == math.copysign(1, v)

    @settings(max_examples=300, deadline=None)
    @given(
        st.integers(-(10**12), 10**12),
        st.integers(0, 9),
        st.sampled_from(["", "e-3", "E+2", "e0", "e-12", "e13"]),
    )
    def test_sensor_style_decimals_take_the_fast_path_exactly(self, mant: int, dec: int, exp: str) -> None:
        """Decimal text like '-12.3456e-3' is parsed in the kernel, equal to float() to the bit."""
        s = str(mant)
        text = (s[:-dec] + "." + s[-dec:] if 0 < dec < len(s.lstrip("-")) else s) + exp
        num, _, cells = _parse(text + "\n", [NUMBER], 1, 0)
        assert cells == [] and num[0, 0] == float(text)

    def test_unusual_cells_fall_back_to_python(self) -> None:
        """nan, inf, 25 digits or a tiny exponent are handed to float(); garbage stays text for the error."""
        num, _, cells = _parse("nan\n-inf\n1.234567890123456789012345\n1e-300\nzz\n", [NUMBER], 1, 0)
        assert [(r, t) for r, _, t in cells] == [
            (0, "nan"),
            (1, "-inf"),
            (2, "1.234567890123456789012345"),
            (3, "1e-300"),
            (4, "zz"),
        ]
        assert num.shape == (5, 1)


class TestFormat:
    def test_quotes_blanks_crlf_empty_and_short_rows(self) -> None:
        """Quoted cells (commas inside), spaces, CRLF, blank lines, empty and missing cells (NaN / no label)."""
        text = '1, 2.5 ,"a, b"\r\n\n  \n"3",,\r\n4\n5,6,c'
        num, labels, cells = _parse(text, [NUMBER, NUMBER, LABEL], 2, 1)
        assert cells == []
        np.testing.assert_array_equal(num, [[1, 2.5], [3, np.nan], [4, np.nan], [5, 6]])
        codes, names = labels[0]
        assert [names[c] if c >= 0 else None for c in codes] == ["a, b", None, None, "c"]

    def test_label_hash_collisions_are_caught(self) -> None:
        """If two different labels shared a hash, the byte comparison finds the first such row."""
        buf = np.frombuffer(b"abcabd", dtype=np.uint8)
        spans = np.array([[0, 3], [3, 6]])
        assert _first_mismatch(buf, spans, np.array([0, 0], dtype=np.int32), np.array([[0, 3]])) == 1
        assert _first_mismatch(buf, spans, np.array([0, 1], dtype=np.int32), np.array([[0, 3], [3, 6]])) == -1


class TestReadRecording:
    @pytest.mark.parametrize("name", ["basic_motions/stream_train.csv", "cwru/excerpt.csv.gz"])
    def test_same_values_as_numpy_loadtxt(self, name: str) -> None:
        """Shipped recordings read exactly as numpy.loadtxt reads them (values and labels)."""
        path = DATA / name
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            header = f.readline().strip().split(",")
            ref = np.loadtxt(f, delimiter=",", dtype=str)
        blocks = list(read_recording(path, chunk_rows=200))
        t = np.concatenate([b.t for b in blocks])
        x = np.concatenate([b.x for b in blocks])
        np.testing.assert_array_equal(t, ref[:, 0].astype(float))
        np.testing.assert_array_equal(x, ref[:, 1 : 1 + x.shape[1]].astype(float))
        lab = header.index(next(h for h in header if h.startswith("label.")))
        task = header[lab].removeprefix("label.")
        got = np.concatenate([np.array(b.labels[task][1] + ("",))[b.labels[task][0]] for b in blocks])
        np.testing.assert_array_equal(got, ref[:, lab])
        assert len(blocks) > 5

    @pytest.mark.parametrize("chunk_rows", [1, 3, 1000])
    def test_chunking_never_splits_a_row(self, tmp_path: Path, chunk_rows: int) -> None:
        """Rows longer than a read, or split across reads, come out whole; a last line without newline counts."""
        p = tmp_path / "r.csv"
        rows = [f"{i * 0.5},{'%.17g' % (i / 7)},{'x' * (i % 300)}" for i in range(2000)]
        p.write_text("t,a,label.k\n" + "\n".join(rows))
        blocks = list(read_recording(p, chunk_rows=chunk_rows))
        x = np.concatenate([b.x[:, 0] for b in blocks])
        np.testing.assert_array_equal(x, [i / 7 for i in range(2000)])
        names = np.concatenate([np.array(b.labels["k"][1] + ("",))[b.labels["k"][0]] for b in blocks])
        assert list(names) == ["x" * (i % 300) for i in range(2000)]

    def test_bad_cell_names_row_and_column(self, tmp_path: Path) -> None:
        """A cell that is not a number is reported with its data row and column."""
        p = tmp_path / "bad.csv"
        p.write_text("t,a,b\n" + "".join(f"{i},1,2\n" for i in range(100)) + "100,1,2x\n")
        with pytest.raises(RecordingError, match=r"data row 101, column 3: not a number: '2x'"):
            list(read_recording(p, chunk_rows=7))
