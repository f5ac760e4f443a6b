"""Sensor drivers: real chips over smbus2, the simulator, recorded files.

``REGISTRY`` maps the ``driver`` name used in config to the driver class (DESIGN.md contract);
``CONFIGS`` lists the config model of each, which ``edged.config`` joins into one tagged union.
"""

from __future__ import annotations

from drivers.base import Block, DeviceNotFound, DriverError, SensorConfig
from drivers.replay import FileSensor, FileSensorConfig
from drivers.simulator import SimEnv, SimEnvConfig, SimImu, SimImuConfig

REGISTRY: dict[str, type] = {
    "sim_imu": SimImu,
    "sim_env": SimEnv,
    "file": FileSensor,
}

CONFIGS: tuple[type[SensorConfig], ...] = (SimImuConfig, SimEnvConfig, FileSensorConfig)

__all__ = ["CONFIGS", "REGISTRY", "Block", "DeviceNotFound", "DriverError", "SensorConfig"]
