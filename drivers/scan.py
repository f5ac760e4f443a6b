"""Find the chips on a bus: which addresses answer, and which known chip each one is.

Probing follows ``i2cdetect``: a one-byte read at 0x30-0x37 and 0x50-0x5F (where a quick write
could change an EEPROM's write protection), an address-only quick write elsewhere. A chip that
answers is identified only by reads of ID registers, or by the read-only status / serial-number
commands of the Sensirion chips, and only at addresses where a supported chip can live.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass

from drivers.base import Chip, DriverError, SMBusLike
from drivers.i2c.bus import Device

READ_PROBE = frozenset(range(0x30, 0x38)) | frozenset(range(0x50, 0x60))


@dataclass(frozen=True)
class Found:
    address: int
    answers: bool
    driver: str | None = None  # the driver that supports the chip found
    part: str | None = None


def probe(bus: SMBusLike, address: int) -> bool:
    """Whether anything acknowledges ``address``."""
    try:
        if address in READ_PROBE:
            bus.read_byte(address)
        else:
            bus.write_quick(address)
    except OSError as exc:
        if exc.errno in (errno.EREMOTEIO, errno.ENXIO, errno.EIO, errno.ETIMEDOUT, errno.EAGAIN):
            return False
        raise  # EACCES, ENOENT, EBUSY ...: the bus itself is the problem
    return True


def identify(
    bus: SMBusLike, address: int, chips: Mapping[str, type[Chip]], bus_name: str = "?"
) -> tuple[str, str] | None:
    """(driver name, part) of the first known chip whose ID matches at ``address``."""
    for name, cls in chips.items():
        if address not in cls.ADDRESSES:
            continue
        dev = Device(bus, address, bus_name, retries=1)
        try:
            part = cls.identify(dev)
        except (DriverError, OSError):
            continue
        if part:
            return name, part
    return None


def scan(
    bus: SMBusLike,
    chips: Mapping[str, type[Chip]],
    bus_name: str = "?",
    addresses: range = range(0x08, 0x78),
) -> list[Found]:
    """Every address that answers, identified where a known chip is found."""
    out = []
    for addr in addresses:
        if not probe(bus, addr):
            continue
        hit = identify(bus, addr, chips, bus_name)
        out.append(Found(addr, True, *(hit or (None, None))))
    return out
