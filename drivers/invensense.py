"""InvenSense (TDK) MPU-6050 and MPU-6500 / MPU-9250 accelerometer + gyroscope.

Register map: MPU-6000/MPU-6050 Register Map and Descriptions rev 4.2 (RM-MPU-6000A), and
MPU-6500 Register Map rev 2.1. Values are big-endian int16. The digital low-pass filter is
always on (``dlpf_hz``), which fixes the internal sample rate at 1 kHz; the output data rate is
``1000 / (1 + SMPLRT_DIV)``, so ``rate_hz`` must be 1000, 500, 333.3, 250, 200, ... The FIFO
holds accelerometer then gyroscope samples (register order); the die temperature is read once
per burst.

Highest sustained rate: 1 kHz, for both. That is the accelerometer's output rate (above it the
MPU-6050 repeats accelerometer samples), and at 1 kHz a 12-byte sample fills the MPU-6050's
1024-byte FIFO in 85 ms (the MPU-6500's 512 bytes in 42 ms), which the driver drains every
21 ms (10 ms) with one burst: about 12 kB/s, a quarter of what a 400 kHz bus can carry.
Addresses: 0x68 (AD0 low) or 0x69.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from drivers.base import SMBusLike
from drivers.i2c.bus import BusError, Device
from drivers.i2c.config import I2cSensorConfig, address_in
from drivers.imu import DEG, FifoImu
from pipelines.units import STANDARD_GRAVITY

SMPLRT_DIV = 0x19
CONFIG = 0x1A
GYRO_CONFIG = 0x1B
ACCEL_CONFIG = 0x1C
ACCEL_CONFIG2 = 0x1D  # MPU-6500
FIFO_EN = 0x23
INT_STATUS = 0x3A
ACCEL_XOUT_H = 0x3B
TEMP_OUT_H = 0x41
USER_CTRL = 0x6A
PWR_MGMT_1 = 0x6B
PWR_MGMT_2 = 0x6C
FIFO_COUNTH = 0x72
FIFO_R_W = 0x74
WHO_AM_I = 0x75

FIFO_EN_ACCEL = 0x08
FIFO_EN_GYRO = 0x70  # XG | YG | ZG
USER_CTRL_FIFO_EN = 0x40
USER_CTRL_FIFO_RESET = 0x04
PWR_RESET = 0x80
PWR_SLEEP = 0x40
PWR_CLK_PLL_X = 0x01  # PLL with the X gyro as reference (recommended over the 8 MHz oscillator)
INT_FIFO_OFLOW = 0x10

#: full-scale range -> sensitivity (register map 4.4/4.5, product spec 6.1/6.2)
ACCEL_LSB_PER_G = {2: 16384.0, 4: 8192.0, 8: 4096.0, 16: 2048.0}
GYRO_LSB_PER_DPS = {250: 131.0, 500: 65.5, 1000: 32.8, 2000: 16.4}
FS_SEL = {2: 0, 4: 1, 8: 2, 16: 3, 250: 0, 500: 1, 1000: 2, 2000: 3}
DLPF_CFG = {184: 1, 94: 2, 44: 3, 21: 4, 10: 5, 5: 6}  # bandwidth (Hz, nearest) -> DLPF_CFG


def sample_rate_divider(rate_hz: float) -> int | None:
    """SMPLRT_DIV for ``rate_hz`` at the 1 kHz internal rate, or None if not reachable."""
    div = round(1000.0 / rate_hz) - 1
    if 0 <= div <= 255 and abs(1000.0 / (div + 1) - rate_hz) <= 1e-3 * rate_hz:
        return div
    return None


class _Mpu(FifoImu):
    ADDRESSES: ClassVar[tuple[int, ...]] = (0x68, 0x69)
    IDS: ClassVar[dict[int, str]] = {}
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"temperature": (-40.0, 105.0)}
    TEMP_LSB_PER_C: ClassVar[float] = 340.0
    TEMP_OFFSET_C: ClassVar[float] = 36.53

    def __init__(
        self,
        bus: SMBusLike,
        address: int = 0x68,
        *,
        rate_hz: float = 1000.0,
        accel_range_g: int = 4,
        gyro_range_dps: int = 500,
        dlpf_hz: int = 184,
        channels: Sequence[str] | None = None,
        **kw: Any,
    ) -> None:
        div = sample_rate_divider(rate_hz)
        if (
            div is None
            or accel_range_g not in ACCEL_LSB_PER_G
            or gyro_range_dps not in GYRO_LSB_PER_DPS
            or dlpf_hz not in DLPF_CFG
        ):
            raise ValueError(
                f"unsupported rate {rate_hz}, range {accel_range_g} g / {gyro_range_dps} dps "
                f"or DLPF {dlpf_hz} Hz"
            )
        super().__init__(bus, address, rate_hz=1000.0 / (div + 1), channels=channels, **kw)
        self.div = div
        self.accel_range_g = accel_range_g
        self.gyro_range_dps = gyro_range_dps
        self.dlpf = DLPF_CFG[dlpf_hz]
        self.accel_lsb = STANDARD_GRAVITY / ACCEL_LSB_PER_G[accel_range_g]
        self.gyro_lsb = DEG / GYRO_LSB_PER_DPS[gyro_range_dps]
        self.packet = 2 * self.words
        self.fifo_en = (FIFO_EN_ACCEL if self.accel else 0) | (FIFO_EN_GYRO if self.gyro else 0)

    @classmethod
    def identify(cls, dev: Device) -> str | None:
        return cls.IDS.get(dev.read_u8(WHO_AM_I))

    def _check_identity(self) -> str:
        found = self.dev.read_u8(WHO_AM_I)
        if found not in self.IDS:
            raise self._wrong_chip(WHO_AM_I, found, self.IDS)
        return self.IDS[found]

    def _settings(self) -> bytes:
        """SMPLRT_DIV, CONFIG, GYRO_CONFIG, ACCEL_CONFIG as written."""
        return bytes([self.div, self.dlpf, FS_SEL[self.gyro_range_dps] << 3, FS_SEL[self.accel_range_g] << 3])

    def _configure(self) -> None:
        d = self.dev
        d.write_u8(PWR_MGMT_1, PWR_RESET)
        self.sleep(0.1)  # register map 4.28: wait 100 ms after DEVICE_RESET
        d.write_u8(PWR_MGMT_1, PWR_CLK_PLL_X)  # awake, PLL clock
        d.write_u8(PWR_MGMT_2, 0x00)  # every axis on
        settings = self._settings()
        for reg, val in zip((SMPLRT_DIV, CONFIG, GYRO_CONFIG, ACCEL_CONFIG), settings, strict=True):
            d.write_u8(reg, val)
        self._extra_config()
        back = d.read(SMPLRT_DIV, 4)
        if back != settings:
            raise BusError(f"{d.where()}: configuration reads back as {back.hex()}, wrote {settings.hex()}")
        self.sleep(0.03)  # gyroscope start-up time (product spec 6.1: 30 ms)
        self._fifo_restart()
        self._started()

    def _extra_config(self) -> None:
        """Chip-specific settings after the common ones."""

    def _fifo_restart(self) -> None:
        d = self.dev
        d.write_u8(FIFO_EN, 0)
        d.write_u8(USER_CTRL, USER_CTRL_FIFO_RESET)
        d.write_u8(FIFO_EN, self.fifo_en)
        d.write_u8(USER_CTRL, USER_CTRL_FIFO_EN)
        d.read_u8(INT_STATUS)  # clears a stale overflow flag

    def _fifo_status(self) -> tuple[int, bool]:
        overflow = bool(self.dev.read_u8(INT_STATUS) & INT_FIFO_OFLOW)
        hi, lo = self.dev.read(FIFO_COUNTH, 2)
        count = hi << 8 | lo
        # a FIFO that cannot take another whole sample is about to overwrite (or has overwritten)
        overflow = overflow or count > self.FIFO_BYTES - self.packet
        return count // self.packet, overflow

    def _fifo_read(self, n: int) -> np.ndarray:
        data = self.dev.read(FIFO_R_W, n * self.packet, unit=self.packet, fifo=True)
        return np.frombuffer(data, dtype=">i2").reshape(n, self.words).astype(np.int64)

    def _die_temperature(self) -> float:
        hi, lo = self.dev.read(TEMP_OUT_H, 2)
        raw = (hi << 8 | lo) - (0x10000 if hi & 0x80 else 0)
        return raw / self.TEMP_LSB_PER_C + self.TEMP_OFFSET_C

    def _config_intact(self) -> bool:
        pwr = self.dev.read_u8(PWR_MGMT_1)
        user = self.dev.read_u8(USER_CTRL)
        return (
            not pwr & PWR_SLEEP
            and bool(user & USER_CTRL_FIFO_EN)
            and self.dev.read_u8(FIFO_EN) == self.fifo_en
        )

    def read(self) -> dict[str, float]:
        """The latest sample from the data registers (one 14-byte burst)."""
        with self._lock:
            self._ensure()
            try:
                b = self.dev.read(ACCEL_XOUT_H, 14)
            except BusError:
                self.ready = False
                raise
        v = np.frombuffer(b, dtype=">i2").astype(np.float64)
        return {
            "ax": v[0] * self.accel_lsb,
            "ay": v[1] * self.accel_lsb,
            "az": v[2] * self.accel_lsb,
            "gx": v[4] * self.gyro_lsb,
            "gy": v[5] * self.gyro_lsb,
            "gz": v[6] * self.gyro_lsb,
            "temperature": v[3] / self.TEMP_LSB_PER_C + self.TEMP_OFFSET_C,
        }


class MPU6050(_Mpu):
    """MPU-6050 (and MPU-6000 over I2C): WHO_AM_I 0x68 whatever AD0 is; 1024-byte FIFO."""

    CHIP = "MPU-6050"
    IDS: ClassVar[dict[int, str]] = {0x68: "MPU-6050"}
    FIFO_BYTES = 1024
    TEMP_LSB_PER_C = 340.0  # register map 4.18: Temp = TEMP_OUT / 340 + 36.53
    TEMP_OFFSET_C = 36.53


class MPU6500(_Mpu):
    """MPU-6500 family: MPU-6500 (WHO_AM_I 0x70), MPU-9250 (0x71; its magnetometer is not read)
    and MPU-9255 (0x73); 512-byte FIFO."""

    CHIP = "MPU-6500"
    IDS: ClassVar[dict[int, str]] = {0x70: "MPU-6500", 0x71: "MPU-9250", 0x73: "MPU-9255"}
    FIFO_BYTES = 512
    TEMP_LSB_PER_C = 333.87  # register map 4.23: ((TEMP_OUT - 0) / 333.87) + 21
    TEMP_OFFSET_C = 21.0

    def _extra_config(self) -> None:
        self.dev.write_u8(ACCEL_CONFIG2, self.dlpf)  # ACCEL_FCHOICE_B = 0, A_DLPF_CFG as the gyro's


class _MpuConfig(I2cSensorConfig):
    address: int = Field(0x68, description="7-bit address: 0x68 (AD0 low) or 0x69.", ge=0x03, le=0x77)
    rate_hz: float = Field(
        1000.0,
        gt=0,
        le=1000,
        description="Sample rate: 1000 / N for N = 1..256 (1000, 500, 333.333, 250, ...).",
    )
    accel_range_g: Literal[2, 4, 8, 16] = Field(4, description="Accelerometer full scale in g.")
    gyro_range_dps: Literal[250, 500, 1000, 2000] = Field(500, description="Gyroscope full scale in deg/s.")
    dlpf_hz: Literal[184, 94, 44, 21, 10, 5] = Field(
        184, description="Digital low-pass filter bandwidth in Hz."
    )

    _address = field_validator("address")(address_in(_Mpu.ADDRESSES))

    @field_validator("rate_hz")
    @classmethod
    def _rate(cls, v: float) -> float:
        if sample_rate_divider(v) is None:
            raise ValueError(
                "rate_hz must be 1000 / N for N = 1..256 (1000, 500, 333.333, 250, 200, 125, 100, ...)"
            )
        return v


class Mpu6050Config(_MpuConfig):
    """``driver = "mpu6050"``."""

    driver: Literal["mpu6050"]


class Mpu6500Config(_MpuConfig):
    """``driver = "mpu6500"`` (also MPU-9250 / MPU-9255)."""

    driver: Literal["mpu6500"]
