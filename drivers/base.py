"""What every sensor driver shares: its config base, the bus protocol, the block it yields.

A driver turns a sensor into :class:`Block` s: a run of samples with timestamps on the
monotonic clock. Chip drivers (``Cls(bus, address)``, DESIGN.md) also offer ``read()`` for a
single sample; the runtime only ever asks for blocks, so a FIFO-capable chip can hand over a
burst of samples per bus transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.labels import LabelColumn


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


class SMBusLike(Protocol):
    """The subset of smbus2.SMBus that chip drivers may use (injected, never opened here)."""

    def read_byte_data(self, i2c_addr: int, register: int) -> int: ...
    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None: ...
    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...
    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None: ...


@dataclass(frozen=True, slots=True)
class Block:
    """Consecutive samples of one source.

    ``t`` is float64 seconds, non-decreasing (the monotonic clock in ``run``, the file's ``t``
    in ``replay``); ``x`` is float64 with shape ``(len(t), len(channels))``. ``labels`` carries
    per-sample class names, per task, for tasks whose labels travel with the data (replayed files).
    """

    source: str
    channels: tuple[str, ...]
    t: np.ndarray
    x: np.ndarray
    labels: dict[str, LabelColumn] | None = None

    def __len__(self) -> int:
        return int(self.t.shape[0])


class Driver(Protocol):
    """A sensor as the runtime sees it."""

    CHANNELS: ClassVar[tuple[str, ...]]

    def read_block(self, now: float) -> Block | None:
        """Return the samples acquired since the last call (``None`` when there are none)."""
        ...

    def close(self) -> None: ...


def select_channels(available: tuple[str, ...], wanted: Sequence[str] | None) -> tuple[str, ...]:
    """Validate a sensor's ``channels`` selection against what the driver provides."""
    if wanted is None:
        return available
    unknown = [c for c in wanted if c not in available]
    if unknown:
        msg = f"unknown channel(s) {unknown}; this driver provides {list(available)}"
        raise ValueError(msg)
    return tuple(wanted)


def describe(obj: Any) -> str:
    """Short name of a driver instance for logs."""
    return type(obj).__name__
