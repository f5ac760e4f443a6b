"""Sensirion SHT3x (SHT30/31/35) and SHT4x (SHT40/41/45): temperature and humidity.

These chips take commands instead of register addresses and answer with 16-bit words, each
followed by a CRC-8 (polynomial 0x31, init 0xFF). A reading whose CRC does not match is
dropped and counted (``stats["crc_errors"]``); three in a row mark the sensor degraded.

Measurements use the single-shot commands *without* clock stretching (the Raspberry Pi's I2C
controller mishandles stretching), so the driver waits the datasheet's maximum measurement
duration before reading. Addresses: SHT3x 0x44 (ADDR low) or 0x45; SHT4x 0x44 (SHT40-AD1B),
0x45 (BD1B) or 0x46 (CD1B).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from drivers.base import DeviceNotFound, DriverError, SMBusLike
from drivers.i2c.bus import NO_ACK, BusError, Device
from drivers.i2c.chip import SingleShotChip
from drivers.i2c.config import I2cSensorConfig, address_in

# SHT3x-DIS datasheet, table 9 (single shot, clock stretching disabled) and table 4 (max durations)
SHT3X_MEASURE = {"high": (b"\x24\x00", 0.0155), "medium": (b"\x24\x0b", 0.0065), "low": (b"\x24\x16", 0.0045)}
SHT3X_STATUS = b"\xf3\x2d"
SHT3X_CLEAR_STATUS = b"\x30\x41"
SHT3X_SOFT_RESET = b"\x30\xa2"
# SHT4x datasheet, table 7 (commands) and table 3 (max durations)
SHT4X_MEASURE = {"high": (b"\xfd", 0.0083), "medium": (b"\xf6", 0.0045), "low": (b"\xe0", 0.0017)}
SHT4X_SERIAL = b"\x89"
SHT4X_SOFT_RESET = b"\x94"


class CrcError(DriverError):
    """A word arrived with a wrong CRC; the reading is dropped and counted."""


def crc8(data: bytes | Sequence[int]) -> int:
    """Sensirion CRC-8: polynomial 0x31 (x^8 + x^5 + x^4 + 1), init 0xFF, no reflection.

    >>> hex(crc8(b"\\xbe\\xef"))  # SHT3x datasheet, section 4.12, "CRC (0xBEEF) = 0x92"
    '0x92'
    """
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def words(data: bytes) -> list[int]:
    """Check and strip the CRC of each 16-bit word (``[msb, lsb, crc] * n``)."""
    out = []
    for i in range(0, len(data) - 2, 3):
        word = data[i : i + 2]
        if crc8(word) != data[i + 2]:
            raise CrcError(
                f"word {i // 3}: 0x{word.hex()} has CRC 0x{data[i + 2]:02x}, expected 0x{crc8(word):02x}"
            )
        out.append(word[0] << 8 | word[1])
    return out


def sht3x_temperature(s_t: int) -> float:
    """degC from the raw word (SHT3x-DIS datasheet 4.13: T = -45 + 175 * S_T / (2^16 - 1)).

    >>> sht3x_temperature(0x6666)  # 0x6666 / 0xFFFF = 0.4 exactly
    25.0
    """
    return -45.0 + 175.0 * s_t / 65535.0


def sht3x_humidity(s_rh: int) -> float:
    """%RH from the raw word (SHT3x-DIS datasheet 4.13: RH = 100 * S_RH / (2^16 - 1))."""
    return 100.0 * s_rh / 65535.0


def sht4x_temperature(s_t: int) -> float:
    """degC (SHT4x datasheet 4.6: T = -45 + 175 * S_T / (2^16 - 1))."""
    return -45.0 + 175.0 * s_t / 65535.0


def sht4x_humidity(s_rh: int) -> float:
    """%RH cropped to 0..100 (SHT4x datasheet 4.6: RH = -6 + 125 * S_RH / (2^16 - 1); the
    datasheet asks to crop values outside the physical range)."""
    return min(100.0, max(0.0, -6.0 + 125.0 * s_rh / 65535.0))


class _Sensirion(SingleShotChip[tuple[int, int]]):
    CHANNELS: ClassVar[tuple[str, ...]] = ("temperature", "humidity")
    STUCK_AFTER = 30
    SATURATES = ("humidity", 0.0, 100.0)
    MEASURE: ClassVar[dict[str, tuple[bytes, float]]] = {}

    def __init__(
        self,
        bus: SMBusLike,
        address: int = 0x44,
        *,
        precision: str = "high",
        rate_hz: float = 1.0,
        channels: Sequence[str] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(bus, address, rate_hz=rate_hz, channels=channels, **kw)
        if precision not in self.MEASURE:
            raise ValueError(f"precision must be one of {list(self.MEASURE)}")
        self.command, self.wait_s = self.MEASURE[precision]
        self._crc_run = 0

    def _measure(self) -> tuple[int, int]:
        self.dev.command(self.command, "start a measurement")
        self.sleep(self.wait_s)
        t, rh = words(self.dev.receive(6, "read the measurement"))
        return t, rh

    def _acquire(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """One single-shot measurement when due: temperature (degC), humidity (%RH); a reading
        with a corrupted word is dropped and counted (``read()`` raises CrcError instead)."""
        if not self._is_due(now):
            return None
        try:
            raw = self._measure()
        except CrcError as exc:
            self.stats["crc_errors"] += 1
            self._crc_run += 1
            if self._crc_run >= 3:
                self.flag("crc", f"{self._crc_run} readings in a row failed their CRC ({exc})", now)
            return None
        self._crc_run = 0
        return self._sample(now, raw, self._convert(raw))


class SHT3x(_Sensirion):
    """Sensirion SHT30/SHT31/SHT35. It has no ID register: identity is a status word that
    arrives with a valid CRC in answer to the SHT3x "read status" command."""

    CHIP = "SHT3x"
    ADDRESSES: ClassVar[tuple[int, ...]] = (0x44, 0x45)
    MEASURE = SHT3X_MEASURE
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "temperature": (-40.0, 125.0),
        "humidity": (0.0, 100.0),
    }

    @classmethod
    def identify(cls, dev: Device) -> str | None:
        dev.command(SHT3X_STATUS, "read the status register")
        dev.sleep(0.001)  # t_IDLE between a command and the next transfer
        try:
            words(dev.receive(3, "read the status register"))
        except CrcError:
            return None
        return "SHT3x"

    def _check_identity(self) -> str:
        try:
            self.dev.command(SHT3X_STATUS, "read the status register (command 0xF32D)")
            self.sleep(0.001)
            status = words(self.dev.receive(3, "read the status register"))[0]
        except CrcError as exc:
            raise DeviceNotFound(
                f"SHT3x expected at {self.dev.where()}: the status word fails its CRC ({exc}); "
                "another chip answers at this address"
            ) from None
        except BusError as exc:
            if exc.errno in NO_ACK:  # the command was not acknowledged: no SHT3x here
                raise DeviceNotFound(
                    f"SHT3x expected at {self.dev.where()}: the status command 0xF32D is "
                    f'not acknowledged ({exc}); is it an SHT4x (driver "sht4x")?'
                ) from None
            raise
        return f"SHT3x (status 0x{status:04x})"

    def _configure(self) -> None:
        self.dev.command(SHT3X_SOFT_RESET, "soft reset")
        self.sleep(0.0015)  # soft reset time: 1.5 ms max
        self.dev.command(SHT3X_CLEAR_STATUS, "clear status")

    def _convert(self, raw: tuple[int, int]) -> dict[str, float]:
        s_t, s_rh = raw
        return {"temperature": sht3x_temperature(s_t), "humidity": sht3x_humidity(s_rh)}


class SHT4x(_Sensirion):
    """Sensirion SHT40/SHT41/SHT45; identity is its serial number, read with valid CRCs."""

    CHIP = "SHT4x"
    ADDRESSES: ClassVar[tuple[int, ...]] = (0x44, 0x45, 0x46)
    MEASURE = SHT4X_MEASURE
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "temperature": (-40.0, 125.0),
        "humidity": (0.0, 100.0),
    }

    @classmethod
    def identify(cls, dev: Device) -> str | None:
        dev.command(SHT4X_SERIAL, "read the serial number")
        dev.sleep(0.001)
        try:
            hi, lo = words(dev.receive(6, "read the serial number"))
        except CrcError:
            return None
        return f"SHT4x (serial {hi << 16 | lo})"

    def _check_identity(self) -> str:
        try:
            self.dev.command(SHT4X_SERIAL, "read the serial number (command 0x89)")
            self.sleep(0.001)
            hi, lo = words(self.dev.receive(6, "read the serial number"))
        except CrcError as exc:
            raise DeviceNotFound(
                f"SHT4x expected at {self.dev.where()}: the serial number fails its CRC "
                f"({exc}); another chip answers at this address"
            ) from None
        except BusError as exc:
            if exc.errno in NO_ACK:
                raise DeviceNotFound(
                    f"SHT4x expected at {self.dev.where()}: the serial number command 0x89 "
                    f'is not acknowledged ({exc}); is it an SHT3x (driver "sht3x")?'
                ) from None
            raise
        return f"SHT4x (serial {hi << 16 | lo})"

    def _configure(self) -> None:
        self.dev.command(SHT4X_SOFT_RESET, "soft reset")
        self.sleep(0.001)  # soft reset time: 1 ms max

    def _convert(self, raw: tuple[int, int]) -> dict[str, float]:
        s_t, s_rh = raw
        return {"temperature": sht4x_temperature(s_t), "humidity": sht4x_humidity(s_rh)}


class Sht3xConfig(I2cSensorConfig):
    """``driver = "sht3x"``."""

    driver: Literal["sht3x"]
    address: int = Field(0x44, ge=0x03, le=0x77, description="7-bit address: 0x44 (ADDR low) or 0x45.")
    rate_hz: float = Field(
        1.0,
        gt=0,
        le=20,
        description="Measurements per second (a high-repeatability one takes up to 15.5 ms).",
    )
    precision: Literal["high", "medium", "low"] = Field(
        "high", description='Measurement repeatability (the datasheet\'s "repeatability").'
    )

    _address = field_validator("address")(address_in(SHT3x.ADDRESSES))


class Sht4xConfig(I2cSensorConfig):
    """``driver = "sht4x"``."""

    driver: Literal["sht4x"]
    address: int = Field(
        0x44, ge=0x03, le=0x77, description="7-bit address: 0x44, 0x45 or 0x46 (by part number)."
    )
    rate_hz: float = Field(
        1.0, gt=0, le=20, description="Measurements per second (8.3 ms per high-precision one)."
    )
    precision: Literal["high", "medium", "low"] = Field("high", description="Measurement precision.")

    _address = field_validator("address")(address_in(SHT4x.ADDRESSES))
