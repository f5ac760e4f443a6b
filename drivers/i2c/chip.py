"""The base of every I2C chip driver: lazy setup, re-initialisation, counters, health hints.

A chip driver is built as ``Cls(bus, address, **options)`` (DESIGN.md): ``bus`` is any object
with smbus2's ``SMBus`` methods and is never opened here. The constructor touches no hardware;
``setup()`` (run on the first read, and again after the chip went away) checks the chip's
identity and configures it, so a sensor that is missing at boot only makes that sensor
unhealthy, never the service. :class:`SingleShotChip` adds the schedule of chips read one
triggered measurement at a time.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import structlog

from drivers.base import Block, DeviceNotFound, DriverError, SMBusLike, select_channels
from drivers.i2c.bus import NO_ACK, BusError, Device
from drivers.i2c.quality import QualityGate

log = structlog.get_logger("edged.drivers")

#: the raw words of one single-shot measurement, e.g. ``tuple[int, int]`` (temperature, humidity)
RawT = TypeVar("RawT", bound=tuple[int, ...])


class ChipDriver:
    """Base of the chip drivers: lazy setup, re-initialisation, counters, health hints.

    Subclasses set the class attributes and implement ``_check_identity``, ``_configure``,
    ``read`` and ``_acquire``, which returns ``(t, raw, x_all, saturated)`` or ``None``: sample
    times, the raw words (for stuck detection), values of every channel in ``CHANNELS`` (columns
    of unselected channels may hold anything) and which samples are saturated.
    ``fault`` holds a data-quality problem the runtime reports as health ``degraded``.
    """

    CHIP: ClassVar[str] = "?"
    CHANNELS: ClassVar[tuple[str, ...]] = ()
    ADDRESSES: ClassVar[tuple[int, ...]] = ()
    #: physically valid range per channel (anything outside is a bad reading)
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {}
    STUCK_AFTER: ClassVar[int] = 50

    def __init__(
        self,
        bus: SMBusLike,
        address: int,
        *,
        rate_hz: float = 1.0,
        channels: Sequence[str] | None = None,
        bus_name: str | None = None,
        retries: int = 3,
        stuck_after: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats: Counter[str] = Counter()
        self.dev = Device(
            bus,
            address,
            bus_name if bus_name is not None else str(getattr(bus, "name", "?")),
            retries,
            sleep=sleep,
            stats=self.stats,
        )
        self.rate_hz = float(rate_hz)
        self.channels = select_channels(self.CHANNELS, channels)
        self._cols = [self.CHANNELS.index(c) for c in self.channels]
        self.sleep = sleep
        self.clock = clock
        self.name = ""
        self.part: str | None = None  # the part identified at setup
        self.ready = False
        self._setups = 0
        self._flags: dict[str, tuple[str, float]] = {}  # kind -> (message, until)
        lo = np.array([self.LIMITS.get(c, (-math.inf, math.inf))[0] for c in self.channels])
        hi = np.array([self.LIMITS.get(c, (-math.inf, math.inf))[1] for c in self.channels])
        self.gate = QualityGate(lo, hi, stuck_after or self.STUCK_AFTER)
        self._lock = threading.Lock()

    # -- identity and setup --------------------------------------------------------------------
    @classmethod
    def identify(cls, dev: Device) -> str | None:
        """The part name if the chip at ``dev`` is one this driver supports (non-destructive)."""
        raise NotImplementedError

    def _check_identity(self) -> str:
        raise NotImplementedError

    def _configure(self) -> None:
        raise NotImplementedError

    def _wrong_chip(self, reg: int, found: int, expected: dict[int, str]) -> DeviceNotFound:
        want = " or ".join(f"0x{v:02x} ({p})" for v, p in expected.items())
        return DeviceNotFound(
            f"{self.CHIP} expected at {self.dev.where()}: ID register 0x{reg:02x} reads "
            f"0x{found:02x}, expected {want}; check the driver and address in the config"
        )

    def _absent(self, exc: BusError) -> DriverError:
        if exc.errno in NO_ACK:
            return DeviceNotFound(f"{self.CHIP}: nothing answers at {self.dev.where()} ({exc})")
        return exc

    def setup(self) -> None:
        """Check the chip's identity and configure it (again after it went away)."""
        try:
            self.part = self._check_identity()
            self._configure()
        except BusError as exc:
            self.ready = False
            raise self._absent(exc) from None
        except DriverError:
            self.ready = False
            raise
        self.ready = True
        self.gate.reset()
        self._setups += 1
        if self._setups > 1:
            self.stats["reinits"] += 1
            log.info(
                "sensor_reinitialised",
                sensor=self.name,
                chip=self.part,
                bus=self.dev.bus_name,
                addr=f"0x{self.dev.address:02x}",
            )
        else:
            log.info(
                "sensor_initialised",
                sensor=self.name,
                chip=self.part,
                bus=self.dev.bus_name,
                addr=f"0x{self.dev.address:02x}",
                rate_hz=self.rate_hz,
            )

    def _ensure(self) -> None:
        if not self.ready:
            self.setup()

    # -- health hints ----------------------------------------------------------------------------
    def flag(self, kind: str, message: str, now: float, hold_s: float = 10.0) -> None:
        """Report a problem that keeps the sensor ``degraded`` for at least ``hold_s``."""
        self._flags[kind] = (message, now + hold_s)

    @property
    def fault(self) -> str | None:
        if self.gate.stuck:
            return f"stuck: the last {self.gate.run} samples are identical"
        now = self.clock()
        for kind, (msg, until) in list(self._flags.items()):
            if now < until:
                return msg
            del self._flags[kind]
        if self.gate.saturated:
            return "saturated: a quarter or more of the samples are at the range limit; raise the range"
        return None

    # -- reading ---------------------------------------------------------------------------------
    def read(self) -> dict[str, float]:
        raise NotImplementedError

    def _acquire(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        raise NotImplementedError

    def read_block(self, now: float) -> Block | None:
        """Samples acquired since the last call (``None`` if none); raises DriverError."""
        with self._lock:
            self._ensure()
            try:
                got = self._acquire(now)
            except BusError:
                self.ready = False  # the chip may have been power-cycled: set it up again
                raise
            if got is None:
                return None
            t, raw, x_all, sat = got
            x = x_all[:, self._cols]
            keep = self.gate.keep(raw, x, sat, self.stats)
            self.stats["samples"] += int(keep.sum())
            if not keep.all():
                t, x = t[keep], x[keep]
            if t.shape[0] == 0:
                return None
            return Block(self.name, self.channels, t, np.ascontiguousarray(x))

    def close(self) -> None:
        """Nothing to release: the bus belongs to whoever opened it."""


class SingleShotChip(ChipDriver, Generic[RawT]):
    """A chip read one triggered measurement at a time (environmental sensors): ``read()`` and
    the ``rate_hz`` schedule are shared; subclasses give ``_measure`` (the raw words, a
    ``RawT``; raises ``BusError``, or another ``DriverError`` such as a Sensirion ``CrcError``)
    and ``_convert`` (raw words -> channel values)."""

    #: channel whose value pinned at either end of its range counts as saturation
    SATURATES: ClassVar[tuple[str, float, float] | None] = None

    def __init__(self, bus: SMBusLike, address: int, **kw: Any) -> None:
        super().__init__(bus, address, **kw)
        self.poll_s = 1.0 / self.rate_hz
        self._due = -math.inf

    def _measure(self) -> RawT:
        raise NotImplementedError

    def _convert(self, raw: RawT) -> dict[str, float]:
        raise NotImplementedError

    def read(self) -> dict[str, float]:
        """One measurement: channel -> value."""
        with self._lock:
            self._ensure()
            try:
                return self._convert(self._measure())
            except BusError:
                self.ready = False
                raise

    def _is_due(self, now: float) -> bool:
        if now < self._due:
            return False
        # next sample one period after this one was due (or after now, if far behind)
        self._due = (self._due if self._due > now - self.poll_s else now) + self.poll_s
        return True

    def _sample(
        self, now: float, raw: Sequence[int], vals: dict[str, float]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One sample in the ``_acquire`` shape."""
        sat = False
        if self.SATURATES is not None and self.SATURATES[0] in vals:
            ch, lo, hi = self.SATURATES
            sat = vals[ch] in (lo, hi)
        x = np.array([[vals[c] for c in self.CHANNELS]])
        return np.array([now]), np.array([raw[: len(self.CHANNELS)]], dtype=np.int64), x, np.array([sat])
