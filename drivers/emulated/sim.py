"""The simulator's I2C bus: one emulated chip per ``bus = "sim"`` sensor, fed by the simulated machine."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from drivers.emulated.bosch import EmuBosch
from drivers.emulated.invensense import EmuMpu
from drivers.emulated.sensirion import EmuSht3x, EmuSht4x
from drivers.emulated.sources import EnvSource, ImuSource
from drivers.emulated.st import EmuLsm6ds3, EmuLsm6dsox
from drivers.fakebus import EmulatedBus, EmulatedChip

if TYPE_CHECKING:
    from drivers.simulator import MachineWorld


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
    sensors: dict[str, Any], world: MachineWorld, seed: int = 1, clock: Callable[[], float] | None = None
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
