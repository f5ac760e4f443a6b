"""Emulated chips for :class:`~drivers.fakebus.EmulatedBus`: register maps, conversions, FIFOs.

Each emulator implements its datasheet's register semantics on its own (sample rate from the
rate registers, full scale from the range bits, FIFO contents from the FIFO enable bits, reset
bits, read-to-clear flags, pointer roll-over), so a driver that configures a chip wrongly reads
wrong data here too. Physical values come from a ``source``: a function of the chip's own sample
times. For the simulator the source is :class:`~drivers.simulator.MachineWorld`, so the default
config runs physics -> emulated registers -> real driver -> blocks.

Chip-level faults: ``stuck`` (the converter output freezes), ``corrupt_crc`` (Sensirion: the next
N answers carry a wrong CRC), ``clock_error`` (the chip's oscillator runs fast or slow).

The Bosch emulator turns physical values into ADC counts by inverting the driver's compensation
formulas (bisection); that keeps the simulator's values right, and is never how the formulas
themselves are tested (the tests use the datasheets' worked examples).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from drivers import bosch
from drivers.fakebus import EmulatedBus, EmulatedChip, RegisterChip, nack
from drivers.sensirion import crc8
from pipelines.units import STANDARD_GRAVITY

G = STANDARD_GRAVITY
DEG = math.pi / 180.0

ImuSource = Callable[
    [np.ndarray], np.ndarray
]  # sample times (s) -> (n, 6): ax ay az (m/s^2), gx gy gz (rad/s)
EnvSource = Callable[
    [float], tuple[float, float, float]
]  # time -> temperature (degC), humidity (%RH), pressure (Pa)


def still(seed: int = 0, noise: float = 0.02, gravity_axis: int = 2) -> ImuSource:
    """An IMU lying still: gravity on one axis plus white noise (m/s^2 and rad/s)."""
    rng = np.random.default_rng(seed)

    def source(t: np.ndarray) -> np.ndarray:
        out = rng.normal(0.0, noise, (t.shape[0], 6))
        out[:, 3:] *= 0.1
        out[:, gravity_axis] += G
        return out

    return source


def calm(
    temperature: float = 22.0, humidity: float = 45.0, pressure: float = 101325.0, seed: int = 0
) -> EnvSource:
    """A room with a little noise."""
    rng = np.random.default_rng(seed)

    def source(t: float) -> tuple[float, float, float]:
        n = rng.normal(0.0, 1.0, 3)
        return temperature + 0.02 * n[0], humidity + 0.1 * n[1], pressure + 2.0 * n[2]

    return source


def _int16(v: np.ndarray) -> np.ndarray:
    """Round to the nearest count and clip to the converter's range (saturation)."""
    return np.clip(np.rint(v), -32768, 32767).astype(np.int64)


class _EmuImu(RegisterChip):
    """Sample clock, value generation and fault switches shared by the IMU emulators."""

    WHO_AM_I_REG = 0x00
    CHIP_ID = 0x00

    def __init__(
        self,
        source: ImuSource | None = None,
        temperature_c: float | Callable[[float], float] = 30.0,
        clock_error: float = 0.0,
        chip_id: int | None = None,
    ) -> None:
        self.source = source or still()
        self.temperature_c = temperature_c
        self.clock_error = clock_error  # relative: +0.01 = the chip's oscillator runs 1 % fast
        self.chip_id = self.CHIP_ID if chip_id is None else chip_id
        self.stuck = False
        self.hold = False  # produce no samples: registers and FIFO keep what a test wrote
        self.sample_times: list[np.ndarray] = []  # true times of the samples put in the FIFO
        self._t_run: float | None = None
        self._k = 0
        self._last_raw: np.ndarray | None = None
        super().__init__()

    def power_cycle(self, now: float) -> None:
        super().power_cycle(now)
        self.regs[self.WHO_AM_I_REG] = self.chip_id
        self._t_run = None
        self._k = 0
        self.fifo_clear()

    # chip specifics
    def odr(self) -> float:
        raise NotImplementedError

    def quantise(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def emit(self, t: np.ndarray, raw: np.ndarray, temp_c: float) -> None:
        raise NotImplementedError

    def fifo_clear(self) -> None:
        raise NotImplementedError

    def fifo_room_samples(self) -> int:
        raise NotImplementedError

    def restart_clock(self, now: float) -> None:
        self._t_run, self._k = now, 0

    def advance(self, now: float) -> None:
        if self.hold:
            return
        rate = self.odr() * (1.0 + self.clock_error)
        if rate <= 0:
            self._t_run = None
            return
        if self._t_run is None:
            self.restart_clock(now)
            return
        due = math.floor((now - self._t_run) * rate)
        if due <= self._k:
            return
        first = max(self._k, due - self.fifo_room_samples() - 1)  # older samples would be lost anyway
        k = np.arange(first, due, dtype=np.float64)
        t = self._t_run + (k + 1.0) / rate
        self._k = due
        raw = self.quantise(self.source(t))
        if self.stuck and self._last_raw is not None:
            raw = np.repeat(self._last_raw[None, :], raw.shape[0], axis=0)
        self._last_raw = raw[-1].copy()
        temp = self.temperature_c(float(t[-1])) if callable(self.temperature_c) else self.temperature_c
        self.emit(t, raw, temp)


class EmuMpu(_EmuImu):
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
        return np.concatenate((_int16(v[:, :3] / G * a), _int16(v[:, 3:] / DEG * g)), axis=1)

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


class _EmuLsm6(_EmuImu):
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
            (_int16(v[:, :3] / G * 1000.0 / mg), _int16(v[:, 3:] / DEG * 1000.0 / mdps)), axis=1
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


# -- Bosch ------------------------------------------------------------------------------------------
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


# -- Sensirion --------------------------------------------------------------------------------------
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


# -- the simulator's bus ----------------------------------------------------------------------------
def make_emulator(
    driver: str,
    imu: ImuSource | None = None,
    env: EnvSource | None = None,
    temperature_c: float | Callable[[float], float] = 35.0,
) -> EmulatedChip:
    """An emulated chip for a driver name, fed by the given sources."""
    if driver in ("mpu6050", "mpu6500"):
        return EmuMpu(driver, source=imu, temperature_c=temperature_c)
    if driver == "lsm6dsox":
        return EmuLsm6dsox(source=imu, temperature_c=temperature_c)
    if driver == "lsm6ds3":
        return EmuLsm6ds3(source=imu, temperature_c=temperature_c)
    if driver in ("bme280", "bmp280"):
        return EmuBosch(source=env, humidity=driver == "bme280")
    if driver == "sht3x":
        return EmuSht3x(source=env)
    if driver == "sht4x":
        return EmuSht4x(source=env)
    raise ValueError(f"no emulator for driver {driver!r}")


def sim_bus(
    sensors: dict[str, Any], world: Any, seed: int = 1, clock: Callable[[], float] | None = None
) -> EmulatedBus:
    """The emulated bus of the simulator: one emulated chip per sensor with ``bus = "sim"``,
    fed by the simulated machine (``world`` times are seconds since ``world.t0`` on ``clock``)."""
    import time

    bus = EmulatedBus(clock=clock or time.monotonic, name="sim")
    for i, (_name, s) in enumerate(sensors.items()):
        if getattr(s, "bus", None) != "sim":
            continue
        rng = np.random.default_rng(seed * 1000 + i)

        def imu(t: np.ndarray, rng: np.random.Generator = rng) -> np.ndarray:
            return world.imu(t - world.t0, rng)

        def env(t: float, rng: np.random.Generator = rng) -> tuple[float, float, float]:
            temp, hum, pres = world.env(t - world.t0, rng)
            return temp, hum, pres

        bus.attach(s.address, make_emulator(s.driver, imu=imu, env=env))
    return bus
