"""What the FIFO-reading IMU drivers share: burst reads, timestamps, overflow and stall handling.

Each poll reads the FIFO's status, then every whole sample in it with one I2C_RDWR transfer, and
converts the whole burst with numpy. Sample times come from :class:`~drivers.i2c.timebase.Timebase`. The
runtime polls every quarter of the time the FIFO takes to fill (``poll_s``), so a stall of
three poll periods still loses nothing.

* FIFO overflow (the chip's overflow flag, or a FIFO too full to take another sample): counted
  in ``stats["fifo_overflows"]``, logged, the FIFO is emptied and restarted, and the sensor
  reports ``degraded`` for 10 s (samples were lost; the timeline shows the gap).
* A failed FIFO data transfer is not retried (the chip may already have handed out some of the
  bytes): counted in ``stats["fifo_read_errors"]`` and the FIFO is restarted.
* No samples for a while: if the chip lost its configuration (a brown-out or reset that the bus
  never reported), it is set up again; otherwise the sensor is reported as failing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import structlog

from drivers.base import DriverError, SMBusLike
from drivers.i2c.bus import BusError
from drivers.i2c.chip import ChipDriver
from drivers.i2c.timebase import Timebase

log = structlog.get_logger("edged.drivers")

DEG = math.pi / 180.0  # rad per degree

IMU_CHANNELS = ("ax", "ay", "az", "gx", "gy", "gz", "temperature")


class FifoImu(ChipDriver):
    """Base of the accelerometer + gyroscope drivers read through their FIFO."""

    CHANNELS: ClassVar[tuple[str, ...]] = IMU_CHANNELS
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"temperature": (-40.0, 105.0)}
    STUCK_AFTER = 50
    FIFO_BYTES: ClassVar[int] = 1024  # FIFO capacity
    BYTES_PER_WORD: ClassVar[float] = 2.0  # FIFO bytes per 16-bit value (7/3 for tagged FIFOs)

    def __init__(
        self,
        bus: SMBusLike,
        address: int,
        *,
        rate_hz: float,
        channels: Sequence[str] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(bus, address, rate_hz=rate_hz, channels=channels, **kw)
        sel = set(self.channels)
        self.accel = bool(sel & {"ax", "ay", "az"})
        self.gyro = bool(sel & {"gx", "gy", "gz"})
        if not (self.accel or self.gyro):
            self.accel = True  # temperature alone: the FIFO still paces the samples
        self.words = 3 * (self.accel + self.gyro)  # int16 values per FIFO sample
        self.timebase = Timebase(self.rate_hz)
        fill_s = self.FIFO_BYTES / (self.words * self.BYTES_PER_WORD) / self.rate_hz
        self.poll_s = min(0.25, max(0.005, fill_s / 4))
        self.stall_s = max(0.25, 10.0 / self.rate_hz, 3 * self.poll_s)
        self._last_data = -math.inf
        # value columns of CHANNELS that the FIFO words fill, in FIFO-word order [accel][gyro]
        self._word_cols = ([0, 1, 2] if self.accel else []) + ([3, 4, 5] if self.gyro else [])
        self.accel_lsb = 1.0  # m/s^2 per LSB, set by the chip's configuration
        self.gyro_lsb = 1.0  # rad/s per LSB

    # -- what each chip provides ---------------------------------------------------------------
    def _fifo_status(self) -> tuple[int, bool]:
        """(whole samples waiting in the FIFO, overflow happened)."""
        raise NotImplementedError

    def _fifo_read(self, n: int) -> np.ndarray:
        """The next ``n`` samples as int16 values, shape (n, words), accel before gyro."""
        raise NotImplementedError

    def _fifo_restart(self) -> None:
        """Empty the FIFO and start collecting again."""
        raise NotImplementedError

    def _die_temperature(self) -> float:
        raise NotImplementedError

    def _held_back(self) -> int:
        """Samples read from the FIFO but kept for the next burst (an incomplete time slot)."""
        return 0

    def _config_intact(self) -> bool:
        """Whether the chip still holds the configuration written at setup."""
        raise NotImplementedError

    # -- shared logic --------------------------------------------------------------------------
    def _restart(self, reason: str) -> None:
        self._fifo_restart()
        self.timebase.start(self.clock())
        self._last_data = self.clock()
        log.debug("fifo_restarted", sensor=self.name, reason=reason)

    def _started(self) -> None:
        """Called at the end of ``_configure``: the FIFO runs from now."""
        self.timebase.start(self.clock())
        self._last_data = self.clock()

    def _acquire(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        n, overflow = self._fifo_status()
        if overflow:
            self.stats["fifo_overflows"] += 1
            k = self.stats["fifo_overflows"]
            if k <= 10 or k % 100 == 0:
                log.warning(
                    "fifo_overflow",
                    sensor=self.name,
                    overflows=k,
                    note="samples were lost: the FIFO filled before it was read",
                )
            self.flag("overflow", f"FIFO overflow: samples lost ({k} overflows so far)", now)
            self._restart("overflow")
            return None
        if n == 0:
            self._check_stall(now)
            return None
        try:
            raw = self._fifo_read(n)
        except BusError as exc:
            self.stats["fifo_read_errors"] += 1
            log.warning("fifo_read_failed", sensor=self.name, error=str(exc), note="FIFO restarted")
            self._restart("read error")
            return None
        n = raw.shape[0]
        if n == 0:
            return None
        self._last_data = now
        t = self.timebase.stamps(n, now, self._held_back())
        x = np.empty((n, len(self.CHANNELS)))
        scale = np.array([self.accel_lsb] * 3 * self.accel + [self.gyro_lsb] * 3 * self.gyro)
        x[:, self._word_cols] = raw * scale
        if "temperature" in self.channels:
            x[:, 6] = self._die_temperature()
        sat = np.any((raw == 32767) | (raw == -32768), axis=1)
        return t, raw, x, sat

    def _check_stall(self, now: float) -> None:
        quiet = now - self._last_data
        if quiet <= self.stall_s:
            return
        if not self._config_intact():
            self.stats["resets_detected"] += 1
            log.warning(
                "chip_reset_detected",
                sensor=self.name,
                quiet_s=round(quiet, 3),
                note="the chip lost its configuration; setting it up again",
            )
            self.setup()
            return
        raise DriverError(
            f"{self.CHIP} at {self.dev.where()}: no samples in the FIFO for {quiet:.2f} s "
            f"although it is configured for {self.rate_hz:g} Hz"
        )


def closest(options: Sequence[float], value: float, rel: float = 0.002) -> float | None:
    """The option within ``rel`` of ``value``, if any."""
    for o in options:
        if abs(o - value) <= rel * o:
            return o
    return None
