"""IMU drivers (MPU-6050, MPU-6500, LSM6DSOX, LSM6DS3) against emulated chips at register level.

Conversion tests put raw counts in the chip's registers or FIFO and compare with values worked
out by hand from the datasheets' sensitivity tables (cited per test), never with numbers the
driver produced. The other tests run the FIFO path against an emulated chip on a fake clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from drivers import DeviceNotFound, DriverError
from drivers.emulated import EmuBosch, EmuLsm6ds3, EmuLsm6dsox, EmuMpu, still
from drivers.fakebus import EmulatedBus, FakeClock
from drivers.i2c import BusError
from drivers.invensense import MPU6050, MPU6500
from drivers.st import LSM6DS3, LSM6DSOX

G = 9.80665
DEG = math.pi / 180


@dataclass
class Rig:
    drv: Any
    chip: Any
    bus: EmulatedBus
    clock: FakeClock

    def poll(self, seconds: float) -> list[Any]:
        """Read blocks every poll_s for ``seconds`` of fake time."""
        blocks = []
        end = self.clock() + seconds
        while self.clock() < end:
            self.clock.advance(self.drv.poll_s)
            b = self.drv.read_block(self.clock())
            if b is not None:
                blocks.append(b)
        return blocks


KINDS = {
    "mpu6050": (MPU6050, lambda **kw: EmuMpu("mpu6050", **kw), 0x68, 1000.0),
    "mpu6500": (MPU6500, lambda **kw: EmuMpu("mpu6500", **kw), 0x69, 1000.0),
    "lsm6dsox": (LSM6DSOX, lambda **kw: EmuLsm6dsox(**kw), 0x6A, 1666.0),
    "lsm6ds3": (LSM6DS3, lambda **kw: EmuLsm6ds3(**kw), 0x6B, 833.0),
}


def rig(kind: str, emu: dict[str, Any] | None = None, **kw: Any) -> Rig:
    cls, make, addr, rate = KINDS[kind]
    clock = FakeClock()
    chip = make(**(emu or {}))
    bus = EmulatedBus({addr: chip}, clock=clock, name="sim")
    kw.setdefault("rate_hz", rate)
    drv = cls(bus, addr, sleep=clock.sleep, clock=clock, **kw)
    drv.name = kind
    return Rig(drv, chip, bus, clock)


def _cat(blocks: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([b.t for b in blocks]), np.concatenate([b.x for b in blocks])


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestIdentity:
    def test_identifies_the_chip(self, kind: str) -> None:
        """setup() reads WHO_AM_I and accepts the chip."""
        r = rig(kind)
        r.drv.setup()
        assert r.drv.ready and r.drv.part

    def test_wrong_chip_names_bus_address_expected_and_found(self, kind: str) -> None:
        """Another chip at the address: DeviceNotFound naming bus, address, expected and found ID."""
        cls, make, addr, rate = KINDS[kind]
        clock = FakeClock()
        bus = EmulatedBus({addr: make(chip_id=0x12)}, clock=clock, name="1")
        drv = cls(bus, addr, rate_hz=rate, sleep=clock.sleep, clock=clock)
        with pytest.raises(DeviceNotFound) as exc:
            drv.setup()
        msg = str(exc.value)
        assert "bus 1" in msg and f"address 0x{addr:02x}" in msg and "reads 0x12" in msg
        assert "expected 0x" in msg and cls.CHIP in msg

    def test_missing_chip(self, kind: str) -> None:
        """Nothing at the address: DeviceNotFound saying nothing answers."""
        cls, _, addr, rate = KINDS[kind]
        clock = FakeClock()
        drv = cls(EmulatedBus({}, clock=clock, name="1"), addr, rate_hz=rate, sleep=clock.sleep, clock=clock)
        with pytest.raises(DeviceNotFound, match="nothing answers at bus 1 address"):
            drv.read_block(clock())

    def test_constructor_touches_no_hardware(self, kind: str) -> None:
        """Building a driver does no bus access (a sensor missing at boot is not a crash)."""
        r = rig(kind)
        assert r.bus.accesses == 0


def _be(*vals: int) -> bytes:
    return np.array(vals, dtype=">i2").tobytes()


def _le(*vals: int) -> bytes:
    return np.array(vals, dtype="<i2").tobytes()


class TestMpuConversions:
    def test_data_registers_at_4g_500dps(self) -> None:
        """MPU-6050 product spec 6.1/6.2: AFS_SEL=1 8192 LSB/g, FS_SEL=1 65.5 LSB/(deg/s);
        register map 4.18: T = TEMP_OUT/340 + 36.53. Big-endian registers 0x3B..0x48."""
        r = rig("mpu6050", accel_range_g=4, gyro_range_dps=500)
        r.drv.setup()
        r.chip.hold = True
        r.chip.regs[0x3B:0x49] = _be(8192, -4096, 16384, -521, 655, -1310, 0)
        v = r.drv.read()
        assert (
            v["ax"] == pytest.approx(G)
            and v["ay"] == pytest.approx(-G / 2)
            and v["az"] == pytest.approx(2 * G)
        )
        assert v["gx"] == pytest.approx(10 * DEG) and v["gy"] == pytest.approx(-20 * DEG) and v["gz"] == 0
        assert v["temperature"] == pytest.approx(36.53 - 521 / 340)

    @pytest.mark.parametrize("g, lsb", [(2, 16384), (4, 8192), (8, 4096), (16, 2048)])
    @pytest.mark.parametrize("dps, glsb", [(250, 131.0), (500, 65.5), (1000, 32.8), (2000, 16.4)])
    def test_fifo_sensitivities(self, g: int, lsb: int, dps: int, glsb: float) -> None:
        """Every full-scale range: one g and one deg/s in counts from the datasheet table read back as
        9.80665 m/s^2 and pi/180 rad/s through the FIFO; the range bits reach the chip."""
        r = rig("mpu6050", accel_range_g=g, gyro_range_dps=dps)
        r.drv.setup()
        assert (r.chip.regs[0x1C] >> 3, r.chip.regs[0x1B] >> 3) == (
            {2: 0, 4: 1, 8: 2, 16: 3}[g],
            {250: 0, 500: 1, 1000: 2, 2000: 3}[dps],
        )
        r.chip.hold = True
        gyro_count = round(glsb * 10)  # 10 deg/s
        r.chip.fifo = bytearray(_be(lsb, -lsb, 0, gyro_count, 0, -gyro_count) * 3)
        r.clock.advance(0.003)
        b = r.drv.read_block(r.clock())
        assert len(b) == 3
        np.testing.assert_allclose(b.x[0, :3], [G, -G, 0])
        np.testing.assert_allclose(b.x[0, 3:6], np.array([1, 0, -1]) * gyro_count / glsb * DEG)

    def test_mpu6500_temperature(self) -> None:
        """MPU-6500 register map 4.23: T = (TEMP_OUT - 0) / 333.87 + 21."""
        r = rig("mpu6500")
        r.drv.setup()
        r.chip.hold = True
        r.chip.regs[0x3B:0x49] = _be(0, 0, 0, 3339, 0, 0, 0)
        assert r.drv.read()["temperature"] == pytest.approx(21 + 3339 / 333.87)

    def test_sample_rate_divider_and_dlpf(self) -> None:
        """250 Hz: SMPLRT_DIV = 1000/250 - 1 = 3 with the DLPF on (1 kHz internal rate)."""
        r = rig("mpu6050", rate_hz=250.0, dlpf_hz=94)
        r.drv.setup()
        assert r.chip.regs[0x19] == 3 and r.chip.regs[0x1A] == 2
        t, _ = _cat(r.poll(1.0))
        np.testing.assert_allclose(np.diff(t), 0.004, rtol=5e-3)


class TestLsmConversions:
    def test_lsm6dsox_fifo_words(self) -> None:
        """LSM6DSOX datasheet table 2: 0.122 mg/LSB at +-4 g, 17.5 mdps/LSB at +-500 dps; tagged words
        (tag 0x02 accel, 0x01 gyro, slot counter in bits 2:1) are paired by time slot in any order."""
        r = rig("lsm6dsox", accel_range_g=4, gyro_range_dps=500)
        r.drv.setup()
        r.chip.hold = True
        acc, gyr = 0x02 << 3, 0x01 << 3
        r.chip.words = [
            bytes([acc | 0 << 1]) + _le(10000, -10000, 0),
            bytes([gyr | 0 << 1]) + _le(1000, 0, -1000),
            bytes([gyr | 1 << 1]) + _le(1, 2, 3),
            bytes([acc | 1 << 1]) + _le(4, 5, 6),
            bytes([acc | 2 << 1]) + _le(7, 8, 9),
        ]  # slot 2 not complete yet
        r.clock.advance(0.01)
        b = r.drv.read_block(r.clock())
        assert len(b) == 2
        np.testing.assert_allclose(b.x[0, :6], [1.22 * G, -1.22 * G, 0, 17.5 * DEG, 0, -17.5 * DEG])
        np.testing.assert_allclose(b.x[1, :3], np.array([4, 5, 6]) * 0.122e-3 * G)
        r.chip.words = [bytes([gyr | 2 << 1]) + _le(10, 11, 12), bytes([gyr | 3 << 1]) + _le(0, 0, 0)]
        r.clock.advance(0.01)
        b = r.drv.read_block(r.clock())  # the carried accel word of slot 2 meets its gyro word
        assert len(b) == 1
        np.testing.assert_allclose(
            b.x[0, :6],
            np.array([7 * 0.122, 8 * 0.122, 9 * 0.122, 10 * 17.5, 11 * 17.5, 12 * 17.5])
            * 1e-3
            * np.array([G] * 3 + [DEG] * 3),
        )

    def test_lsm6dsox_temperature_and_registers(self) -> None:
        """LSM6DSOX table 3: 256 LSB/degC, 0 LSB = 25 degC; output registers are little-endian."""
        r = rig("lsm6dsox", accel_range_g=2, gyro_range_dps=125)
        r.drv.setup()
        assert r.chip.regs[0x11] & 0x02  # FS_125
        r.chip.hold = True
        r.chip.regs[0x20:0x2E] = _le(1280, 1000, 0, 0, 16393, 0, 0)
        v = r.drv.read()
        assert v["temperature"] == pytest.approx(30.0)
        assert v["gx"] == pytest.approx(4.375 * DEG)  # 1000 LSB x 4.375 mdps/LSB
        assert v["ax"] == pytest.approx(16393 * 0.061e-3 * G)

    def test_lsm6ds3_pattern_fifo(self) -> None:
        """LSM6DS3 FIFO: words in the pattern Gx Gy Gz Ax Ay Az; a read that starts mid-pattern
        (FIFO_STATUS3/4) skips to the next whole sample. 0.244 mg/LSB at +-8 g, 70 mdps/LSB at 2000 dps."""
        r = rig("lsm6ds3", accel_range_g=8, gyro_range_dps=2000)
        r.drv.setup()
        r.chip.hold = True
        r.chip.fifo_words = [5, 6] + [100, 200, 300, 4098, -4098, 0] * 2
        r.chip._read_index = 4  # the next word is Ay: two words to skip
        r.clock.advance(0.01)
        b = r.drv.read_block(r.clock())
        assert len(b) == 2 and r.drv.stats["fifo_realigned"] == 1
        np.testing.assert_allclose(b.x[0, :3], np.array([4098, -4098, 0]) * 0.244e-3 * G)
        np.testing.assert_allclose(b.x[0, 3:6], np.array([100, 200, 300]) * 70e-3 * DEG)

    def test_lsm6ds3_temperature(self) -> None:
        """LSM6DS3 table 5: 16 LSB/degC, 0 LSB = 25 degC (the LSM6DS3TR-C has 256 LSB/degC)."""
        r = rig("lsm6ds3")
        r.drv.setup()
        r.chip.hold = True
        r.chip.regs[0x20:0x22] = _le(-80)
        assert r.drv.read()["temperature"] == pytest.approx(20.0)


class TestFifoStream:
    def test_every_sample_arrives_evenly_spaced(self, kind: str) -> None:
        """3 s of polling: every sample the chip made arrives once, spaced by 1/ODR (to 0.5 % while
        the measured rate settles), stamped within one sample period of when the chip took it; one
        bus burst per poll."""
        r = rig(kind)
        blocks = r.poll(3.0)
        t, x = _cat(blocks)
        true_t = np.concatenate(r.chip.sample_times)
        period = 1 / r.drv.rate_hz
        assert len(t) >= len(true_t) - 2  # the newest slot of a tagged FIFO may wait for the next burst
        np.testing.assert_allclose(np.diff(t), period, rtol=5e-3)
        assert np.abs(t - true_t[: len(t)]).max() <= 1.5 * period
        assert np.abs(x[:, 2].mean() - G) < 0.05 and x.shape[1] == 7
        rdwr = [m for m, _ in r.bus.log if m == "i2c_rdwr"]
        assert 0 < len(rdwr) <= len(blocks) + 4  # FIFO data: one transfer per poll

    def test_timestamps_follow_a_fast_oscillator(self, kind: str) -> None:
        """The chip runs 2 % fast: after 6 s the stamps agree with the true sample times to 2 ms."""
        r = rig(kind, emu={"clock_error": 0.02})
        t, _ = _cat(r.poll(6.0))
        true_t = np.concatenate(r.chip.sample_times)[: len(t)]
        assert abs(t[-1] - true_t[-1]) < 0.002
        assert np.diff(t).min() > 0

    def test_channel_selection_shrinks_the_fifo(self, kind: str) -> None:
        """Only accelerometer channels: only accelerometer words go into the FIFO."""
        r = rig(kind, channels=["az"])
        blocks = r.poll(0.5)
        assert blocks[-1].channels == ("az",) and blocks[-1].x.shape[1] == 1
        if kind.startswith("mpu"):
            assert r.chip.regs[0x23] == 0x08
        elif kind == "lsm6dsox":
            assert r.chip.regs[0x09] >> 4 == 0
        else:
            assert r.chip.regs[0x08] & 0x38 == 0


class TestFaults:
    def test_fifo_overflow_is_detected_counted_and_reported(self, kind: str) -> None:
        """Not read for 1 s: overflow counted, the sensor reports it, the FIFO restarts, samples
        resume after the gap with timestamps that show it."""
        r = rig(kind)
        t1, _ = _cat(r.poll(0.2))
        r.clock.advance(1.0)
        assert r.drv.read_block(r.clock()) is None
        assert r.drv.stats["fifo_overflows"] == 1
        assert "overflow" in (r.drv.fault or "")
        t2, _ = _cat(r.poll(0.3))
        assert t2[0] > t1[-1] + 0.9
        np.testing.assert_allclose(np.diff(t2), 1 / r.drv.rate_hz, rtol=5e-3)
        assert "overflow" in (r.drv.fault or "")  # the report holds 10 s after the last overflow
        r.poll(10.0)
        assert r.drv.fault is None and r.drv.stats["fifo_overflows"] == 1

    def test_transient_bus_error_loses_nothing(self, kind: str) -> None:
        """EIO on a register access is retried: no sample lost, no gap, counted as a retry."""
        r = rig(kind)
        r.poll(0.2)
        r.bus.fail(1, 5)  # the next access: a FIFO status read
        t, _ = _cat(r.poll(0.3))
        assert r.drv.stats["retries"] == 1
        np.testing.assert_allclose(np.diff(t), 1 / r.drv.rate_hz, rtol=5e-3)

    def test_failed_fifo_transfer_restarts_the_fifo(self, kind: str) -> None:
        """A FIFO data transfer that fails is not retried; the FIFO restarts and data continues."""
        r = rig(kind)
        r.poll(0.2)
        n_status = 2 if kind.startswith("mpu") else 1  # register reads before the data transfer
        r.bus.fail(n_status + 1, 5)
        r.clock.advance(r.drv.poll_s)
        assert r.drv.read_block(r.clock()) is None
        assert r.drv.stats["fifo_read_errors"] == 1
        t, _ = _cat(r.poll(0.3))
        assert len(t) > 0.25 * r.drv.rate_hz

    def test_chip_that_vanishes_and_returns_is_reinitialised(self, kind: str) -> None:
        """Unplugged: reads fail (DeviceNotFound once setup is retried); back power-cycled: the
        driver sets it up again (counted) and samples flow."""
        r = rig(kind)
        r.poll(0.2)
        addr = KINDS[kind][2]
        r.bus.vanish(addr)
        r.clock.advance(0.05)
        with pytest.raises(BusError):
            r.drv.read_block(r.clock())
        with pytest.raises(DeviceNotFound):
            r.drv.read_block(r.clock())
        r.clock.advance(2.0)
        r.bus.reappear(addr)
        t, x = _cat(r.poll(0.5))
        assert r.drv.stats["reinits"] == 1 and len(t) > 0.3 * r.drv.rate_hz
        assert np.abs(x[:, 2].mean() - G) < 0.05

    def test_silent_reset_is_detected(self, kind: str) -> None:
        """The chip resets without a bus error (brown-out): no samples arrive, the driver notices
        the lost configuration and sets the chip up again."""
        r = rig(kind)
        r.poll(0.2)
        r.chip.power_cycle(r.clock())
        r.poll(r.drv.stall_s + 0.1)
        assert r.drv.stats["resets_detected"] == 1 and r.drv.stats["reinits"] == 1
        t, _ = _cat(r.poll(0.3))
        assert len(t) > 0.2 * r.drv.rate_hz

    def test_stalled_fifo_with_intact_config_is_a_failure(self) -> None:
        """Configured but silent for longer than stall_s: a DriverError (the sensor turns unhealthy)."""
        r = rig("mpu6050")
        r.poll(0.1)
        r.chip.hold = True
        with pytest.raises(DriverError, match="no samples in the FIFO"):
            r.poll(r.drv.stall_s + 0.1)

    def test_stuck_values_are_dropped_and_reported(self, kind: str) -> None:
        """A frozen converter: samples beyond 50 identical ones are dropped and the sensor says so;
        when it thaws, samples and health come back."""
        r = rig(kind)
        r.poll(0.1)
        r.chip.stuck = True
        before = r.drv.stats["samples"]
        r.poll(0.5)
        assert r.drv.fault is not None and r.drv.fault.startswith("stuck")
        assert r.drv.stats["samples"] - before <= 52 and r.drv.stats["stuck_samples"] > 0.3 * r.drv.rate_hz
        r.chip.stuck = False
        r.poll(0.1)
        assert r.drv.fault is None

    def test_saturation_is_reported(self, kind: str) -> None:
        """20 g on a +-4 g range: the values clip at full scale and the sensor reports saturation."""

        def shaking(t: np.ndarray) -> np.ndarray:
            out = still(1)(t)
            out[:, 0] = 20 * G * np.sign(np.sin(2 * np.pi * 50 * t))
            return out

        r = rig(kind, emu={"source": shaking}, accel_range_g=4)
        _, x = _cat(r.poll(0.3))
        assert r.drv.fault is not None and r.drv.fault.startswith("saturated")
        assert np.abs(x[:, 0]).max() <= 4.01 * G
        assert r.drv.stats["saturated_samples"] > 0

    def test_no_nan_ever_leaves_the_driver(self, kind: str) -> None:
        """Whatever the faults, blocks only hold finite values."""
        r = rig(kind)
        r.bus.fail(3, 5, times=2)
        blocks = r.poll(0.3)
        r.chip.stuck = True
        blocks += r.poll(0.2)
        assert all(np.isfinite(b.x).all() for b in blocks)

    def test_other_chip_at_same_bus_keeps_working(self) -> None:
        """One chip vanishing does not disturb a second chip on the same bus."""
        clock = FakeClock()
        mpu, bme = EmuMpu("mpu6050"), EmuBosch()
        bus = EmulatedBus({0x68: mpu, 0x76: bme}, clock=clock)
        imu = MPU6050(bus, 0x68, sleep=clock.sleep, clock=clock)
        from drivers.bosch import BME280

        env = BME280(bus, 0x76, sleep=clock.sleep, clock=clock)
        bus.vanish(0x68)
        with pytest.raises(DeviceNotFound):
            imu.read_block(clock())
        got = []
        for _ in range(3):
            clock.advance(1.0)
            got.append(env.read_block(clock()))
        assert all(b is not None and len(b) == 1 for b in got)
