"""The I2C core: bounded retries, FIFO timestamps, the quality gate, the emulated bus."""

from __future__ import annotations

import errno
from collections import Counter
from typing import ClassVar

import numpy as np
import pytest
from smbus2 import i2c_msg

from drivers.emulated import EmuMpu
from drivers.fakebus import EmulatedBus, FakeClock, RegisterChip
from drivers.i2c import BusError, Device, QualityGate, Timebase


class _Echo(RegisterChip):
    POWER_ON: ClassVar[dict[int, int]] = {0x10: 0xAB}


def _bus() -> tuple[EmulatedBus, FakeClock]:
    clock = FakeClock()
    return EmulatedBus({0x20: _Echo()}, clock=clock, name="3"), clock


class TestRetries:
    def test_transient_error_is_retried_with_backoff(self) -> None:
        """EIO on the next access: the read succeeds on the retry, after a 1 ms backoff, counted."""
        bus, clock = _bus()
        dev = Device(bus, 0x20, "3", retries=3, sleep=clock.sleep)
        bus.fail(1, errno.EIO)
        t = clock()
        assert dev.read_u8(0x10) == 0xAB
        assert dev.stats["retries"] == 1 and clock() - t == pytest.approx(0.001)

    @pytest.mark.parametrize("err", [errno.EIO, errno.EREMOTEIO, errno.ETIMEDOUT, errno.ENXIO])
    def test_retries_are_bounded(self, err: int) -> None:
        """A fault that outlasts the retries becomes a BusError naming bus, address, register and error;
        the backoff doubles (1 + 2 + 4 ms for 3 retries)."""
        bus, clock = _bus()
        dev = Device(bus, 0x20, "3", retries=3, sleep=clock.sleep)
        bus.fail(1, err, times=4)
        t = clock()
        with pytest.raises(BusError) as exc:
            dev.read_u8(0x10)
        assert exc.value.errno == err
        msg = str(exc.value)
        assert "bus 3 address 0x20" in msg and "register 0x10" in msg and "after 4 attempts" in msg
        assert clock() - t == pytest.approx(0.007)
        assert bus.accesses == 4 and dev.stats["bus_errors"] == 1

    def test_permanent_error_is_not_retried(self) -> None:
        """EBUSY (a kernel driver owns the address) fails at once, with a hint."""
        bus, clock = _bus()
        dev = Device(bus, 0x20, "3", sleep=clock.sleep)
        bus.fail(1, errno.EBUSY)
        with pytest.raises(BusError, match="kernel driver"):
            dev.read_u8(0x10)
        assert bus.accesses == 1

    def test_fifo_reads_are_not_retried(self) -> None:
        """fifo=True: one attempt only (a half-done FIFO transfer may have consumed bytes)."""
        bus, clock = _bus()
        dev = Device(bus, 0x20, "3", sleep=clock.sleep)
        bus.fail(1, errno.EIO)
        with pytest.raises(BusError):
            dev.read(0x10, 64, fifo=True)
        assert bus.accesses == 1

    def test_missing_chip_is_a_nack(self) -> None:
        """Nothing at the address: EREMOTEIO, as the Raspberry Pi's controller reports a NACK."""
        bus, _clock = _bus()
        with pytest.raises(OSError) as exc:
            bus.read_byte_data(0x21, 0)
        assert exc.value.errno == errno.EREMOTEIO

    def test_fault_on_the_nth_access(self) -> None:
        """fail(nth=3) lets two accesses through and fails the third."""
        bus, _ = _bus()
        bus.fail(3, errno.EIO)
        bus.read_byte_data(0x20, 0x10)
        bus.read_byte_data(0x20, 0x10)
        with pytest.raises(OSError):
            bus.read_byte_data(0x20, 0x10)
        bus.read_byte_data(0x20, 0x10)


class TestBurstReads:
    def test_i2c_rdwr_fills_read_buffers(self) -> None:
        """A combined write-then-read transfer returns the registers from the pointer on."""
        bus, _ = _bus()
        chip = bus.chips[0x20]
        assert isinstance(chip, RegisterChip)
        chip.regs[0x40:0x80] = bytes(range(64))
        w, r = i2c_msg.write(0x20, [0x40]), i2c_msg.read(0x20, 64)
        bus.i2c_rdwr(w, r)
        assert bytes(r) == bytes(range(64))

    def test_fallback_to_smbus_block_reads(self) -> None:
        """An adapter without I2C_RDWR: long reads become 32-byte block reads (registers: from
        successive addresses; a FIFO register: the same register, in whole units)."""
        clock = FakeClock()
        chip = EmuMpu("mpu6050")
        chip.regs[0x00:0x40] = bytes(range(64))
        bus = EmulatedBus({0x68: chip}, clock=clock, rdwr=False)
        dev = Device(bus, 0x68, sleep=clock.sleep)
        assert dev.read(0x00, 56) == bytes(range(56))
        assert not dev.rdwr
        assert [m for m, _ in bus.log[-2:]] == ["read_i2c_block_data", "read_i2c_block_data"]
        chip.fifo = bytearray(range(100, 184))
        assert dev.read(0x74, 84, unit=12, fifo=True) == bytes(range(100, 184))
        assert bus.log[-3:] == [("read_i2c_block_data", 0x68)] * 3  # 24 + 24 + 24 + 12 bytes


class TestTimebase:
    def test_samples_are_spaced_by_the_odr_whenever_they_are_read(self) -> None:
        """Times depend on the FIFO position only: irregular reads give evenly spaced samples."""
        tb = Timebase(1000.0)
        tb.start(10.0)
        t1 = tb.stamps(7, now=10.0071)
        t2 = tb.stamps(30, now=10.0403)  # read late, with jitter
        t = np.concatenate((t1, t2))
        assert t[0] == pytest.approx(10.001)
        np.testing.assert_allclose(np.diff(t), 0.001, rtol=1e-9)

    def test_follows_a_chip_that_runs_fast_without_jumps(self) -> None:
        """A chip 2 % fast: the stamps start at the nominal rate, then follow the measured one and
        are steered onto the chip's real timeline; times never jump or go back."""
        tb = Timebase(1000.0)
        tb.start(0.0)
        true_rate = 1020.0
        stamps, truth = [], []
        k = 0
        for i in range(1, 501):  # 10 s of reads every 20 ms
            now = i * 0.02
            n = int(now * true_rate) - k
            stamps.append(tb.stamps(n, now))
            truth.append((np.arange(k, k + n) + 1) / true_rate)
            k += n
        t, true_t = np.concatenate(stamps), np.concatenate(truth)
        d = np.diff(t)
        assert d.min() > 0.95e-3 and d.max() < 1.001e-3  # never back, never a jump
        assert abs(true_t[500] - t[500]) > 0.008  # nominal rate for the first 0.5 s: adrift
        assert abs(t[-1] - true_t[-1]) < 0.001  # steered back onto the chip's real timeline
        assert tb.period == pytest.approx(1 / true_rate, rel=1e-3)

    def test_restart_never_goes_back_in_time(self) -> None:
        """After a FIFO restart the new run starts no earlier than the last sample."""
        tb = Timebase(100.0)
        tb.start(5.0)
        last = tb.stamps(10, 5.1)[-1]
        tb.start(5.05)
        assert tb.stamps(1, 5.2)[0] > last


class TestQualityGate:
    def test_stuck_samples_are_dropped_across_blocks(self) -> None:
        """Identical raw words beyond stuck_after in a row (even across blocks) are dropped and flagged."""
        gate = QualityGate(np.array([-10.0]), np.array([10.0]), stuck_after=5)
        stats: Counter[str] = Counter()
        live = np.arange(4).reshape(4, 1)
        assert gate.keep(live, live * 1.0, np.zeros(4, bool), stats).all()
        frozen = np.full((4, 1), 3)  # continues the last live sample (3): runs of 2, 3, 4, 5
        keep1 = gate.keep(frozen, frozen * 1.0, np.zeros(4, bool), stats)
        assert keep1.tolist() == [True, True, True, True] and not gate.stuck
        keep2 = gate.keep(frozen, frozen * 1.0, np.zeros(4, bool), stats)  # runs of 6..9
        assert keep2.tolist() == [False, False, False, False] and gate.stuck
        assert stats["stuck_samples"] == 4
        keep3 = gate.keep(np.array([[4]]), np.array([[4.0]]), np.zeros(1, bool), stats)
        assert keep3.all() and not gate.stuck

    def test_out_of_range_and_nan_are_dropped(self) -> None:
        """Values outside the physical range or not finite never pass."""
        gate = QualityGate(np.array([0.0]), np.array([100.0]), stuck_after=50)
        stats: Counter[str] = Counter()
        x = np.array([[50.0], [101.0], [np.nan], [-1.0], [0.0]])
        keep = gate.keep(np.arange(5).reshape(5, 1), x, np.zeros(5, bool), stats)
        assert keep.tolist() == [True, False, False, False, True]
        assert stats["out_of_range"] == 3

    def test_saturation_is_counted_and_flagged(self) -> None:
        """A quarter or more of a block at the limit raises the saturated flag; the samples are kept."""
        gate = QualityGate(np.array([-1e9]), np.array([1e9]), stuck_after=50)
        stats: Counter[str] = Counter()
        sat = np.array([True, False, False, True])
        assert gate.keep(np.arange(4).reshape(4, 1), np.zeros((4, 1)), sat, stats).all()
        assert gate.saturated and stats["saturated_samples"] == 2
        gate.keep(np.arange(8).reshape(8, 1), np.zeros((8, 1)), np.zeros(8, bool), stats)
        assert not gate.saturated


class TestEmulatedMpuRegisters:
    def test_int_status_clears_on_read_and_fifo_pointer_does_not_increment(self) -> None:
        """Register semantics of the emulator follow the register map (read-to-clear, FIFO_R_W)."""
        clock = FakeClock()
        chip = EmuMpu("mpu6050")
        bus = EmulatedBus({0x68: chip}, clock=clock)
        chip.regs[0x3A] = 0x11
        assert bus.read_byte_data(0x68, 0x3A) == 0x11
        assert bus.read_byte_data(0x68, 0x3A) == 0
        chip.fifo = bytearray(b"\x01\x02\x03\x04")
        assert bus.read_i2c_block_data(0x68, 0x74, 3) == [1, 2, 3]
        assert bus.read_byte_data(0x68, 0x75) == 0x68
