"""Windowing, numba DSP feature kernels, online learners and their evaluation."""
