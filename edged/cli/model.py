"""The model commands: ``edged model show | history | rollback | export | import``.

The rules (which version may become current, what a transfer must match) are
:mod:`edged.lineage`; this module parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.cli._common import iso, known_task, load_config, setup_logging

if TYPE_CHECKING:
    from edged.config import Config


def _model_rows(cfg: Config, task: str | None) -> tuple[dict[str, Any], list[str]]:
    from edged.lineage import open_store
    from edged.state import StateError

    store = open_store(cfg)
    known_task(cfg, task, store.tasks())
    names = [task] if task else sorted(set(store.tasks()) | set(cfg.tasks))
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name in names:
        for path in store.files(name):
            try:
                header, _ = store.read_header(path)
            except StateError as exc:  # shown, then the previous file is tried
                problems.append(str(exc))
                continue
            header["path"] = str(path)
            header["configured"] = name in cfg.tasks
            rel = header.get("reliance") or {}
            if isinstance(rel.get("features"), dict):  # the header's JSON is key-sorted: rank again
                rel["features"] = dict(sorted(rel["features"].items(), key=lambda kv: (-kv[1], kv[0])))
            out[name] = header
            break
    return out, problems


def cmd_model_show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, dsp=False)  # reads the state only: no numba
    setup_logging(cfg, "warning")
    rows, problems = _model_rows(cfg, args.task)
    if args.json:
        print(json.dumps({"tasks": rows, "problems": problems}, separators=(",", ":")))
        return 0 if rows else 1
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if not rows:
        print(f"no verified checkpoints in {cfg.state.dir}", file=sys.stderr)
        return 1
    for name, h in rows.items():
        m = h.get("metrics", {})
        rec = m.get("recent", {})
        print(f"{name}: {h.get('algorithm')}  version {h.get('version')} (parent {h.get('parent')})")
        print(
            f"  learned {h.get('n_learned')} labelled windows, scored {h.get('n_scored')}, "
            f"alarms {h.get('n_alarms')}, size {h.get('size_bytes', 0) / 1024:.0f} KiB"
        )
        print(
            f"  prequential: accuracy {m.get('accuracy', 0):.4f}  macro-F1 {m.get('macro_f1', 0):.4f}  "
            f"kappa {m.get('kappa', 0):.3f}  (recent {rec.get('n', 0)}: accuracy {rec.get('accuracy', 0):.4f})"
        )
        counts = ", ".join(f"{k}={v}" for k, v in h.get("class_counts", {}).items()) or "none yet"
        print(f"  classes learned: {counts}")
        rel = h.get("reliance") or {}
        what = {"split_counts": "splits per feature", "mean_abs_weight": "mean |weight| per feature"}
        if rel.get("features"):
            feats = ", ".join(f"{k} {v}" for k, v in rel["features"].items())
            kind = rel.get("kind")
            print(f"  relies on ({what.get(str(kind), kind)}): {feats}")
        elif rel.get("kind") == "split_counts":
            print("  relies on: no split yet (one leaf; it predicts from every feature's class statistics)")
        if rel.get("inactive_leaves"):
            print(
                f"  size limit reached: {rel['inactive_leaves']} of {rel['inactive_leaves'] + rel['active_leaves']} "
                "leaves no longer grow (raise max_size_mb to let the tree grow)"
            )
        else:
            print(f"  relies on: {rel.get('note', 'unknown')}")
        ch = h.get("challenger")
        if ch:
            print(
                f"  challenger {ch['model']}: {ch['windows']} windows, accuracy {ch['challenger_accuracy']:.4f} "
                f"vs champion {ch['champion_accuracy']:.4f}"
            )
        events = h.get("events") or []
        drifts = [e for e in events if e.get("kind") == "drift"]
        last = f" (last at n_learned {drifts[-1].get('n_learned')})" if drifts else ""
        print(f"  drift events: {len(drifts)}{last}")
        print(
            f"  checkpoint: {h['path']}  sha256 {h.get('payload_sha256', '')[:16]}...  "
            f"saved {iso(h.get('created'))}"
        )
        if not h.get("configured"):
            print("  (this task is no longer in the config)")
    return 0


def _source(header: dict[str, Any]) -> dict[str, Any]:
    """``{"source": {"device", "version"}}`` for a version imported from another gateway."""
    for e in reversed(header.get("events") or []):
        if e.get("kind") == "import" and e.get("version") == header.get("version"):
            return {"source": {"device": e.get("source_device"), "version": e.get("source_version")}}
    return {}


def _parent(row: dict[str, Any]) -> str:
    """The parent column: a version here, ``device:version`` for an import, ``-`` for none."""
    src = row.get("source")
    if src:
        return f"{src.get('device') or '?'}:{src.get('version') or '?'}"
    return str(row["parent"]) if row.get("parent") is not None else "-"


def cmd_model_history(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, dsp=False)  # reads the state only: no numba
    setup_logging(cfg, "warning")
    from edged.lineage import open_store

    store = open_store(cfg)
    known_task(cfg, args.task, store.tasks())
    names = [args.task] if args.task else sorted(set(store.tasks()) | set(cfg.tasks))
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name in names:
        hist, probs = store.history(name)
        problems += probs
        out[name] = [dict(c.header, path=str(c.path), **_source(c.header)) for c in hist]
    if args.json:
        print(json.dumps({"tasks": out, "problems": problems}, separators=(",", ":")))
        return 0
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    for name, rows in out.items():
        print(f"{name}:")
        if not rows:
            print("  no checkpoints")
        width = max([6] + [len(_parent(h)) for h in rows])
        print(
            f"  {'version':>7} {'parent':>{width}}  {'how':<16}{'saved':<22}{'learned':>8}"
            f"{'accuracy':>10}{'drifts':>7}"
        )
        for h in rows:
            events = h.get("events") or []
            origin = next(
                (
                    e
                    for e in reversed(events)
                    if e.get("version") == h["version"]
                    and e.get("kind") in ("promotion", "rollback", "import", "reset", "recovery", "replay")
                ),
                None,
            )
            how = origin["kind"] if origin else ("new" if h.get("parent") is None else "?")
            drifts = sum(1 for e in events if e.get("kind") == "drift")
            acc = h.get("metrics", {}).get("accuracy", 0.0)
            print(
                f"  {h['version']:>7} {_parent(h):>{width}}  {how:<16}{iso(h.get('created')):<22}"
                f"{h.get('n_learned', 0):>8}{acc:>10.4f}{drifts:>7}"
            )
    return 0


def cmd_model_rollback(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg, "warning")
    from edged.lineage import open_store, rollback

    known_task(cfg, args.task, open_store(cfg).tasks())
    done = rollback(cfg, args.task, args.version)
    if done.replaced is None:
        print(f"{args.task}: version {args.version} is already the current version; nothing changed")
        return 0
    print(
        f"{args.task}: version {done.model.version} is version {args.version} again (replacing {done.replaced}); "
        f"the service loads it at its next start\n  {done.path}"
    )
    return 0


def cmd_model_export(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg, "warning")
    from edged.lineage import export_model, open_store

    known_task(cfg, args.task, open_store(cfg).tasks())
    header = export_model(cfg, args.task, args.version, Path(args.out), args.key_file)
    print(
        f"{args.task} version {header.get('version')} ({header.get('n_learned')} windows learned) -> {args.out}, "
        "signed with the transfer key"
    )
    return 0


def cmd_model_import(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg, "warning")
    from edged.lineage import import_model

    done = import_model(cfg, args.file, args.key_file, args.task)
    print(
        f"{done.task}: imported as version {done.model.version} ({done.model.n_learned} windows learned); "
        f"the service loads it at its next start\n  {done.path}"
    )
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``model`` and its actions."""
    model = sub.add_parser("model", help="inspect the models in the state directory")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = msub.add_parser("show", parents=[common], help="state of the latest verified checkpoint per task")
    p.add_argument("--task", help="only this task")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_model_show)
    p = msub.add_parser("history", parents=[common], help="kept versions per task with their lineage")
    p.add_argument("--task", help="only this task")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_model_history)
    p = msub.add_parser(
        "rollback", parents=[common], help="make an earlier version current again (service stopped)"
    )
    p.add_argument("--task", required=True)
    p.add_argument("version", type=int, metavar="VERSION")
    p.set_defaults(func=cmd_model_rollback)
    p = msub.add_parser(
        "export", parents=[common], help="write a model for another gateway, signed with a transfer key"
    )
    p.add_argument("--task", required=True)
    p.add_argument("--version", type=int, help="default: the newest")
    p.add_argument(
        "--key-file", required=True, help="transfer key (>= 16 bytes) shared with the importing gateway"
    )
    p.add_argument("out", metavar="OUT")
    p.set_defaults(func=cmd_model_export)
    p = msub.add_parser(
        "import", parents=[common], help="take a model exported by another gateway (service stopped)"
    )
    p.add_argument("--key-file", required=True, help="the transfer key the model was exported with")
    p.add_argument("--task", help="task to import into (default: the exported task)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_model_import)
