"""Config of the I2C chip sensors: the keys every chip shares and the cross-sensor checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from drivers.base import SensorConfig


class I2cSensorConfig(SensorConfig):
    """Keys of every I2C chip sensor (each chip adds its own ``driver`` literal and options)."""

    bus: Annotated[int, Field(ge=0, le=255)] | Literal["sim"] = Field(
        1,
        description='`N` for `/dev/i2c-N` (1 on a Raspberry Pi header), or `"sim"`: an emulated chip fed '
        "by the simulated machine.",
    )
    address: int = Field(ge=0x03, le=0x77)
    retries: int = Field(
        3, ge=0, le=10, description="Extra attempts after a transient bus error, with 1, 2, 4 ... ms backoff."
    )
    stuck_after: int | None = Field(
        None,
        ge=2,
        description='Identical raw samples in a row before the sensor counts as "stuck"; unset: 50 for '
        "IMUs, 30 for the others.",
        le=1_000_000,
    )

    @field_validator("bus")
    @classmethod
    def _bus(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 <= v <= 255:
            raise ValueError('bus must be a number N (for /dev/i2c-N) or "sim"')
        return v

    def driver_kwargs(self) -> dict[str, Any]:
        """Constructor keywords of the driver (the config keys are named after them)."""
        return self.model_dump(exclude={"driver", "bus", "address"})


def address_in(addresses: Sequence[int]) -> Callable[[int], int]:
    def check(v: int) -> int:
        if v not in addresses:
            raise ValueError(f"this chip answers only at {', '.join(f'0x{a:02x}' for a in addresses)}")
        return v

    return check


def config_problems(sensors: Mapping[str, SensorConfig]) -> list[str]:
    """Cross-sensor checks: two sensors cannot share one bus address."""
    seen: dict[tuple[int | str, int], str] = {}
    problems = []
    for name, s in sensors.items():
        if not isinstance(s, I2cSensorConfig):
            continue
        key = (s.bus, s.address)
        if key in seen:
            problems.append(
                f"sensors.{name}.address: 0x{s.address:02x} on bus {s.bus} is already "
                f"used by sensor {seen[key]!r}"
            )
        seen.setdefault(key, name)
    return problems
