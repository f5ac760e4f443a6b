"""Durable state: the state key and verified model checkpoints (``seq`` counters: :mod:`edged.seq`).

A checkpoint file is::

    EDGEDCKPT1\\n
    <header: one line of canonical JSON>\\n
    <payload: pickle of the task's TaskModel>

The header carries the model's lineage and metrics (so ``edged model show`` never unpickles
anything), the payload's sha256, and an HMAC-SHA256 over magic + header + payload with a key
that lives outside the checkpoint. A file is unpickled only after its HMAC verifies, and then
only through an unpickler that resolves nothing but the modules a model is made of.

Writes are atomic: temp file in the same directory, fsync, rename, fsync of the directory, so
a power cut leaves either the old or the new file, never a torn one. The newest ``keep`` files
per task are kept; loading falls back to older files if the newest does not verify.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib
import io
import json
import os
import pickle
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAGIC = b"EDGEDCKPT1\n"
KEY_CREDENTIAL = "edged-state-key"
MAX_HEADER = 1 << 20
COUNTER_FILE = "checkpoints.counter"


class StateError(Exception):
    """State directory, key or checkpoint problem."""


def canonical(obj: Any) -> bytes:
    """Compact, key-sorted JSON (what the HMAC covers; also the seq file)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if needed."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


MIN_KEY_BYTES = 16


def read_key(path: Path, what: str) -> bytes:
    """A key from a file (surrounding whitespace stripped), at least :data:`MIN_KEY_BYTES` long."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise StateError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(key) < MIN_KEY_BYTES:
        raise StateError(f"{what} {path} is too short ({len(key)} bytes, need >= {MIN_KEY_BYTES})")
    return key


def load_key(state_dir: Path, key_file: str | None, create: bool = True) -> bytes:
    """The HMAC key: ``key_file`` if configured, else the systemd credential, else a key file
    generated in the state directory on first start."""
    if key_file:
        return read_key(Path(key_file), "state key")
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        cred = Path(os.environ["CREDENTIALS_DIRECTORY"]) / KEY_CREDENTIAL
        if cred.exists():
            return read_key(cred, "state key")
    p = state_dir / "state.key"
    if p.exists():
        return read_key(p, "state key")
    if not create:
        raise StateError(f"no state key at {p} (configure state.key_file or the {KEY_CREDENTIAL} credential)")
    signed = signed_state(state_dir)
    if signed:
        # A new key would make every checkpoint unverifiable, and the models would silently
        # start over (and pruning would then delete the old files): never do that implicitly.
        raise StateError(
            f"no state key at {p}, but {signed} in {state_dir} was signed with one. Restore the key "
            f"(or configure state.key_file / the {KEY_CREDENTIAL} credential), or start over "
            "deliberately with `edged keys init --discard-models` (the old checkpoints stay on disk, "
            "unverifiable)"
        )
    return new_key(p)


def new_key(path: Path) -> bytes:
    """Generate a key file at ``path`` (mode 0600); refuses to overwrite one."""
    key = secrets.token_hex(32).encode()
    ensure_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never replaces a key
    try:
        os.write(fd, key + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def signed_state(state_dir: Path) -> str | None:
    """What in ``state_dir`` was signed with a state key (checkpoints, the counter), or None."""
    if (state_dir / COUNTER_FILE).exists():
        return COUNTER_FILE
    models = state_dir / "models"
    if models.is_dir():
        for d in models.iterdir():
            if d.is_dir() and any(_NAME.match(f.name) and b'"hmac":"' in _head(f) for f in d.iterdir()):
                return f"models/{d.name}"  # a signed checkpoint (garbage files do not count)
    return None


# What a TaskModel pickle may reference: exact (module, qualified name) pairs, listed from the
# pickles of every configurable learner, detector, drift detector and lifecycle (river 0.26, see
# tests/test_hardening.py, which re-derives the list). Nothing is matched by prefix and no dotted
# name is resolved unless it is listed whole, so a signed file (a leaked key, a transfer key)
# cannot name ``os.system`` through an allowed module (``river.datasets.base`` + ``os.system``)
# or reach a generic callable (``builtins.getattr``, ``operator.attrgetter``, ``eval``...).
#
# Models that can be stored without pickle (arrays + JSON with a schema, e.g. numba fast
# learners with a ``state_dict()``) should be, and need nothing here.
_PARAMS = (
    "LifecycleParams",
    "HoeffdingTreeParams",
    "HoeffdingAdaptiveTreeParams",
    "ARFParams",
    "LogisticParams",
    "GaussianNBParams",
    "KNNParams",
    "HalfSpaceTreesParams",
)
_RIVER_CLASSES = {
    "river.anomaly.hst": ("HalfSpaceTrees",),
    "river.compose.pipeline": ("Pipeline",),
    "river.drift.adwin": ("ADWIN",),
    "river.drift.page_hinkley": ("PageHinkley",),
    "river.forest.adaptive_random_forest": ("ARFClassifier", "BaseTreeClassifier"),
    "river.linear_model.softmax": ("SoftmaxRegression",),
    "river.metrics.accuracy": ("Accuracy",),
    "river.metrics.confusion": ("ConfusionMatrix",),
    "river.naive_bayes.gaussian": ("GaussianNB", "GaussianNB._make_gaussian"),
    "river.neighbors.knn_classifier": ("KNNClassifier",),
    "river.neighbors.lazy": ("LazySearch",),
    "river.optim.losses": ("CrossEntropy",),
    "river.optim.schedulers": ("Constant",),
    "river.optim.sgd": ("SGD",),
    "river.preprocessing.scale": ("MinMaxScaler", "StandardScaler"),
    "river.proba.gaussian": ("Gaussian",),
    "river.stats.maximum": ("Max",),
    "river.stats.mean": ("Mean",),
    "river.stats.minimum": ("Min",),
    "river.stats.quantile": ("Quantile",),
    "river.stats.var": ("Var",),
    "river.tree.hoeffding_adaptive_tree_classifier": ("HoeffdingAdaptiveTreeClassifier",),
    "river.tree.hoeffding_tree_classifier": ("HoeffdingTreeClassifier",),
    "river.tree.nodes.arf_htc_nodes": (
        "RandomLeafMajorityClass",
        "RandomLeafNaiveBayes",
        "RandomLeafNaiveBayesAdaptive",
    ),
    "river.tree.nodes.branch": ("NumericBinaryBranch",),
    "river.tree.nodes.hatc_nodes": ("AdaLeafClassifier", "AdaNumBinaryBranchClass"),
    "river.tree.nodes.htc_nodes": ("LeafMajorityClass", "LeafNaiveBayes", "LeafNaiveBayesAdaptive"),
    "river.tree.padded": ("PaddedBranch", "PaddedLeaf"),
    "river.tree.splitter.gaussian_splitter": ("GaussianSplitter",),
    "river._river_rust.drift": ("AdaptiveWindowing",),
    "river._river_rust.stats": ("RsQuantile",),
    "river._river_rust.vectordict": ("euclidean_distance_tuple",),
    "pipelines.evaluation": ("Prequential",),
    "pipelines.learners.model": ("TaskModel",),
    "pipelines.learners.params": (*_PARAMS, "FastGaussianNBParams", "FastSoftmaxParams"),
    "pipelines.anomaly": ("AlarmPolicy", "DiscordDetector", "DiscordParams"),
    "pipelines.fastlearn": ("FastGaussianNB", "FastSoftmax"),
    # numpy arrays and scalars inside the discord detector and the fast learners: rebuilt from raw
    # bytes (an object dtype cannot be made from a buffer; a scalar only wraps what passed this list)
    "numpy": ("dtype",),
    "numpy._core.numeric": ("_frombuffer",),
    "numpy._core.multiarray": ("scalar",),
    "numpy.core.numeric": ("_frombuffer",),
    "numpy.core.multiarray": ("scalar",),
    # checkpoints written before pipelines.learners became a package (same classes, old path)
    "pipelines.learners": ("TaskModel", *_PARAMS),
    # containers and scalars
    "builtins": ("float", "int", "tuple", "list", "dict", "set", "frozenset", "complex", "bytes", "str"),
    "collections": ("Counter", "OrderedDict", "defaultdict", "deque"),
    "random": ("Random",),
    # defaultdict factories in river: they only combine or copy objects that passed this list
    # (deepcopy rebuilds an object through its own class, never through a name in the file).
    "functools": ("partial",),
    "copy": ("deepcopy",),
}
MODEL_GLOBALS = frozenset((m, n) for m, names in _RIVER_CLASSES.items() for n in names)

# Bound methods are pickled as getattr(instance, name). getattr itself is a generic gadget
# (getattr(f, "__globals__") ...), so it is replaced by a getattr that returns only these methods
# of these classes: (module, class, method).
BOUND_METHODS = frozenset(
    {
        ("river.drift.page_hinkley", "PageHinkley", "_test_increase"),
        ("river.drift.page_hinkley", "PageHinkley", "_test_decrease"),
        ("river.drift.page_hinkley", "PageHinkley", "_test_both"),
    }
)


def _bound_method(obj: Any, name: str) -> Any:
    cls = type(obj)
    if (cls.__module__, cls.__qualname__, name) not in BOUND_METHODS:
        raise pickle.UnpicklingError(
            f"checkpoint asks for attribute {name!r} of {cls.__module__}.{cls.__qualname__}, "
            "which a model never contains"
        )
    return getattr(obj, name)


class _ModelUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "getattr"):
            return _bound_method
        if (module, name) not in MODEL_GLOBALS:
            raise pickle.UnpicklingError(
                f"checkpoint refers to {module}.{name}, which a model never contains"
            )
        obj: Any = importlib.import_module(module)
        for part in name.split("."):  # only names listed whole get here
            obj = getattr(obj, part)
        return obj


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    header: dict[str, Any]


def _mac(key: bytes, header_wo_mac: bytes, payload: bytes) -> str:
    return hmac.new(key, MAGIC + header_wo_mac + b"\n" + payload, hashlib.sha256).hexdigest()


def encode_checkpoint(header: dict[str, Any], payload: bytes, key: bytes) -> bytes:
    """Signed checkpoint bytes for ``header`` (completed with size and checksum) and ``payload``."""
    header = dict(header, payload_bytes=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest())
    header.pop("hmac", None)
    header["hmac"] = _mac(key, canonical(header), payload)
    return MAGIC + canonical(header) + b"\n" + payload


def decode_checkpoint(data: bytes, key: bytes, source: str) -> tuple[dict[str, Any], bytes]:
    """Header and payload of checkpoint bytes whose integrity and HMAC verify; raises StateError."""
    if not data.startswith(MAGIC):
        raise StateError(f"{source}: not an edged checkpoint (bad magic)")
    nl = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER)
    if nl < 0:
        raise StateError(f"{source}: truncated or oversized header")
    try:
        header = json.loads(data[len(MAGIC) : nl])
    except (ValueError, UnicodeDecodeError):
        raise StateError(f"{source}: header is not valid JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("hmac"), str):
        raise StateError(f"{source}: unsigned checkpoint (no hmac in header); refusing it")
    payload = data[nl + 1 :]
    mac = header.pop("hmac")
    if header.get("payload_bytes") != len(payload):
        raise StateError(
            f"{source}: payload is {len(payload)} bytes, header says {header.get('payload_bytes')} "
            "(truncated?)"
        )
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise StateError(f"{source}: payload checksum mismatch (corrupted)")
    if not hmac.compare_digest(_mac(key, canonical(header), payload), mac):
        raise StateError(
            f"{source}: HMAC does not verify (tampered, or signed with another key); refusing it"
        )
    header["hmac"] = mac
    return header, payload


def unpickle_model(payload: bytes, source: str) -> Any:
    """Unpickle a verified payload through the restricted unpickler; anything but a TaskModel is
    refused like a corrupt file (StateError), so the caller falls back to an older checkpoint."""
    from pipelines.learners import TaskModel

    try:
        model = _ModelUnpickler(io.BytesIO(payload)).load()
    except Exception as exc:
        raise StateError(f"{source}: verified but cannot be loaded with this software: {exc}") from None
    if type(model) is not TaskModel:
        raise StateError(f"{source}: verified but holds a {type(model).__name__}, not a model; refusing it")
    return model


_NAME = re.compile(r"^ckpt-(\d{8})-v(\d{1,9})\.edgedmodel$")


class ModelStore:
    """Checkpoints of every task under ``<state dir>/models/<task>/``.

    Files are ``ckpt-<save number>-v<version>.edgedmodel``. After each save the store keeps the
    two newest files (so a damaged newest file falls back to the save before it) and the newest
    file of each of the ``keep`` newest versions (the history that rollback can return to)."""

    def __init__(self, state_dir: Path, key: bytes, keep: int = 5) -> None:
        self.root = ensure_dir(state_dir / "models")
        self.key = key
        self.keep = keep
        self.counter = Counter(state_dir / COUNTER_FILE, key)

    def _dir(self, task: str) -> Path:
        return ensure_dir(self.root / task)

    def files(self, task: str) -> list[Path]:
        """Checkpoint files of ``task``, newest first."""
        d = self.root / task
        if not d.is_dir():
            return []
        return sorted((p for p in d.iterdir() if _NAME.match(p.name)), reverse=True)

    @staticmethod
    def version_of(path: Path) -> int:
        m = _NAME.match(path.name)
        return int(m.group(2)) if m else 0

    def max_version(self, task: str) -> int:
        return max((self.version_of(p) for p in self.files(task)), default=0)

    def tasks(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def save(self, task: str, model: Any, meta: dict[str, Any]) -> Path:
        """Write a new checkpoint of ``model`` with ``meta`` in its header; prune old ones."""
        payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        files = self.files(task)
        newest = int(_NAME.match(files[0].name).group(1)) if files else 0  # type: ignore[union-attr]
        floor = self.counter.get(task)
        number = max(newest, floor["number"]) + 1  # a number is never used twice, even after deletions
        version = int(meta.get("version", getattr(model, "version", 0)))
        # task, number and version are in the signed header and must match the file's place and
        # name when it is loaded: a renamed or copied file is refused.
        header = dict(meta, task=task, created=time.time(), number=number, version=version, bound=1)
        path = self._dir(task) / f"ckpt-{number:08d}-v{version}.edgedmodel"
        atomic_write(path, encode_checkpoint(header, payload, self.key))
        self.counter.advance(task, number, max(version, int(getattr(model, "max_version", 0) or 0)))
        self._prune(task)
        return path

    def _prune(self, task: str) -> None:
        files = self.files(task)
        keep = set(files[:2])
        seen: list[int] = []
        for p in files:
            v = self.version_of(p)
            if v not in seen:
                seen.append(v)
                if len(seen) <= self.keep:
                    keep.add(p)
        for old in files:
            if old not in keep:
                with contextlib.suppress(OSError):
                    old.unlink()

    def read_header(self, path: Path) -> tuple[dict[str, Any], bytes]:
        """Header and payload of a checkpoint whose integrity and HMAC verify and whose signed task,
        save number and version are the file's own (directory and name); raises StateError."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StateError(f"{path}: cannot read: {exc.strerror or exc}") from None
        header, payload = decode_checkpoint(data, self.key, str(path))
        m = _NAME.match(path.name)
        if m is not None and (
            header.get("task") != path.parent.name
            or header.get("number") != int(m.group(1))
            or header.get("version") != int(m.group(2))
        ):
            raise StateError(
                f"{path}: signed as save {header.get('number')} (version {header.get('version')}) of "
                f"task {header.get('task')!r}, but its name or directory says otherwise (renamed or "
                "copied); refusing it"
            )
        return header, payload

    def load(self, path: Path) -> tuple[dict[str, Any], Any]:
        """Verify then unpickle one checkpoint."""
        header, payload = self.read_header(path)
        return header, unpickle_model(payload, str(path))

    def history(self, task: str) -> tuple[list[Checkpoint], list[str]]:
        """Newest verified checkpoint of each kept version, newest version first."""
        out: dict[int, Checkpoint] = {}
        problems: list[str] = []
        for p in self.files(task):
            v = self.version_of(p)
            if v in out:
                continue
            try:
                header, _ = self.read_header(p)
            except StateError as exc:
                problems.append(str(exc))
                continue
            out[v] = Checkpoint(p, header)
        return sorted(out.values(), key=lambda c: -int(c.header.get("number", 0))), problems

    def find_version(self, task: str, version: int) -> Path:
        """Newest file holding ``version`` of ``task``."""
        for p in self.files(task):
            if self.version_of(p) == version:
                return p
        kept = sorted({self.version_of(p) for p in self.files(task)})
        raise StateError(f"task {task!r} has no checkpoint of version {version} (kept versions: {kept})")

    def load_latest(self, task: str, fingerprint: str) -> tuple[Checkpoint | None, Any, list[str]]:
        """Newest checkpoint of ``task`` that verifies and matches ``fingerprint``.

        Returns (checkpoint or None, model or None, problems met on the way)."""
        problems: list[str] = []
        files = self.files(task)
        floor, why = self.counter.check(task)
        if why:
            problems.append(why)
        newest = max((int(m.group(1)) for p in files if (m := _NAME.match(p.name))), default=0)
        if floor["number"] > newest:
            problems.append(
                f"{self.root / task}: save {floor['number']} of task {task!r} was written, but the newest "
                f"file is save {newest}: checkpoints were deleted or an older copy restored (rollback)"
            )
        for path in files:
            try:
                header, model = self.load(path)
            except StateError as exc:
                problems.append(str(exc))
                continue
            if header.get("fingerprint") != fingerprint:
                problems.append(f"{path}: trained on a different feature layout (config changed); not used")
                continue
            if hasattr(model, "max_version"):  # versions handed out before a rollback are not reused
                model.max_version = max(int(model.max_version), floor["version"])
            return Checkpoint(path, header), model, problems
        return None, None, problems


class Counter:
    """The highest checkpoint save number and model version per task, kept apart from the
    checkpoints (``<state dir>/checkpoints.counter``, HMAC-signed JSON) and only ever raised.

    It detects a rollback by file manipulation in the models directory (newer checkpoints deleted,
    an older copy of the directory restored), which the checkpoints' own signatures cannot: each
    old file is still genuine. Someone who can also restore an old copy of this file together
    with the checkpoints (a whole-directory backup) is not detected; see docs/security.md."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self.key = key
        self._values: dict[str, dict[str, int]] = {}
        self.problem: str | None = None
        self._read()

    def _mac(self, body: bytes) -> str:
        return hmac.new(self.key, b"EDGEDCOUNTER1\n" + body, hashlib.sha256).hexdigest()

    def _read(self) -> None:
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.problem = f"{self.path}: unreadable checkpoint counter ({exc}); rollback not checked"
            return
        tasks = raw.get("tasks") if isinstance(raw, dict) else None
        mac = raw.get("hmac") if isinstance(raw, dict) else None
        ok = (
            isinstance(tasks, dict)
            and isinstance(mac, str)
            and hmac.compare_digest(self._mac(canonical(tasks)), mac)
            and all(
                isinstance(v, dict)
                and all(type(v.get(k)) is int and v[k] >= 0 for k in ("number", "version"))
                for v in tasks.values()
            )
        )
        if not ok:
            self.problem = f"{self.path}: checkpoint counter does not verify (tampered); rollback not checked"
            return
        assert isinstance(tasks, dict)
        self._values = {str(t): {"number": v["number"], "version": v["version"]} for t, v in tasks.items()}

    def get(self, task: str) -> dict[str, int]:
        return dict(self._values.get(task, {"number": 0, "version": 0}))

    def check(self, task: str) -> tuple[dict[str, int], str | None]:
        """The floor for ``task`` and a problem to report (counter missing or tampered) or None."""
        if self.problem:
            return self.get(task), self.problem
        if not self.path.exists() and any(
            b'"bound":1' in _head(p) for p in (self.path.parent / "models" / task).glob("ckpt-*.edgedmodel")
        ):
            return self.get(task), (
                f"{self.path}: missing, though checkpoints of task {task!r} were written with it "
                "(deleted, or an older state directory restored); rollback not checked"
            )
        return self.get(task), None

    def advance(self, task: str, number: int, version: int) -> None:
        cur = self.get(task)
        new = {"number": max(cur["number"], number), "version": max(cur["version"], version)}
        if new == cur and self.path.exists():
            return
        self._values[task] = new
        tasks = {t: self._values[t] for t in sorted(self._values)}
        atomic_write(self.path, canonical({"tasks": tasks, "hmac": self._mac(canonical(tasks))}))
        self.problem = None


def _head(path: Path) -> bytes:
    """The first line after the magic of a checkpoint file (its header), or b""."""
    try:
        with open(path, "rb") as f:
            return f.read(MAX_HEADER + len(MAGIC)).split(b"\n", 2)[1]
    except (OSError, IndexError):
        return b""
