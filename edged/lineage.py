"""Model lineage: which checkpoint may become a task's model, and under which version.

One place for the rules that the service (``edged run``) and the offline commands (``edged model
rollback | export | import``) must agree on:

* **Identity.** :func:`fingerprint` names a task's feature layout and learner. A checkpoint loads
  only into a task with the same fingerprint, whether it is restored at start, rolled back to or
  imported from another gateway.
* **Header.** :func:`checkpoint_meta` is what a checkpoint says about its model without being
  unpickled (``edged model show`` reads only this).
* **One writer.** :class:`StateLock` is held by the running service for its lifetime; the
  offline commands that write a version take it too (:func:`offline_lock`) and refuse while the
  service runs.
* **Versions only grow.** Restoring after an unclean stop, rolling back, importing and saving a
  replay each make a *new* version (``recovery``, ``rollback``, ``import``, ``replay``) above
  every version kept, so every published prediction names exactly one model state.

Checkpoint bytes, signatures and the store itself are :mod:`edged.state`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from edged import __version__
from edged.config import Config, TaskConfig
from edged.state import (
    ModelStore,
    StateError,
    atomic_write,
    decode_checkpoint,
    encode_checkpoint,
    read_key,
    unpickle_model,
)

log = structlog.get_logger("edged.lineage")


# -- identity ------------------------------------------------------------------------------------------
def task_rate(cfg: Config, tcfg: TaskConfig) -> float | None:
    """Sample rate of a task's windowed channels (from the sensor that provides them); ``None``
    for a file sensor that takes its rate from the recording."""
    rate = cfg.sensors[cfg.channel_owner()[tcfg.channels[0]]].rate_hz
    return float(rate) if rate is not None else None


# Rate handed to the DSP of a task on a sensor without one: only time-domain features are
# allowed there (edged/config.py checks), and they do not depend on it.
NOMINAL_RATE_HZ = 1.0


# DSP keys added after the first release: in the fingerprint only when set to something other
# than their default, so that existing checkpoints keep loading into an unchanged config.
_DSP_KEYS = ("accel_unit", "velocity_band_hz", "fusion", "shaft", "bearing", "context_rate_s")


def fingerprint(tcfg: TaskConfig, rate_hz: float | None) -> str:
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


def task_fingerprint(cfg: Config, task: str) -> str:
    """:func:`fingerprint` of a configured task."""
    tcfg = cfg.tasks[task]
    return fingerprint(tcfg, task_rate(cfg, tcfg))


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


def save(store: ModelStore, task: str, model: Any) -> Path:
    """A new checkpoint of ``model`` with its lineage header."""
    return store.save(task, model, checkpoint_meta(model))


# -- one writer ----------------------------------------------------------------------------------------
class StateLock:
    """Exclusive lock on the state directory: two services must never share one.

    Held until :meth:`release` (or the end of a ``with`` block, or of the process)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "edged.lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise StateError(f"another edged process is using the state directory {state_dir}") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def offline_lock(cfg: Config) -> StateLock:
    """The state lock for an offline command; refused while the service runs."""
    try:
        return StateLock(Path(cfg.state.dir))
    except StateError:
        raise StateError(
            "the service is running on this state directory; stop it first "
            "(systemctl stop edged), then run this command again"
        ) from None


# -- rules -----------------------------------------------------------------------------------------------
def open_store(cfg: Config, create_key: bool = False) -> ModelStore:
    """The model store of the config's state directory (for the offline commands)."""
    from edged.state import ensure_dir, load_key

    state_dir = Path(cfg.state.dir)
    if create_key:
        ensure_dir(state_dir)
    if not state_dir.is_dir():
        raise StateError(f"no state directory at {state_dir} (has the service run yet?)")
    return ModelStore(
        state_dir, load_key(state_dir, cfg.state.key_file, create=create_key), keep=cfg.state.keep
    )


def restore_models(cfg: Config, store: ModelStore, unclean: bool) -> tuple[dict[str, Any], list[str]]:
    """Latest verified checkpoint per task; problems are returned for alerts."""
    models: dict[str, Any] = {}
    problems: list[str] = []
    for name, t in cfg.tasks.items():
        ckpt, model, probs = store.load_latest(name, task_fingerprint(cfg, name))
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


def replay_start(cfg: Config) -> dict[str, Any]:
    """The models ``replay --from-state`` starts from: the newest verified checkpoint of every
    task that matches the config (only read; no new version, nothing written). A task without one
    is an error, not a silent fresh start."""
    state_dir = Path(cfg.state.dir)
    if not state_dir.is_dir():
        raise StateError(f"no state directory at {state_dir}")
    store = open_store(cfg)
    models: dict[str, Any] = {}
    for name, t in cfg.tasks.items():
        _ckpt, model, problems = store.load_latest(name, task_fingerprint(cfg, name))
        if model is None:
            why = "; ".join(problems) or "no checkpoint"
            raise StateError(f"task {name!r} has no model here to start from ({why})")
        model.lifecycle = t.lifecycle  # policy follows the config, as when the service restores it
        models[name] = model
    return models


@dataclass(frozen=True)
class NewVersion:
    """Outcome of a rollback or an import: the model and the checkpoint written for it."""

    task: str
    model: Any
    path: Path
    replaced: int | None = None  # rollback: the version that was current (None: it already was)


def rollback(cfg: Config, task: str, version: int) -> NewVersion:
    """Make ``version`` of ``task`` current again, as a new version (service stopped).

    Rolling back to the current version changes nothing (no duplicate version): the outcome has
    ``replaced=None`` and names the current checkpoint."""
    store = open_store(cfg)
    with offline_lock(cfg):
        path = store.find_version(task, version)
        header, model = store.load(path)
        if path == store.files(task)[0]:
            return NewVersion(task, model, path)
        if task in cfg.tasks and header.get("fingerprint") != task_fingerprint(cfg, task):
            raise StateError(
                f"version {version} of {task!r} was trained on another feature layout than "
                "the current config; the service would not load it"
            )
        newest = store.version_of(store.files(task)[0])
        model.max_version = max(model.max_version, store.max_version(task))
        model.new_version("rollback", to=version, replaced=newest)
        return NewVersion(task, model, save(store, task, model), replaced=newest)


def save_replayed(
    cfg: Config,
    models: dict[str, Any],
    files: list[str],
    windows: dict[str, int],
    from_state: bool,
    learned: bool,
) -> list[NewVersion]:
    """Each task's model at the end of ``replay --save`` as a new version of kind ``replay``,
    whose event names the replayed files. The caller holds :func:`offline_lock`."""
    store = open_store(cfg, create_key=True)
    out = []
    for name, model in models.items():
        model.max_version = max(model.max_version, store.max_version(name))
        model.new_version(
            "replay", files=files, windows=windows.get(name, 0), from_state=from_state, learned=learned
        )
        model.pop_events()  # nothing to alert: replay publishes nothing
        out.append(NewVersion(name, model, save(store, name, model)))
    return out


def transfer_key(path: str) -> bytes:
    """The key that signs a model moved between gateways (shared by both)."""
    return read_key(Path(path), "transfer key")


def export_model(cfg: Config, task: str, version: int | None, out: Path, key_file: str) -> dict[str, Any]:
    """Write ``version`` (default: the newest) of ``task`` to ``out``, signed with the transfer key.

    Returns the exported header."""
    store = open_store(cfg)
    if version:
        path = store.find_version(task, version)
    elif store.files(task):
        path = store.files(task)[0]
    else:
        raise StateError(f"task {task!r} has no checkpoint to export")
    header, payload = store.read_header(path)
    header["exported"] = {
        "device": cfg.device.id,
        "version": header.get("version"),
        "at": round(time.time(), 3),
    }
    atomic_write(out, encode_checkpoint(header, payload, transfer_key(key_file)))
    return header


def import_model(cfg: Config, file: str, key_file: str, task: str | None = None) -> NewVersion:
    """Take a model exported by another gateway as a new version here (service stopped).

    Lineage here starts at the import (no parent); the source device and version are in its event."""
    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        raise StateError(f"cannot read {file}: {exc.strerror or exc}") from None
    header, payload = decode_checkpoint(data, transfer_key(key_file), file)
    task = task or str(header.get("task"))
    if task not in cfg.tasks:
        raise StateError(f"{file}: task {task!r} is not configured here (tasks: {', '.join(cfg.tasks)})")
    if header.get("fingerprint") != task_fingerprint(cfg, task):
        raise StateError(
            f"{file}: the model was trained on another feature layout than task {task!r} "
            "here (channels, window, features or rate differ); refusing it"
        )
    store = open_store(cfg, create_key=True)
    with offline_lock(cfg):
        model = unpickle_model(payload, file)
        model.task = task
        model.max_version = max(model.max_version, store.max_version(task))
        source = header.get("exported", {})
        model.new_version("import", source_device=source.get("device"), source_version=source.get("version"))
        model.parent = None
        return NewVersion(task, model, save(store, task, model))
