"""Chip sensors in the config, `edged sensors scan`, and the runner's health from data quality."""

from __future__ import annotations

import queue
import subprocess
import sys
import tomllib
from typing import Any

import pytest

import drivers
from drivers.emulated import EmuBosch, EmuLsm6ds3, EmuLsm6dsox, EmuMpu, EmuSht3x, EmuSht4x
from drivers.fakebus import EmulatedBus, RegisterChip
from drivers.invensense import MPU6050
from drivers.scan import scan
from edged.config import ConfigError, parse
from edged.runtime import SensorRunner
from tests.conftest import REPO, wait_for


def _raw() -> dict[str, Any]:
    return tomllib.loads((REPO / "config.toml").read_text())


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse(raw)
    return exc.value.problems


class TestConfig:
    def test_every_chip_driver_has_a_config(self) -> None:
        """Each registered chip validates with its defaults (here: providing the tasks' temperature)."""
        raw = _raw()
        for name, cls in drivers.CHIPS.items():
            x = {"driver": name, "bus": "sim", "address": cls.ADDRESSES[-1], "channels": ["temperature"]}
            raw["sensors"] = {"imu": raw["sensors"]["imu"], "x": x}
            cfg = parse(raw)
            assert cfg.sensors["x"].driver == name and cfg.sensor_channels()["x"] == ("temperature",)

    def test_bad_chip_keys_are_named(self) -> None:
        """Wrong address for the chip, unreachable rate, bad range, unknown key: each named by its path."""
        raw = _raw()
        raw["sensors"]["imu"].update(address=0x50, rate_hz=300, accel_range_g=3, fifo=True)
        raw["sensors"]["env"]["oversampling"] = 3
        probs = _problems(raw)
        assert any(p.startswith("sensors.imu.address:") and "0x68, 0x69" in p for p in probs)
        assert any(p.startswith("sensors.imu.rate_hz:") and "1000 / N" in p for p in probs)
        assert any(p.startswith("sensors.imu.accel_range_g:") for p in probs)
        assert "sensors.imu.fifo: unknown key" in probs
        assert any(p.startswith("sensors.env.oversampling:") for p in probs)

    def test_two_sensors_cannot_share_an_address(self) -> None:
        """Two sensors at the same bus address are a config error."""
        raw = _raw()
        raw["sensors"]["th"] = {"driver": "sht3x", "bus": "sim", "address": 0x44, "channels": ["humidity"]}
        raw["sensors"]["th2"] = {"driver": "sht4x", "bus": "sim", "address": 0x44, "channels": []}
        probs = _problems(raw)
        assert any("0x44 on bus sim is already used by sensor 'th'" in p for p in probs)

    def test_lsm_rates_are_the_chip_odrs(self) -> None:
        """LSM6 rates must be output data rates the chip has, and fit the bus."""
        raw = _raw()
        raw["sensors"]["imu"] = {
            "driver": "lsm6dsox",
            "bus": 1,
            "address": 0x6A,
            "rate_hz": 1000,
            "channels": ["ax", "ay", "az", "gx", "gy", "gz"],
        }
        assert any("output data rates" in p for p in _problems(raw))
        raw["sensors"]["imu"]["rate_hz"] = 3333
        assert any("400 kHz" in p for p in _problems(raw))
        raw["sensors"]["imu"]["rate_hz"] = 1666
        raw["tasks"]["activity"]["bands_hz"] = [1, 10, 100]
        raw["tasks"]["maintenance"]["bands_hz"] = [1, 10, 100]
        assert parse(raw).sensors["imu"].rate_hz == 1666


class TestScan:
    def test_identifies_every_supported_chip(self) -> None:
        """Every emulated chip is found at its address and named by its ID; an unknown chip answers
        but stays unnamed; empty addresses are not listed."""
        bus = EmulatedBus(
            {
                0x68: EmuMpu("mpu6050"),
                0x69: EmuMpu("mpu9250"),
                0x6A: EmuLsm6dsox(),
                0x6B: EmuLsm6ds3(),
                0x76: EmuBosch(),
                0x77: EmuBosch(humidity=False),
                0x44: EmuSht3x(),
                0x45: EmuSht4x(),
                0x50: RegisterChip(),
            }
        )
        found = {f.address: (f.driver, f.part) for f in scan(bus, drivers.CHIPS)}
        assert found == {
            0x44: ("sht3x", "SHT3x"),
            0x45: ("sht4x", "SHT4x (serial 305419896)"),
            0x50: (None, None),
            0x68: ("mpu6050", "MPU-6050"),
            0x69: ("mpu6500", "MPU-9250"),
            0x6A: ("lsm6dsox", "LSM6DSOX/LSM6DSO"),
            0x6B: ("lsm6ds3", "LSM6DS3"),
            0x76: ("bme280", "BME280"),
            0x77: ("bmp280", "BMP280"),
        }
        assert ("read_byte", 0x50) in bus.log  # EEPROM range: probed by a read, as i2cdetect does

    def test_cli_against_the_emulated_bus(self) -> None:
        """`edged sensors scan` on the shipped config lists the emulated chips as a table and as JSON."""
        cmd = [sys.executable, "-m", "edged", "sensors", "scan", "-c", str(REPO / "config.toml")]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["BUS", "ADDRESS", "CHIP", "DRIVER", "SENSOR", "STATUS"]
        assert lines[1].split() == ["sim", "0x68", "MPU-6050", "mpu6050", "imu", "ok"]
        assert lines[2].split() == ["sim", "0x76", "BME280", "bme280", "env", "ok"]
        r = subprocess.run(
            [*cmd, "--json", "--bus", "250"], capture_output=True, text=True, cwd=REPO, timeout=60
        )
        assert r.returncode == 1 and "bus 250" in r.stderr  # no /dev/i2c-250 here: a clear error


class TestRunnerHealth:
    def test_data_quality_problems_degrade_and_recover(self) -> None:
        """A stuck chip: the runner reports degraded with the driver's reason, then ok again; other
        exceptions from a driver never kill the sensor thread."""
        bus = EmulatedBus({0x68: EmuMpu("mpu6050")})
        drv = MPU6050(bus, 0x68, rate_hz=500.0)
        drv.name = "imu"
        events: list[tuple[str, str, str]] = []
        out: queue.Queue[Any] = queue.Queue()
        runner = SensorRunner("imu", drv, drv.poll_s, out, lambda *a: events.append(a))
        runner.start()
        try:
            _wait(lambda: out.qsize() > 3, "blocks from the sensor")
            bus.chips[0x68].stuck = True
            _wait(lambda: runner.health == "degraded", "sensor degraded")
            bus.chips[0x68].stuck = False
            _wait(lambda: runner.health == "ok", "sensor ok")
            drv._fifo_status = lambda: 1 / 0  # a driver bug
            _wait(lambda: runner.health == "degraded", "sensor degraded")
        finally:
            runner.stop()
        assert [e[1] for e in events] == ["degraded", "ok", "degraded"]
        assert events[0][2].startswith("stuck") and "ZeroDivisionError" in events[2][2]

    def test_lost_after_ten_failures_and_back_when_the_chip_answers(self) -> None:
        """No chip at boot: degraded, then lost after 10 failed reads (still retried); once the chip
        answers it is set up and the sensor is ok again."""
        bus = EmulatedBus({})
        drv = MPU6050(bus, 0x68, rate_hz=500.0)
        events: list[tuple[str, str, str]] = []
        runner = SensorRunner("imu", drv, 0.0005, queue.Queue(), lambda *a: events.append(a))
        runner.start()
        try:
            _wait(lambda: runner.health == "lost", "sensor lost")
            bus.attach(0x68, EmuMpu("mpu6050"))
            _wait(lambda: runner.health == "ok", "sensor ok")
        finally:
            runner.stop()
        assert [e[1] for e in events] == ["degraded", "lost", "ok"]
        assert "nothing answers at bus sim address 0x68" in events[1][2]


def _wait(pred: Any, what: str, timeout: float = 30.0) -> None:
    wait_for(pred, timeout, what)
