"""What every sensor driver shares: its config base, the typed contracts, the block it yields.

A driver turns a sensor into :class:`Block` s: a run of samples with timestamps on the
monotonic clock. The contracts are :class:`typing.Protocol` s, checked by mypy:

* :class:`SMBusLike`: the bus a chip driver is handed (``smbus2.SMBus``,
  :class:`drivers.i2c.LinuxBus`, :class:`drivers.fakebus.EmulatedBus`);
* :class:`Driver`: a sensor as the runtime (``edged.runtime.SensorRunner``) polls it; every class
  in ``drivers.REGISTRY`` builds one;
* :class:`Chip`: an I2C chip driver (DESIGN.md), built as ``Cls(bus, address, **options)``, which
  also offers ``read()`` for a single sample. The runtime only ever asks for blocks, so a
  FIFO-capable chip can hand over a burst of samples per bus transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.labels import LabelColumn

if TYPE_CHECKING:
    from smbus2 import i2c_msg

    from drivers.i2c.bus import Device


class DriverError(Exception):
    """A sensor could not be read; the runtime marks it unhealthy and retries."""


class DeviceNotFound(DriverError):
    """Nothing (or the wrong chip) answers at the configured address."""


class StrictModel(BaseModel):
    """Base of every config section: typed, frozen, unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SensorConfig(StrictModel):
    """Keys every sensor table has; each driver subclasses this with a ``driver`` literal."""

    rate_hz: float
    channels: list[str] | None = Field(
        None,
        description="Subset of the driver's channels; unset: every channel it provides. Channel names "
        "must be unique across sensors.",
    )


@dataclass(frozen=True, slots=True)
class Block:
    """Consecutive samples of one source.

    ``t`` is float64 seconds, non-decreasing (the monotonic clock in ``run``, the file's ``t``
    in ``replay``); ``x`` is float64 with shape ``(len(t), len(channels))``. ``labels`` carries
    per-sample class labels (task -> :class:`~pipelines.labels.LabelColumn`) for tasks whose labels
    travel with the data (replayed files).
    """

    source: str
    channels: tuple[str, ...]
    t: np.ndarray
    x: np.ndarray
    labels: dict[str, LabelColumn] | None = None

    def __len__(self) -> int:
        return int(self.t.shape[0])


class SMBusLike(Protocol):
    """The ``smbus2.SMBus`` methods that chip drivers and the bus scan use.

    Drivers are handed one and never open or close it: ``close()`` is for whoever opened the
    bus. Arguments are positional only, as every caller passes them; implementations may take
    more (smbus2's ``force``).
    """

    def read_byte(self, i2c_addr: int, /) -> int: ...
    def write_quick(self, i2c_addr: int, /) -> None: ...
    def read_byte_data(self, i2c_addr: int, register: int, /) -> int: ...
    def write_byte_data(self, i2c_addr: int, register: int, value: int, /) -> None: ...
    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, /) -> list[int]: ...
    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int], /) -> None: ...
    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None: ...
    def close(self) -> None: ...


class Driver(Protocol):
    """A sensor as the runtime sees it: what ``edged.runtime.SensorRunner`` needs.

    Each driver class takes its own constructor arguments (chips: :class:`Chip`; the simulator
    and file drivers: the world or the file). The runtime then names it (``name``, the config's
    sensor name), polls :meth:`read_block` on the sensor's own thread, reports a non-``None``
    :attr:`fault` as health ``degraded``, adds :attr:`stats` to the summary and calls
    :meth:`close` at shutdown. A driver may also set ``poll_s``, the poll period it needs
    (FIFO chips); otherwise the runtime derives one from ``rate_hz``.
    """

    #: every channel the driver can provide (a sensor's ``channels`` selects from these)
    CHANNELS: ClassVar[tuple[str, ...]]
    name: str

    # each class has its own constructor; this lets ``type[Driver]`` (REGISTRY) be called with it
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...

    @property
    def fault(self) -> str | None:
        """A data-quality problem (stuck, saturated, FIFO overflow, CRC errors), else ``None``."""
        ...

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters for the summary (samples, retries, bus errors ...)."""
        ...

    def read_block(self, now: float) -> Block | None:
        """Return the samples acquired since the last call (``None`` when there are none)."""
        ...

    def close(self) -> None: ...


class Chip(Driver, Protocol):
    """An I2C chip driver (DESIGN.md contract).

    Built as ``Cls(bus, address, **options)`` with ``bus`` an :class:`SMBusLike` it never opens;
    the constructor touches no hardware. :meth:`setup` checks the chip's identity and configures
    it (the first read runs it when nobody did; DESIGN.md lets a driver without one initialise
    the chip in its constructor, but every chip here has it); :meth:`read` returns one sample as
    channel -> value. :meth:`identify` tells ``edged sensors scan`` whether the chip at an address is one
    this driver supports, with reads only.
    """

    #: the addresses the chip can be strapped to
    ADDRESSES: ClassVar[tuple[int, ...]]

    def __init__(self, bus: SMBusLike, address: int, /, **options: Any) -> None: ...

    @classmethod
    def identify(cls, dev: Device) -> str | None:
        """The part name if the chip at ``dev`` is one this driver supports, else ``None``."""
        ...

    def setup(self) -> None: ...

    def read(self) -> Mapping[str, float]: ...


def select_channels(available: tuple[str, ...], wanted: Sequence[str] | None) -> tuple[str, ...]:
    """Validate a sensor's ``channels`` selection against what the driver provides."""
    if wanted is None:
        return available
    unknown = [c for c in wanted if c not in available]
    if unknown:
        msg = f"unknown channel(s) {unknown}; this driver provides {list(available)}"
        raise ValueError(msg)
    return tuple(wanted)
