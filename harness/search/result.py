"""One child's result: built once where the child finishes (or fails), and every file and row derives from it.

:class:`ChildResult` is frozen; what is learned later (latency, the files' names in the run folder) is added with
:meth:`ChildResult.with_`. ``to_dict`` is the JSON record (``children.jsonl``, ``manifest.json``'s children,
``eval.json`` and the leaderboard row read it); ``from_dict`` reads one back. One schema version,
:data:`SCHEMA_VERSION`, for the record and the manifest that holds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.search.space import ChildSpec

SCHEMA_VERSION = "2.0"
STATUSES = ("ok", "degenerate", "diverged", "error", "lost")  # what a child ends with (return-drop is the answer's)


@dataclass(frozen=True)
class ChildResult:
    """A finished (or failed) child, as builtins. ``levels`` holds the child's label on every search axis."""

    child_id: str
    index: int
    crossover: Mapping[str, Any]
    finetune_regime: Mapping[str, Any]
    teacher: str | None
    levels: Mapping[str, Any]
    status: str
    unit: str | None = None  # the recipe its replicates share: the id without run index and repetition suffixes
    primary: float | None = None
    ranked_model: str | None = None
    before_finetune: Mapping[str, Any] | None = None
    after_finetune: Mapping[str, Any] | None = None
    int8: Mapping[str, Any] | None = None
    return_: Mapping[str, Any] | None = None  # the ranked model's returns ("return" in the record)
    returns: Mapping[str, Any] | None = None
    finetune: Mapping[str, Any] | None = None
    finetune_steps: int | None = None
    model_bytes: int | None = None
    timings_s: Mapping[str, float] = field(default_factory=dict)
    split: str | None = None
    rows: Mapping[str, Any] | None = None
    started_unix: float | None = None
    latency_ms: Mapping[str, Any] | None = None
    message: str | None = None  # why a child failed (status error or lost)
    files: Mapping[str, str] | None = None  # file kind -> path in the run folder, set by the folder's owner

    @classmethod
    def failure(cls, spec: ChildSpec, status: str, message: str) -> ChildResult:
        """A child that did not finish (its test failed): the same shape, no metric."""
        return cls(**_identity(spec), status=status, message=message)

    def with_(self, **changes: Any) -> ChildResult:
        """This result with fields learned after the child finished (latency, timings, files)."""
        if "timings_s" in changes:
            changes["timings_s"] = {**self.timings_s, **changes["timings_s"]}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _OPTIONAL and value is None:
                continue
            out["return" if f.name == "return_" else f.name] = value
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> ChildResult:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {("return_" if k == "return" else k): v for k, v in record.items()}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"a child record with unknown fields {unknown}; written by a newer release?")
        values.setdefault("levels", {})
        return cls(**values)


_OPTIONAL = ("started_unix", "message", "files")  # absent from a record that never had them


def _identity(spec: ChildSpec) -> dict[str, Any]:
    """The fields every result of ``spec`` starts with: who the child is."""
    return {"child_id": spec.child_id, "index": spec.index, "crossover": spec.crossover_record(),
            "finetune_regime": spec.regime.to_dict(), "teacher": spec.teacher, "levels": spec.levels.labels(),
            "unit": spec.unit_id}
