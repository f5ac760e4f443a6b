"""Labels that travel with the samples (a replayed file's label columns), dictionary-encoded."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np


class LabelColumn(NamedTuple):
    """Per-sample class names of one task: sample ``i`` has ``vocab[codes[i]]``, or no label
    where ``codes[i] == -1``.

    Examples
    --------
    >>> col = LabelColumn(np.array([1, -1, 0], dtype=np.int32), ("idle", "run"))
    >>> col.recode({"run": 7, "idle": 3}.__getitem__).tolist()
    [7, -1, 3]
    >>> LabelColumn.concat([col, LabelColumn(np.array([0], dtype=np.int32), ("stop",))])
    LabelColumn(codes=array([ 1, -1,  0,  2], dtype=int32), vocab=('idle', 'run', 'stop'))
    """

    codes: np.ndarray  # int32 (n,)
    vocab: tuple[str, ...]

    def recode(self, code: Callable[[str], int]) -> np.ndarray:
        """The codes under another numbering, ``code(name)`` per name (-1 stays -1), as int32."""
        lut = np.array([code(v) for v in self.vocab] + [-1], dtype=np.int32)
        return lut[np.where(self.codes >= 0, self.codes, len(self.vocab))]

    def rows(self, s: slice) -> LabelColumn:
        """The labels of samples ``s`` (same vocabulary)."""
        return LabelColumn(self.codes[s], self.vocab)

    @staticmethod
    def concat(parts: Iterable[LabelColumn]) -> LabelColumn:
        """The labels of consecutive blocks as one column (one vocabulary: the parts' in order)."""
        vocab: list[str] = []

        def index(v: str) -> int:
            if v not in vocab:
                vocab.append(v)
            return vocab.index(v)

        codes = [p.recode(index) for p in parts]
        return LabelColumn(np.concatenate(codes) if codes else np.zeros(0, np.int32), tuple(vocab))
