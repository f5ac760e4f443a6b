"""ST LSM6DSOX family (tagged FIFO) and LSM6DS3 family (pattern FIFO) accelerometer + gyroscope.

Both: WHO_AM_I at 0x0F, CTRL1_XL (0x10) and CTRL2_G (0x11) hold output data rate and full scale,
CTRL3_C (0x12) holds reset, block data update and address auto-increment; values are
little-endian int16; sensitivities are the datasheets' (0.061/0.122/0.244/0.488 mg/LSB,
4.375/8.75/17.5/35/70 mdps/LSB). Addresses: 0x6A (SA0 low) or 0x6B.

* LSM6DSOX / LSM6DSO (WHO_AM_I 0x6C): every FIFO word is a tag byte (sensor in bits 7:3, a
  2-bit time-slot counter in bits 2:1) plus 6 data bytes; reads from FIFO_DATA_OUT_TAG (0x78)
  roll back from 0x7E to 0x78, so a whole FIFO comes in one transfer. Samples are paired by
  time slot, whatever order the chip writes them in. 512 words (3 kB of data).
  Highest sustained rate: 1666 Hz. A sample is two 7-byte words, 23 kB/s at 1666 Hz, half of a
  400 kHz bus (3333 Hz would need 47 kB/s, more than the bus carries); the FIFO holds 154 ms at
  1666 Hz, drained every 38 ms.
* LSM6DS3 (0x69; 8 kB FIFO) and LSM6DS3TR-C / LSM6DSL (0x6A; 4 kB): untagged 16-bit words in a
  fixed pattern (gyro x, y, z then accel x, y, z); FIFO_STATUS3/4 give the position in the
  pattern, so a read always starts on a whole sample. Reads from FIFO_DATA_OUT_L (0x3E) roll
  back from 0x3F. Highest sustained rate: 1666 Hz (12 bytes per sample, 20 kB/s; 3333 Hz would
  need 40 kB/s, 90 % of a 400 kHz bus, with no margin for anything else).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from drivers.base import SMBusLike
from drivers.i2c.bus import BusError, Device
from drivers.i2c.config import I2cSensorConfig, address_in
from drivers.imu import DEG, FifoImu, closest
from pipelines.units import STANDARD_GRAVITY

WHO_AM_I = 0x0F
CTRL1_XL = 0x10
CTRL2_G = 0x11
CTRL3_C = 0x12
OUT_TEMP_L = 0x20
OUTX_L_G = 0x22
FIFO_STATUS1 = 0x3A
CTRL3_SW_RESET = 0x01
CTRL3_BDU_IF_INC = 0x44  # block data update + register address auto-increment

#: output data rate (Hz) -> ODR_XL / ODR_G / BDR / ODR_FIFO code (datasheet tables, CTRL1_XL)
ODR = {12.5: 1, 26.0: 2, 52.0: 3, 104.0: 4, 208.0: 5, 416.0: 6, 833.0: 7, 1666.0: 8, 3333.0: 9, 6666.0: 10}
FS_XL = {2: 0, 16: 1, 4: 2, 8: 3}  # CTRL1_XL FS_XL
MG_PER_LSB = {2: 0.061, 4: 0.122, 8: 0.244, 16: 0.488}  # linear acceleration sensitivity
FS_G = {125: 0, 250: 0, 500: 1, 1000: 2, 2000: 3}  # CTRL2_G FS_G (125 dps: FS_125 bit instead)
MDPS_PER_LSB = {125: 4.375, 250: 8.75, 500: 17.5, 1000: 35.0, 2000: 70.0}  # angular rate sensitivity
FIFO_CONTINUOUS = 0b110
FIFO_BYPASS = 0b000


class _Lsm6(FifoImu):
    ADDRESSES: ClassVar[tuple[int, ...]] = (0x6A, 0x6B)
    IDS: ClassVar[dict[int, str]] = {}
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"temperature": (-40.0, 105.0)}

    def __init__(
        self,
        bus: SMBusLike,
        address: int = 0x6A,
        *,
        rate_hz: float = 833.0,
        accel_range_g: int = 4,
        gyro_range_dps: int = 500,
        channels: Sequence[str] | None = None,
        **kw: Any,
    ) -> None:
        odr = closest(list(ODR), rate_hz)
        if odr is None or accel_range_g not in FS_XL or gyro_range_dps not in FS_G:
            raise ValueError(f"unsupported rate {rate_hz} or range {accel_range_g} g / {gyro_range_dps} dps")
        super().__init__(bus, address, rate_hz=odr, channels=channels, **kw)
        self.odr_code = ODR[odr]
        self.accel_range_g = accel_range_g
        self.gyro_range_dps = gyro_range_dps
        self.accel_lsb = MG_PER_LSB[accel_range_g] * 1e-3 * STANDARD_GRAVITY
        self.gyro_lsb = MDPS_PER_LSB[gyro_range_dps] * 1e-3 * DEG
        self.ctrl1 = self.odr_code << 4 | FS_XL[accel_range_g] << 2
        self.ctrl2 = self.odr_code << 4 | FS_G[gyro_range_dps] << 2 | (0b10 if gyro_range_dps == 125 else 0)
        self.temp_lsb_per_c = 256.0

    @classmethod
    def identify(cls, dev: Device) -> str | None:
        return cls.IDS.get(dev.read_u8(WHO_AM_I))

    def _check_identity(self) -> str:
        found = self.dev.read_u8(WHO_AM_I)
        if found not in self.IDS:
            raise self._wrong_chip(WHO_AM_I, found, self.IDS)
        return self.IDS[found]

    def _configure(self) -> None:
        d = self.dev
        d.write_u8(CTRL3_C, CTRL3_SW_RESET)
        for _ in range(10):  # the reset bit clears itself within ~50 us
            self.sleep(0.001)
            if not d.read_u8(CTRL3_C) & CTRL3_SW_RESET:
                break
        d.write_u8(CTRL3_C, CTRL3_BDU_IF_INC)
        d.write_u8(CTRL1_XL, self.ctrl1)
        d.write_u8(CTRL2_G, self.ctrl2)
        back = d.read(CTRL1_XL, 3)
        if back != bytes([self.ctrl1, self.ctrl2, CTRL3_BDU_IF_INC]):
            raise BusError(f"{d.where()}: configuration reads back as {back.hex()}")
        self.sleep(0.07)  # gyroscope turn-on time (datasheet table 3: 70 ms)
        self._fifo_restart()
        self._started()

    def _die_temperature(self) -> float:
        lo, hi = self.dev.read(OUT_TEMP_L, 2)
        raw = (hi << 8 | lo) - (0x10000 if hi & 0x80 else 0)
        return raw / self.temp_lsb_per_c + 25.0

    def _config_intact(self) -> bool:
        return self.dev.read(CTRL1_XL, 2) == bytes([self.ctrl1, self.ctrl2])

    def read(self) -> dict[str, float]:
        """The latest sample from the output registers (temperature, gyro, accel: one 14-byte burst)."""
        with self._lock:
            self._ensure()
            try:
                b = self.dev.read(OUT_TEMP_L, 14)
            except BusError:
                self.ready = False
                raise
        v = np.frombuffer(b, dtype="<i2").astype(np.float64)
        return {
            "ax": v[4] * self.accel_lsb,
            "ay": v[5] * self.accel_lsb,
            "az": v[6] * self.accel_lsb,
            "gx": v[1] * self.gyro_lsb,
            "gy": v[2] * self.gyro_lsb,
            "gz": v[3] * self.gyro_lsb,
            "temperature": v[0] / self.temp_lsb_per_c + 25.0,
        }


class LSM6DSOX(_Lsm6):
    """LSM6DSOX / LSM6DSO (WHO_AM_I 0x6C): tagged FIFO of 512 words."""

    CHIP = "LSM6DSOX"
    IDS: ClassVar[dict[int, str]] = {0x6C: "LSM6DSOX/LSM6DSO"}
    FIFO_BYTES = 512 * 7  # 512 tagged words of 7 bytes
    BYTES_PER_WORD = 7 / 3  # a 7-byte tagged word carries three 16-bit values
    FIFO_CTRL3 = 0x09  # BDR_GY [7:4], BDR_XL [3:0]
    FIFO_CTRL4 = 0x0A  # FIFO_MODE [2:0]
    FIFO_DATA_OUT_TAG = 0x78
    TAG_GYRO = 0x01
    TAG_ACCEL = 0x02
    CAPACITY_WORDS = 512

    def __init__(self, bus: SMBusLike, address: int = 0x6A, **kw: Any) -> None:
        super().__init__(bus, address, **kw)
        self._carry = np.empty((0, 7), dtype=np.uint8)  # words of a time slot not yet complete
        self.per_slot = int(self.accel) + int(self.gyro)

    def _held_back(self) -> int:
        return 1 if len(self._carry) else 0

    def _fifo_restart(self) -> None:
        d = self.dev
        d.write_u8(self.FIFO_CTRL4, FIFO_BYPASS)  # bypass mode empties the FIFO
        bdr = (self.odr_code << 4 if self.gyro else 0) | (self.odr_code if self.accel else 0)
        d.write_u8(self.FIFO_CTRL3, bdr)
        d.write_u8(self.FIFO_CTRL4, FIFO_CONTINUOUS)
        self._carry = self._carry[:0]

    def _fifo_status(self) -> tuple[int, bool]:
        s1, s2 = self.dev.read(FIFO_STATUS1, 2)
        n_words = (s2 & 0x03) << 8 | s1
        overflow = bool(s2 & 0x40) or n_words >= self.CAPACITY_WORDS  # FIFO_OVR_IA, or full
        return n_words, overflow  # words here; _fifo_read turns them into samples

    def _fifo_read(self, n_words: int) -> np.ndarray:
        data = self.dev.read(self.FIFO_DATA_OUT_TAG, 7 * n_words, unit=7, fifo=True)
        w = np.concatenate((self._carry, np.frombuffer(data, dtype=np.uint8).reshape(n_words, 7)))
        sensor = w[:, 0] >> 3
        w = w[(sensor == self.TAG_GYRO) | (sensor == self.TAG_ACCEL)]  # skip timestamps, config changes
        sensor = w[:, 0] >> 3
        cnt = (w[:, 0] >> 1) & 0x03
        slot = np.concatenate(([0], np.cumsum(cnt[1:] != cnt[:-1])))
        last = slot[-1] if slot.size else -1
        self._carry = w[slot == last]  # the newest slot may still be missing a word
        w, sensor, slot = w[slot != last], sensor[slot != last], slot[slot != last]
        vals = w[:, 1:].copy().view("<i2").astype(np.int64)  # (m, 3)
        if slot.size == 0:
            return np.empty((0, self.words), dtype=np.int64)
        slots = np.unique(slot)
        parts = []
        complete = np.ones(slots.size, dtype=bool)
        for tag, wanted in ((self.TAG_ACCEL, self.accel), (self.TAG_GYRO, self.gyro)):
            if not wanted:
                continue
            m = sensor == tag
            pos = np.searchsorted(slots, slot[m])
            col = np.zeros((slots.size, 3), dtype=np.int64)
            col[pos] = vals[m]
            has = np.zeros(slots.size, dtype=bool)
            has[pos] = True
            complete &= has
            parts.append(col)
        dropped = int((~complete).sum())
        if dropped:
            self.stats["fifo_incomplete"] += dropped
        return np.concatenate(parts, axis=1)[complete]


class LSM6DS3(_Lsm6):
    """LSM6DS3 (WHO_AM_I 0x69, 8 kB FIFO) and LSM6DS3TR-C / LSM6DSL (0x6A, 4 kB): pattern FIFO."""

    CHIP = "LSM6DS3"
    IDS: ClassVar[dict[int, str]] = {0x69: "LSM6DS3", 0x6A: "LSM6DS3TR-C/LSM6DSL"}
    FIFO_BYTES = 4096  # the smaller of the two (the poll interval must suit both)
    FIFO_CTRL3 = 0x08  # DEC_FIFO_GYRO [5:3], DEC_FIFO_XL [2:0]
    FIFO_CTRL5 = 0x0A  # ODR_FIFO [6:3], FIFO_MODE [2:0]
    FIFO_DATA_OUT_L = 0x3E

    def __init__(self, bus: SMBusLike, address: int = 0x6A, **kw: Any) -> None:
        super().__init__(bus, address, **kw)
        self.diff_mask_hi = 0x07
        self.capacity_words = 2048
        self._pattern = 0

    def _check_identity(self) -> str:
        found = self.dev.read_u8(WHO_AM_I)
        if found not in self.IDS:
            raise self._wrong_chip(WHO_AM_I, found, self.IDS)
        # LSM6DS3: 16 LSB/degC, 12-bit DIFF_FIFO, 4096 words; LSM6DS3TR-C/LSM6DSL: 256 LSB/degC, 11-bit, 2048
        ds3 = found == 0x69
        self.temp_lsb_per_c = 16.0 if ds3 else 256.0
        self.diff_mask_hi = 0x0F if ds3 else 0x07
        self.capacity_words = 4096 if ds3 else 2048
        return self.IDS[found]

    def _fifo_restart(self) -> None:
        d = self.dev
        d.write_u8(self.FIFO_CTRL5, FIFO_BYPASS)
        d.write_u8(self.FIFO_CTRL3, (0b001 << 3 if self.gyro else 0) | (0b001 if self.accel else 0))
        d.write_u8(self.FIFO_CTRL5, self.odr_code << 3 | FIFO_CONTINUOUS)

    def _fifo_status(self) -> tuple[int, bool]:
        s1, s2, s3, s4 = self.dev.read(FIFO_STATUS1, 4)
        n_words = (s2 & self.diff_mask_hi) << 8 | s1
        overflow = bool(s2 & 0x40) or n_words >= self.capacity_words  # OVER_RUN, or full
        self._pattern = (s4 & 0x03) << 8 | s3  # which word of a sample is read next
        return n_words, overflow

    def _fifo_read(self, n_words: int) -> np.ndarray:
        skip = (self.words - self._pattern) % self.words
        n = (n_words - skip) // self.words
        if n <= 0:
            return np.empty((0, self.words), dtype=np.int64)
        total = skip + n * self.words
        data = self.dev.read(self.FIFO_DATA_OUT_L, 2 * total, unit=2, fifo=True)
        if skip:
            self.stats["fifo_realigned"] += 1
        v = np.frombuffer(data, dtype="<i2")[skip:].reshape(n, self.words).astype(np.int64)
        if self.accel and self.gyro:
            v = v[:, [3, 4, 5, 0, 1, 2]]  # the FIFO pattern is gyro first; we keep accel first
        return v


class _Lsm6Config(I2cSensorConfig):
    address: int = Field(0x6A, description="7-bit address: 0x6A (SA0 low) or 0x6B.", ge=0x03, le=0x77)
    rate_hz: float = Field(
        833.0, description="Output data rate: 12.5, 26, 52, 104, 208, 416, 833 or 1666 Hz.", gt=0, le=10_000
    )
    accel_range_g: Literal[2, 4, 8, 16] = Field(4, description="Accelerometer full scale in g.")
    gyro_range_dps: Literal[125, 250, 500, 1000, 2000] = Field(
        500, description="Gyroscope full scale in deg/s."
    )

    _address = field_validator("address")(address_in(_Lsm6.ADDRESSES))

    @field_validator("rate_hz")
    @classmethod
    def _rate(cls, v: float) -> float:
        if closest(list(ODR), v) is None:
            raise ValueError(
                f"rate_hz must be one of the output data rates {', '.join(f'{r:g}' for r in ODR)}"
            )
        if v > 1666.0 * 1.002:
            raise ValueError("above 1666 Hz the FIFO traffic exceeds what a 400 kHz I2C bus carries")
        return v


class Lsm6dsoxConfig(_Lsm6Config):
    """``driver = "lsm6dsox"`` (also LSM6DSO)."""

    driver: Literal["lsm6dsox"]


class Lsm6ds3Config(_Lsm6Config):
    """``driver = "lsm6ds3"`` (also LSM6DS3TR-C, LSM6DSL)."""

    driver: Literal["lsm6ds3"]
