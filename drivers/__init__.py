"""Sensor drivers: real chips over smbus2, the simulator, recorded files.

``REGISTRY`` maps the ``driver`` name used in config to the driver class (DESIGN.md contract);
``CONFIGS`` lists the config model of each, which ``edged.config`` joins into one tagged union.
``CHIPS`` names the I2C chip drivers (built as ``Cls(bus, address, **options)``). The contracts
the entries satisfy are the protocols in :mod:`drivers.base`: every class builds a
:class:`~drivers.base.Driver`, and the chip classes a :class:`~drivers.base.Chip` on an
:class:`~drivers.base.SMBusLike` bus.
"""

from __future__ import annotations

from drivers.base import (
    Block,
    Chip,
    DeviceNotFound,
    Driver,
    DriverError,
    LabelColumn,
    SensorConfig,
    SMBusLike,
)
from drivers.bosch import BME280, BMP280, Bme280Config, Bmp280Config
from drivers.invensense import MPU6050, MPU6500, Mpu6050Config, Mpu6500Config
from drivers.replay import FileSensor, FileSensorConfig
from drivers.sensirion import SHT3x, Sht3xConfig, SHT4x, Sht4xConfig
from drivers.simulator import SimEnv, SimEnvConfig, SimImu, SimImuConfig
from drivers.st import LSM6DS3, LSM6DSOX, Lsm6ds3Config, Lsm6dsoxConfig

CHIPS: dict[str, type[Chip]] = {
    "mpu6050": MPU6050,
    "mpu6500": MPU6500,
    "lsm6dsox": LSM6DSOX,
    "lsm6ds3": LSM6DS3,
    "bme280": BME280,
    "bmp280": BMP280,
    "sht3x": SHT3x,
    "sht4x": SHT4x,
}

REGISTRY: dict[str, type[Driver]] = {
    "sim_imu": SimImu,
    "sim_env": SimEnv,
    "file": FileSensor,
    **CHIPS,
}

CONFIGS: tuple[type[SensorConfig], ...] = (
    SimImuConfig,
    SimEnvConfig,
    FileSensorConfig,
    Mpu6050Config,
    Mpu6500Config,
    Lsm6dsoxConfig,
    Lsm6ds3Config,
    Bme280Config,
    Bmp280Config,
    Sht3xConfig,
    Sht4xConfig,
)

__all__ = [
    "CHIPS",
    "CONFIGS",
    "REGISTRY",
    "Block",
    "Chip",
    "DeviceNotFound",
    "Driver",
    "DriverError",
    "LabelColumn",
    "SMBusLike",
    "SensorConfig",
]
