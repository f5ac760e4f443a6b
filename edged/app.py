"""Composition root: the only place that turns config into objects and opens I/O.

``build_daemon(cfg)`` wires config -> drivers -> task pipelines -> engine -> publisher;
``build_engine`` is shared with ``replay`` so both run the same pipelines.
"""

from __future__ import annotations

import gc
import os
import queue
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import structlog

import drivers
from drivers.base import Block
from drivers.i2c import I2cSensorConfig
from drivers.replay import FileSensorConfig
from drivers.simulator import MachineWorld, SimLabeler
from edged import __version__, security
from edged.config import AnySensorConfig, Config, ConfigError, TaskConfig
from edged.engine import Engine, Sink
from edged.health import HealthModel
from edged.lineage import NOMINAL_RATE_HZ, StateLock, fingerprint, restore_models, task_rate
from edged.mqtt import LabelInbox, Publisher
from edged.ops import Ops, status_path
from edged.runtime import Daemon, SensorRunner, ServiceStatus, Timers, wall_offset
from edged.sanitize import SummaryPolicy, pseudonym_key
from edged.seq import SeqStore, SpoolSeq
from edged.spool import Spool, SpoolLimits
from edged.state import ModelStore, ensure_dir, load_key
from pipelines.task import LabelLimits, TaskPipeline

log = structlog.get_logger("edged.app")


def new_model(name: str, tcfg: TaskConfig, rate_hz: float | None) -> Any:
    """A fresh model for a task, stamped with the task's fingerprint."""
    from pipelines.learners import TaskModel

    return TaskModel(
        name,
        tcfg.classifier,
        tcfg.anomaly,
        recent=tcfg.recent,
        fingerprint=fingerprint(tcfg, rate_hz),
        lifecycle=tcfg.lifecycle,
    )


def build_tasks(cfg: Config, models: dict[str, Any] | None = None) -> dict[str, TaskPipeline]:
    """A TaskPipeline per configured task (with restored models where given)."""
    from pipelines.dsp import build_dsp
    from pipelines.windowing import Windower

    out = {}
    for name, t in cfg.tasks.items():
        rate = task_rate(cfg, t)
        dsp = build_dsp(t, rate or NOMINAL_RATE_HZ)
        windower = Windower(dsp.extractor.rows + len(t.context), t.window, t.hop, derive=dsp.stream)
        model = (models or {}).get(name) or new_model(name, t, rate)
        out[name] = TaskPipeline(
            name,
            model,
            dsp.extractor,
            windower,
            t.context,
            t.label_horizon_s,
            t.context_rate_s,
            limits=LabelLimits(max_windows=t.label_max_windows, max_span_s=t.label_max_span_s),
        )
    return out


def build_engine(
    cfg: Config,
    sink: Sink,
    seq: SeqStore,
    wall: Callable[[float], float],
    tasks: dict[str, TaskPipeline] | None = None,
) -> Engine:
    """The engine over ``tasks`` (default: fresh models for every configured task)."""
    allowed = {n: set(t.classes) for n, t in cfg.tasks.items() if t.classes}
    clip = (
        {k: (v[0], v[1]) for k, v in cfg.summary.noise.bounds.items()}
        if cfg.summary.noise is not None
        else None
    )
    return Engine(
        cfg.device.id,
        tasks if tasks is not None else build_tasks(cfg),
        sink,
        seq,
        wall,
        label_max_bytes=cfg.mqtt.label_max_bytes,
        labels_per_s=cfg.mqtt.labels_per_s,
        label_sources=set(cfg.mqtt.label_sources) if cfg.mqtt.label_sources is not None else None,
        allowed_classes=allowed,
        clip=clip,
    )


def summary_policy(cfg: Config, state_key: bytes) -> SummaryPolicy:
    """The configured summary sanitisation (edged/sanitize.py)."""
    key = None
    if cfg.summary.pseudonymize:
        try:
            key = pseudonym_key(cfg.summary, state_key, os.environ.get("CREDENTIALS_DIRECTORY"))
        except OSError as exc:
            raise ConfigError(
                str(cfg.summary.pseudonym_key_file),
                [f"summary.pseudonym_key_file: cannot read: {exc.strerror or exc}"],
            ) from None
    return SummaryPolicy(cfg.summary, key)


def warm_up(cfg: Config) -> None:
    """Run every task's whole pipeline once on throwaway copies, before sensor threads start.

    A first call compiles numba kernels (or loads them from the cache) and imports river's
    lazily loaded code while holding the GIL, for up to seconds: longer than a 1 kHz IMU's FIFO
    lasts. Doing it here keeps that stall out of acquisition.

    Logs ``kernels_compiling`` before (``first_start``: no compiled kernels cached yet, the slow
    case of ~10 s on a Pi) and ``kernels_ready`` with the seconds it took, so a first start does
    not look hung."""
    # no cache unless the launcher set one (edged.jitcache): then every start compiles
    kernel_cache = os.environ.get("NUMBA_CACHE_DIR") if os.environ.get("EDGED_NUMBA_CACHE") != "0" else None
    first = kernel_cache is None or not Path(kernel_cache).is_dir() or not any(Path(kernel_cache).iterdir())
    log.info(
        "kernels_compiling",
        first_start=first,
        kernel_cache=kernel_cache,
        note="compiling numba kernels (cached only where the launcher sets NUMBA_CACHE_DIR)"
        if first
        else "loading cached kernels",
    )
    started = time.monotonic()
    rng = np.random.default_rng(0)
    for task in build_tasks(cfg).values():
        chans = task.channels + task.context
        n = task.windower.window + task.windower.hop
        t = np.arange(n) / (task_rate(cfg, cfg.tasks[task.name]) or NOMINAL_RATE_HZ)
        x = rng.standard_normal((n, len(chans)))
        cols = task.bind(tuple(chans))
        assert cols is not None
        for pred in task.process(t, x, cols, None, lambda v: v, {}):
            task.apply_label("warm-up", pred.ts_start, pred.ts, False, 0.0)
    log.info("kernels_ready", first_start=first, seconds=round(time.monotonic() - started, 2))


def open_spool(cfg: Config, state_dir: Path, name: str = "spool.db") -> Spool:
    """The outgoing spool in the state directory, with the configured bounds."""
    s = cfg.spool
    limits = SpoolLimits(
        max_messages=s.max_messages,
        max_bytes=int(s.max_mb * (1 << 20)),
        max_age_s=s.max_age_s,
        memory_max=s.memory_max,
        sync=s.sync,
    )
    return Spool(state_dir / name, limits)


def build_ops(cfg: Config, state_dir: Path) -> Ops:
    """Status file, disk watch and health for the watchdog."""
    return Ops(status_path(cfg), state_dir, int(cfg.ops.min_free_mb * 1e6), cfg.ops.status_interval_s)


# -- sensors --------------------------------------------------------------------------------------------
def simulated(s: AnySensorConfig) -> bool:
    """Whether a sensor reads the simulated machine: a ``sim_*`` driver or a chip on ``bus = "sim"``."""
    return s.driver.startswith("sim_") or (isinstance(s, I2cSensorConfig) and s.bus == "sim")


def open_sim_bus(cfg: Config, world: MachineWorld | None) -> Any:
    """The emulated I2C bus (``bus = "sim"``): one emulated chip per such sensor, fed by ``world``."""
    if world is None or not any(
        isinstance(s, I2cSensorConfig) and s.bus == "sim" for s in cfg.sensors.values()
    ):
        return None
    from drivers.emulated import sim_bus

    return sim_bus(dict(cfg.sensors), world, seed=cfg.simulator.seed)


def open_bus(number: int) -> drivers.SMBusLike:
    """``/dev/i2c-N`` (opened on first use; one per sensor so the kernel arbitrates)."""
    from drivers.i2c import LinuxBus

    return LinuxBus(number)


def open_scan_bus(cfg: Config, bus: str) -> Any:
    """A bus for ``edged sensors scan``: ``"sim"`` (the emulated chips of the config) or ``N``."""
    if bus == "sim":
        return open_sim_bus(cfg, MachineWorld(cfg.simulator, time.monotonic()))
    return open_bus(int(bus))


def build_driver(
    cfg: Config, index: int, s: AnySensorConfig, world: MachineWorld | None, sim: drivers.SMBusLike | None
) -> drivers.Driver:
    """The driver of one configured sensor."""
    if isinstance(s, I2cSensorConfig):  # a chip on its bus: the emulated one for ``bus = "sim"``
        bus = sim if s.bus == "sim" else open_bus(s.bus)
        return drivers.REGISTRY[s.driver](bus, s.address, bus_name=str(s.bus), **s.driver_kwargs())
    if isinstance(s, FileSensorConfig):
        return drivers.REGISTRY[s.driver](s.path, s.channels, loop=s.loop)
    return drivers.REGISTRY[s.driver](world, s.rate_hz, s.channels, seed=cfg.simulator.seed * 1000 + index)


# -- the service ----------------------------------------------------------------------------------------
def build_sparkplug(
    cfg: Config, state_dir: Path, tasks: Mapping[str, TaskPipeline], tls: Any, auth: Any
) -> Any:
    """The Sparkplug B edge node (imported only here: protobuf is the optional extra)."""
    from edged.sparkplug.node import EdgeNode, NodeSpec

    assert cfg.sparkplug is not None
    sp = cfg.sparkplug
    spec = NodeSpec(
        group_id=sp.group_id,
        edge_node_id=sp.edge_node_id or cfg.device.id,
        primary_host_id=sp.primary_host_id,
        version=__version__,
        sensors={n: list(ch) for n, ch in cfg.sensor_channels().items()},
        tasks={
            n: list(t.classes) if t.classes else sorted(tasks[n].model.label_counts)
            for n, t in cfg.tasks.items()
        },
        anomaly={n for n, t in cfg.tasks.items() if t.anomaly is not None},
        model_versions={n: int(t.model.version) for n, t in tasks.items()},
    )
    return EdgeNode(
        spec,
        cfg.mqtt.host,
        cfg.mqtt.port,
        state_dir,
        open_spool(cfg, state_dir, "sparkplug.db"),
        keepalive_s=cfg.mqtt.keepalive_s,
        tls=tls,
        username=auth.username,
        password=auth.password,
        reconnect_min_s=cfg.mqtt.reconnect_min_s,
        reconnect_max_s=cfg.mqtt.reconnect_max_s,
    )


def build_daemon(cfg: Config) -> Daemon:
    """Everything ``edged run`` needs, opened and wired.

    Order: state (lock, key, models), spool, then the :class:`~edged.runtime.ServiceStatus` that
    the publisher (status payloads), the sensor runners (health) and the daemon share, then the
    publisher, engine, sensors and the daemon that runs them. Every object gets what it needs in
    its constructor."""
    auth = security.mqtt_auth(cfg.mqtt)  # first: a bad credential is a config error (exit 2), touch nothing
    tls = security.tls_context(cfg.mqtt.tls)
    state_dir = ensure_dir(Path(cfg.state.dir))
    os.chmod(state_dir, 0o700)
    lock = StateLock(state_dir)
    key = load_key(state_dir, cfg.state.key_file)
    store = ModelStore(state_dir, key, keep=cfg.state.keep)
    policy = summary_policy(cfg, key)
    marker = state_dir / "RUNNING"
    unclean = marker.exists()
    if unclean:
        log.warning(
            "unclean_stop_detected",
            note="the previous run did not stop cleanly; "
            "models restart from their last checkpoint under a new version",
        )
    models, problems = restore_models(cfg, store, unclean)
    spool = open_spool(cfg, state_dir)
    seq = SpoolSeq(spool, state_dir / "seq.json")
    replaced = spool.problems + seq.problems  # unreadable state files moved aside: reported, never fatal
    log.info("spool_opened", path=str(spool.path), queued=len(spool), seq_source=seq.source)
    try:
        marker.write_text(str(os.getpid()))
    except OSError as exc:  # a full disk must not stop the service from starting
        log.error("running_marker_failed", error=str(exc))

    tasks = build_tasks(cfg, models)
    observers: list[Any] = []  # they see every payload the publisher spools
    health_observers: list[Any] = []
    companions: list[Any] = []  # started and stopped with the publisher
    if cfg.sparkplug is not None:
        node = build_sparkplug(cfg, state_dir, tasks, tls, auth)
        observers.append(node.observe)
        health_observers.append(node.sensor_health)
        companions.append(node)
    metrics_state = None
    if cfg.metrics is not None:
        from edged.metrics import MetricsState

        metrics_state = MetricsState()
        observers.append(metrics_state.observe)
    status = ServiceStatus(cfg.device.id, tasks, cfg.sensors, health_observers)
    inbox = LabelInbox(max_bytes=cfg.mqtt.label_max_bytes)
    publisher = Publisher(
        cfg.mqtt,
        cfg.device.id,
        status.payload,
        inbox.put,
        spool,
        tls=tls,
        username=auth.username,
        password=auth.password,
        will=status.last_will(),
        observers=observers,
    )
    engine = build_engine(cfg, publisher, seq, lambda t: t + wall_offset(), tasks)
    for p in problems:
        log.warning("checkpoint_rejected", problem=p)
        engine.alert("state", problem="checkpoint_rejected", detail=p)
    for p in replaced:
        log.error("state_file_replaced", problem=p)
        engine.alert("state", problem="state_file_replaced", detail=p)
    warm_up(cfg)
    # Everything built so far lives as long as the service: move it out of the collector's
    # reach, so a full collection scans only new objects (a full pass over river's and numba's
    # objects took ~100 ms, holding the GIL longer than a 1 kHz IMU FIFO lasts).
    gc.collect()
    gc.freeze()

    blocks: queue.Queue[Block] = queue.Queue(maxsize=2000)
    world = (
        MachineWorld(cfg.simulator, time.monotonic()) if any(map(simulated, cfg.sensors.values())) else None
    )
    sim = open_sim_bus(cfg, world)
    sensors: list[SensorRunner] = []
    for i, (name, s) in enumerate(cfg.sensors.items()):
        drv = build_driver(cfg, i, s, world, sim)
        drv.name = name
        poll = getattr(drv, "poll_s", None) or min(1.0, max(0.02, 32.0 / (s.rate_hz or NOMINAL_RATE_HZ)))
        sensors.append(SensorRunner(name, drv, poll, blocks, status.on_sensor_health))
    labeler = SimLabeler(world, cfg.simulator, set(cfg.tasks)) if world is not None else None
    health = HealthModel(
        list(sensors),
        {n: _task_state(seq, n, t) for n, t in tasks.items()},
        {n: t.windower.window / (task_rate(cfg, cfg.tasks[n]) or NOMINAL_RATE_HZ) for n, t in tasks.items()},
        no_data_s=cfg.ops.no_data_s,
        stall_s=cfg.ops.learning_stall_s,
        sample_gap_s={n: 1.0 / s.rate_hz for n, s in cfg.sensors.items() if s.rate_hz},
    )
    ops = build_ops(cfg, state_dir)
    if cfg.metrics is not None and metrics_state is not None:
        from edged.metrics import MetricsServer

        companions.append(
            MetricsServer(
                cfg.metrics.bind,
                cfg.metrics.port,
                metrics_state,
                sensors=sensors,
                tasks=list(tasks),
                delivery=publisher.stats,
                ops=ops,
            )
        )

    return Daemon(
        engine,
        publisher,
        status,
        inbox,
        sensors,
        blocks,
        store,
        seq,
        Timers(
            summary_s=cfg.summary.interval_s,
            checkpoint_s=cfg.state.checkpoint_interval_s,
            republish_s=cfg.ops.status_republish_s,
        ),
        labeler=labeler,
        running_marker=marker,
        summary_policy=policy,
        ops=ops,
        lock=lock,
        health=health,
        companions=companions,
    )


def _task_state(seq: SeqStore, name: str, task: TaskPipeline) -> Callable[[], tuple[int, int]]:
    """(next seq, n_learned) of a task now: whether windows complete and whether it learns."""
    return lambda: (seq.peek(name), task.model.n_learned)
