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

One module per vendor, mirroring the drivers: :mod:`~drivers.emulated.invensense`,
:mod:`~drivers.emulated.st`, :mod:`~drivers.emulated.bosch`, :mod:`~drivers.emulated.sensirion`;
the IMU emulators share :mod:`~drivers.emulated.imu`, value sources are in
:mod:`~drivers.emulated.sources`, and :mod:`~drivers.emulated.sim` builds the simulator's bus.
"""

from __future__ import annotations

from drivers.emulated.bosch import TYPICAL_CALIBRATION, EmuBosch, encode_calibration
from drivers.emulated.invensense import EmuMpu
from drivers.emulated.sensirion import EmuSht3x, EmuSht4x
from drivers.emulated.sim import make_emulator, sim_bus
from drivers.emulated.sources import EnvSource, ImuSource, calm, still
from drivers.emulated.st import EmuLsm6ds3, EmuLsm6dsox

__all__ = [
    "TYPICAL_CALIBRATION",
    "EmuBosch",
    "EmuLsm6ds3",
    "EmuLsm6dsox",
    "EmuMpu",
    "EmuSht3x",
    "EmuSht4x",
    "EnvSource",
    "ImuSource",
    "calm",
    "encode_calibration",
    "make_emulator",
    "sim_bus",
    "still",
]
