"""Configuration: one TOML file parsed into frozen, typed models and validated once.

Every problem is reported at once, each with its key path (``tasks.activity.window``), what
was expected and what was found; unknown keys are errors. Relative paths in the file are
relative to the file's own directory.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError
from pydantic_core import ErrorDetails

import drivers
import drivers.i2c
from drivers.base import Driver, StrictModel
from drivers.bosch import Bme280Config, Bmp280Config
from drivers.invensense import Mpu6050Config, Mpu6500Config
from drivers.replay import FileSensorConfig
from drivers.sensirion import Sht3xConfig, Sht4xConfig
from drivers.simulator import SimEnvConfig, SimImuConfig, SimulatorConfig
from drivers.st import Lsm6ds3Config, Lsm6dsoxConfig
from edged.configfile import DEFAULT_PATHS as DEFAULT_PATHS  # re-exported: the file's own module
from edged.configfile import MAX_CONFIG_BYTES as MAX_CONFIG_BYTES
from edged.configfile import ConfigError as ConfigError
from edged.configfile import find_config as find_config
from edged.configfile import read_raw as read_raw
from pipelines.dsp import BearingParams, FeatureSet, FusionParams, Hz, ShaftParams
from pipelines.learners import AnomalyParams, ClassifierParams, HoeffdingTreeParams, LifecycleParams

MAX_WINDOW_S = 7 * 86400  # a window that takes longer to fill is a mistake (no prediction for a week)
NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # also a valid, wildcard-free MQTT topic level


class DeviceConfig(StrictModel):
    """``[device]``: who this gateway is."""

    id: str = Field(
        pattern=NAME,
        description="Device identity and MQTT topic prefix `edged/<id>`: letters, digits, `_` and `-`, "
        "up to 64 characters (a valid, wildcard-free topic level).",
    )


class TlsConfig(StrictModel):
    """``[mqtt.tls]``: TLS to the broker; the table's presence turns TLS on (edged/security.py)."""

    ca_file: str | None = Field(
        None, description="CA that signed the broker's certificate; unset: the system trust store."
    )
    cert_file: str | None = Field(
        None, description="Client certificate, if the broker requires one; unset: none."
    )
    key_file: str | None = Field(
        None, description="Key of the client certificate; unset: the systemd credential `edged-mqtt-key`."
    )
    verify_hostname: bool = Field(
        True,
        description="The broker's certificate must name `mqtt.host`; `false` is logged as a warning "
        "at every start.",
    )


class MqttConfig(StrictModel):
    """``[mqtt]``: the broker and the delivery settings (edged/mqtt.py)."""

    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds.")
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="MQTT client id; unset: `edged-<device id>`. It must stay fixed for the "
        "persistent session.",
    )
    username: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Broker user name; the gateway ACL expects the device id.",
    )
    password_file: str | None = Field(
        None,
        description="File holding the broker password; unset: the systemd credential "
        "`edged-mqtt-password`. A password in the config itself is an unknown key.",
    )
    tls: TlsConfig | None = Field(None, description="`[mqtt.tls]`: present turns TLS on.")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    session_expiry_s: int = Field(
        7 * 86400,
        ge=0,
        le=0xFFFFFFFF,
        description="How long the broker keeps the gateway's session (label subscription, labels "
        "queued while it is away).",
    )
    max_inflight: int = Field(
        20, ge=1, le=1000, description="Unacknowledged QoS 1 messages in flight at a time."
    )
    reconnect_min_s: float = Field(
        1.0, gt=0, description="First reconnect delay (exponential backoff).", le=3600
    )
    reconnect_max_s: float = Field(
        60.0, gt=0, description="Reconnect delay cap; at least `reconnect_min_s`.", le=86400
    )
    label_max_bytes: int = Field(
        1024, ge=64, le=65536, description="Larger incoming label payloads are rejected."
    )
    labels_per_s: float = Field(
        50.0,
        gt=0,
        description="Incoming label messages above this rate, per publisher (MQTT v5 `source`; 3.1.1: one for all), are rejected.",
        le=1_000_000,
    )
    label_sources: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None,
        max_length=64,
        description="Accept labels only from these sources (MQTT v5 user property `source` of the label "
        "message); unset: from any publisher the broker lets through (see docs/security.md).",
    )


class SpoolConfig(StrictModel):
    """``[spool]``: the disk-backed outgoing queue (``<state dir>/spool.db``), see edged/spool.py."""

    max_messages: int = Field(100_000, ge=10, description="Messages the spool holds at most.", le=10_000_000)
    max_mb: float = Field(64.0, gt=0, description="Payload megabytes the spool holds at most.", le=65536)
    max_age_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="Messages older than this expire; measured in service time, so wall-clock "
        "steps neither expire nor keep them.",
        le=366 * 86400,
    )
    sync: Literal["normal", "full"] = Field(
        "normal",
        description="`full` fsyncs every message (power-cut proof, more flash wear); `normal` "
        "survives any process crash, a power cut may lose the last seconds.",
    )
    memory_max: int = Field(
        1000,
        ge=10,
        description="Alerts and summaries held in memory while the state disk cannot be written.",
        le=1_000_000,
    )


class OpsConfig(StrictModel):
    """``[ops]``: the local status view and disk watch (edged/ops.py)."""

    status_file: str | None = Field(
        None,
        description="The status view `edged status` reads; unset: `<state.dir>/status.json` "
        "(the systemd unit uses `/run/edged/status.json`).",
    )
    status_interval_s: float = Field(
        5.0, ge=0.1, description="How often the status file is written.", le=3600
    )
    status_republish_s: float = Field(
        120.0,
        gt=0,
        le=86400,
        description="The retained `<prefix>/status` is republished when a sensor's or task's health "
        "changes, and at least this often.",
    )
    no_data_s: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="A sensor that delivers no samples (or a task that completes no window, plus one "
        "window's length) for this long is `no_data`: unhealthy.",
    )
    learning_stall_s: float = Field(
        600.0,
        gt=0,
        le=7 * 86400,
        description="A task whose labels keep arriving while its model learns nothing for this long "
        "is `learning_stalled`: unhealthy.",
    )
    min_free_mb: float = Field(
        32.0,
        ge=0,
        description="A `state` alert `disk_low` when the state filesystem has less free space "
        "(`disk_ok` when it recovers).",
        le=1_000_000,
    )


SPARKPLUG_ID = r"^[^/+#]{1,64}$"  # a Sparkplug id is one topic level: no '/', '+' or '#'


class SparkplugConfig(StrictModel):
    """``[sparkplug]``: a Sparkplug B 3.0 edge node beside the JSON topics (edged/sparkplug/)."""

    group_id: str = Field(
        pattern=SPARKPLUG_ID,
        description="Sparkplug group id: the `<group>` of `spBv1.0/<group>/<verb>/<edge node>[/<device>]`.",
    )
    edge_node_id: str | None = Field(
        None, pattern=SPARKPLUG_ID, description="Sparkplug edge node id; unset: the device id."
    )
    primary_host_id: str | None = Field(
        None,
        pattern=SPARKPLUG_ID,
        description="Primary host application id: when set, nothing is published until "
        "`spBv1.0/STATE/<id>` says the host is online (Sparkplug 3.0 JSON payload).",
    )


class MetricsConfig(StrictModel):
    """``[metrics]``: a Prometheus endpoint (edged/metrics.py); opt-in."""

    bind: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address the HTTP endpoint listens on; the default keeps it local "
        "(scrape through a reverse proxy or SSH tunnel, or bind an internal address).",
    )
    port: int = Field(
        9464, ge=0, le=65535, description="Port of `http://<bind>:<port>/metrics` (0: any free port)."
    )


class StateConfig(StrictModel):
    """``[state]``: where models, seq counters and the numba cache live (edged/state.py)."""

    dir: str = Field(
        min_length=1,
        description="State directory: models, spool, seq counters, numba cache; created with mode 0700.",
    )
    checkpoint_interval_s: float = Field(
        300.0, ge=1, description="Period of checkpoints (one is also written at stop).", le=86400
    )
    keep: int = Field(5, ge=1, le=1000, description="Model versions kept per task (what rollback can reach).")
    key_file: str | None = Field(
        None,
        description="HMAC key of the checkpoints; unset: the systemd credential `edged-state-key`, "
        "else `<state.dir>/state.key`, generated on first start only while no checkpoint exists (a missing key "
        "with checkpoints is an error: restore it, or `edged keys init --discard-models`).",
    )


class LogConfig(StrictModel):
    """``[log]``: structlog output on stderr."""

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")
    format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="`auto`: JSON lines when stderr is not a terminal (journald), readable lines on "
        "a terminal; `json` or `console` forces one.",
    )


class NoiseConfig(StrictModel):
    """``[summary.noise]``: Laplace noise on channel means and standard deviations (edged/sanitize.py)."""

    epsilon: float = Field(
        gt=0,
        le=100,
        description="Privacy budget per channel per summary, split between mean and std.",
    )
    bounds: dict[
        str, Annotated[list[Annotated[float, Field(ge=-1e12, le=1e12)]], Field(min_length=2, max_length=2)]
    ] = Field(
        description="Channel -> `[lo, hi]`: samples are clipped to it before aggregation; every "
        "summarised channel needs one."
    )


class SummaryConfig(StrictModel):
    """``[summary]``: the periodic sanitized summary (edged/sanitize.py)."""

    interval_s: float = Field(60.0, ge=1, description="Period of `summary` messages.", le=86400)
    round_step: dict[str, Annotated[float, Field(gt=0, le=1e12)]] = Field(
        {},
        description="Rounding step per channel (or `default`), e.g. `{default = 0.01, temperature = 0.5}`.",
    )
    min_count: int = Field(
        10,
        ge=1,
        description="Aggregates over fewer samples (channels) or windows (anomaly quantiles) are suppressed.",
        le=1_000_000_000,
    )
    noise: NoiseConfig | None = Field(
        None, description="`[summary.noise]`: epsilon-differentially private channel aggregates."
    )
    pseudonymize: bool = Field(False, description="`device` in summaries becomes a keyed hash.")
    pseudonym_key_file: str | None = Field(
        None,
        description="Key of the pseudonym; unset: the credential `edged-pseudonym-key`, else derived "
        "from the state key.",
    )


# The static type of a sensor table. A type checker cannot build a Union from the runtime tuple
# drivers.CONFIGS, so the union is spelled out here; tests/test_config.py keeps the two in step.
AnySensorConfig = (
    SimImuConfig
    | SimEnvConfig
    | FileSensorConfig
    | Mpu6050Config
    | Mpu6500Config
    | Lsm6dsoxConfig
    | Lsm6ds3Config
    | Bme280Config
    | Bmp280Config
    | Sht3xConfig
    | Sht4xConfig
)
SensorUnion = Annotated[AnySensorConfig, Field(discriminator="driver")]


class TaskConfig(StrictModel):
    """``[tasks.<name>]``: one learning task: its windows, features and models."""

    channels: list[str] = Field(min_length=1, description="Windowed channels, all from one sensor.")
    context: list[str] = Field(
        [],
        description="Slow channels (e.g. `temperature`) added as their value at the window end (`ctx.<c>`).",
    )
    window: int = Field(ge=8, le=1 << 20, description="Window length in samples.")
    hop: int = Field(ge=1, description="Hop between window starts in samples; at most `window`.", le=1 << 20)
    features: list[FeatureSet] = Field(
        ["stats", "bands"], min_length=1, description="Feature sets computed per window (see Features)."
    )
    bands_hz: list[Hz] = Field([], description="Band edges in Hz for `bands` (at least two, below Nyquist).")
    log_bands: bool = Field(
        True, description="log10 of power features: band powers, shaft and envelope line energies."
    )
    accel_unit: Literal["m/s2", "g"] = Field(
        "m/s2", description="Unit of the acceleration channels: for velocity in mm/s and gravity in fusion."
    )
    velocity_band_hz: list[Hz] = Field(
        [10.0, 1000.0],
        min_length=2,
        max_length=2,
        description="Band of the `velocity` set (ISO 10816/20816), clipped to Nyquist.",
    )
    fusion: FusionParams | None = Field(
        None,
        description="`[tasks.<name>.fusion]`: orientation from `ax`..`gz` as derived channels "
        "(`roll`, `pitch`, `yaw`, `lax`, `lay`, `laz`).",
    )
    shaft: ShaftParams | None = Field(
        None, description="`[tasks.<name>.shaft]`: shaft speed, for the `shaft` and `envelope` sets."
    )
    bearing: BearingParams | None = Field(
        None, description="`[tasks.<name>.bearing]`: bearing geometry, for the `envelope` set."
    )
    context_rate_s: float | None = Field(
        None,
        gt=0,
        description="Also add each context channel's rate of change per second over this span "
        "(`ctx.<c>.rate`).",
        le=86400,
    )
    classifier: ClassifierParams = Field(
        HoeffdingTreeParams(model="hoeffding_tree"),
        description="`[tasks.<name>.classifier]`: the classifier, one of the allow-listed models.",
    )
    anomaly: AnomalyParams | None = Field(
        None,
        description="`[tasks.<name>.anomaly]`: an anomaly detector that adds a score to every prediction.",
    )
    classes: list[str] = Field([], description="Allowed class names; other labels are rejected. Empty: any.")
    label_horizon_s: float = Field(
        600.0, gt=0, description="How long a predicted window waits for its label.", le=86400
    )
    label_max_windows: int = Field(
        64, ge=1, le=100_000, description="Windows one MQTT label message may teach (docs/security.md)."
    )
    label_max_span_s: float = Field(
        30.0, gt=0, le=86400, description="Longest range (`to` - `from`) an MQTT label message may span."
    )
    recent: int = Field(200, ge=10, description='Windows in the "recent" metrics.', le=100_000)
    lifecycle: LifecycleParams = Field(
        LifecycleParams(),
        description="`[tasks.<name>.lifecycle]`: drift detection and champion/challenger.",
    )


class Config(StrictModel):
    """The whole config file."""

    device: DeviceConfig = Field(description="`[device]`.")
    mqtt: MqttConfig = Field(MqttConfig(), description="`[mqtt]`.")
    state: StateConfig = Field(description="`[state]`.")
    spool: SpoolConfig = Field(SpoolConfig(), description="`[spool]`.")
    ops: OpsConfig = Field(OpsConfig(), description="`[ops]`.")
    log: LogConfig = Field(LogConfig(), description="`[log]`.")
    sparkplug: SparkplugConfig | None = Field(
        None, description="`[sparkplug]`: present turns the Sparkplug B edge node on."
    )
    metrics: MetricsConfig | None = Field(
        None, description="`[metrics]`: present turns the Prometheus endpoint on."
    )
    summary: SummaryConfig = Field(SummaryConfig(), description="`[summary]`.")
    simulator: SimulatorConfig = Field(
        SimulatorConfig(),
        description='`[simulator]`: the simulated machine of `sim_*` sensors and `bus = "sim"` chips.',
    )
    sensors: dict[Annotated[str, Field(pattern=NAME)], SensorUnion] = Field(
        min_length=1, description="`[sensors.<name>]`: one table per sensor, by `driver`."
    )
    tasks: dict[Annotated[str, Field(pattern=NAME)], TaskConfig] = Field(
        min_length=1, description="`[tasks.<name>]`: one table per learning task."
    )

    # -- derived views -----------------------------------------------------------------------------
    def sensor_channels(self) -> dict[str, tuple[str, ...]]:
        """Channels each sensor provides, after its ``channels`` selection."""
        out = {}
        for name, s in self.sensors.items():
            out[name] = tuple(s.channels) if s.channels is not None else driver_channels(s.driver)
        return out

    def channel_owner(self) -> dict[str, str]:
        """Channel name -> sensor name."""
        return {c: name for name, chans in self.sensor_channels().items() for c in chans}


def driver_channels(driver: str) -> tuple[str, ...]:
    """Channels a driver provides (empty for ``file``: the recording decides)."""
    cls: type[Driver] = drivers.REGISTRY[driver]
    return cls.CHANNELS


def _where(loc: tuple[Any, ...], raw: Any) -> str:
    """Dotted key path for a pydantic error location, without discriminator tags."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int) and isinstance(node, list):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
            node = node[item] if item < len(node) else None
        elif isinstance(node, dict) and item in node:
            parts.append(str(item))
            node = node[item]
        elif isinstance(node, dict) and item in {node.get("driver"), node.get("model")}:
            continue  # the tag pydantic inserts for a tagged union
        else:
            parts.append(str(item))
            node = None
    return ".".join(parts) or "(top level)"


def _describe(err: ErrorDetails, raw: Any) -> str:
    where = _where(tuple(err["loc"]), raw)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key"
    if kind == "missing":
        return f"{where}: required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    got = err.get("input")
    if isinstance(got, dict | list):
        return f"{where}: {msg}"
    return f"{where}: {msg} (got {got!r})"


def _state_dir_problem(path: str) -> str | None:
    """Why ``path`` cannot be a state directory (a pseudo filesystem, a file), or None."""
    p = Path(path)
    real = p.resolve()
    for pseudo in ("/proc", "/sys", "/dev"):
        if real == Path(pseudo) or Path(pseudo) in real.parents:
            return f"state.dir: {path} is under {pseudo}, a pseudo filesystem, not storage"
    for q in (real, *real.parents):
        if q.exists():
            if not q.is_dir():
                return f"state.dir: {q} is not a directory"
            break
    return None


def _semantic_problems(cfg: Config, dsp: bool = True) -> list[str]:
    """Cross-key checks that a schema cannot express."""
    problems: list[str] = []
    owners: dict[str, str] = {}
    state_problem = _state_dir_problem(cfg.state.dir)
    if state_problem:
        problems.append(state_problem)
    for name, s in cfg.sensors.items():
        provided = driver_channels(s.driver)
        for i, ch in enumerate(s.channels or ()):
            if provided and ch not in provided:
                problems.append(
                    f"sensors.{name}.channels[{i}]: driver {s.driver!r} has no channel {ch!r} "
                    f"(it has {', '.join(provided)})"
                )
        for ch in cfg.sensor_channels()[name]:
            if ch in owners:
                problems.append(
                    f"sensors.{name}: channel {ch!r} is also provided by sensor {owners[ch]!r}; "
                    "select distinct channels with `channels = [...]`"
                )
            owners.setdefault(ch, name)
    for tname, t in cfg.tasks.items():
        where = f"tasks.{tname}"
        sources = set()
        for i, ch in enumerate(t.channels):
            if ch not in owners:
                problems.append(
                    f"{where}.channels[{i}]: no sensor provides channel {ch!r} "
                    f"(known: {', '.join(sorted(owners)) or 'none'})"
                )
            else:
                sources.add(owners[ch])
        if len(sources) > 1:
            problems.append(
                f"{where}.channels: windowed channels must come from one sensor, "
                f"got {', '.join(sorted(sources))}; put the others in `context`"
            )
        for i, ch in enumerate(t.context):
            if ch not in owners:
                problems.append(f"{where}.context[{i}]: no sensor provides channel {ch!r}")
            if ch in t.channels:
                problems.append(f"{where}.context[{i}]: {ch!r} is already a windowed channel")
        if t.hop > t.window:
            problems.append(f"{where}.hop: must not exceed window ({t.window}), got {t.hop}")
        if len(set(t.channels)) != len(t.channels):
            problems.append(f"{where}.channels: a channel is listed twice")
        if len(sources) == 1:
            rate = cfg.sensors[next(iter(sources))].rate_hz
            if rate is not None and t.window / rate > MAX_WINDOW_S:
                problems.append(
                    f"{where}.window: {t.window} samples at {rate:g} Hz take {t.window / rate:.0f} s to fill, "
                    f"more than {MAX_WINDOW_S} s (a week): the task would not predict for that long"
                )
        if len(sources) == 1 and dsp:
            rate = cfg.sensors[sources.pop()].rate_hz
            if rate is None:
                needs_rate = [f for f in t.features if f != "stats"]
                if needs_rate or t.fusion is not None or t.context_rate_s is not None:
                    problems.append(
                        f"{where}: {', '.join(needs_rate) or 'fusion / context_rate_s'} need(s) the "
                        "sensor's rate_hz; without one (rate taken from the recording) only 'stats' features"
                    )
                rate = 1.0
            try:
                from pipelines.dsp import build_dsp

                build_dsp(t, rate)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
    problems += drivers.i2c.config_problems(cfg.sensors)
    simulated = any(
        s.driver.startswith("sim_") or getattr(s, "bus", None) == "sim" for s in cfg.sensors.values()
    )
    for kind, task in cfg.simulator.label_tasks.items():
        if task not in cfg.tasks and simulated:
            problems.append(f"simulator.label_tasks.{kind}: no task named {task!r}")
    channels = set(owners)
    for ch in cfg.summary.round_step:
        if ch != "default" and ch not in channels:
            problems.append(f"summary.round_step.{ch}: no sensor provides this channel (or use 'default')")
    if cfg.summary.noise is not None:
        bounds = cfg.summary.noise.bounds
        missing = sorted(channels - set(bounds))
        if missing:
            problems.append(
                f"summary.noise.bounds: every summarised channel needs [lo, hi] for the noise to "
                f"mean anything; missing {', '.join(missing)}"
            )
        for ch, (lo, hi) in bounds.items():
            if ch not in channels:
                problems.append(f"summary.noise.bounds.{ch}: no sensor provides this channel")
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                problems.append(f"summary.noise.bounds.{ch}: need finite lo < hi, got [{lo}, {hi}]")
    if cfg.mqtt.reconnect_max_s < cfg.mqtt.reconnect_min_s:
        problems.append("mqtt.reconnect_max_s: must be >= mqtt.reconnect_min_s")
    problems += _optional_problems(cfg)
    return problems


def _optional_problems(cfg: Config) -> list[str]:
    """Sections that need an optional extra: the package must be installed (never pip-installed
    at runtime), and Sparkplug device ids (sensor and task names) must not collide."""
    problems: list[str] = []
    if cfg.sparkplug is not None:
        if importlib.util.find_spec("google.protobuf") is None:
            problems.append(
                "sparkplug: the Sparkplug B edge node needs the protobuf package, which is not "
                "installed: pip install 'edged[sparkplug]' (or remove [sparkplug])"
            )
        for name in sorted(set(cfg.sensors) & set(cfg.tasks)):
            problems.append(
                f"sparkplug: {name!r} names both a sensor and a task; each is a Sparkplug device, "
                "so the names must differ"
            )
    if cfg.metrics is not None and importlib.util.find_spec("prometheus_client") is None:
        problems.append(
            "metrics: the Prometheus endpoint needs the prometheus-client package, which is not "
            "installed: pip install 'edged[metrics]' (or remove [metrics])"
        )
    return problems


def parse(
    raw: dict[str, Any], source: str = "<config>", base_dir: Path | None = None, dsp: bool = True
) -> Config:
    """Validate a parsed TOML document; raises :class:`ConfigError` listing every problem.

    ``dsp=False`` skips building each task's feature extractor to check it (which imports the
    numba kernels): for commands that only read the state the service left (``status``,
    ``model show``/``history``), so they answer without loading numba."""
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(e, raw) for e in exc.errors()]) from None
    if base_dir is not None:
        cfg = _resolve_paths(cfg, base_dir)
    problems = _semantic_problems(cfg, dsp)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def recording_problems(cfg: Config) -> list[str]:
    """A ``file`` sensor's recording must exist and have the sensor's channels: checked by
    ``run`` and ``check``, which play it, not by :func:`parse`, so that a config used only for
    ``replay`` (which reads the files on its command line) need not point at one."""
    problems: list[str] = []
    for name, s in cfg.sensors.items():
        if s.driver != "file":
            continue
        try:
            cols, _ = drivers.replay.read_header(Path(s.path))
        except (OSError, drivers.replay.RecordingError) as exc:
            problems.append(f"sensors.{name}.path: {exc}")
            continue
        for i, ch in enumerate(s.channels or ()):
            if ch not in cols:
                problems.append(f"sensors.{name}.channels[{i}]: the file has no column {ch!r}")
    return problems


def _resolve_paths(cfg: Config, base_dir: Path) -> Config:
    """Relative paths in the file are relative to the file's directory."""

    def res(p: str) -> str:
        return str((base_dir / os.path.expanduser(p)).resolve())

    state_updates: dict[str, Any] = {"dir": res(cfg.state.dir)}
    if cfg.state.key_file is not None:
        state_updates["key_file"] = res(cfg.state.key_file)
    sensors = {
        n: (s.model_copy(update={"path": res(s.path)}) if s.driver == "file" else s)
        for n, s in cfg.sensors.items()
    }
    ops_updates = {"status_file": res(cfg.ops.status_file)} if cfg.ops.status_file is not None else {}
    summary_updates: dict[str, Any] = {}
    if cfg.summary.pseudonym_key_file is not None:
        summary_updates["pseudonym_key_file"] = res(cfg.summary.pseudonym_key_file)
    mqtt_updates: dict[str, Any] = {}
    if cfg.mqtt.password_file is not None:
        mqtt_updates["password_file"] = res(cfg.mqtt.password_file)
    if cfg.mqtt.tls is not None:
        tls = cfg.mqtt.tls
        mqtt_updates["tls"] = tls.model_copy(
            update={
                k: res(v) for k in ("ca_file", "cert_file", "key_file") if (v := getattr(tls, k)) is not None
            }
        )
    return cfg.model_copy(
        update={
            "state": cfg.state.model_copy(update=state_updates),
            "sensors": sensors,
            "mqtt": cfg.mqtt.model_copy(update=mqtt_updates),
            "summary": cfg.summary.model_copy(update=summary_updates),
            "ops": cfg.ops.model_copy(update=ops_updates),
        }
    )


def load(path: str | None = None) -> tuple[Config, Path]:
    """Read, parse and validate the config file."""
    raw, p = read_raw(path)
    return parse(raw, str(p), p.resolve().parent), p
