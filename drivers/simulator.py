"""A physically plausible machine to learn from when there is no hardware.

One :class:`MachineWorld` is an electric motor with a rolling-element bearing, seen by an IMU
bolted to its housing and an environmental sensor next to it:

* **Operating state** (the ``activity`` task): ``off`` / ``idle`` (~10 Hz shaft) /
  ``running`` (~25 Hz, 1500 rpm), changing every 20-60 s with first-order spin-up/down.
* **Condition** (the ``maintenance`` task): ``normal`` most of the time, then a fault develops
  over ~30 s and persists for a few minutes until "repaired": ``imbalance`` (1x shaft
  component grows with speed squared), ``misalignment`` (2x radial and 1x axial), or
  ``bearing_outer`` (impacts at the outer-race defect frequency, BPFO = 3.5848 x shaft for an
  SKF 6205, each ringing a 380 Hz housing resonance).
* **Environment**: housing temperature follows load (and friction of a fault) with a 3-minute
  time constant; humidity and pressure drift slowly.

Everything is a deterministic function of the seed and of time since the world started, so
tests are reproducible. The simulator also knows the truth and can hand out ground-truth
labels (:class:`SimLabeler`) through the same path as labels arriving over MQTT.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from drivers.base import Block, SensorConfig, StrictModel, select_channels
from pipelines.units import STANDARD_GRAVITY

FAULTS = ("normal", "imbalance", "misalignment", "bearing_outer")

G = STANDARD_GRAVITY
BPFO_X_SHAFT = 3.5848  # SKF 6205 outer-race defect frequency / shaft frequency (CWRU table)
RESONANCE_HZ = 380.0
NOMINAL_HZ = 25.0
SPIN_TAU_S = 3.0
THERMAL_TAU_S = 180.0
AMBIENT_C = 22.0

_TARGET_HZ = {"off": 0.0, "idle": 10.0, "running": NOMINAL_HZ}
_NEXT_STATE = {
    "off": (("idle", 0.7), ("running", 0.3)),
    "idle": (("running", 0.6), ("off", 0.4)),
    "running": (("idle", 0.6), ("off", 0.4)),
}


_LABEL_TASKS: dict[Literal["state", "fault"], str] = {"state": "activity", "fault": "maintenance"}


class SimulatorConfig(StrictModel):
    """``[simulator]``: the simulated machine shared by every ``sim_*`` sensor."""

    seed: int = Field(
        1, description="Everything simulated is reproducible from this seed.", ge=0, le=2**32 - 1
    )
    state_min_s: float = Field(
        20.0, gt=0, description="Shortest operating state (off, idle, running).", le=86400
    )
    state_max_s: float = Field(60.0, gt=0, description="Longest operating state.", le=86400)
    fault_every_s: float = Field(
        150.0, gt=0, description="Mean healthy time between fault episodes.", le=366 * 86400
    )
    fault_duration_s: float = Field(180.0, gt=0, description="Duration of a fault episode.", le=366 * 86400)
    fault_onset_s: float = Field(30.0, gt=0, description="How long a fault takes to develop.", le=86400)
    label_every_s: float = Field(
        10.0, ge=0, description="Hand out the ground truth as labels this often (0: never).", le=86400
    )
    label_tasks: dict[Literal["state", "fault"], str] = Field(
        default_factory=lambda: dict(_LABEL_TASKS),
        description="Which task receives which truth (the operating state, the fault).",
    )


@dataclass(frozen=True, slots=True)
class _Segment:
    start: float
    end: float
    state: str
    target_hz: float
    f0: float  # shaft speed at start (Hz)
    angle0: float  # shaft angle at start (rad)


@dataclass(frozen=True, slots=True)
class _Episode:
    start: float
    end: float
    fault: str
    onset_s: float


class MachineWorld:
    """The simulated machine; times are seconds since the world's own start (``t0``)."""

    def __init__(self, cfg: SimulatorConfig, t0: float = 0.0) -> None:
        self.cfg = cfg
        self.t0 = t0
        self._rng = np.random.default_rng(cfg.seed)
        self._segments: list[_Segment] = []
        self._seg_starts: list[float] = []
        self._episodes: list[_Episode] = []
        self._ep_starts: list[float] = []
        first = _Segment(0.0, self._duration(), "running", NOMINAL_HZ, NOMINAL_HZ, 0.0)
        self._append_segment(first)
        self._next_fault_at = float(self._rng.uniform(0.5, 1.0) * cfg.fault_every_s)
        self._temp_c = AMBIENT_C + 22.0
        self._temp_t: float | None = None

    # -- schedules ---------------------------------------------------------------------------
    def _duration(self) -> float:
        return float(self._rng.uniform(self.cfg.state_min_s, max(self.cfg.state_min_s, self.cfg.state_max_s)))

    def _append_segment(self, seg: _Segment) -> None:
        self._segments.append(seg)
        self._seg_starts.append(seg.start)

    def _ensure(self, t: float) -> None:
        while self._segments[-1].end <= t:
            last = self._segments[-1]
            choices = _NEXT_STATE[last.state]
            u = self._rng.uniform()
            state = choices[0][0] if u < choices[0][1] else choices[1][0]
            target = _TARGET_HZ[state] * (float(self._rng.uniform(0.96, 1.04)) if state != "off" else 0.0)
            f_end, angle_end = _speed_angle(last, np.array([last.end]))
            nxt = _Segment(
                last.end, last.end + self._duration(), state, target, float(f_end[0]), float(angle_end[0])
            )
            self._append_segment(nxt)
        while self._next_fault_at <= t + self.cfg.fault_duration_s * 2:
            start = self._next_fault_at
            dur = float(self._rng.uniform(0.6, 1.4) * self.cfg.fault_duration_s)
            fault = FAULTS[1 + int(self._rng.integers(0, len(FAULTS) - 1))]
            self._episodes.append(_Episode(start, start + dur, fault, self.cfg.fault_onset_s))
            self._ep_starts.append(start)
            self._next_fault_at = start + dur + float(self._rng.uniform(0.5, 1.5) * self.cfg.fault_every_s)

    # -- truth ---------------------------------------------------------------------------------
    def truth(self, t: float) -> tuple[str, str, float]:
        """(operating state, condition, fault severity 0..1) at world time ``t``."""
        self._ensure(t)
        seg = self._segments[int(np.searchsorted(self._seg_starts, t, "right")) - 1]
        fault, sev = "normal", 0.0
        i = int(np.searchsorted(self._ep_starts, t, "right")) - 1
        if i >= 0:
            ep = self._episodes[i]
            if ep.start <= t < ep.end:
                fault, sev = ep.fault, min(1.0, (t - ep.start) / ep.onset_s)
        return seg.state, fault, sev

    def settled(self, t: float) -> bool:
        """Whether the shaft speed at ``t`` is within 5 % (0.5 Hz when stopping) of its target."""
        self._ensure(t)
        seg = self._segments[int(np.searchsorted(self._seg_starts, t, "right")) - 1]
        f, _ = _speed_angle(seg, np.array([t]))
        return abs(float(f[0]) - seg.target_hz) <= max(0.05 * seg.target_hz, 0.5)

    # -- signals -------------------------------------------------------------------------------
    def _severities(self, t: np.ndarray) -> dict[str, np.ndarray]:
        sev = {f: np.zeros_like(t) for f in FAULTS[1:]}
        idx = np.searchsorted(self._ep_starts, t, "right") - 1
        for i in np.unique(idx):
            if i < 0:
                continue
            ep = self._episodes[int(i)]
            m = idx == i
            tt = t[m]
            inside = (tt >= ep.start) & (tt < ep.end)
            sev[ep.fault][m] = np.where(inside, np.clip((tt - ep.start) / ep.onset_s, 0.0, 1.0), 0.0)
        return sev

    def imu(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Accelerometer (m/s^2) and gyroscope (rad/s) at world times ``t``: shape (n, 6)."""
        self._ensure(float(t[-1]))
        f = np.empty_like(t)
        angle = np.empty_like(t)
        idx = np.searchsorted(self._seg_starts, t, "right") - 1
        for i in np.unique(idx):
            m = idx == i
            f[m], angle[m] = _speed_angle(self._segments[int(i)], t[m])
        sev = self._severities(t)
        load = f / NOMINAL_HZ
        l2 = load * load
        a1 = (0.25 + 1.8 * sev["imbalance"]) * l2
        a2 = (0.06 + 1.2 * sev["misalignment"]) * l2
        axial = (0.05 + 0.9 * sev["misalignment"]) * load
        out = np.empty((t.shape[0], 6))
        out[:, 0] = a1 * np.cos(angle) + a2 * np.cos(2 * angle + 0.3)
        out[:, 1] = a1 * np.sin(angle) + a2 * np.sin(2 * angle + 0.3)
        out[:, 2] = G + axial * np.cos(angle + 1.1)
        # Outer-race defect: one impact per ball pass, each ringing the housing resonance.
        bpfo_cycles = BPFO_X_SHAFT * angle / (2 * math.pi)
        since = (bpfo_cycles - np.floor(bpfo_cycles)) / np.maximum(BPFO_X_SHAFT * f, 1e-3)
        ring = np.exp(-since / 0.004) * np.sin(2 * math.pi * RESONANCE_HZ * since)
        impacts = 3.0 * sev["bearing_outer"] * load * ring * (f > 0.5)
        out[:, 1] += impacts
        out[:, 0] += 0.4 * impacts
        out[:, 3] = 0.015 * load * np.sin(angle) + 0.002
        out[:, 4] = 0.015 * load * np.cos(angle) - 0.001
        out[:, 5] = 0.004 * a2
        sigma = np.array([0.03, 0.03, 0.03, 0.004, 0.004, 0.004])
        structural = np.array([0.12, 0.12, 0.06, 0.003, 0.003, 0.002])
        noise = rng.standard_normal(out.shape)
        out += noise * (sigma + structural * load[:, None])
        return out

    def env(self, t: float, rng: np.random.Generator) -> tuple[float, float, float]:
        """Temperature (degC), humidity (%RH), pressure (Pa) at world time ``t`` (call in time order)."""
        _state, fault, sev = self.truth(t)
        seg = self._segments[int(np.searchsorted(self._seg_starts, t, "right")) - 1]
        f, _ = _speed_angle(seg, np.array([t]))
        load = float(f[0]) / NOMINAL_HZ
        friction = {"normal": 0.0, "imbalance": 2.0, "misalignment": 4.0, "bearing_outer": 7.0}[fault] * sev
        target = AMBIENT_C + 24.0 * load**1.5 + friction * load
        if self._temp_t is not None and t > self._temp_t:
            self._temp_c += (target - self._temp_c) * (1.0 - math.exp(-(t - self._temp_t) / THERMAL_TAU_S))
        self._temp_t = t
        temp = self._temp_c + 0.05 * float(rng.standard_normal())
        hum = 45.0 + 5.0 * math.sin(2 * math.pi * t / 3600.0) - 0.25 * (self._temp_c - AMBIENT_C)
        hum += 0.3 * float(rng.standard_normal())
        pres = 101325.0 + 150.0 * math.sin(2 * math.pi * t / 7200.0) + 4.0 * float(rng.standard_normal())
        return temp, min(100.0, max(0.0, hum)), pres


def _speed_angle(seg: _Segment, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shaft speed (Hz) and angle (rad) inside a segment: first-order approach to the target."""
    dt = np.maximum(t - seg.start, 0.0)
    decay = np.exp(-dt / SPIN_TAU_S)
    f = seg.target_hz + (seg.f0 - seg.target_hz) * decay
    turns = seg.target_hz * dt + (seg.f0 - seg.target_hz) * SPIN_TAU_S * (1.0 - decay)
    return f, seg.angle0 + 2 * math.pi * turns


class _SimSensor:
    """Samples the world on a fixed schedule: sample k is at ``start + k / rate``."""

    CHANNELS: ClassVar[tuple[str, ...]] = ()
    #: the simulated values are plausible by construction: never degraded
    fault: str | None = None

    def __init__(
        self, world: MachineWorld, rate_hz: float, channels: Sequence[str] | None, seed: int
    ) -> None:
        self.world = world
        self.rate_hz = rate_hz
        self.channels = select_channels(self.CHANNELS, channels)
        self._cols = [self.CHANNELS.index(c) for c in self.channels]
        self._rng = np.random.default_rng(seed)
        self._k = 0
        self.name = ""
        self.stats: Counter[str] = Counter()  # nothing to count: no bus, no retries

    def _times(self, now: float) -> np.ndarray | None:
        n_due = math.floor((now - self.world.t0) * self.rate_hz) + 1
        if n_due <= self._k:
            return None
        k = np.arange(self._k, n_due, dtype=np.float64)
        self._k = n_due
        return k / self.rate_hz  # world time

    def close(self) -> None:
        """Nothing to release."""


class SimImu(_SimSensor):
    """Six-axis IMU on the motor housing."""

    CHANNELS: ClassVar[tuple[str, ...]] = ("ax", "ay", "az", "gx", "gy", "gz")

    def read_block(self, now: float) -> Block | None:
        tw = self._times(now)
        if tw is None:
            return None
        x = self.world.imu(tw, self._rng)[:, self._cols]
        return Block(self.name, self.channels, tw + self.world.t0, np.ascontiguousarray(x))


class SimEnv(_SimSensor):
    """Temperature / humidity / pressure sensor next to the motor."""

    CHANNELS: ClassVar[tuple[str, ...]] = ("temperature", "humidity", "pressure")

    def read_block(self, now: float) -> Block | None:
        tw = self._times(now)
        if tw is None:
            return None
        rows = np.array([self.world.env(float(t), self._rng) for t in tw])
        return Block(self.name, self.channels, tw + self.world.t0, np.ascontiguousarray(rows[:, self._cols]))


class SimImuConfig(SensorConfig):
    """``driver = "sim_imu"``: the simulated housing IMU."""

    driver: Literal["sim_imu"]
    rate_hz: float = Field(1000.0, gt=0, le=20000, description="Sample rate in Hz.")


class SimEnvConfig(SensorConfig):
    """``driver = "sim_env"``: the simulated environmental sensor."""

    driver: Literal["sim_env"]
    rate_hz: float = Field(1.0, gt=0, le=100, description="Sample rate in Hz.")


class SimLabeler:
    """Hands out ground truth now and then, as label payloads identical to MQTT ones.

    Every ``label_every_s`` it labels the stretch since its last label, split where the truth
    changes; it leaves out the seconds after a state change (the machine is still
    spinning up or down, until its speed is within 5 % of the target) and the onset of a fault,
    as a careful technician would.
    """

    def __init__(self, world: MachineWorld, cfg: SimulatorConfig, tasks: set[str]) -> None:
        self.world = world
        self.every = cfg.label_every_s
        self.tasks = {kind: task for kind, task in cfg.label_tasks.items() if task in tasks}
        self._last = 0.0  # world time labelled up to
        self._due = self.every

    def poll(self, now: float, wall_offset: float) -> list[tuple[str, bytes]]:
        """Labels due at monotonic ``now``; times in them are wall clock (``+ wall_offset``)."""
        if self.every <= 0 or not self.tasks:
            return []
        tw = now - self.world.t0
        if tw < self._due:
            return []
        self._due = tw + self.every
        lo, hi = self._last, tw - 1.0
        self._last = max(self._last, hi)
        out: list[tuple[str, bytes]] = []
        step = 0.5
        grid = np.arange(lo, hi, step)
        if grid.size == 0:
            return out
        truth = [self.world.truth(float(t)) for t in grid]
        for kind, task in self.tasks.items():
            labels: list[str | None] = []
            for t, (state, fault, sev) in zip(grid, truth, strict=True):
                settled = self.world.settled(float(t))
                if kind == "state":
                    labels.append(state if settled else None)
                elif state == "off" or not settled:
                    labels.append(None)
                elif fault == "normal" or sev >= 0.6:
                    labels.append(fault)
                else:
                    labels.append(None)
            for label, a, b in _runs(labels, grid, step):
                body = {
                    "label": label,
                    "from": round(a + self.world.t0 + wall_offset, 3),
                    "to": round(b + self.world.t0 + wall_offset, 3),
                }
                out.append((task, json.dumps(body).encode()))
        return out


def _runs(labels: list[str | None], grid: np.ndarray, step: float) -> list[tuple[str, float, float]]:
    runs: list[tuple[str, float, float]] = []
    i = 0
    while i < len(labels):
        j = i
        while j + 1 < len(labels) and labels[j + 1] == labels[i]:
            j += 1
        lab = labels[i]
        if lab is not None and j > i:
            runs.append((lab, float(grid[i]), float(grid[j]) + step * 0.999))
        i = j + 1
    return runs
