"""What every I2C chip driver shares: bounded retries, identity, timestamps, data quality.

A chip driver is built as ``Cls(bus, address, **options)`` (DESIGN.md): ``bus`` is any object
with smbus2's ``SMBus`` methods and is never opened here. The constructor touches no hardware;
``setup()`` (run on the first read, and again after the chip went away) checks the chip's
identity and configures it, so a sensor that is missing at boot only makes that sensor
unhealthy, never the service.

* :class:`Device` wraps one address on a bus: every register access gets bounded retries with
  exponential backoff on the errors a flaky bus produces (EIO, EREMOTEIO, ETIMEDOUT, ENXIO,
  EAGAIN); anything still failing becomes a :class:`BusError` naming bus, address and register.
* :class:`Timebase` stamps FIFO samples from the output data rate and their position in the
  stream, never from the moment Python happened to read them.
* :class:`QualityGate` drops frozen (stuck) samples and out-of-range values and flags saturation,
  so nothing implausible reaches a learner.
"""

from __future__ import annotations

import errno
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import structlog
from pydantic import Field, field_validator

from drivers.base import Block, DeviceNotFound, DriverError, SensorConfig, select_channels
from pipelines.units import STANDARD_GRAVITY

log = structlog.get_logger("edged.drivers")

G = STANDARD_GRAVITY
DEG = math.pi / 180.0  # rad per degree

#: errors a working bus produces now and then (noise, a slow chip, a NACK mid-transfer)
TRANSIENT = frozenset({errno.EIO, errno.EREMOTEIO, errno.ETIMEDOUT, errno.ENXIO, errno.EAGAIN})
#: errors that mean "nobody acknowledged this address"
NO_ACK = frozenset({errno.EREMOTEIO, errno.ENXIO})


class BusError(DriverError):
    """A bus transfer failed after its retries (``errno`` holds the last error number)."""

    def __init__(self, msg: str, err: int | None = None) -> None:
        super().__init__(msg)
        self.errno = err


class Device:
    """One chip address on one bus, with bounded retries and backoff on transient errors.

    ``retries`` extra attempts follow a failed transfer, after ``backoff_s``, then twice that,
    and so on (3 retries from 1 ms: at most 7 ms spent waiting). Reads of a FIFO data register
    are never retried (``fifo=True``): a transfer that failed half-way may already have
    consumed bytes from the FIFO, so the caller resynchronises instead.
    """

    def __init__(
        self,
        bus: Any,
        address: int,
        bus_name: str = "?",
        retries: int = 3,
        backoff_s: float = 0.001,
        sleep: Callable[[float], None] = time.sleep,
        stats: Counter[str] | None = None,
    ) -> None:
        self.bus = bus
        self.address = address
        self.bus_name = bus_name
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.stats = stats if stats is not None else Counter()
        self.rdwr = True  # I2C_RDWR combined transfers; off after the adapter refused them

    def where(self) -> str:
        return f"bus {self.bus_name} address 0x{self.address:02x}"

    def _call(self, what: str, fn: Callable[[], Any], retry: bool = True) -> Any:
        attempts = 1 + (self.retries if retry else 0)
        delay = self.backoff_s
        for attempt in range(attempts):
            try:
                return fn()
            except OSError as exc:
                code = exc.errno
                if code in TRANSIENT and attempt + 1 < attempts:
                    self.stats["retries"] += 1
                    self.sleep(delay)
                    delay *= 2
                    continue
                self.stats["bus_errors"] += 1
                name = errno.errorcode.get(code or 0, "?")
                reason = os.strerror(code) if code else str(exc)
                if code == errno.EBUSY:
                    reason += " (is a kernel driver bound to this address?)"
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise BusError(f"{self.where()}: {what}: {reason} [{name}]{tries}", code) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- register access -----------------------------------------------------------------------
    def read_u8(self, reg: int) -> int:
        return int(
            self._call(f"read register 0x{reg:02x}", lambda: self.bus.read_byte_data(self.address, reg))
        )

    def write_u8(self, reg: int, value: int) -> None:
        self._call(
            f"write 0x{value:02x} to register 0x{reg:02x}",
            lambda: self.bus.write_byte_data(self.address, reg, value & 0xFF),
        )

    def read(self, reg: int, n: int, unit: int = 1, fifo: bool = False) -> bytes:
        """``n`` bytes from ``reg`` on: one I2C_RDWR transfer (write register, repeated start,
        read), or SMBus block reads of at most 32 bytes when the adapter cannot do I2C_RDWR.

        ``fifo=True`` reads a FIFO data register: the chunks (whole multiples of ``unit`` bytes)
        all start at ``reg``, and a failure is not retried."""
        retry = not fifo
        if n <= 32 or not self.rdwr:
            return self._read_chunks(reg, n, unit, fifo)
        try:
            return bytes(
                self._call(
                    f"read {n} bytes from register 0x{reg:02x}", lambda: self._rdwr_read(reg, n), retry
                )
            )
        except BusError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                raise
            self.rdwr = False
            log.warning(
                "i2c_rdwr_unsupported", bus=self.bus_name, note="falling back to 32-byte SMBus block reads"
            )
            return self._read_chunks(reg, n, unit, fifo)

    def write(self, reg: int, data: Sequence[int]) -> None:
        """One write transaction: ``reg`` then ``data`` (at most 32 bytes)."""
        self._call(
            f"write {len(data)} bytes at register 0x{reg:02x}",
            lambda: self.bus.write_i2c_block_data(self.address, reg, list(data)),
        )

    def _rdwr_read(self, reg: int, n: int) -> bytes:
        from smbus2 import i2c_msg

        w = i2c_msg.write(self.address, [reg])
        r = i2c_msg.read(self.address, n)
        self.bus.i2c_rdwr(w, r)
        return bytes(r)

    def _read_chunks(self, reg: int, n: int, unit: int, fifo: bool) -> bytes:
        out = bytearray()
        step = max(unit, (32 // unit) * unit)
        while len(out) < n:
            k = min(step, n - len(out))
            r = reg if fifo else reg + len(out)
            out += bytes(
                self._call(
                    f"read {k} bytes from register 0x{r:02x}",
                    lambda k=k, r=r: self.bus.read_i2c_block_data(self.address, r, k),
                    not fifo,
                )
            )
        return bytes(out)

    def command(self, cmd: bytes, what: str) -> None:
        """Write a command (Sensirion chips: 1 or 2 command bytes, no register pointer)."""
        from smbus2 import i2c_msg

        self._call(what, lambda: self.bus.i2c_rdwr(i2c_msg.write(self.address, cmd)))

    def receive(self, n: int, what: str) -> bytes:
        """Read ``n`` bytes without writing a register first (command-based chips)."""
        from smbus2 import i2c_msg

        def go() -> bytes:
            r = i2c_msg.read(self.address, n)
            self.bus.i2c_rdwr(r)
            return bytes(r)

        return bytes(self._call(what, go))


class Timebase:
    """Sample times from the output data rate (ODR) and the position in the FIFO stream.

    Sample ``k`` after a FIFO (re)start at ``t0`` was acquired at about ``t0 + (k + 1) / ODR``.
    Chip oscillators are off by up to a few percent, so once the run is long enough for one
    sample to matter little (0.5 s and 50 samples) the rate is measured (samples counted since
    ``t0`` against the monotonic clock; clamped to +-5 % of nominal) and the stamps are steered
    onto that line: each block's spacing is chosen so the remaining offset shrinks with a time
    constant of ``converge_s``. Stamps never jump and never go back; within a block they are
    exactly evenly spaced. The time Python read a burst only feeds the slow rate estimate; it
    never moves an individual sample.
    """

    def __init__(self, nominal_hz: float, tolerance: float = 0.05, converge_s: float = 1.0) -> None:
        self.nominal = 1.0 / nominal_hz
        self.tolerance = tolerance
        self.converge_s = converge_s
        self.period = self.nominal
        self.t0 = 0.0
        self.k = 0  # samples stamped since the start
        self._anchor_t = 0.0  # time of sample index _anchor_k
        self._anchor_k = -1
        self.t_last = -math.inf

    def _clamp(self, period: float) -> float:
        return min(self.nominal * (1 + self.tolerance), max(self.nominal * (1 - self.tolerance), period))

    def start(self, t0: float) -> None:
        """The FIFO was (re)started at ``t0``: the next sample is the first of a new run."""
        t0 = max(t0, self.t_last)
        self.t0 = t0
        self.k = 0
        self._anchor_t, self._anchor_k = t0, -1

    def stamps(self, n: int, now: float, pending: int = 0) -> np.ndarray:
        """Times of the next ``n`` samples, which were all in the FIFO at ``now`` (with ``pending``
        newer ones that are held back for the next call)."""
        span = now - self.t0
        if n > 0 and span >= 0.5 and self.k + n >= 50:
            measured = self._clamp(span / (self.k + n + pending))
            last_k = self.k - 1
            last_t = self._anchor_t + (last_k - self._anchor_k) * self.period
            horizon = max(n, round(self.converge_s / measured))  # samples to absorb the offset in
            target_t = self.t0 + (last_k + horizon + 1) * measured  # the line through t0 and now
            self._anchor_t, self._anchor_k = last_t, last_k
            self.period = self._clamp((target_t - last_t) / horizon)
        idx = np.arange(self.k, self.k + n, dtype=np.float64)
        t = self._anchor_t + (idx - self._anchor_k) * self.period
        self.k += n
        if n:
            self.t_last = float(t[-1])
        return t


class QualityGate:
    """Drops samples nobody should learn from, and says why the sensor looks unwell.

    * stuck: the raw words of a sample are identical to the previous ``stuck_after`` samples (a
      live ADC always has noise in its last bits); those samples are dropped while it lasts;
    * saturated: a raw value at the converter's limit; such samples are real but clipped, so they
      are kept, counted, and flagged when at least a quarter of a block is saturated;
    * out of range: a converted value outside the chip's physical range, or not finite: dropped.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, stuck_after: int) -> None:
        self.lo = lo
        self.hi = hi
        self.stuck_after = stuck_after
        self._prev: np.ndarray | None = None
        self.run = 0  # how many samples in a row equal _prev (including it)
        self.stuck = False
        self.saturated = False

    def reset(self) -> None:
        self._prev, self.run, self.stuck = None, 0, False

    def keep(self, raw: np.ndarray, x: np.ndarray, saturated: np.ndarray, stats: Counter[str]) -> np.ndarray:
        n = raw.shape[0]
        same = np.empty(n, dtype=bool)
        if n:
            same[0] = self._prev is not None and bool(np.array_equal(raw[0], self._prev))
            same[1:] = np.all(raw[1:] == raw[:-1], axis=1)
        # run length of identical samples, carried over from the previous block
        idx = np.arange(n)
        starts = np.where(same, -1, idx)
        np.maximum.accumulate(starts, out=starts)
        run = np.where(starts >= 0, idx - starts + 1, idx + 1 + self.run)
        frozen = run > self.stuck_after
        if n:
            self._prev = raw[-1].copy()
            self.run = int(run[-1])
            self.stuck = bool(frozen[-1])
        ok = np.all(np.isfinite(x) & (x >= self.lo) & (x <= self.hi), axis=1)
        stats["stuck_samples"] += int(frozen.sum())
        stats["out_of_range"] += int((~ok & ~frozen).sum())
        n_sat = int(saturated.sum())
        stats["saturated_samples"] += n_sat
        self.saturated = n > 0 and n_sat * 4 >= n
        return ok & ~frozen


# -- config ----------------------------------------------------------------------------------------
class I2cSensorConfig(SensorConfig):
    """Keys of every I2C chip sensor (each chip adds its own ``driver`` literal and options)."""

    bus: int | Literal["sim"] = Field(
        1,
        description='`N` for `/dev/i2c-N` (1 on a Raspberry Pi header), or `"sim"`: an emulated chip fed '
        "by the simulated machine.",
    )
    address: int = Field(ge=0x03, le=0x77)
    retries: int = Field(
        3, ge=0, le=10, description="Extra attempts after a transient bus error, with 1, 2, 4 ... ms backoff."
    )
    stuck_after: int | None = Field(
        None,
        ge=2,
        description='Identical raw samples in a row before the sensor counts as "stuck"; unset: 50 for '
        "IMUs, 30 for the others.",
    )

    @field_validator("bus")
    @classmethod
    def _bus(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 <= v <= 255:
            raise ValueError('bus must be a number N (for /dev/i2c-N) or "sim"')
        return v

    def driver_kwargs(self) -> dict[str, Any]:
        """Constructor keywords of the driver (the config keys are named after them)."""
        return self.model_dump(exclude={"driver", "bus", "address"})


def address_in(addresses: Sequence[int]) -> Callable[[int], int]:
    def check(v: int) -> int:
        if v not in addresses:
            raise ValueError(f"this chip answers only at {', '.join(f'0x{a:02x}' for a in addresses)}")
        return v

    return check


def config_problems(sensors: dict[str, Any]) -> list[str]:
    """Cross-sensor checks: two sensors cannot share one bus address."""
    seen: dict[tuple[Any, int], str] = {}
    problems = []
    for name, s in sensors.items():
        if not isinstance(s, I2cSensorConfig):
            continue
        key = (s.bus, s.address)
        if key in seen:
            problems.append(
                f"sensors.{name}.address: 0x{s.address:02x} on bus {s.bus} is already "
                f"used by sensor {seen[key]!r}"
            )
        seen.setdefault(key, name)
    return problems


# -- the driver base -----------------------------------------------------------------------------
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
        bus: Any,
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


class LinuxBus:
    """``/dev/i2c-N`` through smbus2, opened on first use and again after it could not be.

    One instance per sensor: each has its own file descriptor, so the kernel arbitrates between
    sensor threads (smbus2 sets the slave address per descriptor)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.name = str(number)
        self._bus: Any = None

    def _open(self) -> Any:
        if self._bus is None:
            import smbus2

            self._bus = smbus2.SMBus(self.number)  # raises OSError (ENOENT, EACCES): the sensor is unhealthy
        return self._bus

    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        return int(self._open().read_byte(i2c_addr, force))

    def write_quick(self, i2c_addr: int, force: bool | None = None) -> None:
        self._open().write_quick(i2c_addr, force)

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return int(self._open().read_byte_data(i2c_addr, register, force))

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None:
        self._open().write_byte_data(i2c_addr, register, value, force)

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        return list(self._open().read_i2c_block_data(i2c_addr, register, length, force))

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: Sequence[int], force: bool | None = None
    ) -> None:
        self._open().write_i2c_block_data(i2c_addr, register, data, force)

    def i2c_rdwr(self, *msgs: Any) -> None:
        self._open().i2c_rdwr(*msgs)

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None


class SingleShotChip(ChipDriver):
    """A chip read one triggered measurement at a time (environmental sensors): ``read()`` and
    the ``rate_hz`` schedule are shared; subclasses give ``_measure`` (raw words, raises
    raises ``BusError``, or another ``DriverError`` such as a Sensirion ``CrcError``) and ``_convert`` (raw words -> channel values)."""

    #: channel whose value pinned at either end of its range counts as saturation
    SATURATES: ClassVar[tuple[str, float, float] | None] = None

    def __init__(self, bus: Any, address: int, **kw: Any) -> None:
        super().__init__(bus, address, **kw)
        self.poll_s = 1.0 / self.rate_hz
        self._due = -math.inf

    def _measure(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _convert(self, *raw: int) -> dict[str, float]:
        raise NotImplementedError

    def read(self) -> dict[str, float]:
        """One measurement: channel -> value."""
        with self._lock:
            self._ensure()
            try:
                return self._convert(*self._measure())
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
