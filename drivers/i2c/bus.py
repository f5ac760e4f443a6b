"""The bus side of a chip driver: register access with bounded retries, and ``/dev/i2c-N``.

* :class:`Device` wraps one address on a bus: every register access gets bounded retries with
  exponential backoff on the errors a flaky bus produces (EIO, EREMOTEIO, ETIMEDOUT, ENXIO,
  EAGAIN); anything still failing becomes a :class:`BusError` naming bus, address and register.
* :class:`LinuxBus` opens ``/dev/i2c-N`` through smbus2 on first use, and again after it could
  not be, so a bus missing at boot only makes its sensors unhealthy.
* :func:`bus_problem` says what is wrong with ``/dev/i2c-N`` and how to fix it (for ``edged
  check`` and ``edged sensors scan``). The device directory is ``$EDGED_I2C_DEV_DIR`` (default
  ``/dev``), so tests can point it at a temporary directory.
"""

from __future__ import annotations

import errno
import functools
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import structlog

from drivers.base import DriverError, SMBusLike

if TYPE_CHECKING:
    import smbus2

log = structlog.get_logger("edged.drivers")

T = TypeVar("T")

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
        bus: SMBusLike,
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

    def _call(self, what: str, fn: Callable[[], T], retry: bool = True) -> T:
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
                    functools.partial(self.bus.read_i2c_block_data, self.address, r, k),
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


def device_path(number: int) -> str:
    """The character device of I2C bus ``number``: ``/dev/i2c-N`` (or under ``$EDGED_I2C_DEV_DIR``)."""
    return os.path.join(os.environ.get("EDGED_I2C_DEV_DIR", "/dev"), f"i2c-{number}")


ENABLE_HINT = (
    "enable I2C: on a Raspberry Pi `sudo raspi-config nonint do_i2c 0` "
    "(or `dtparam=i2c_arm=on` in /boot/firmware/config.txt) and reboot; "
    "elsewhere load the i2c-dev module (`sudo modprobe i2c-dev`)"
)
GROUP_HINT = (
    "add the user that runs edged to the `i2c` group (`sudo usermod -aG i2c USER`, then log in "
    "again; the systemd unit has SupplementaryGroups=i2c)"
)


def explain(number: int, err: int | None, strerror: str | None = None) -> str:
    """What an error opening ``/dev/i2c-N`` means for the operator, with the fix."""
    path = device_path(number)
    if err == errno.ENOENT:
        return f"{path} does not exist: I2C bus {number} is not enabled; {ENABLE_HINT}"
    if err in (errno.EACCES, errno.EPERM):
        return f"{path}: permission denied; {GROUP_HINT}"
    return f"{path}: {strerror or (os.strerror(err) if err else 'cannot open')}"


def bus_problem(number: int) -> str | None:
    """Why ``/dev/i2c-N`` cannot be opened read-write, with the fix; None when it can."""
    try:
        fd = os.open(device_path(number), os.O_RDWR)
    except OSError as exc:
        return explain(number, exc.errno, exc.strerror)
    os.close(fd)
    return None


class LinuxBus:
    """``/dev/i2c-N`` through smbus2, opened on first use and again after it could not be.

    One instance per sensor: each has its own file descriptor, so the kernel arbitrates between
    sensor threads (smbus2 sets the slave address per descriptor)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.name = str(number)
        self._bus: smbus2.SMBus | None = None

    def _open(self) -> smbus2.SMBus:
        if self._bus is None:
            import smbus2

            # raises OSError (ENOENT, EACCES): the sensor is unhealthy
            self._bus = smbus2.SMBus(device_path(self.number))
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

    def i2c_rdwr(self, *msgs: smbus2.i2c_msg) -> None:
        self._open().i2c_rdwr(*msgs)

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None
