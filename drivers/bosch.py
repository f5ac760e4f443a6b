"""Bosch BME280 (temperature, pressure, humidity) and BMP280 (temperature, pressure).

Forced mode: every sample writes the measurement settings and triggers one conversion in a
single I2C write (Bosch's write format is register/value pairs), waits the datasheet's maximum
conversion time, then reads status, settings and all data registers in one burst (the
datasheet asks for a burst read so the values belong to one conversion). Writing the settings
each time means a chip that browned out and lost its registers is back in shape at the next
sample; the settings read back with the data prove it.

Values come from the datasheet's double-precision compensation formulas (BME280 datasheet
section 8.1, BMP280 datasheet section 8.1) and the chip's own calibration words, read from its
NVM at setup. Addresses: 0x76 (SDO to GND) or 0x77 (SDO to VDDIO).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from drivers.base import DriverError, SMBusLike
from drivers.i2c.bus import Device
from drivers.i2c.chip import SingleShotChip
from drivers.i2c.config import I2cSensorConfig, address_in

REG_CALIB1 = 0x88  # 0x88..0xA1: dig_T1..dig_P9, (0xA0 reserved), dig_H1
REG_ID = 0xD0
REG_RESET = 0xE0
REG_CALIB2 = 0xE1  # 0xE1..0xE7: dig_H2..dig_H6 (BME280)
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_CONFIG = 0xF5
REG_DATA = 0xF7  # press_msb .. hum_lsb
RESET_WORD = 0xB6
STATUS_MEASURING = 0x08
STATUS_IM_UPDATE = 0x01
MODE_FORCED = 0b01

OSRS = {0: 0, 1: 1, 2: 2, 4: 3, 8: 4, 16: 5}  # oversampling factor -> register code
FILTER = {0: 0, 2: 1, 4: 2, 8: 3, 16: 4}  # IIR filter coefficient -> register code
SKIPPED_20 = 0x80000  # what a skipped temperature/pressure conversion reads
SKIPPED_16 = 0x8000  # ... and a skipped humidity conversion

#: ID register values of Bosch environmental chips (for clear errors and for `sensors scan`)
KNOWN_IDS = {
    0x55: "BMP180",
    0x56: "BMP280 (sample)",
    0x57: "BMP280 (sample)",
    0x58: "BMP280",
    0x60: "BME280",
    0x61: "BME680",
}


@dataclass(frozen=True, slots=True)
class Calibration:
    """The compensation words from the chip's NVM (BME280 datasheet table 16)."""

    T1: int
    T2: int
    T3: int
    P1: int
    P2: int
    P3: int
    P4: int
    P5: int
    P6: int
    P7: int
    P8: int
    P9: int
    H1: int = 0
    H2: int = 0
    H3: int = 0
    H4: int = 0
    H5: int = 0
    H6: int = 0

    @classmethod
    def parse(cls, block1: bytes, block2: bytes | None = None) -> Calibration:
        """From registers 0x88..0xA1 (26 bytes) and, for the BME280, 0xE1..0xE7 (7 bytes).

        Words are little-endian; dig_H4 and dig_H5 are 12-bit signed values sharing 0xE5."""
        w = np.frombuffer(block1[:24], dtype="<u2").astype(np.int64)
        s = np.frombuffer(block1[:24], dtype="<i2").astype(np.int64)
        kw: dict[str, int] = {"T1": int(w[0]), "T2": int(s[1]), "T3": int(s[2]), "P1": int(w[3])}
        for i in range(2, 10):
            kw[f"P{i}"] = int(s[i + 2])
        if block2 is not None:
            e1, e2, e3, e4, e5, e6, e7 = block2[:7]
            kw["H1"] = block1[25]
            kw["H2"] = _s16(e1 | e2 << 8)
            kw["H3"] = e3
            kw["H4"] = _s12(e4 << 4 | (e5 & 0x0F))
            kw["H5"] = _s12(e6 << 4 | e5 >> 4)
            kw["H6"] = e7 - 256 if e7 > 127 else e7
        return cls(**kw)

    def plausible(self) -> bool:
        """Erased or unreadable NVM reads as all zeros or all ones."""
        return self.T1 not in (0, 0xFFFF) and self.P1 not in (0, 0xFFFF) and self.T2 != 0


def _s16(v: int) -> int:
    return v - 0x10000 if v & 0x8000 else v


def _s12(v: int) -> int:
    return v - 0x1000 if v & 0x800 else v


def compensate_t(adc_t: int, c: Calibration) -> tuple[float, int]:
    """Temperature in degC and ``t_fine`` (datasheet 8.1, ``bmp280_compensate_T_double``).

    >>> c = Calibration(27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
    >>> compensate_t(519888, c)  # BMP280 datasheet 3.12: 25.08 degC, t_fine 128422
    (25.08..., 128422)
    """
    var1 = (adc_t / 16384.0 - c.T1 / 1024.0) * c.T2
    var2 = (adc_t / 131072.0 - c.T1 / 8192.0) * (adc_t / 131072.0 - c.T1 / 8192.0) * c.T3
    t_fine = int(var1 + var2)  # C: (BMP280_S32_t)(var1 + var2), truncation toward zero
    return (var1 + var2) / 5120.0, t_fine


def compensate_p(adc_p: int, t_fine: int, c: Calibration) -> float | None:
    """Pressure in Pa (``bmp280_compensate_P_double``); ``None`` where the datasheet returns 0
    to avoid a division by zero (the reading is invalid)."""
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * c.P6 / 32768.0
    var2 = var2 + var1 * c.P5 * 2.0
    var2 = var2 / 4.0 + c.P4 * 65536.0
    var1 = (c.P3 * var1 * var1 / 524288.0 + c.P2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * c.P1
    if var1 == 0.0:
        return None
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = c.P9 * p * p / 2147483648.0
    var2 = p * c.P8 / 32768.0
    return p + (var1 + var2 + c.P7) / 16.0


def compensate_h(adc_h: int, t_fine: int, c: Calibration) -> float:
    """Relative humidity in %RH, clamped to 0..100 (BME280 ``bme280_compensate_H_double``)."""
    var_h = t_fine - 76800.0
    var_h = (adc_h - (c.H4 * 64.0 + c.H5 / 16384.0 * var_h)) * (
        c.H2 / 65536.0 * (1.0 + c.H6 / 67108864.0 * var_h * (1.0 + c.H3 / 67108864.0 * var_h))
    )
    var_h = var_h * (1.0 - c.H1 * var_h / 524288.0)
    return min(100.0, max(0.0, var_h))


def conversion_time_s(osrs_t: int, osrs_p: int, osrs_h: int | None) -> float:
    """Maximum time of one forced conversion (BME280 datasheet 9.1; oversampling factors, 0 = skipped)."""
    ms = 1.25 + 2.3 * osrs_t
    ms += (2.3 * osrs_p + 0.575) if osrs_p else 0.0
    if osrs_h:
        ms += 2.3 * osrs_h + 0.575
    return ms / 1000.0


class _BoschEnv(SingleShotChip[tuple[int, int, int]]):
    IDS: ClassVar[dict[int, str]] = {}
    HUMIDITY: ClassVar[bool] = False
    ADDRESSES: ClassVar[tuple[int, ...]] = (0x76, 0x77)
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "temperature": (-40.0, 85.0),
        "pressure": (30000.0, 110000.0),
        "humidity": (0.0, 100.0),
    }
    STUCK_AFTER = 30
    SATURATES = ("humidity", 0.0, 100.0)

    def __init__(
        self,
        bus: SMBusLike,
        address: int = 0x76,
        *,
        oversampling: int = 1,
        iir_filter: int = 0,
        rate_hz: float = 1.0,
        channels: Sequence[str] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(bus, address, rate_hz=rate_hz, channels=channels, **kw)
        if oversampling not in OSRS or oversampling == 0 or iir_filter not in FILTER:
            raise ValueError(f"unsupported oversampling {oversampling} or IIR filter {iir_filter}")
        self.oversampling = oversampling
        self.iir_filter = iir_filter
        self.cal: Calibration | None = None
        osrs_h = oversampling if self.HUMIDITY else None
        self.conversion_s = conversion_time_s(oversampling, oversampling, osrs_h)
        code = OSRS[oversampling]
        self._ctrl_meas = code << 5 | code << 2 | MODE_FORCED
        self._config = FILTER[iir_filter] << 2
        # ctrl_hum must be written before ctrl_meas for it to take effect (datasheet 5.4.3)
        pairs = [REG_CTRL_HUM, code] if self.HUMIDITY else []
        pairs += [REG_CONFIG, self._config, REG_CTRL_MEAS, self._ctrl_meas]
        self._trigger = pairs

    @classmethod
    def identify(cls, dev: Device) -> str | None:
        return cls.IDS.get(dev.read_u8(REG_ID))

    def _check_identity(self) -> str:
        found = self.dev.read_u8(REG_ID)
        if found not in self.IDS:
            err = self._wrong_chip(REG_ID, found, {k: v for k, v in self.IDS.items() if "sample" not in v})
            if found in KNOWN_IDS:
                err.args = (f"{err.args[0]} (0x{found:02x} is a {KNOWN_IDS[found]})",)
            raise err
        return self.IDS[found]

    def _configure(self) -> None:
        self.dev.write_u8(REG_RESET, RESET_WORD)
        self.sleep(0.002)  # start-up time after a soft reset: 2 ms
        for _ in range(10):  # NVM is copied to the image registers after reset
            if not self.dev.read_u8(REG_STATUS) & STATUS_IM_UPDATE:
                break
            self.sleep(0.001)
        block1 = self.dev.read(REG_CALIB1, 26)
        block2 = self.dev.read(REG_CALIB2, 7) if self.HUMIDITY else None
        cal = Calibration.parse(block1, block2)
        if not cal.plausible():
            raise DriverError(
                f"{self.CHIP} at {self.dev.where()}: calibration words read as "
                f"{block1[:6].hex()}...; the NVM cannot be read"
            )
        self.cal = cal

    def _measure(self) -> tuple[int, int, int]:
        """Trigger one forced conversion and return the raw (adc_T, adc_P, adc_H)."""
        d = self.dev
        d.write(self._trigger[0], self._trigger[1:])  # settings + forced mode: starts a conversion
        self.sleep(self.conversion_s)
        n = (REG_DATA + (8 if self.HUMIDITY else 6)) - REG_STATUS
        for _ in range(10):
            b = d.read(REG_STATUS, n)
            if not b[0] & STATUS_MEASURING:
                break
            self.sleep(0.001)
        else:
            raise DriverError(
                f"{self.CHIP} at {d.where()}: conversion still running after "
                f"{self.conversion_s * 1000 + 10:.0f} ms"
            )
        if b[1] & 0xFC != self._ctrl_meas & 0xFC or b[2] & 0x1C != self._config & 0x1C:
            # settings lost between the trigger and now (a reset): this conversion used others
            self.ready = False
            raise DriverError(
                f"{self.CHIP} at {d.where()}: settings read back as ctrl_meas "
                f"0x{b[1]:02x}, config 0x{b[2]:02x}: the chip was reset"
            )
        data = b[REG_DATA - REG_STATUS :]
        adc_p = data[0] << 12 | data[1] << 4 | data[2] >> 4
        adc_t = data[3] << 12 | data[4] << 4 | data[5] >> 4
        adc_h = data[6] << 8 | data[7] if self.HUMIDITY else 0
        return adc_t, adc_p, adc_h

    def _convert(self, raw: tuple[int, int, int]) -> dict[str, float]:
        assert self.cal is not None
        adc_t, adc_p, adc_h = raw
        nan = math.nan
        if adc_t == SKIPPED_20:
            return dict.fromkeys(self.CHANNELS, nan)
        t, t_fine = compensate_t(adc_t, self.cal)
        p = compensate_p(adc_p, t_fine, self.cal) if adc_p != SKIPPED_20 else None
        out = {"temperature": t, "pressure": p if p is not None else nan}
        if self.HUMIDITY:
            out["humidity"] = compensate_h(adc_h, t_fine, self.cal) if adc_h != SKIPPED_16 else nan
        return out

    def _acquire(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """One forced conversion when due: temperature (degC), pressure (Pa)[, humidity (%RH)]."""
        if not self._is_due(now):
            return None
        raw = self._measure()
        return self._sample(now, raw, self._convert(raw))


class BME280(_BoschEnv):
    """Bosch BME280: temperature, pressure and humidity (chip ID 0x60)."""

    CHIP = "BME280"
    CHANNELS: ClassVar[tuple[str, ...]] = ("temperature", "pressure", "humidity")
    IDS: ClassVar[dict[int, str]] = {0x60: "BME280"}
    HUMIDITY = True


class BMP280(_BoschEnv):
    """Bosch BMP280: temperature and pressure (chip ID 0x58; 0x56/0x57 on engineering samples)."""

    CHIP = "BMP280"
    CHANNELS: ClassVar[tuple[str, ...]] = ("temperature", "pressure")
    IDS: ClassVar[dict[int, str]] = {0x58: "BMP280", 0x56: "BMP280 (sample)", 0x57: "BMP280 (sample)"}


class _BoschConfig(I2cSensorConfig):
    address: int = Field(0x76, description="7-bit address: 0x76 (SDO low) or 0x77.", ge=0x03, le=0x77)
    rate_hz: float = Field(
        1.0,
        gt=0,
        le=50,
        description="Forced conversions per second; must leave time for them (one at oversampling 16 "
        "takes up to 113 ms).",
    )
    oversampling: Literal[1, 2, 4, 8, 16] = Field(1, description="Oversampling of every channel.")
    iir_filter: Literal[0, 2, 4, 8, 16] = Field(0, description="IIR filter coefficient (0: off).")

    _address = field_validator("address")(address_in(_BoschEnv.ADDRESSES))

    @model_validator(mode="after")
    def _rate_fits(self) -> _BoschConfig:
        t = conversion_time_s(self.oversampling, self.oversampling, self.oversampling)
        if t * self.rate_hz > 0.9:
            raise ValueError(
                f"rate_hz {self.rate_hz:g} leaves no time for conversions of up to {t * 1000:.0f} ms "
                f"at oversampling {self.oversampling}; at most {0.9 / t:.0f} Hz"
            )
        return self


class Bme280Config(_BoschConfig):
    """``driver = "bme280"``."""

    driver: Literal["bme280"]


class Bmp280Config(_BoschConfig):
    """``driver = "bmp280"``."""

    driver: Literal["bmp280"]
