"""Emulated InvenSense MPU-6050 and MPU-6500 / MPU-9250: registers, FIFO modes, read-to-clear status."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from drivers.emulated.imu import EmuImu, int16_counts
from drivers.imu import DEG
from pipelines.units import STANDARD_GRAVITY


class EmuMpu(EmuImu):
    """MPU-6050 (``variant="mpu6050"``, WHO_AM_I 0x68, 1024-byte FIFO that overwrites its oldest
    bytes) or MPU-6500/9250 (``"mpu6500"`` 0x70, ``"mpu9250"`` 0x71; 512 bytes; CONFIG.FIFO_MODE=1
    stops writing when full)."""

    WHO_AM_I_REG = 0x75
    ACCEL_LSB_PER_G = (16384.0, 8192.0, 4096.0, 2048.0)  # AFS_SEL 0..3
    GYRO_LSB_PER_DPS = (131.0, 65.5, 32.8, 16.4)  # FS_SEL 0..3
    VARIANTS: ClassVar[dict[str, tuple[int, int, float, float]]] = {
        "mpu6050": (0x68, 1024, 340.0, 36.53),
        "mpu6500": (0x70, 512, 333.87, 21.0),
        "mpu9250": (0x71, 512, 333.87, 21.0),
    }

    def __init__(self, variant: str = "mpu6050", **kw: Any) -> None:
        chip_id, self.capacity, self.temp_sens, self.temp_offset = self.VARIANTS[variant]
        self.variant = variant
        self.fifo = bytearray()
        super().__init__(chip_id=kw.pop("chip_id", chip_id), **kw)

    def power_cycle(self, now: float) -> None:
        super().power_cycle(now)
        self.regs[0x6B] = 0x40 if self.variant == "mpu6050" else 0x01  # PWR_MGMT_1: asleep / awake

    def fifo_clear(self) -> None:
        self.fifo = bytearray()

    def _packet_fields(self) -> list[str]:
        en = self.regs[0x23]
        fields = []
        if en & 0x08:
            fields += ["ax", "ay", "az"]
        if en & 0x80:
            fields.append("temp")
        fields += [n for bit, n in ((0x40, "gx"), (0x20, "gy"), (0x10, "gz")) if en & bit]
        return fields

    def fifo_room_samples(self) -> int:
        return self.capacity // max(2, 2 * len(self._packet_fields()))

    def odr(self) -> float:
        if self.regs[0x6B] & 0x40:  # SLEEP
            return 0.0
        dlpf = self.regs[0x1A] & 0x07
        internal = 8000.0 if dlpf in (0, 7) else 1000.0
        return internal / (1 + self.regs[0x19])

    def quantise(self, v: np.ndarray) -> np.ndarray:
        a = self.ACCEL_LSB_PER_G[(self.regs[0x1C] >> 3) & 3]
        g = self.GYRO_LSB_PER_DPS[(self.regs[0x1B] >> 3) & 3]
        return np.concatenate(
            (int16_counts(v[:, :3] / STANDARD_GRAVITY * a), int16_counts(v[:, 3:] / DEG * g)), axis=1
        )

    def emit(self, t: np.ndarray, raw: np.ndarray, temp_c: float) -> None:
        temp_raw = int(np.clip(round((temp_c - self.temp_offset) * self.temp_sens), -32768, 32767))
        last = raw[-1]
        regs = np.array([last[0], last[1], last[2], temp_raw, last[3], last[4], last[5]], dtype=">i2")
        self.regs[0x3B:0x49] = regs.tobytes()
        self.regs[0x3A] |= 0x01  # DATA_RDY_INT
        if not self.regs[0x6A] & 0x40:  # FIFO off
            return
        fields = self._packet_fields()
        if not fields:
            return
        col = {
            "ax": raw[:, 0],
            "ay": raw[:, 1],
            "az": raw[:, 2],
            "gx": raw[:, 3],
            "gy": raw[:, 4],
            "gz": raw[:, 5],
            "temp": np.full(raw.shape[0], temp_raw),
        }
        packets = np.stack([col[f] for f in fields], axis=1).astype(">i2").tobytes()
        self.fifo += packets
        self.sample_times.append(t)
        if len(self.fifo) > self.capacity:
            self.regs[0x3A] |= 0x10  # FIFO_OFLOW_INT
            if self.variant != "mpu6050" and self.regs[0x1A] & 0x40:  # FIFO_MODE: keep the old data
                del self.fifo[self.capacity :]
            else:
                del self.fifo[: len(self.fifo) - self.capacity]

    def on_write(self, reg: int, value: int, now: float) -> None:
        if reg == 0x6B and value & 0x80:  # DEVICE_RESET
            self.power_cycle(now)
            return
        if reg == 0x6A and value & 0x04:  # FIFO_RESET (self-clearing)
            self.fifo_clear()
            value &= ~0x04
        self.regs[reg] = value
        if reg in (0x19, 0x1A, 0x6B):
            self.restart_clock(now)

    def on_read(self, reg: int, now: float) -> int:
        if reg == 0x3A:  # INT_STATUS: cleared by reading
            v = self.regs[0x3A]
            self.regs[0x3A] = 0
            return v
        if reg == 0x72:
            return len(self.fifo) >> 8 & 0xFF
        if reg == 0x73:
            return len(self.fifo) & 0xFF
        if reg == 0x74:
            return self.fifo.pop(0) if self.fifo else 0xFF
        return self.regs[reg]

    def next_reg(self, reg: int) -> int:
        return reg if reg == 0x74 else (reg + 1) & 0xFF

    def read(self, n: int, now: float) -> bytes:
        if self.ptr == 0x74:  # fast path: a burst from FIFO_R_W pops n bytes
            self.advance(now)
            out = bytes(self.fifo[:n]) + b"\xff" * max(0, n - len(self.fifo))
            del self.fifo[:n]
            return out
        return super().read(n, now)
