"""The one set of numba flags every kernel in edged is compiled with.

A test fails on flags hard-coded anywhere else (stumpy's ``test.sh`` grep, as a pytest).
Importing this module does not import numba, so the CLI can set the cache directory first.
"""

from __future__ import annotations

import os
from typing import Literal, TypedDict


class JitFlags(TypedDict):
    """The keyword arguments of ``numba.njit`` that edged sets (typed, so mypy checks each use)."""

    cache: bool
    nogil: bool
    fastmath: bool
    error_model: Literal["python", "numpy"]


# cache: compiled kernels land in NUMBA_CACHE_DIR (the service sets it, see edged.app); EDGED_NUMBA_CACHE=0
#   turns caching off.
# nogil: sensor threads and the engine loop run kernels concurrently.
# fastmath off: the kernels are checked against numpy references at rtol 1e-9.
# error_model "numpy": a division by zero gives inf/NaN (IEEE) instead of raising, so no input can
#   raise out of a kernel into the service; the wrappers turn non-finite features into "absent".
JIT: JitFlags
JIT = {
    "cache": os.environ.get("EDGED_NUMBA_CACHE", "1") != "0",
    "nogil": True,
    "fastmath": False,
    "error_model": "numpy",
}
