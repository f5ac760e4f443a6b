"""How much the chip drivers cost: CPU per second of data, and the I2C bus time they need.

Runs each driver against its emulated chip on a fake clock for ``--seconds`` of chip time at the
driver's highest sustained rate, polling at the driver's own ``poll_s``. Two figures per chip:

* CPU: the whole loop (driver + emulator) against a reference pass in the same run that makes
  the emulator produce and hand out the same samples without the driver; the difference is the
  driver's own cost, printed as a share of one core and as a ratio to the reference.
* bus: every byte the driver moved (address bytes, register pointers, data) at 9 clocks a byte,
  as a share of a 400 kHz bus. This is what bounds the rate on a real gateway.

Run: ``.venv/bin/python bench/bench_drivers.py`` (machines are shared and noisy: compare ratios, and
scale CPU by about 5x for a Raspberry Pi 4 core).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from drivers.bosch import BME280
from drivers.emulated import EmuBosch, EmuLsm6ds3, EmuLsm6dsox, EmuMpu, EmuSht3x
from drivers.fakebus import EmulatedBus, FakeClock
from drivers.invensense import MPU6050, MPU6500
from drivers.sensirion import SHT3x
from drivers.st import LSM6DS3, LSM6DSOX

IMUS = [
    ("MPU-6050", MPU6050, lambda: EmuMpu("mpu6050"), 0x68, 1000.0),
    ("MPU-6500", MPU6500, lambda: EmuMpu("mpu6500"), 0x68, 1000.0),
    ("LSM6DSOX", LSM6DSOX, EmuLsm6dsox, 0x6A, 1666.0),
    ("LSM6DS3", LSM6DS3, EmuLsm6ds3, 0x6A, 1666.0),
]


def _drain(chip: Any) -> None:
    """Take everything out of the emulated FIFO without decoding it (the reference pass)."""
    if isinstance(chip, EmuMpu):
        chip.fifo.clear()
    elif isinstance(chip, EmuLsm6dsox):
        chip.words.clear()
    else:
        chip.fifo_words.clear()


def imu(name: str, cls: type, make: Any, addr: int, rate: float, seconds: float) -> dict[str, float]:
    clock = FakeClock()
    chip = make()
    bus = EmulatedBus({addr: chip}, clock=clock)
    drv = cls(
        bus, addr, rate_hz=rate, sleep=clock.sleep, clock=clock, channels=["ax", "ay", "az", "gx", "gy", "gz"]
    )
    drv.setup()
    bus0, t_bus0 = bus.bus_seconds(), clock()
    n = 0
    c0 = time.process_time()
    end = clock() + seconds
    while clock() < end:
        clock.advance(drv.poll_s)
        b = drv.read_block(clock())
        n += len(b) if b is not None else 0
    full = time.process_time() - c0
    bus_share = (bus.bus_seconds() - bus0) / (clock() - t_bus0)
    # reference: the emulator alone, same polls, same samples
    ref_clock = FakeClock()
    ref_chip = make()
    ref_bus = EmulatedBus({addr: ref_chip}, clock=ref_clock)
    cls(
        ref_bus,
        addr,
        rate_hz=rate,
        sleep=ref_clock.sleep,
        clock=ref_clock,
        channels=["ax", "ay", "az", "gx", "gy", "gz"],
    ).setup()
    c0 = time.process_time()
    end = ref_clock() + seconds
    while ref_clock() < end:
        ref_clock.advance(drv.poll_s)
        ref_chip.advance(ref_clock())
        _drain(ref_chip)
    ref = time.process_time() - c0
    return {
        "samples": n,
        "rate": rate,
        "cpu_share": max(0.0, full - ref) / seconds,
        "ratio": full / max(ref, 1e-9),
        "bus_share": bus_share,
        "poll_ms": drv.poll_s * 1000,
        "fifo_overflows": drv.stats["fifo_overflows"],
    }


def env(name: str, cls: type, chip: Any, addr: int, reads: int) -> dict[str, float]:
    clock = FakeClock()
    bus = EmulatedBus({addr: chip}, clock=clock)
    drv = cls(bus, addr, sleep=clock.sleep, clock=clock)
    drv.setup()
    b0 = bus.bus_seconds()
    c0 = time.process_time()
    for _ in range(reads):
        drv.read()
    cpu = time.process_time() - c0
    return {"cpu_ms_per_read": 1000 * cpu / reads, "bus_ms_per_read": 1000 * (bus.bus_seconds() - b0) / reads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="chip time per IMU (default 20 s)")
    args = ap.parse_args()
    print(
        f"{'chip':10} {'rate':>7} {'poll':>7} {'driver CPU':>11} {'vs emulator':>12} {'bus @400kHz':>12} {'overflows':>9}"
    )
    for name, cls, make, addr, rate in IMUS:
        r = imu(name, cls, make, addr, rate, args.seconds)
        print(
            f"{name:10} {rate:6.0f}Hz {r['poll_ms']:5.1f}ms {100 * r['cpu_share']:10.2f}% {r['ratio']:11.2f}x "
            f"{100 * r['bus_share']:11.1f}% {r['fifo_overflows']:9d}"
        )
    for name, cls, chip, addr in [("BME280", BME280, EmuBosch(), 0x76), ("SHT3x", SHT3x, EmuSht3x(), 0x44)]:
        r = env(name, cls, chip, addr, 500)
        print(
            f"{name:10} one read: {r['cpu_ms_per_read']:.3f} ms CPU, {r['bus_ms_per_read']:.3f} ms of bus at 400 kHz"
        )


if __name__ == "__main__":
    main()
