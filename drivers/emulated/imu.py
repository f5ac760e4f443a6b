"""What the IMU emulators share: the chip's own sample clock, quantisation to counts, stuck output.

Samples are due at the chip's output data rate times its oscillator error (``clock_error``), from
the moment the rate registers were last written; only as many as the FIFO can still hold are
generated, so a long pause costs no time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from drivers.emulated.sources import ImuSource, still
from drivers.fakebus import RegisterChip


def int16_counts(v: np.ndarray) -> np.ndarray:
    """Round to the nearest count and clip to the converter's range (saturation)."""
    return np.clip(np.rint(v), -32768, 32767).astype(np.int64)


class EmuImu(RegisterChip):
    """Sample clock, value generation and fault switches shared by the IMU emulators."""

    WHO_AM_I_REG = 0x00
    CHIP_ID = 0x00

    def __init__(
        self,
        source: ImuSource | None = None,
        temperature_c: float | Callable[[float], float] = 30.0,
        clock_error: float = 0.0,
        chip_id: int | None = None,
    ) -> None:
        self.source = source or still()
        self.temperature_c = temperature_c
        self.clock_error = clock_error  # relative: +0.01 = the chip's oscillator runs 1 % fast
        self.chip_id = self.CHIP_ID if chip_id is None else chip_id
        self.stuck = False
        self.hold = False  # produce no samples: registers and FIFO keep what a test wrote
        self.sample_times: list[np.ndarray] = []  # true times of the samples put in the FIFO
        self._t_run: float | None = None
        self._k = 0
        self._last_raw: np.ndarray | None = None
        super().__init__()

    def power_cycle(self, now: float) -> None:
        super().power_cycle(now)
        self.regs[self.WHO_AM_I_REG] = self.chip_id
        self._t_run = None
        self._k = 0
        self.fifo_clear()

    # chip specifics
    def odr(self) -> float:
        raise NotImplementedError

    def quantise(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def emit(self, t: np.ndarray, raw: np.ndarray, temp_c: float) -> None:
        raise NotImplementedError

    def fifo_clear(self) -> None:
        raise NotImplementedError

    def fifo_room_samples(self) -> int:
        raise NotImplementedError

    def restart_clock(self, now: float) -> None:
        self._t_run, self._k = now, 0

    def advance(self, now: float) -> None:
        if self.hold:
            return
        rate = self.odr() * (1.0 + self.clock_error)
        if rate <= 0:
            self._t_run = None
            return
        if self._t_run is None:
            self.restart_clock(now)
            return
        due = math.floor((now - self._t_run) * rate)
        if due <= self._k:
            return
        first = max(self._k, due - self.fifo_room_samples() - 1)  # older samples would be lost anyway
        k = np.arange(first, due, dtype=np.float64)
        t = self._t_run + (k + 1.0) / rate
        self._k = due
        raw = self.quantise(self.source(t))
        if self.stuck and self._last_raw is not None:
            raw = np.repeat(self._last_raw[None, :], raw.shape[0], axis=0)
        self._last_raw = raw[-1].copy()
        temp = self.temperature_c(float(t[-1])) if callable(self.temperature_c) else self.temperature_c
        self.emit(t, raw, temp)
