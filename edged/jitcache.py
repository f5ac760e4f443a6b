"""Where numba's compiled kernels come from: compiled at start, never loaded from a writable place.

numba's on-disk cache is not data: its index (``*.nbi``) is a pickle and its entries (``*.nbc``)
hold machine code, and numba loads both without any signature. Whoever can write the cache
directory therefore runs code in the service. The service used to keep that cache in the state
directory, which the service itself (and anyone with the SD card, or a restored backup) can
write: a code-execution path that the checkpoint HMAC never covered (issue 17).

So ``edged`` does not cache kernels unless whoever starts it asks for it explicitly:

* ``NUMBA_CACHE_DIR`` set in the environment of the process (numba's own setting; the test suite
  and the benchmark use it): honoured, the launcher's choice like ``PYTHONPATH``. Never point it
  at a directory the service user can write. The shipped unit does not set it.
* otherwise: no cache at all (``EDGED_NUMBA_CACHE=0``), so numba does not look in its in-tree or
  user-wide (``~/.cache/numba`` = ``/var/lib/edged/.cache`` for the unit's user) locations either.
  Every start compiles the kernels (:func:`edged.app.warm_up` logs ``kernels_compiled`` with the
  duration; measured 7.5 s on an x86 core for the shipped config, so about 30-45 s on a
  Raspberry Pi 4, within the unit's ``TimeoutStartSec=180``).

This must run before numba is imported (it reads its configuration once).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping


def configure(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set the cache policy in ``environ`` (default ``os.environ``); returns the cache directory in
    use, or None when kernels are not cached."""
    env = os.environ if environ is None else environ
    explicit = env.get("NUMBA_CACHE_DIR")
    if explicit:
        env["EDGED_NUMBA_CACHE"] = "1"  # the launcher's choice wins over an inherited "0"
        return explicit
    env["EDGED_NUMBA_CACHE"] = "0"
    return None
