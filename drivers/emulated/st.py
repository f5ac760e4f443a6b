"""Emulated ST LSM6DSOX (tagged FIFO) and LSM6DS3 / LSM6DS3TR-C (pattern FIFO)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from drivers.emulated.imu import EmuImu, int16_counts
from drivers.imu import DEG
from pipelines.units import STANDARD_GRAVITY


class _EmuLsm6(EmuImu):
    """What the LSM6DSOX and LSM6DS3 emulators share: control and output registers."""

    WHO_AM_I_REG = 0x0F
    POWER_ON: ClassVar[dict[int, int]] = {0x12: 0x04}  # CTRL3_C: IF_INC
    MG_PER_LSB = (0.061, 0.488, 0.122, 0.244)  # FS_XL 00 2g, 01 16g, 10 4g, 11 8g
    MDPS_PER_LSB = (8.75, 17.5, 35.0, 70.0)  # FS_G 250(245), 500, 1000, 2000
    ODR_HZ = (0.0, 12.5, 26.0, 52.0, 104.0, 208.0, 416.0, 833.0, 1666.0, 3333.0, 6666.0)
    TEMP_LSB_PER_C = 256.0

    def odr(self) -> float:
        code = self.regs[0x10] >> 4 or self.regs[0x11] >> 4
        return self.ODR_HZ[code] if code < len(self.ODR_HZ) else 0.0

    def quantise(self, v: np.ndarray) -> np.ndarray:
        mg = self.MG_PER_LSB[(self.regs[0x10] >> 2) & 3]
        ctrl2 = self.regs[0x11]
        mdps = 4.375 if ctrl2 & 0x02 else self.MDPS_PER_LSB[(ctrl2 >> 2) & 3]
        return np.concatenate(
            (
                int16_counts(v[:, :3] / STANDARD_GRAVITY * 1000.0 / mg),
                int16_counts(v[:, 3:] / DEG * 1000.0 / mdps),
            ),
            axis=1,
        )

    def emit(self, t: np.ndarray, raw: np.ndarray, temp_c: float) -> None:
        last = raw[-1]
        temp_raw = int(np.clip(round((temp_c - 25.0) * self.TEMP_LSB_PER_C), -32768, 32767))
        out = np.array([temp_raw, last[3], last[4], last[5], last[0], last[1], last[2]], dtype="<i2")
        self.regs[0x20:0x2E] = out.tobytes()
        self.push(t, raw)

    def push(self, t: np.ndarray, raw: np.ndarray) -> None:
        raise NotImplementedError

    def on_write(self, reg: int, value: int, now: float) -> None:
        if reg == 0x12 and value & 0x01:  # SW_RESET: registers back to defaults, bit clears itself
            self.power_cycle(now)
            return
        self.regs[reg] = value
        if reg in (0x10, 0x11):
            self.restart_clock(now)

    def next_reg(self, reg: int) -> int:
        if not self.regs[0x12] & 0x04:  # IF_INC off
            return reg
        return (reg + 1) & 0xFF


class EmuLsm6dsox(_EmuLsm6):
    """LSM6DSOX: tagged FIFO of 512 words, continuous mode overwrites the oldest words."""

    CHIP_ID = 0x6C
    CAPACITY = 512

    def __init__(self, **kw: Any) -> None:
        self.words: list[bytes] = []
        self.overrun = False
        self._slot = 0
        self._out = b"\x00" * 7
        super().__init__(**kw)

    def fifo_clear(self) -> None:
        self.words = []
        self.overrun = False

    def fifo_room_samples(self) -> int:
        return self.CAPACITY

    def push(self, t: np.ndarray, raw: np.ndarray) -> None:
        mode = self.regs[0x0A] & 0x07
        if mode == 0:
            return
        bdr = self.regs[0x09]
        xl, gy = bdr & 0x0F, bdr >> 4
        self.sample_times.append(t)
        for row in raw:
            cnt = self._slot & 3
            self._slot += 1
            if gy:
                self.words.append(bytes([0x01 << 3 | cnt << 1]) + np.asarray(row[3:], dtype="<i2").tobytes())
            if xl:
                self.words.append(bytes([0x02 << 3 | cnt << 1]) + np.asarray(row[:3], dtype="<i2").tobytes())
        if len(self.words) > self.CAPACITY:
            self.overrun = True
            if mode == 0b001:  # FIFO mode: stop when full
                del self.words[self.CAPACITY :]
            else:
                del self.words[: len(self.words) - self.CAPACITY]

    def on_write(self, reg: int, value: int, now: float) -> None:
        super().on_write(reg, value, now)
        if reg == 0x0A and value & 0x07 == 0:  # bypass mode empties the FIFO
            self.fifo_clear()

    def on_read(self, reg: int, now: float) -> int:
        if reg == 0x3A:
            return len(self.words) & 0xFF
        if reg == 0x3B:
            n = len(self.words)
            return (0x40 if self.overrun else 0) | (0x20 if n >= self.CAPACITY else 0) | (n >> 8 & 0x03)
        if reg == 0x78:
            self._out = self.words.pop(0) if self.words else bytes(7)
            return self._out[0]
        if 0x79 <= reg <= 0x7E:
            return self._out[reg - 0x78]
        return self.regs[reg]

    def next_reg(self, reg: int) -> int:
        if reg == 0x7E and self.regs[0x12] & 0x04:
            return 0x78  # FIFO output registers roll back
        return super().next_reg(reg)

    def read(self, n: int, now: float) -> bytes:
        if self.ptr == 0x78 and n % 7 == 0 and self.regs[0x12] & 0x04:  # fast path: whole words
            self.advance(now)
            k = n // 7
            out = b"".join(self.words[:k]) + bytes(7 * max(0, k - len(self.words)))
            del self.words[:k]
            return out
        return super().read(n, now)


class EmuLsm6ds3(_EmuLsm6):
    """LSM6DS3 (``chip_id=0x69``, 4096 words, 16 LSB/degC) or LSM6DS3TR-C/LSM6DSL (0x6A, 2048
    words, 256 LSB/degC): untagged words in the pattern gyro x y z, accel x y z."""

    CHIP_ID = 0x69

    def __init__(self, chip_id: int = 0x69, **kw: Any) -> None:
        self.capacity = 4096 if chip_id == 0x69 else 2048
        self.TEMP_LSB_PER_C = 16.0 if chip_id == 0x69 else 256.0
        self.fifo_words: list[int] = []
        self.overrun = False
        self._read_index = 0  # absolute index of the next word to read (for FIFO_PATTERN)
        self._hi = 0
        super().__init__(chip_id=chip_id, **kw)

    def fifo_clear(self) -> None:
        self.fifo_words = []
        self.overrun = False
        self._read_index = 0

    def _per_set(self) -> int:
        dec = self.regs[0x08]
        return 3 * (bool(dec & 0x38) + bool(dec & 0x07))

    def fifo_room_samples(self) -> int:
        return self.capacity // max(3, self._per_set())

    def push(self, t: np.ndarray, raw: np.ndarray) -> None:
        mode = self.regs[0x0A] & 0x07
        if mode == 0 or self._per_set() == 0:
            return
        dec = self.regs[0x08]
        cols = ([3, 4, 5] if dec & 0x38 else []) + ([0, 1, 2] if dec & 0x07 else [])
        self.fifo_words += raw[:, cols].reshape(-1).tolist()
        self.sample_times.append(t)
        over = len(self.fifo_words) - self.capacity
        if over > 0:
            self.overrun = True
            if mode == 0b001:
                del self.fifo_words[self.capacity :]
            else:
                del self.fifo_words[:over]
                self._read_index += over

    def on_write(self, reg: int, value: int, now: float) -> None:
        super().on_write(reg, value, now)
        if reg == 0x0A and value & 0x07 == 0:
            self.fifo_clear()

    def on_read(self, reg: int, now: float) -> int:
        n = len(self.fifo_words)
        if reg == 0x3A:
            return n & 0xFF
        if reg == 0x3B:
            mask = 0x0F if self.capacity == 4096 else 0x07
            return (
                (0x40 if self.overrun else 0)
                | (0x20 if n >= self.capacity else 0)
                | (0x10 if n == 0 else 0)
                | (n >> 8 & mask)
            )
        if reg in (0x3C, 0x3D):
            pattern = self._read_index % max(1, self._per_set())
            return pattern & 0xFF if reg == 0x3C else pattern >> 8 & 0x03
        if reg == 0x3E:
            word = 0
            if self.fifo_words:
                word = self.fifo_words.pop(0) & 0xFFFF
                self._read_index += 1
            self._hi = word >> 8
            return word & 0xFF
        if reg == 0x3F:
            return self._hi
        return self.regs[reg]

    def next_reg(self, reg: int) -> int:
        if reg == 0x3F and self.regs[0x12] & 0x04:
            return 0x3E  # FIFO_DATA_OUT_H rolls back to FIFO_DATA_OUT_L
        return super().next_reg(reg)

    def read(self, n: int, now: float) -> bytes:
        if self.ptr == 0x3E and n % 2 == 0 and self.regs[0x12] & 0x04:  # fast path: whole words
            self.advance(now)
            k = min(n // 2, len(self.fifo_words))
            out = np.asarray(self.fifo_words[:k], dtype=np.int64).astype("<i2").tobytes()
            del self.fifo_words[:k]
            self._read_index += k
            return out + bytes(n - 2 * k)
        return super().read(n, now)
