"""A task's DSP as config: feature sets, fusion, shaft and bearing parameters, and the builder.

This module imports no numba (the config is validated before the JIT cache directory is
set); :func:`build_dsp` imports the kernels when it builds.

Bearing defect frequencies, as multiples of the shaft speed, from the geometry (``n`` balls of
diameter ``d`` on pitch diameter ``D``, contact angle ``phi``; ``r = d / D * cos(phi)``):

* BPFO = n/2 (1 - r) (ball pass, outer race), BPFI = n/2 (1 + r) (ball pass, inner race),
* FTF = 1/2 (1 - r) (cage), BSF = D / 2d (1 - r^2) (ball spin).

A ball defect strikes both races once per spin, so its line is often at 2 x BSF (CWRU's table
lists that value as "BSF"); the envelope energies sum ``harmonics`` harmonics of each line,
which covers it.

>>> m = defect_multiples(balls=9, ball_diameter=0.3126, pitch_diameter=1.537)
>>> round(m["bpfo"], 4), round(m["bpfi"], 4), round(m["ftf"], 4), round(2 * m["bsf"], 4)
(3.5848, 5.4152, 0.3983, 4.7135)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

FeatureSet = Literal[
    "stats", "bands", "spectrum", "motion", "velocity", "shaft", "envelope", "lines", "gravity"
]
OrientationOutput = Literal["roll", "pitch", "yaw", "lax", "lay", "laz"]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FusionParams(_Params):
    """``[tasks.<name>.fusion]``: orientation from the IMU channels as derived channels."""

    filter: Literal["madgwick"] = Field("madgwick", description="Orientation filter (Madgwick 2010).")
    beta: float = Field(
        0.1,
        gt=0,
        le=10,
        description="Gradient step in rad/s: larger trusts the accelerometer more (faster convergence, "
        "more linear motion leaks in).",
    )
    outputs: list[OrientationOutput] = Field(
        ["roll", "pitch", "lax", "lay", "laz"],
        min_length=1,
        description="Derived channels: angles in rad (`yaw` needs `mx`, `my`, `mz`) and the gravity-free "
        "linear acceleration.",
    )


Hz = Annotated[float, Field(ge=0, le=1e6)]  # a frequency in a config: finite, non-negative


class ShaftParams(_Params):
    """``[tasks.<name>.shaft]``: the shaft speed, fixed (``hz``) or estimated per window as the
    strongest spectral line in ``range_hz``; ``line_tol`` is the relative half width of a line."""

    hz: float | None = Field(
        None, gt=0, description="Fixed shaft speed in Hz (give this or `range_hz`).", le=10_000
    )
    range_hz: list[Hz] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="Estimate the speed per window as the strongest line in this band (Hz).",
    )
    line_tol: float = Field(0.02, gt=0, lt=0.5, description="Relative half width of a spectral line.")

    @model_validator(mode="after")
    def _one_source(self) -> ShaftParams:
        if (self.hz is None) == (self.range_hz is None):
            raise ValueError("give exactly one of hz (a fixed shaft speed) or range_hz (estimate it)")
        return self


class BearingParams(_Params):
    """``[tasks.<name>.bearing]``: rolling-element bearing geometry and the envelope band.

    Diameters are in any one length unit; ``envelope_band_hz`` is the band-pass before the
    envelope (around a structural resonance the defect impacts excite)."""

    balls: int = Field(ge=3, le=200, description="Number of rolling elements.")
    ball_diameter: float = Field(gt=0, description="Ball diameter `d`.", le=10_000)
    pitch_diameter: float = Field(gt=0, description="Pitch diameter `D` (larger than `d`).", le=10_000)
    contact_angle_deg: float = Field(0.0, ge=0, lt=90, description="Contact angle in degrees.")
    envelope_band_hz: list[Hz] = Field(
        min_length=2, max_length=2, description="Band-pass `[lo, hi]` in Hz before the envelope."
    )
    harmonics: int = Field(3, ge=1, le=10, description="Harmonics of each defect line summed.")

    @model_validator(mode="after")
    def _geometry(self) -> BearingParams:
        if self.ball_diameter >= self.pitch_diameter:
            raise ValueError("ball_diameter must be smaller than pitch_diameter")
        return self


def defect_multiples(
    balls: int, ball_diameter: float, pitch_diameter: float, contact_angle_deg: float = 0.0
) -> dict[str, float]:
    """BPFO, BPFI, BSF, FTF as multiples of the shaft speed (see the module docstring)."""
    r = ball_diameter / pitch_diameter * math.cos(math.radians(contact_angle_deg))
    return {
        "bpfo": balls / 2 * (1 - r),
        "bpfi": balls / 2 * (1 + r),
        "bsf": pitch_diameter / (2 * ball_diameter) * (1 - r * r),
        "ftf": 0.5 * (1 - r),
    }


class DspSpec(Protocol):
    """What :func:`build_dsp` reads from a task's config (read-only, so frozen configs qualify)."""

    @property
    def channels(self) -> list[str]: ...

    @property
    def window(self) -> int: ...

    @property
    def features(self) -> list[FeatureSet]: ...

    @property
    def bands_hz(self) -> list[float]: ...

    @property
    def log_bands(self) -> bool: ...

    @property
    def accel_unit(self) -> Literal["m/s2", "g"]: ...

    @property
    def velocity_band_hz(self) -> list[float]: ...

    @property
    def fusion(self) -> FusionParams | None: ...

    @property
    def shaft(self) -> ShaftParams | None: ...

    @property
    def bearing(self) -> BearingParams | None: ...


@dataclass(frozen=True)
class Dsp:
    """A task's feature extractor and the stream stage (or None) that fills its derived rows."""

    extractor: Any  # pipelines.features.FeatureExtractor
    stream: Any  # pipelines.fusion.StreamStage | None


def build_dsp(spec: DspSpec, rate_hz: float) -> Dsp:
    """The extractor and stream stages for a task; ``ValueError`` names what is inconsistent."""
    from pipelines.features import FeatureExtractor
    from pipelines.fusion import IMU, MAG, ORIENTATION_OUTPUTS, BandPass, Orientation, StreamStage

    channels = list(spec.channels)
    features = list(spec.features)
    derived: list[str] = []
    use_mag = False
    if spec.fusion is not None:
        missing = [c for c in IMU if c not in channels]
        if missing:
            raise ValueError(
                f"fusion needs the IMU channels {', '.join(IMU)} among channels (missing "
                f"{', '.join(missing)})"
            )
        use_mag = all(c in channels for c in MAG)
        derived = [o for o in ORIENTATION_OUTPUTS if o in spec.fusion.outputs]
        if "yaw" in derived and not use_mag:
            raise ValueError(
                "fusion output yaw needs a magnetometer (channels mx, my, mz); without one it drifts"
            )
    shaft = spec.shaft
    bearing_sets = [f for f in features if f in ("envelope", "lines")]
    if ("shaft" in features or bearing_sets) and shaft is None:
        raise ValueError("feature sets 'shaft', 'envelope' and 'lines' need a [shaft] table (hz or range_hz)")
    defects = None
    harmonics = 3
    if bearing_sets:
        if spec.bearing is None:
            raise ValueError(
                f"feature set '{bearing_sets[0]}' needs a [bearing] table (geometry and envelope_band_hz)"
            )
        b = spec.bearing
        defects = defect_multiples(b.balls, b.ball_diameter, b.pitch_diameter, b.contact_angle_deg)
        harmonics = b.harmonics
    fx = FeatureExtractor(
        channels,
        rate_hz,
        spec.window,
        features,
        spec.bands_hz,
        spec.log_bands,
        derived=derived,
        accel_unit=spec.accel_unit,
        velocity_band_hz=spec.velocity_band_hz,
        shaft_hz=shaft.hz if shaft else None,
        shaft_range_hz=shaft.range_hz if shaft else None,
        line_tol=shaft.line_tol if shaft else 0.02,
        defects=defects,
        harmonics=harmonics,
    )
    n_raw = len(channels)
    rows = {c: i for i, c in enumerate(channels)}
    rows.update({d: n_raw + j for j, d in enumerate(derived)})
    stages: list[Any] = []
    if spec.fusion is not None:
        stages.append(Orientation(rows, derived, rate_hz, spec.fusion.beta, spec.accel_unit, use_mag))
    if bearing_sets:
        assert spec.bearing is not None
        first = n_raw + len(derived)
        stages.append(
            BandPass(range(n_raw), range(first, first + n_raw), rate_hz, spec.bearing.envelope_band_hz)
        )
    stream = StreamStage(stages, fx.rows - n_raw) if stages else None
    return Dsp(fx, stream)
