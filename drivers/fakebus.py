"""An I2C bus in memory: smbus2's ``SMBus`` methods over emulated chips, with fault injection.

Chips see what a real chip sees on the wire: a write transaction (bytes after the address) and
a read transaction (how many bytes the master clocks out). Every SMBus method is one
transaction or a write followed by a read, exactly as the kernel does it, so driver code runs
unchanged against :class:`EmulatedBus` and against ``smbus2.SMBus``. The tests and the
simulator (``bus = "sim"``) use the same bus and chips.

Faults (each counted in ``accesses``, one per SMBus call or ``i2c_rdwr``):

* an address that does not acknowledge (nothing attached, or :meth:`EmulatedBus.vanish`):
  ``OSError(EREMOTEIO)``, what the Raspberry Pi's I2C controller reports for a NACK;
* :meth:`EmulatedBus.fail` - the Nth access from now (optionally at one address) raises
  ``OSError(errno)`` ``times`` times in a row, before the chip sees anything;
* :meth:`EmulatedBus.reappear` - a vanished chip comes back power-cycled (registers at their
  power-on values, FIFO empty), as after a loose connector or a brown-out.

Chip-level faults (stuck values, corrupted CRC) live on the chips in :mod:`drivers.emulated`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from smbus2 import i2c_msg

I2C_M_RD = 0x0001


def nack(address: int) -> OSError:
    return OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO) + f" (no ACK from 0x{address:02x})")


class FakeClock:
    """A monotonic clock that only moves when told to (``sleep`` advances it): tests run instantly."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(0.0, dt)

    advance = sleep


class EmulatedChip:
    """A chip on an :class:`EmulatedBus`. ``now`` is the bus clock at the transaction."""

    def write(self, data: bytes, now: float) -> None:
        raise NotImplementedError

    def read(self, n: int, now: float) -> bytes:
        raise NotImplementedError

    def power_cycle(self, now: float) -> None:
        """Back to the power-on state."""
        raise NotImplementedError


class RegisterChip(EmulatedChip):
    """A chip with 8-bit register addresses: the first byte written sets the register pointer,
    further bytes are written from there on, reads continue from the pointer; the pointer
    auto-increments (subclasses change that for FIFO data registers)."""

    POWER_ON: ClassVar[dict[int, int]] = {}

    def __init__(self) -> None:
        self.regs = bytearray(256)
        self.ptr = 0
        self.writes: list[tuple[int, int]] = []  # (register, value) log, for tests
        self.power_cycle(0.0)

    def power_cycle(self, now: float) -> None:
        self.regs[:] = bytes(256)
        for reg, val in self.POWER_ON.items():
            self.regs[reg] = val
        self.ptr = 0

    def advance(self, now: float) -> None:
        """Bring time-dependent state (conversions, FIFO) up to ``now``."""

    def on_write(self, reg: int, value: int, now: float) -> None:
        self.regs[reg] = value

    def on_read(self, reg: int, now: float) -> int:
        return self.regs[reg]

    def next_reg(self, reg: int) -> int:
        return (reg + 1) & 0xFF

    def write(self, data: bytes, now: float) -> None:
        self.advance(now)
        if not data:
            return
        self.ptr = data[0]
        for b in data[1:]:
            self.writes.append((self.ptr, b))
            self.on_write(self.ptr, b, now)
            self.ptr = self.next_reg(self.ptr)

    def read(self, n: int, now: float) -> bytes:
        self.advance(now)
        out = bytearray(n)
        for i in range(n):
            out[i] = self.on_read(self.ptr, now)
            self.ptr = self.next_reg(self.ptr)
        return bytes(out)


@dataclass
class _Fault:
    countdown: int  # accesses still to pass before it fires
    times: int
    err: int
    address: int | None


class EmulatedBus:
    """smbus2.SMBus look-alike with chips attached at addresses (thread-safe: one lock)."""

    def __init__(
        self,
        chips: dict[int, EmulatedChip] | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "sim",
        rdwr: bool = True,
    ) -> None:
        self.chips: dict[int, EmulatedChip] = dict(chips or {})
        self.clock = clock
        self.name = name
        self.rdwr_supported = rdwr
        self.absent: set[int] = set()
        self.accesses = 0
        self.wire_bytes = 0  # bytes on the wire (address bytes included), for bus-load figures
        self.messages = 0  # I2C messages (each a START, an address byte, data)
        self.log: list[tuple[str, int]] = []  # (method, address) of recent accesses
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()

    # -- wiring and faults -----------------------------------------------------------------------
    def attach(self, address: int, chip: EmulatedChip) -> EmulatedChip:
        self.chips[address] = chip
        return chip

    def vanish(self, address: int) -> None:
        """The chip stops acknowledging (unplugged, dead supply)."""
        with self._lock:
            self.absent.add(address)

    def reappear(self, address: int) -> None:
        """The chip is back, power-cycled."""
        with self._lock:
            self.absent.discard(address)
            self.chips[address].power_cycle(self.clock())

    def fail(self, nth: int = 1, errno_: int = errno.EIO, times: int = 1, address: int | None = None) -> None:
        """The ``nth`` access from now (counting only ``address`` if given) and the ``times - 1``
        after it raise ``OSError(errno_)``."""
        with self._lock:
            self._faults.append(_Fault(nth - 1, times, errno_, address))

    def _wire(self, *lengths: int) -> None:
        self.messages += len(lengths)
        self.wire_bytes += sum(1 + n for n in lengths)

    def bus_seconds(self, hz: float = 400_000.0) -> float:
        """Time the traffic so far keeps an I2C bus at ``hz`` busy (9 clocks a byte, 2 per START/STOP)."""
        return (9 * self.wire_bytes + 2 * self.messages) / hz

    def _begin(self, method: str, address: int) -> EmulatedChip:
        self.accesses += 1
        self.log.append((method, address))
        if len(self.log) > 1000:
            del self.log[:500]
        for f in list(self._faults):
            if f.address is not None and f.address != address:
                continue
            if f.countdown > 0:
                f.countdown -= 1
                continue
            f.times -= 1
            if f.times <= 0:
                self._faults.remove(f)
            raise OSError(f.err, os.strerror(f.err))
        chip = self.chips.get(address)
        if chip is None or address in self.absent:
            raise nack(address)
        return chip

    # -- the SMBus methods -------------------------------------------------------------------------
    def write_quick(self, i2c_addr: int, force: bool | None = None) -> None:
        with self._lock:
            self._wire(0)
            self._begin("write_quick", i2c_addr)

    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        with self._lock:
            self._wire(1)
            chip = self._begin("read_byte", i2c_addr)
            return chip.read(1, self.clock())[0]

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        with self._lock:
            self._wire(1, 1)
            chip = self._begin("read_byte_data", i2c_addr)
            now = self.clock()
            chip.write(bytes([register]), now)
            return chip.read(1, now)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None:
        with self._lock:
            self._wire(2)
            chip = self._begin("write_byte_data", i2c_addr)
            chip.write(bytes([register, value & 0xFF]), self.clock())

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        if length > 32:
            raise ValueError("Desired block length over 32 bytes")  # as smbus2
        with self._lock:
            self._wire(1, length)
            chip = self._begin("read_i2c_block_data", i2c_addr)
            now = self.clock()
            chip.write(bytes([register]), now)
            return list(chip.read(length, now))

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: Sequence[int], force: bool | None = None
    ) -> None:
        if len(data) > 32:
            raise ValueError("Data length cannot exceed 32 bytes")
        with self._lock:
            self._wire(1 + len(data))
            chip = self._begin("write_i2c_block_data", i2c_addr)
            chip.write(bytes([register, *data]), self.clock())

    def i2c_rdwr(self, *msgs: i2c_msg) -> None:
        """Combined transfer: each message is a write or a read (``I2C_M_RD``) with repeated
        starts in between; read buffers are filled in place, as the kernel does."""
        with self._lock:
            if not self.rdwr_supported:
                raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
            if not msgs:
                return
            self._wire(*(m.len for m in msgs))
            addrs = {m.addr for m in msgs}
            chip = self._begin("i2c_rdwr", msgs[0].addr)
            if len(addrs) > 1:
                raise OSError(errno.EINVAL, "emulated bus: one address per i2c_rdwr call")
            now = self.clock()
            for m in msgs:
                if m.flags & I2C_M_RD:
                    data = chip.read(m.len, now)
                    ctypes.memmove(m.buf, data, m.len)
                else:
                    chip.write(bytes(m), now)

    def close(self) -> None:
        """Nothing to release."""
