"""Composition root: the only place that turns config into objects and opens I/O.

``build_daemon(cfg)`` wires config -> drivers -> task pipelines -> engine -> publisher;
``build_engine`` is shared with ``replay`` so both run the same pipelines.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import os
import queue
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

import drivers
from drivers.simulator import MachineWorld, SimLabeler
from edged import __version__, security
from edged.config import Config, ConfigError, TaskConfig
from edged.engine import Engine, Sink
from edged.mqtt import LabelInbox, Publisher
from edged.ops import Ops
from edged.runtime import Daemon, SensorRunner, Timers, wall_offset
from edged.sanitize import SummaryPolicy, pseudonym_key
from edged.spool import Spool, SpoolLimits, SpoolSeq
from edged.state import ModelStore, SeqStore, StateError, ensure_dir, load_key

log = structlog.get_logger("edged.app")


def set_jit_cache(state_dir: str | Path) -> None:
    """Keep numba's compiled kernels under the state directory, so a restart does not
    recompile (must run before :mod:`pipelines.features` is imported)."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = str(Path(state_dir) / "numba-cache")


def task_rate(cfg: Config, tcfg: TaskConfig) -> float:
    """Sample rate of a task's windowed channels (from the sensor that provides them)."""
    return float(cfg.sensors[cfg.channel_owner()[tcfg.channels[0]]].rate_hz)


# DSP keys added after the first release: in the fingerprint only when set to something other
# than their default, so that existing checkpoints keep loading into an unchanged config.
_DSP_KEYS = ("accel_unit", "velocity_band_hz", "fusion", "shaft", "bearing", "context_rate_s")


def fingerprint(tcfg: TaskConfig, rate_hz: float) -> str:
    """Identity of a task's feature layout and learner: a checkpoint only loads into the same."""
    spec = {
        "channels": tcfg.channels,
        "context": tcfg.context,
        "window": tcfg.window,
        "features": tcfg.features,
        "bands_hz": tcfg.bands_hz,
        "log_bands": tcfg.log_bands,
        "rate_hz": rate_hz,
        "classifier": tcfg.classifier.model_dump(),
        "anomaly": tcfg.anomaly.model_dump() if tcfg.anomaly else None,
    }
    for key in _DSP_KEYS:
        if getattr(tcfg, key) != TaskConfig.model_fields[key].default:
            spec[key] = tcfg.model_dump(include={key})[key]
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def new_model(name: str, tcfg: TaskConfig, rate_hz: float) -> Any:
    from pipelines.learners import TaskModel

    return TaskModel(
        name,
        tcfg.classifier,
        tcfg.anomaly,
        recent=tcfg.recent,
        fingerprint=fingerprint(tcfg, rate_hz),
        lifecycle=tcfg.lifecycle,
    )


def build_tasks(cfg: Config, models: dict[str, Any] | None = None) -> dict[str, Any]:
    """A TaskPipeline per configured task (with restored models where given)."""
    from pipelines.dsp import build_dsp
    from pipelines.task import TaskPipeline
    from pipelines.windowing import Windower

    out = {}
    for name, t in cfg.tasks.items():
        rate = task_rate(cfg, t)
        dsp = build_dsp(t, rate)
        windower = Windower(dsp.extractor.rows + len(t.context), t.window, t.hop, derive=dsp.stream)
        model = (models or {}).get(name) or new_model(name, t, rate)
        out[name] = TaskPipeline(
            name, model, dsp.extractor, windower, t.context, t.label_horizon_s, t.context_rate_s
        )
    return out


def build_engine(
    cfg: Config, sink: Sink, seq: SeqStore, wall: Any, models: dict[str, Any] | None = None
) -> Engine:
    allowed = {n: set(t.classes) for n, t in cfg.tasks.items() if t.classes}
    clip = (
        {k: (v[0], v[1]) for k, v in cfg.summary.noise.bounds.items()}
        if cfg.summary.noise is not None
        else None
    )
    return Engine(
        cfg.device.id,
        build_tasks(cfg, models),
        sink,
        seq,
        wall,
        label_max_bytes=cfg.mqtt.label_max_bytes,
        labels_per_s=cfg.mqtt.labels_per_s,
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
    lasts. Doing it here keeps that stall out of acquisition."""
    rng = np.random.default_rng(0)
    for task in build_tasks(cfg).values():
        chans = task.channels + task.context
        n = task.windower.window + task.windower.hop
        t = np.arange(n) / task_rate(cfg, cfg.tasks[task.name])
        x = rng.standard_normal((n, len(chans)))
        cols = task.bind(tuple(chans))
        assert cols is not None
        for pred in task.process(t, x, cols, None, lambda v: v, {}):
            task.apply_label("warm-up", pred.ts_start, pred.ts, False, 0.0)


def checkpoint_meta(model: Any) -> dict[str, Any]:
    """Header of a checkpoint: what ``edged model show`` reports without unpickling."""
    import river

    ev = model.evaluation.report()
    return {
        "format": 1,
        "edged": __version__,
        "river": river.__version__,
        "algorithm": model.algorithm,
        "version": model.version,
        "parent": model.parent,
        "n_learned": model.n_learned,
        "n_scored": model.n_scored,
        "n_alarms": model.n_alarms,
        "fingerprint": model.fingerprint,
        "size_bytes": model.size_bytes(),
        "class_counts": dict(sorted(model.label_counts.items())),
        "metrics": ev,
        "events": list(model.events),
        "max_version": model.max_version,
        "reliance": model.reliance(),
        "challenger": model.challenger_report(),
        "lifecycle": model.lifecycle.model_dump(),
    }


def open_spool(cfg: Config, state_dir: Path) -> Spool:
    """The outgoing spool in the state directory, with the configured bounds."""
    s = cfg.spool
    limits = SpoolLimits(
        max_messages=s.max_messages,
        max_bytes=int(s.max_mb * (1 << 20)),
        max_age_s=s.max_age_s,
        memory_max=s.memory_max,
        sync=s.sync,
    )
    return Spool(state_dir / "spool.db", limits)


def status_path(cfg: Config) -> Path:
    """Where the status file lives (``edged status`` reads the same)."""
    return Path(cfg.ops.status_file) if cfg.ops.status_file else Path(cfg.state.dir) / "status.json"


def build_ops(cfg: Config, state_dir: Path) -> Ops:
    return Ops(status_path(cfg), state_dir, int(cfg.ops.min_free_mb * 1e6), cfg.ops.status_interval_s)


class StateLock:
    """Exclusive lock on the state directory: two services must never share one."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "edged.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise StateError(f"another edged process is using the state directory {state_dir}") from None


def restore_models(cfg: Config, store: ModelStore, unclean: bool) -> tuple[dict[str, Any], list[str]]:
    """Latest verified checkpoint per task; problems are returned for alerts."""
    models: dict[str, Any] = {}
    problems: list[str] = []
    for name, t in cfg.tasks.items():
        fp = fingerprint(t, task_rate(cfg, t))
        ckpt, model, probs = store.load_latest(name, fp)
        problems += probs
        if model is None:
            if store.files(name):
                log.warning("model_not_restored", task=name, note="starting a new model; old files are kept")
            continue
        model.lifecycle = t.lifecycle  # policy follows the config; what was learned stays
        if unclean:
            # The checkpoint is older than what ran before the crash: the same (version, n_learned)
            # may already have been published by a model that was lost. A new version keeps
            # every prediction traceable to exactly one model state.
            model.new_version("recovery", cause="unclean stop")
        log.info(
            "model_restored",
            task=name,
            version=model.version,
            n_learned=model.n_learned,
            path=str(ckpt.path) if ckpt else None,
            after_unclean_stop=unclean,
        )
        models[name] = model
    return models, problems


def uses_simulator(cfg: Config) -> bool:
    """Whether a sensor reads the simulated machine (a ``sim_*`` driver or an emulated chip)."""
    return any(s.driver.startswith("sim_") or getattr(s, "bus", None) == "sim" for s in cfg.sensors.values())


def open_sim_bus(cfg: Config, world: MachineWorld | None) -> Any:
    """The emulated I2C bus (``bus = "sim"``): one emulated chip per such sensor, fed by ``world``."""
    if world is None or not any(getattr(s, "bus", None) == "sim" for s in cfg.sensors.values()):
        return None
    from drivers.emulated import sim_bus

    return sim_bus(dict(cfg.sensors), world, seed=cfg.simulator.seed)


def open_bus(number: int) -> drivers.SMBusLike:
    """``/dev/i2c-N`` (opened on first use; one per sensor so the kernel arbitrates)."""
    from drivers.i2c import LinuxBus

    return LinuxBus(number)


def build_chip(s: Any, sim: drivers.SMBusLike | None) -> drivers.Driver:
    """A chip driver on its bus: the emulated one for ``bus = "sim"``, else ``/dev/i2c-N``."""
    bus = sim if s.bus == "sim" else open_bus(s.bus)
    return drivers.REGISTRY[s.driver](bus, s.address, bus_name=str(s.bus), **s.driver_kwargs())


def build_daemon(cfg: Config) -> Daemon:
    """Everything ``edged run`` needs, opened and wired."""
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

    inbox = LabelInbox()
    daemon_ref: dict[str, Daemon] = {}

    def status(state: str) -> dict[str, Any]:
        d = daemon_ref.get("d")
        if d is None:
            return {
                "schema": "edged.status.v1",
                "state": state,
                "version": __version__,
                "device": cfg.device.id,
            }
        return d.status(state)

    publisher = Publisher(
        cfg.mqtt,
        cfg.device.id,
        status,
        lambda task, payload: inbox.put(task, payload),
        spool,
        tls=tls,
        username=auth.username,
        password=auth.password,
    )
    engine = build_engine(cfg, publisher, seq, lambda t: t + wall_offset(), models)
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

    blocks: queue.Queue[Any] = queue.Queue(maxsize=2000)
    t0 = time.monotonic()
    world = MachineWorld(cfg.simulator, t0) if uses_simulator(cfg) else None
    sim = open_sim_bus(cfg, world)
    sensors: list[SensorRunner] = []
    for i, (name, s) in enumerate(cfg.sensors.items()):
        if s.driver.startswith("sim_"):
            drv = drivers.REGISTRY[s.driver](world, s.rate_hz, s.channels, seed=cfg.simulator.seed * 1000 + i)
        elif s.driver == "file":
            drv = drivers.REGISTRY["file"](s.path, s.channels, loop=s.loop)
        else:
            drv = build_chip(s, sim)
        drv.name = name
        poll = getattr(drv, "poll_s", None) or min(1.0, max(0.02, 32.0 / s.rate_hz))
        sensors.append(SensorRunner(name, drv, poll, blocks, lambda *a: daemon_ref["d"].on_sensor_health(*a)))
    labeler = SimLabeler(world, cfg.simulator, set(cfg.tasks)) if world is not None else None

    timers = Timers(summary_s=cfg.summary.interval_s, checkpoint_s=cfg.state.checkpoint_interval_s)
    tasks = engine.tasks
    daemon = Daemon(
        engine,
        publisher,
        inbox,
        sensors,
        blocks,
        store,
        seq,
        timers,
        labeler=labeler,
        checkpoint_meta=lambda name: checkpoint_meta(tasks[name].model),
        running_marker=marker,
        summary_policy=policy,
        ops=build_ops(cfg, state_dir),
    )
    daemon.lock = lock  # type: ignore[attr-defined]  # held for the daemon's lifetime
    daemon_ref["d"] = daemon
    return daemon
