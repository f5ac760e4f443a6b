"""Emulated Sensirion SHT3x and SHT4x: commands, measurement durations (a read before the result
is ready is NACKed), words framed with the driver's own :func:`~drivers.sensirion.crc8`."""

from __future__ import annotations

from typing import ClassVar

from drivers.emulated.sources import EnvSource, calm
from drivers.fakebus import EmulatedChip, nack
from drivers.sensirion import crc8


def _with_crc(*words: int) -> bytes:
    out = bytearray()
    for w in words:
        b = bytes([w >> 8 & 0xFF, w & 0xFF])
        out += b + bytes([crc8(b)])
    return bytes(out)


class _EmuSensirion(EmulatedChip):
    MEASURE: ClassVar[dict[bytes, float]] = {}  # command -> typical duration (s)

    def __init__(
        self, source: EnvSource | None = None, raw: tuple[int, int] | None = None, serial: int = 0x12345678
    ) -> None:
        self.source = source or calm()
        self.raw = raw
        self.serial = serial
        self.stuck = False
        self.corrupt_crc = 0
        self.commands: list[bytes] = []
        self._answer: bytes | None = None
        self._ready_at = 0.0
        self._last: tuple[int, int] | None = None

    def power_cycle(self, now: float) -> None:
        self._answer = None

    def to_raw(self, temp: float, hum: float) -> tuple[int, int]:
        raise NotImplementedError

    def command(self, cmd: bytes, now: float) -> None:
        raise NotImplementedError

    def _measure(self, now: float, duration: float) -> None:
        if self.raw is not None:
            s_t, s_rh = self.raw
        else:
            temp, hum, _ = self.source(now)
            s_t, s_rh = self.to_raw(temp, hum)
        if self.stuck and self._last is not None:
            s_t, s_rh = self._last
        self._last = (s_t, s_rh)
        self._answer = _with_crc(s_t, s_rh)
        self._ready_at = now + duration

    def write(self, data: bytes, now: float) -> None:
        self.commands.append(bytes(data))
        self.command(bytes(data), now)

    def read(self, n: int, now: float) -> bytes:
        if self._answer is None or now < self._ready_at:
            raise nack(0x44)  # no clock stretching: a read before the result is ready is NACKed
        out = bytearray(self._answer[:n])
        self._answer = None
        if self.corrupt_crc > 0 and len(out) >= 3:
            self.corrupt_crc -= 1
            out[2] ^= 0x5A
        return bytes(out)


class EmuSht3x(_EmuSensirion):
    """SHT3x-DIS: 16-bit commands; single shot without clock stretching; status register."""

    MEASURE: ClassVar[dict[bytes, float]] = {
        b"\x24\x00": 0.0125,
        b"\x24\x0b": 0.0045,
        b"\x24\x16": 0.0025,
        b"\x2c\x06": 0.0125,
        b"\x2c\x0d": 0.0045,
        b"\x2c\x10": 0.0025,
    }

    def to_raw(self, temp: float, hum: float) -> tuple[int, int]:
        s_t = round((temp + 45.0) * 65535.0 / 175.0)
        s_rh = round(hum * 65535.0 / 100.0)
        return min(65535, max(0, s_t)), min(65535, max(0, s_rh))

    def command(self, cmd: bytes, now: float) -> None:
        if len(cmd) < 2:
            return  # half a command: acknowledged, ignored
        if cmd in self.MEASURE:
            self._measure(now, self.MEASURE[cmd])
        elif cmd == b"\xf3\x2d":
            self._answer, self._ready_at = _with_crc(0x8010), now
        elif cmd in (b"\x30\xa2", b"\x30\x41", b"\x30\x66"):
            self._answer = None
        else:
            raise nack(0x44)


class EmuSht4x(_EmuSensirion):
    """SHT4x: 8-bit commands; measurement, serial number, soft reset."""

    MEASURE: ClassVar[dict[bytes, float]] = {b"\xfd": 0.0069, b"\xf6": 0.0037, b"\xe0": 0.0013}

    def to_raw(self, temp: float, hum: float) -> tuple[int, int]:
        s_t = round((temp + 45.0) * 65535.0 / 175.0)
        s_rh = round((hum + 6.0) * 65535.0 / 125.0)
        return min(65535, max(0, s_t)), min(65535, max(0, s_rh))

    def command(self, cmd: bytes, now: float) -> None:
        if cmd in self.MEASURE:
            self._measure(now, self.MEASURE[cmd])
        elif cmd == b"\x89":
            self._answer, self._ready_at = _with_crc(self.serial >> 16, self.serial & 0xFFFF), now + 0.0002
        elif cmd == b"\x94":
            self._answer = None
        else:
            raise nack(0x44)
