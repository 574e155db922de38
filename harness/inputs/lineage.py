"""A child as a parent: its checkpoint file, its ancestry back to the original checkpoints, and the reference.

A parent may be a child folder of an earlier run (``<run-dir>/<child_id>``, or its ``child.pt``): the file read is
its fine-tuned float model ``child.pt``. An int8 child (a QAT regime, ranked as its int8 model) is refused: its int8
weights are not what crossing and fine-tuning work on, and its float ``child.pt`` is not the model that was ranked.

Each parent's **lineage** is a tree: a ``file`` node (a checkpoint that is no child: path and sha256) or a ``child``
node (path, sha256 of its ``child.pt``, child id, recipe, regime, teacher, fine-tune seed, and its own parents'
nodes, read from the ``lineage`` its run recorded). :func:`verify` re-hashes every file of a tree.

The **reference** is what agreement is scored against. By default, slot X (a or b) is the reference its parent X
was scored against when that parent is a child (its run recorded it), else that parent itself: the founders of the
lineage, so every generation's scores are on one scale.

numpy- and torch-free: the controller resolves lineages without importing torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError

CHILD_FILE = "child.pt"
CONFIG_FILE = "run_config.json"
EVAL_FILE = "eval.json"
SLOTS = ("a", "b")


def child_folder(path: str | Path) -> Path | None:
    """The child folder ``path`` names (the folder itself, or its ``child.pt``), or None for any other file."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent if p.name == CHILD_FILE else None
    if folder is None or not (folder / CONFIG_FILE).is_file():
        if p.is_dir():
            raise HarnessError(f"{str(p)!r} is a folder but not a child folder of a crossover run (no {CONFIG_FILE});"
                               " pass a checkpoint file or <run-dir>/<child_id>")
        return None
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{str(path)!r} cannot be read as JSON ({type(exc).__name__}); pass an intact child "
                           "folder") from None
    if not isinstance(value, dict):
        raise HarnessError(f"{str(path)!r} is not a JSON object; pass an intact child folder")
    return value


def parent_file(path: str | Path) -> Path:
    """The checkpoint file a parent path stands for: a child folder's ``child.pt`` (an int8 child is refused in
    one line), any other path as it is."""
    folder = child_folder(path)
    if folder is None:
        return Path(path)
    ranked = _read_json(folder / EVAL_FILE).get("ranked_model") if (folder / EVAL_FILE).is_file() else None
    if ranked == "int8":
        raise HarnessError(f"{str(folder)!r} is an int8 (QAT) child: its ranked model is int8, which crossing and "
                           "fine-tuning do not take; pass a child of a float regime")
    return folder / CHILD_FILE


def node(path: str | Path, sha256: str) -> dict[str, Any]:
    """The lineage node of a parent read from ``path`` (bytes with ``sha256``): a ``child`` node with its recipe
    and its parents' nodes when it is a child folder, else a ``file`` node."""
    folder = child_folder(path)
    if folder is None:
        return {"kind": "file", "path": str(path), "sha256": sha256}
    config = _read_json(folder / CONFIG_FILE)
    finetune = config.get("finetune") or {}
    return {"kind": "child", "path": str(folder / CHILD_FILE), "sha256": sha256, "child_id": config.get("child_id"),
            "recipe": config.get("crossover"), "regime": finetune.get("regime"), "teacher": config.get("teacher"),
            "seed": finetune.get("seed"), "parents": _recorded_parents(config),
            "reference": config.get("reference")}


def recorded_env(path: str | Path) -> str | None:
    """The environment a child parent's own run played its returns in (None for a plain checkpoint, or a run
    without returns): a next generation plays the same one unless told otherwise."""
    folder = child_folder(path)
    if folder is None or not (folder / CONFIG_FILE).is_file():
        return None
    env = _read_json(folder / CONFIG_FILE).get("env_id")
    return env if isinstance(env, str) and env else None


def _recorded_parents(config: Mapping[str, Any]) -> dict[str, Any]:
    """A child's parents' nodes, from its run's recorded lineage (or, for a run without one, its parent files)."""
    lineage = config.get("lineage")
    if isinstance(lineage, Mapping):
        return dict(lineage)
    return {f"parent_{s}": {"kind": "file", **(config.get(f"parent_{s}") or {})} for s in SLOTS}


def default_reference(lineage: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """``{"reference_a": {path, sha256}, ...}``: the founders, when a parent is a child; None when both parents
    are plain checkpoints (the reference is then the parents themselves). A child's run that recorded no
    reference was scored against its own parents."""
    if all(lineage[f"parent_{s}"]["kind"] == "file" for s in SLOTS):
        return None
    out = {}
    for s in SLOTS:
        parent = lineage[f"parent_{s}"]
        entry = parent
        if parent["kind"] == "child":  # what it was scored against: its run's reference, else its run's parents
            entry = (parent.get("reference") or {}).get(f"reference_{s}") or parent["parents"][f"parent_{s}"]
        out[f"reference_{s}"] = {"path": entry["path"], "sha256": entry["sha256"]}
    return out


def files(tree: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (path, sha256) a lineage node names, itself first, then its ancestors depth-first."""
    out = [(str(tree["path"]), str(tree["sha256"]))]
    for parent in (tree.get("parents") or {}).values():
        out += files(parent)
    return out


def verify(tree: Mapping[str, Any], base: str | Path | None = None) -> list[str]:
    """The files of a lineage whose bytes no longer match their recorded sha256 (empty: every score's bytes are
    the ones recorded); relative paths are read from ``base`` (an evolution folder's lineage.json is relative)."""
    from harness.inputs.checkpoints import file_sha256

    bad = []
    for path, sha in files(tree):
        try:
            ok = file_sha256(Path(base or ".") / path) == sha
        except HarnessError:
            ok = False
        if not ok:
            bad.append(path)
    return bad
