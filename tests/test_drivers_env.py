"""Environmental drivers (BME280, BMP280, SHT3x, SHT4x) against emulated chips at register level.

Conversions are checked against the datasheets' worked examples and formulas applied by hand to
chosen raw values (cited per test), not against numbers the driver produced.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from drivers import DeviceNotFound, DriverError
from drivers.bosch import BME280, BMP280, Calibration, compensate_p, compensate_t
from drivers.emulated import TYPICAL_CALIBRATION, EmuBosch, EmuSht3x, EmuSht4x, calm, encode_calibration
from drivers.fakebus import EmulatedBus, FakeClock
from drivers.i2c import BusError
from drivers.sensirion import CrcError, SHT3x, SHT4x, crc8

# BMP280 datasheet (BST-BMP280-DS001), section 3.12 "Computation example" -- the BME280 uses the same
# temperature and pressure compensation: calibration words, ADC values and results.
DS_CAL = dict(
    T1=27504,
    T2=26435,
    T3=-1000,
    P1=36477,
    P2=-10685,
    P3=3024,
    P4=2855,
    P5=140,
    P6=-7,
    P7=15500,
    P8=-14600,
    P9=6000,
)
DS_ADC_T, DS_ADC_P = 519888, 415148
DS_T, DS_T_FINE, DS_P = 25.08, 128422, 100653.27
# The same words as they sit in the NVM at 0x88..0x9F (little-endian, table 17 layout), and the
# ADC values as the data registers 0xF7..0xFC hold them (press msb/lsb/xlsb, temp msb/lsb/xlsb).
DS_NVM = bytes.fromhex("706b4367 18fc7d8e 43d6d00b 270b8c00 f9ff8c3c f8c67017")
DS_DATA = bytes.fromhex("655ac0 7eed00")


def bosch_rig(cls: type = BME280, **emu: Any) -> tuple[Any, EmuBosch, EmulatedBus, FakeClock]:
    clock = FakeClock()
    chip = EmuBosch(humidity=cls is BME280, **emu)
    bus = EmulatedBus({0x76: chip}, clock=clock, name="sim")
    drv = cls(bus, 0x76, sleep=clock.sleep, clock=clock)
    drv.name = "env"
    return drv, chip, bus, clock


def h_int32(adc_h: int, t_fine: int, c: Calibration) -> float:
    """BME280 datasheet 4.2.3, ``bme280_compensate_H_int32``, transcribed (Q22.10 %RH)."""
    v = t_fine - 76800
    v = ((((adc_h << 14) - (c.H4 << 20) - (c.H5 * v)) + 16384) >> 15) * (
        ((((((v * c.H6) >> 10) * (((v * c.H3) >> 11) + 32768)) >> 10) + 2097152) * c.H2 + 8192) >> 14
    )
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * c.H1) >> 4)
    v = min(max(v, 0), 419430400)
    return (v >> 12) / 1024.0


class TestBoschConversions:
    def test_datasheet_worked_example_through_the_chip(self) -> None:
        """NVM and data registers hold the datasheet example: the driver reads 25.08 degC and
        100653.27 Pa (the datasheet rounds to 2 decimals; the double formula gives 100653.26)."""
        drv, chip, _, _clock = bosch_rig(
            BMP280, calibration=Calibration(**DS_CAL), adc=(DS_ADC_T, DS_ADC_P, 0)
        )
        v = drv.read()
        assert bytes(chip.regs[0x88:0xA0]) == DS_NVM and bytes(chip.regs[0xF7:0xFD]) == DS_DATA
        assert round(v["temperature"], 2) == DS_T
        assert abs(v["pressure"] - DS_P) < 0.02

    def test_t_fine_of_the_example(self) -> None:
        """t_fine carried to the pressure formula is 128422, as in the datasheet table."""
        t, t_fine = compensate_t(DS_ADC_T, Calibration(**DS_CAL))
        assert t_fine == DS_T_FINE and round(t, 2) == DS_T
        assert abs(compensate_p(DS_ADC_P, t_fine, Calibration(**DS_CAL)) - DS_P) < 0.02

    def test_calibration_bytes_parse_as_in_the_datasheet_table(self) -> None:
        """dig_T1..dig_P9 from 0x88.. (LSB first); dig_H4/dig_H5 share 0xE5's nibbles and are 12-bit
        signed; dig_H6 is a signed byte (BME280 datasheet table 16)."""
        b1 = DS_NVM + bytes([0x00, 75])
        b2 = bytes([0x6A, 0x01, 0x00, 0xEA, 0x23, 0xFE, 0xE2])  # H2=362, H3=0, H4=-349, H5=-30, H6=-30
        c = Calibration.parse(b1, b2)
        assert c == Calibration(**DS_CAL, H1=75, H2=362, H3=0, H4=-349, H5=-30, H6=-30)
        assert encode_calibration(c) == (b1, b2)

    @pytest.mark.parametrize("adc_h", [20000, 25000, 28000, 32000, 40000])
    def test_humidity_double_formula_agrees_with_the_integer_one(self, adc_h: int) -> None:
        """Bosch publishes no humidity example: the driver's double-precision result (datasheet 8.1)
        agrees with the datasheet's int32 formula (4.2.3, transcribed above) to its 1/1024 %RH step."""
        drv, _chip, _, _ = bosch_rig(BME280, adc=(DS_ADC_T, DS_ADC_P, adc_h))
        v = drv.read()
        _, t_fine = compensate_t(DS_ADC_T, TYPICAL_CALIBRATION)
        assert abs(v["humidity"] - h_int32(adc_h, t_fine, TYPICAL_CALIBRATION)) <= 2 / 1024

    def test_settings_reach_the_chip(self) -> None:
        """Oversampling x4 and IIR 8: ctrl_hum 0x03, ctrl_meas 0x6D (forced), config 0x0C; one
        write transaction of register/value pairs per sample, ctrl_hum before ctrl_meas."""
        clock = FakeClock()
        chip = EmuBosch()
        bus = EmulatedBus({0x77: chip}, clock=clock)
        drv = BME280(bus, 0x77, oversampling=4, iir_filter=8, sleep=clock.sleep, clock=clock)
        drv.read()
        assert chip.writes[-3:] == [(0xF2, 0x03), (0xF5, 0x0C), (0xF4, 0x6D)]
        assert drv.conversion_s == pytest.approx((1.25 + 2.3 * 4 + 2.3 * 4 + 0.575 + 2.3 * 4 + 0.575) / 1000)

    def test_simulated_values_round_trip(self) -> None:
        """The emulator turns physical values into ADC counts; the driver gets them back."""
        drv, _, _, _ = bosch_rig(BME280, source=lambda t: (31.5, 62.0, 98765.0))
        v = drv.read()
        assert v["temperature"] == pytest.approx(31.5, abs=0.01)
        assert v["humidity"] == pytest.approx(62.0, abs=0.05)
        assert v["pressure"] == pytest.approx(98765.0, abs=0.5)


class TestBoschFaults:
    def test_identity(self) -> None:
        """A BMP280 driver on a BME280: DeviceNotFound naming both IDs; a missing chip likewise."""
        drv, _, _, _ = bosch_rig(BME280)
        drv.setup()
        assert drv.part == "BME280"
        clock = FakeClock()
        wrong = BMP280(
            EmulatedBus({0x76: EmuBosch(humidity=True)}, clock=clock, name="1"),
            0x76,
            sleep=clock.sleep,
            clock=clock,
        )
        with pytest.raises(
            DeviceNotFound, match=r"bus 1 address 0x76.*reads 0x60, expected 0x58.*is a BME280"
        ):
            wrong.setup()
        gone = BME280(EmulatedBus({}, clock=clock), 0x77, sleep=clock.sleep, clock=clock)
        with pytest.raises(DeviceNotFound, match="nothing answers"):
            gone.read()

    def test_erased_calibration_is_refused(self) -> None:
        """All-zero calibration words: a clear error, not nonsense values."""
        zero = Calibration(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        drv, _, _, _ = bosch_rig(BME280, calibration=zero)
        with pytest.raises(DriverError, match="calibration"):
            drv.setup()

    def test_rate_and_timestamps(self) -> None:
        """At 1 Hz, one forced conversion per second, stamped with the time it was triggered."""
        drv, chip, _, clock = bosch_rig(BME280)
        t = []
        for _ in range(50):
            clock.advance(0.1)
            b = drv.read_block(clock())
            if b is not None:
                t += b.t.tolist()
        assert chip.conversions == len(t) == 5
        np.testing.assert_allclose(np.diff(t), 1.0, atol=0.05)

    def test_skipped_and_out_of_range_readings_are_dropped(self) -> None:
        """A skipped conversion (0x80000) or a value outside the sensor's range never leaves the driver."""
        drv, chip, _, clock = bosch_rig(
            BME280, source=lambda t: (22.0, 40.0, 20000.0)
        )  # 200 hPa: below range
        clock.advance(1)
        assert drv.read_block(clock()) is None
        assert drv.stats["out_of_range"] == 1
        chip.adc = (0x80000, 0x80000, 0x8000)
        clock.advance(1)
        assert drv.read_block(clock()) is None
        assert drv.stats["out_of_range"] == 2
        assert all(math.isnan(v) for v in drv.read().values())

    def test_reset_between_trigger_and_read_is_noticed(self) -> None:
        """The chip resets during a conversion: its settings read back wrong, that sample is refused,
        and the next read sets the chip up again."""
        clock = FakeClock()
        chip = EmuBosch()
        bus = EmulatedBus({0x76: chip}, clock=clock)
        calls = {"n": 0}

        def sleep(dt: float) -> None:
            clock.sleep(dt)
            calls["n"] += 1
            if calls["n"] == 5:  # during the first conversion after setup
                chip.power_cycle(clock())

        drv = BME280(bus, 0x76, sleep=sleep, clock=clock)
        drv.setup()
        calls["n"] = 4
        with pytest.raises(DriverError, match="the chip was reset"):
            drv.read()
        assert drv.read()["temperature"] == pytest.approx(22.0, abs=0.2)
        assert drv.stats["reinits"] == 1

    def test_stuck_readings(self) -> None:
        """30 identical raw readings in a row: dropped after that, and reported as stuck."""
        drv, chip, _, clock = bosch_rig(BME280)
        chip.stuck = True
        kept = 0
        for _ in range(40):
            clock.advance(1)
            b = drv.read_block(clock())
            kept += len(b) if b is not None else 0
        assert kept == 30 and drv.fault is not None and "stuck" in drv.fault

    def test_vanish_and_return(self) -> None:
        """Gone: a BusError, then DeviceNotFound; back: set up again, with its calibration."""
        drv, _chip, bus, _clock = bosch_rig(BME280)
        drv.read()
        bus.vanish(0x76)
        with pytest.raises(BusError):
            drv.read()
        with pytest.raises(DeviceNotFound):
            drv.read()
        bus.reappear(0x76)
        assert drv.read()["pressure"] == pytest.approx(101325, abs=20)
        assert drv.stats["reinits"] == 1


def sht_rig(cls: type, chip: Any, addr: int = 0x44) -> tuple[Any, Any, EmulatedBus, FakeClock]:
    clock = FakeClock()
    bus = EmulatedBus({addr: chip}, clock=clock, name="sim")
    drv = cls(bus, addr, sleep=clock.sleep, clock=clock)
    drv.name = "th"
    return drv, chip, bus, clock


class TestCrc8:
    def test_sensirion_datasheet_example(self) -> None:
        """CRC-8 of 0xBEEF is 0x92 (SHT3x-DIS datasheet 4.12, table 19; SHT4x datasheet 4.4)."""
        assert crc8(b"\xbe\xef") == 0x92

    def test_crc_of_data_plus_crc_is_zero(self) -> None:
        """Appending the CRC makes the CRC of the whole zero (property of a non-reflected CRC, no xor-out)."""
        for word in (b"\x00\x00", b"\x66\x66", b"\xff\xff", b"\x12\x34"):
            assert crc8(word + bytes([crc8(word)])) == 0

    def test_emulator_frames_words_with_the_same_crc(self) -> None:
        """The emulated SHT3x answers 0xBEEF as the datasheet's bytes BE EF 92 (one crc8 for driver and emulator)."""
        clock = FakeClock()
        chip = EmuSht3x(raw=(0xBEEF, 0xBEEF))
        chip.write(b"\x24\x00", clock())
        assert chip.read(6, clock() + 0.1) == b"\xbe\xef\x92\xbe\xef\x92"


class TestSensirion:
    def test_sht3x_conversion(self) -> None:
        """SHT3x-DIS 4.13: T = -45 + 175 * S_T / 65535, RH = 100 * S_RH / 65535; 0x6666/0xFFFF is
        exactly 0.4, so S_T 0x6666 is 25.0 degC and S_RH 0x6666 is 40.0 %RH."""
        drv, _, _, _ = sht_rig(SHT3x, EmuSht3x(raw=(0x6666, 0x6666)))
        v = drv.read()
        assert v["temperature"] == pytest.approx(25.0, abs=1e-12) and v["humidity"] == pytest.approx(
            40.0, abs=1e-12
        )

    def test_sht4x_conversion(self) -> None:
        """SHT4x 4.6: RH = -6 + 125 * S_RH / 65535 (cropped to 0..100): S_RH 0x6666 is 44.0 %RH,
        0x0000 would be -6 %RH and is cropped to 0."""
        drv, chip, _, _ = sht_rig(SHT4x, EmuSht4x(raw=(0x6666, 0x6666)))
        v = drv.read()
        assert v["temperature"] == pytest.approx(25.0, abs=1e-12) and v["humidity"] == pytest.approx(
            44.0, abs=1e-12
        )
        chip.raw = (0x6666, 0x0000)
        assert drv.read()["humidity"] == 0.0

    def test_commands_and_waiting(self) -> None:
        """High repeatability without clock stretching (0x2400), read after the maximum duration;
        reading earlier is NACKed by the chip (the emulator enforces it)."""
        drv, chip, _, clock = sht_rig(SHT3x, EmuSht3x())
        drv.read()
        assert chip.commands[-1] == b"\x24\x00"
        chip.command(b"\x24\x00", clock())
        with pytest.raises(OSError):
            chip.read(6, clock() + 0.005)

    @pytest.mark.parametrize("cls, emu", [(SHT3x, EmuSht3x), (SHT4x, EmuSht4x)])
    def test_bad_crc_drops_the_reading_and_counts_it(self, cls: type, emu: type) -> None:
        """A corrupted CRC: read() raises CrcError; in blocks the reading is dropped and counted;
        three in a row mark the sensor degraded."""
        drv, chip, _, clock = sht_rig(cls, emu(source=calm()))
        drv.setup()
        chip.corrupt_crc = 1
        with pytest.raises(CrcError):
            drv.read()
        chip.corrupt_crc = 1
        clock.advance(1)
        assert drv.read_block(clock()) is None and drv.stats["crc_errors"] == 1 and drv.fault is None
        clock.advance(1)
        assert len(drv.read_block(clock())) == 1
        chip.corrupt_crc = 3
        for _ in range(3):
            clock.advance(1)
            assert drv.read_block(clock()) is None
        assert drv.stats["crc_errors"] == 4 and "CRC" in (drv.fault or "")

    def test_sht3x_driver_on_an_sht4x(self) -> None:
        """The SHT3x status command is not acknowledged by an SHT4x: a clear identity error."""
        drv, _, _, _ = sht_rig(SHT3x, EmuSht4x())
        with pytest.raises(DeviceNotFound, match=r"SHT3x expected at bus sim address 0x44.*SHT4x"):
            drv.setup()

    def test_sht4x_driver_on_an_sht3x(self) -> None:
        """An SHT3x does not answer the SHT4x serial-number command: a clear identity error."""
        drv, _, _, _ = sht_rig(SHT4x, EmuSht3x())
        with pytest.raises(DeviceNotFound, match=r"SHT4x expected.*SHT3x"):
            drv.setup()

    def test_vanish_and_return(self) -> None:
        """Gone, then back: re-initialised (soft reset and identity again), readings resume."""
        drv, chip, bus, _clock = sht_rig(SHT4x, EmuSht4x(), addr=0x46)
        drv.read()
        bus.vanish(0x46)
        with pytest.raises(BusError):
            drv.read()
        bus.reappear(0x46)
        assert drv.read()["humidity"] == pytest.approx(45.0, abs=1)
        assert drv.stats["reinits"] == 1 and b"\x94" in chip.commands
