"""Emulated Bosch BME280 / BMP280: NVM calibration, forced-mode conversions with their timing.

Physical values become ADC counts by inverting the driver's compensation formulas (bisection);
that keeps the simulator's values right, and is never how the formulas themselves are tested
(the tests use the datasheets' worked examples).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from drivers import bosch
from drivers.emulated.sources import EnvSource, calm
from drivers.fakebus import RegisterChip

#: T/P calibration of the BMP280 datasheet's worked example (section 3.12) and humidity words of
#: the size a real BME280 carries (Bosch publishes no humidity example).
TYPICAL_CALIBRATION = bosch.Calibration(
    27504,
    26435,
    -1000,
    36477,
    -10685,
    3024,
    2855,
    140,
    -7,
    15500,
    -14600,
    6000,
    H1=75,
    H2=362,
    H3=0,
    H4=333,
    H5=0,
    H6=30,
)


def encode_calibration(c: bosch.Calibration) -> tuple[bytes, bytes]:
    """NVM bytes 0x88..0xA1 and 0xE1..0xE7 holding ``c`` (datasheet table 16 layout)."""
    words = np.array([c.T1, c.T2, c.T3, c.P1, c.P2, c.P3, c.P4, c.P5, c.P6, c.P7, c.P8, c.P9])
    b1 = (words.astype(np.int64) & 0xFFFF).astype("<u2").tobytes()
    b1 += bytes([0, c.H1 & 0xFF])
    h4, h5 = c.H4 & 0xFFF, c.H5 & 0xFFF
    b2 = bytes(
        [
            c.H2 & 0xFF,
            (c.H2 >> 8) & 0xFF,
            c.H3 & 0xFF,
            h4 >> 4,
            (h4 & 0x0F) | (h5 & 0x0F) << 4,
            h5 >> 4,
            c.H6 & 0xFF,
        ]
    )
    return b1, b2


def _bisect(f: Callable[[int], float | None], target: float, lo: int, hi: int, increasing: bool) -> int:
    while hi - lo > 1:
        mid = (lo + hi) // 2
        v = f(mid)
        below = v is not None and (v < target if increasing else v > target)
        lo, hi = (mid, hi) if below else (lo, mid)
    return lo


class EmuBosch(RegisterChip):
    """BME280 (``humidity=True``, ID 0x60) or BMP280 (ID 0x58): forced-mode conversions.

    ``adc`` fixes the raw (adc_T, adc_P, adc_H) values instead of converting a source (datasheet
    vectors). Writes follow Bosch's I2C format: register/value pairs."""

    def __init__(
        self,
        source: EnvSource | None = None,
        humidity: bool = True,
        calibration: bosch.Calibration = TYPICAL_CALIBRATION,
        adc: tuple[int, int, int] | None = None,
        chip_id: int | None = None,
    ) -> None:
        self.source = source or calm()
        self.humidity = humidity
        self.cal = calibration
        self.adc = adc
        self.chip_id = chip_id if chip_id is not None else (0x60 if humidity else 0x58)
        self.stuck = False
        self.conversions = 0
        self._done_at: float | None = None
        self._t_trigger = 0.0
        self._reset_until = -math.inf
        self._last: tuple[int, int, int] | None = None
        super().__init__()

    def power_cycle(self, now: float) -> None:
        super().power_cycle(now)
        b1, b2 = encode_calibration(self.cal)
        self.regs[0x88 : 0x88 + 26] = b1
        if self.humidity:
            self.regs[0xE1 : 0xE1 + 7] = b2
        self.regs[0xD0] = self.chip_id
        self.regs[0xF7:0xFF] = bytes([0x80, 0, 0, 0x80, 0, 0, 0x80, 0])  # reset values: "skipped"
        self._done_at = None
        self._reset_until = now + 0.001

    def write(self, data: bytes, now: float) -> None:
        self.advance(now)
        if len(data) == 1:
            self.ptr = data[0]
            return
        for i in range(0, len(data) - 1, 2):  # register/value pairs
            reg, val = data[i], data[i + 1]
            self.writes.append((reg, val))
            self.on_write(reg, val, now)

    def on_write(self, reg: int, value: int, now: float) -> None:
        if reg == 0xE0:
            if value == 0xB6:
                self.power_cycle(now)
            return
        if reg in (0xF2, 0xF4, 0xF5):
            self.regs[reg] = value
        if reg == 0xF4 and value & 0x03 in (0x01, 0x02) and self._done_at is None:
            osr = [0, 1, 2, 4, 8, 16, 16, 16]
            ot, op = osr[value >> 5], osr[(value >> 2) & 7]
            oh = osr[self.regs[0xF2] & 7] if self.humidity else 0
            typ_ms = 1.0 + 2.0 * ot + (2.0 * op + 0.5 if op else 0) + (2.0 * oh + 0.5 if oh else 0)
            self._t_trigger = now
            self._done_at = now + typ_ms / 1000.0

    def advance(self, now: float) -> None:
        if self._done_at is None or now < self._done_at:
            return
        self._done_at = None
        self.conversions += 1
        ctrl = self.regs[0xF4]
        self.regs[0xF4] = ctrl & 0xFC  # back to sleep mode
        adc_t, adc_p, adc_h = (
            self.adc if self.adc is not None else self._to_adc(*self.source(self._t_trigger))
        )
        if self.stuck and self._last is not None:
            adc_t, adc_p, adc_h = self._last
        self._last = (adc_t, adc_p, adc_h)
        if not ctrl >> 5:
            adc_t = 0x80000
        if not (ctrl >> 2) & 7:
            adc_p = 0x80000
        if self.humidity and not self.regs[0xF2] & 7:
            adc_h = 0x8000
        self.regs[0xF7:0xFD] = bytes(
            [
                adc_p >> 12,
                adc_p >> 4 & 0xFF,
                (adc_p & 0xF) << 4,
                adc_t >> 12,
                adc_t >> 4 & 0xFF,
                (adc_t & 0xF) << 4,
            ]
        )
        if self.humidity:
            self.regs[0xFD:0xFF] = bytes([adc_h >> 8, adc_h & 0xFF])

    def _to_adc(self, temp: float, hum: float, pres: float) -> tuple[int, int, int]:
        c = self.cal
        adc_t = _bisect(lambda a: bosch.compensate_t(a, c)[0], temp, 0, 1 << 20, increasing=True)
        _, t_fine = bosch.compensate_t(adc_t, c)
        adc_p = _bisect(lambda a: bosch.compensate_p(a, t_fine, c), pres, 0, 1 << 20, increasing=False) + 1
        adc_h = _bisect(lambda a: bosch.compensate_h(a, t_fine, c), hum, 0, 1 << 16, increasing=True) + 1
        return adc_t, min(adc_p, (1 << 20) - 1), min(adc_h, 0xFFFF)

    def on_read(self, reg: int, now: float) -> int:
        if reg == 0xF3:
            measuring = 0x08 if self._done_at is not None else 0
            return measuring | (0x01 if now < self._reset_until else 0)
        return self.regs[reg]
