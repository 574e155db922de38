"""Search axes: everything a space varies besides the crossover recipe, each declared once.

An axis declares its values' check, how it enters a child (``stage``), its child-id fragment, its leaderboard
column, the lever the recommendation names and the legend line that explains it. The space is the product of the
recipes and the declared axes; the leaderboard, the recommendation, the report, the pictures and the history iterate
over :data:`AXES`, so adding an axis is one :func:`register_axis` call::

    register_axis(Axis("lr_scale", "learning-rate scale", "train", 1.0,
                       lambda v, searched: f"_lrx{v:g}".replace(".", "p") if searched else "",
                       "a factor on the regime's learning rate", resolve=lambda v, known: float(v),
                       adjust=lambda regime, v: dataclasses.replace(regime, lr=regime.lr * v)))

A child's value of every axis is in its ``levels``; its record carries them as ``levels`` ({axis: label}).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.core.errors import SpaceError
from harness.core.registry import Registry, check_name
from harness.crossing.align import ALIGNMENTS
from harness.train.regimes import Regime
from harness.train.teachers import TEACHERS

STAGES = {
    "cross": "before crossing: changes which weights are crossed",
    "train": "in fine-tuning: changes what or how the child is trained",
    "seed": "a repetition: the same recipe trained again with other seeds",
}


def _same(value: Any, known: Mapping[str, Any]) -> Any:
    return value


def _label(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Axis:
    """One search axis. ``fragment(value, searched)`` is the child-id text (``searched``: the space lists the axis's
    values, as opposed to taking its default); ``resolve(value, known)`` checks a value as given and returns what a
    child holds (``known``: the session's extra definitions by axis, e.g. defined regimes), raising a SpaceError
    whose field is ``option``; ``label(value)`` is the value as columns, records and advice show it (builtins)."""

    name: str  # the key in a child's levels and record["levels"]
    lever: str  # how the recommendation and the pictures name it
    stage: str  # how the axis enters a child: a key of STAGES
    default: Any  # a child's value when the space does not list the axis
    fragment: Callable[[Any, bool], str]
    description: str
    option: str = "axis"  # the custom-space option listing its values (``--crossover-axis NAME=V1,V2``)
    # How a value changes the child's fine-tune regime (a "train" or "seed" axis): (regime, value) -> regime.
    adjust: Callable[[Regime, Any], Regime] | None = None
    # How a value changes the parameters the child is crossed with (a "seed" axis): (params, value) -> params.
    adjust_params: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
    nest: int = 100  # position in the product (outer first); ids list fragments in registry order
    column: str = ""  # the leaderboard column (default: the name)
    resolve: Callable[[Any, Mapping[str, Any]], Any] = _same
    label: Callable[[Any], Any] = _label
    legacy: tuple[str, ...] = ()  # where records written before ``levels`` existed keep the value
    shown: bool = True  # a column in the leaderboard's CSV/JSON

    def __post_init__(self) -> None:
        check_name("axis stage", self.stage, STAGES, field="stage")

    @property
    def key(self) -> str:
        return self.column or self.name

    @property
    def lever_axis(self) -> bool:
        """Whether the recommendation weighs its values against each other (a repetition is no lever)."""
        return self.stage != "seed"

    def read(self, record: Mapping[str, Any]) -> Any:
        """This axis's label in a child record (``levels``, else where older records keep it, else the default)."""
        levels = record.get("levels")
        if isinstance(levels, Mapping) and self.name in levels:
            return levels[self.name]
        value: Any = record if self.legacy else None
        for part in self.legacy:
            value = value.get(part) if isinstance(value, Mapping) else None
        return self.label(self.default) if value is None and self.default is not None else value


AXES: Registry[Axis] = Registry("search axis", group="pytest_crossover.axes")


def register_axis(axis: Axis, *, replace: bool = False) -> Axis:
    return AXES.register(axis.name, axis, replace=replace)


def columns() -> tuple[str, ...]:
    """The leaderboard column of every declared axis, in registry order."""
    return tuple(a.key for a in AXES.values() if a.shown)


def nested() -> list[Axis]:
    """The axes in product order, outermost first."""
    return sorted(AXES.values(), key=lambda a: a.nest)


def _regime(value: Any, known: Mapping[str, Any]) -> Regime:
    if isinstance(value, Regime):
        return value
    regimes: Mapping[str, Regime] = known.get("regime", {})
    check_name("fine-tune regime", value, regimes, field="regimes")
    return regimes[value]


def _named(kind: str, names: Callable[[], Any], option: str) -> Callable[[Any, Mapping[str, Any]], Any]:
    def resolve(value: Any, known: Mapping[str, Any]) -> Any:
        check_name(kind, value, names(), field=option)
        return value
    return resolve


def _align_fragment(value: Any, searched: bool) -> str:
    key = ALIGNMENTS.get(value).id_key
    return f"_{key}" if key else ""


def derived_seed(seed: int, replicate: int) -> int:
    """Replicate ``replicate``'s seed for a base ``seed``: the seed itself for replicate 0 (one replicate is the
    child as it always was), else the first 63 bits of sha256("seed:replicate")."""
    if replicate == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{replicate}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _replicate(value: Any, known: Mapping[str, Any]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpaceError(f"replicate {value!r} is not an integer >= 0", field="replicates")
    return value


def _reseed_params(params: dict[str, Any], r: Any) -> dict[str, Any]:
    if params.get("seed") is None:
        return params  # an operator without a seed (or a seed of None: OS entropy) draws nothing to vary
    return {**params, "seed": derived_seed(int(params["seed"]), int(r))}


for _axis in (
    Axis("regime", "regime", "train", None, lambda r, searched: f"_{r.name}", option="regimes", nest=1,
         column="finetune_regime", resolve=_regime, label=lambda r: r.name if isinstance(r, Regime) else r,
         legacy=("finetune_regime", "name"),
         description="fine-tune regime: the hyper-parameter set the child is distilled with (epochs, lr, batch, ...)"),
    Axis("align", "alignment", "cross", "none", _align_fragment, option="align", nest=0,
         resolve=_named("alignment", ALIGNMENTS.names, "align"), legacy=("crossover", "align"),
         description="alignment: how B's hidden units are permuted to A's before crossing ("
                     + ", ".join(f"_{a.id_key} = {a.name} alignment" for a in ALIGNMENTS.values() if a.id_key)
                     + "; none: no suffix)"),
    Axis("teacher", "teacher", "train", "a", lambda t, searched: f"_t{t}" if searched else "", option="teachers",
         nest=2,
         resolve=_named("teacher", TEACHERS.names, "teachers"), legacy=("teacher",),
         description="teacher: whose soft targets the child is distilled toward (id suffix _t<teacher> when the "
                     "space searches teachers)"),
    Axis("replicate", "replicate", "seed", 0, lambda r, searched: f"_r{r}" if searched else "", option="replicates",
         nest=3, resolve=_replicate,
         adjust=lambda regime, r: dataclasses.replace(regime, seed=derived_seed(regime.seed, r)) if r else regime,
         adjust_params=_reseed_params,
         description="replicate: the same recipe trained again, its fine-tune seed (split, batch order, dropout) and "
                     "its operator's seed derived from the base seeds and the replicate number (id suffix _r<k> "
                     "when --crossover-replicates > 1)"),
):
    register_axis(_axis)


@dataclass(frozen=True, slots=True)
class Levels:
    """A child's value on every axis, and which axes its space listed (their ids show them)."""

    values: tuple[tuple[str, Any], ...]
    searched: frozenset[str] = field(default_factory=frozenset)

    def __getitem__(self, name: str) -> Any:
        for k, v in self.values:
            if k == name:
                return v
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(k == name for k, _ in self.values)

    def get(self, name: str, default: Any = None) -> Any:
        return next((v for k, v in self.values if k == name), default)

    def fragments(self, *, units: bool = False) -> str:
        """The id's tail: each axis's fragment in registry order (``units``: without the repetition axes)."""
        return "".join(a.fragment(self[a.name], a.name in self.searched) for a in AXES.values()
                       if a.name in self and not (units and a.stage == "seed"))

    def labels(self) -> dict[str, Any]:
        return {a.name: a.label(self[a.name]) for a in AXES.values() if a.name in self}


def check_values(axis: Axis, values: tuple[Any, ...]) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise SpaceError(f"{axis.lever} {v!r} is given twice; give each value once", field=axis.option)
        seen.add(v)
