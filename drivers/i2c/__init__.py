"""What every I2C chip driver shares, one module per job.

* :mod:`~drivers.i2c.bus`: :class:`Device` (register access with bounded retries and backoff,
  :class:`BusError`) and :class:`LinuxBus` (``/dev/i2c-N`` through smbus2);
* :mod:`~drivers.i2c.timebase`: :class:`Timebase` stamps FIFO samples from the output data rate;
* :mod:`~drivers.i2c.quality`: :class:`QualityGate` drops stuck and out-of-range samples and
  flags saturation;
* :mod:`~drivers.i2c.chip`: :class:`ChipDriver` and :class:`SingleShotChip`, the driver bases;
* :mod:`~drivers.i2c.config`: :class:`I2cSensorConfig` and the cross-sensor checks.
"""

from __future__ import annotations

from drivers.i2c.bus import NO_ACK, TRANSIENT, BusError, Device, LinuxBus
from drivers.i2c.chip import ChipDriver, SingleShotChip
from drivers.i2c.config import I2cSensorConfig, address_in, config_problems
from drivers.i2c.quality import QualityGate
from drivers.i2c.timebase import Timebase

__all__ = [
    "NO_ACK",
    "TRANSIENT",
    "BusError",
    "ChipDriver",
    "Device",
    "I2cSensorConfig",
    "LinuxBus",
    "QualityGate",
    "SingleShotChip",
    "Timebase",
    "address_in",
    "config_problems",
]
