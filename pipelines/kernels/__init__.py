"""The numba kernels behind the feature sets (:mod:`pipelines.featuresets`).

A kernel is an underscore-named ``@njit(**JIT)`` function: arrays in, arrays out (written into
buffers the caller owns), no I/O, no allocation, no validation. The feature sets check their
spec once and call the kernels per window; ``tests/naive.py`` holds a numpy/scipy reference
for each, and ``tests/test_nojit.py`` runs those comparisons with ``NUMBA_DISABLE_JIT=1`` so
that the kernels also run (and are measured) as plain Python.

* :mod:`~pipelines.kernels.time`: moments, extremes, zero crossings; vector triads.
* :mod:`~pipelines.kernels.fft`: the radix-2^2 FFT and its tables.
* :mod:`~pipelines.kernels.spectral`: power spectra, bands, spectral shape, velocity, lines.
* :mod:`~pipelines.kernels.envelope`: Hilbert envelope and envelope spectrum.
"""

from __future__ import annotations

LOG_FLOOR = 1e-12
"""Added to a power before log10, so an empty band gives -12 rather than -inf."""

CONSTANT = 1e-24
"""A spread below this fraction of the squared level is rounding: the row is constant."""
