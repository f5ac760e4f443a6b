"""Physical values for the emulated chips: a ``source`` is a function of the chip's own sample times."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipelines.units import STANDARD_GRAVITY

ImuSource = Callable[
    [np.ndarray], np.ndarray
]  # sample times (s) -> (n, 6): ax ay az (m/s^2), gx gy gz (rad/s)
EnvSource = Callable[
    [float], tuple[float, float, float]
]  # time -> temperature (degC), humidity (%RH), pressure (Pa)


def still(seed: int = 0, noise: float = 0.02, gravity_axis: int = 2) -> ImuSource:
    """An IMU lying still: gravity on one axis plus white noise (m/s^2 and rad/s)."""
    rng = np.random.default_rng(seed)

    def source(t: np.ndarray) -> np.ndarray:
        out = rng.normal(0.0, noise, (t.shape[0], 6))
        out[:, 3:] *= 0.1
        out[:, gravity_axis] += STANDARD_GRAVITY
        return out

    return source


def calm(
    temperature: float = 22.0, humidity: float = 45.0, pressure: float = 101325.0, seed: int = 0
) -> EnvSource:
    """A room with a little noise."""
    rng = np.random.default_rng(seed)

    def source(t: float) -> tuple[float, float, float]:
        n = rng.normal(0.0, 1.0, 3)
        return temperature + 0.02 * n[0], humidity + 0.1 * n[1], pressure + 2.0 * n[2]

    return source
