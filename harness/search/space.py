"""Recipes, the named search spaces, and the child ids they produce.

A recipe is (operator, params) with the params its operator declares (:mod:`harness.crossing.operators`); a child is a
recipe × a fine-tune regime (:mod:`harness.train.regimes`). Everything an id or a grid needs is derived from the
declarations, so a registered operator runs in the custom space with no other change.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.core.errors import HarnessError, SpaceError
from harness.core.registry import Registry, check_name
from harness.crossing.operators import ID_SLOTS, OPERATORS, Operator
from harness.crossing.operators.controls import CONTROLS
from harness.search.axes import AXES, Levels, check_values, nested
from harness.train.regimes import REGIMES, Regime

_SLOT_NAMES = tuple(p.name for p in ID_SLOTS)



@dataclass(frozen=True, slots=True)
class Recipe:
    """One crossover recipe: a registered operator and every parameter it declares (defaults filled in, checked).

    Build one with ``Recipe.of("random", alpha=0.5, seed=0)``; ``params`` are kept in declaration order.
    """

    operator: str
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        op = _operator(self.operator)
        try:
            resolved = op.resolve(dict(self.params))
        except HarnessError as exc:
            unknown = [k for k, _ in self.params if op.param(k) is None]
            raise SpaceError(str(exc), field=unknown[0] if unknown else _failing_param(op, dict(self.params))) from None
        object.__setattr__(self, "params", tuple(resolved.items()))

    @classmethod
    def of(cls, operator: str, **params: Any) -> Recipe:
        return cls(operator, tuple(params.items()))

    @property
    def op(self) -> Operator:
        return OPERATORS.get(self.operator)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def slot(self, name: str) -> Any:
        """A child-id slot's value (alpha, seed): the parameter's, or AgentFarm's placeholder."""
        return self.kwargs.get(name, next(p.default for p in ID_SLOTS if p.name == name))

    @property
    def id(self) -> str:
        """``random_a0p50_s0``: operator, the alpha and seed slots, then any other parameter as key+value (a
        control: its name and its own parameters, ``control_distill_s0``)."""
        kw = self.kwargs
        if self.op.control:
            return "_".join([self.operator, *(p.fragment(kw[p.name]) for p in self.op.params)])
        parts = [self.operator, *(p.fragment(self.slot(p.name)) for p in ID_SLOTS)]
        parts += [p.fragment(kw[p.name]) for p in self.op.params if p.name not in _SLOT_NAMES]
        return "_".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """AgentFarm's ``crossover`` record, ``{mode, alpha, seed}``, plus any other declared parameter (a
        control: its mode and parameters)."""
        if self.op.control:
            return {"mode": self.operator, **dict(self.params)}
        return {"mode": self.operator, **{p.name: self.slot(p.name) for p in ID_SLOTS},
                **{k: v for k, v in self.params if k not in _SLOT_NAMES}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        op = _operator(str(data["mode"]))
        return cls(op.name, tuple((p.name, data[p.name]) for p in op.params if p.name in data))


def _operator(name: str) -> Operator:
    try:
        return OPERATORS.get(name)
    except SpaceError as exc:
        raise SpaceError(str(exc), field="modes") from None


def _failing_param(op: Operator, given: Mapping[str, Any]) -> str | None:
    for p in op.params:
        try:
            p.check(given.get(p.name, p.default), op.name)
        except HarnessError:
            return p.name
    return None


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One point of the space: run index (position in recipe-major order), recipe, and its value on every axis."""

    index: int
    recipe: Recipe
    levels: Levels
    prefix: str | None = None  # the id's head instead of the run index: a study's trial (``t0017``)

    @property
    def regime(self) -> Regime:
        """The child's fine-tune regime: its regime level, adjusted by every axis that adjusts one."""
        regime: Regime = self.levels["regime"]
        for axis in AXES.values():
            if axis.adjust is not None and axis.name in self.levels:
                regime = axis.adjust(regime, self.levels[axis.name])
        return regime

    @property
    def crossed_recipe(self) -> Recipe:
        """The recipe the child is crossed with: its recipe, its parameters adjusted by every axis that adjusts them
        (a replicate's operator seed)."""
        params = dict(self.recipe.params)
        for axis in AXES.values():
            if axis.adjust_params is not None and axis.name in self.levels:
                params = axis.adjust_params(params, self.levels[axis.name])
        same = params == dict(self.recipe.params)
        return self.recipe if same else Recipe(self.recipe.operator, tuple(params.items()))

    @property
    def control(self) -> bool:
        return self.recipe.op.control

    @property
    def unit_id(self) -> str:
        """What replicates share: the id without the run index and without the repetition axes' fragments (the
        unit the answer ranks)."""
        return f"{self.recipe.id}{self.levels.fragments(units=True)}"

    @property
    def align(self) -> str:
        return str(self.levels.get("align", "none"))

    @property
    def teacher(self) -> str:
        return str(self.levels["teacher"])

    @property
    def child_id(self) -> str:
        """AgentFarm's id, e.g. ``000_random_a0p50_s0_short`` (unused alpha shown, None seed as ``sNone``),
        then each other axis's fragment (``…_short_aam``, ``…_tboth``)."""
        head = f"{self.index:03d}" if self.prefix is None else self.prefix
        return f"{head}_{self.recipe.id}{self.levels.fragments()}"

    def crossover_record(self) -> dict[str, Any]:
        """The record's ``crossover`` entry: the recipe, and its alignment when it aligns (AgentFarm's shape
        otherwise)."""
        out = self.recipe.to_dict()
        if self.align != "none":
            out["align"] = self.align
        return out


def child_id_grammar() -> str:
    """How to read a child id, for the legends and ``--help``: the recipe's part, then each declared axis's."""
    axes = "; ".join(a.description for a in AXES.values())
    return ("NNN_<mode>_a<alpha>_s<seed>_<regime>[_<axis suffixes>]: NNN the run index, <mode> the crossover operator, "
            "a0p50 = alpha 0.50 (p for the decimal point; shown even where the mode ignores it), s0 = seed 0 and sNone "
            "= no seed (the mode draws nothing at random), other parameters as key and value (a control: its name, "
            f"control_a, control_b, control_distill_s<seed>); then the axes: {axes}")


@dataclass(frozen=True, slots=True)
class Space:
    """A named preset: its recipes x the values it lists for each axis (others take their defaults)."""

    name: str
    recipes: tuple[Recipe, ...]
    levels: Mapping[str, tuple[Any, ...]]
    description: str
    controls: bool | None = None  # None: as the session says (auto: on for 9 children or more)
    eval_episodes: int = 0  # fresh evaluation episodes from the environment (harness.inputs.evalbuffer)


SPACES: Registry[Space] = Registry("search space")
CUSTOM = "custom"
# The custom space's defaults, as AgentFarm's CLI's (each operator's parameters take their declared grid).
CUSTOM_MODES = ("random", "layer", "weighted")
CUSTOM_REGIMES = ("short", "long")

_DEFAULT = (*(Recipe.of("random", alpha=0.5, seed=s) for s in (0, 1, 2)), Recipe.of("layer"),
            *(Recipe.of("weighted", alpha=a) for a in (0.3, 0.5, 0.7)))
_MINIMAL = (Recipe.of("random", alpha=0.5, seed=0), Recipe.of("layer"), Recipe.of("weighted", alpha=0.5))
# In the exact order of AgentFarm's presets (the QAT column sits in the middle of minimal-qat).
for _space in (
    Space("smoke", _MINIMAL, {"regime": ("short",)}, "one recipe per mode x short"),
    Space("minimal", _MINIMAL, {"regime": ("short", "medium", "long")}, "one recipe per mode x short, medium, long"),
    Space("default", _DEFAULT, {"regime": ("short", "long")}, "seven recipes x short, long"),
    Space("minimal-qat", _MINIMAL, {"regime": ("short", "short_qat", "long")},
          "one recipe per mode x short, short_qat, long"),
    Space("default-qat", _DEFAULT, {"regime": ("short", "long", "short_qat")},
          "seven recipes x short, long, short_qat"),
    Space("extended", _DEFAULT, {"regime": ("short", "medium", "long", "lr_high")},
          "seven recipes x four float regimes"),
    # The levers that make blends beat their parents: alignment, a teacher of both parents, regimes that converge.
    Space("frontier", (*_DEFAULT, Recipe.of("slerp", alpha=0.5)),
          {"align": ("none", "activations"), "regime": ("short", "xlong"), "teacher": ("both", "balanced")},
          "the seven default recipes and slerp 0.5, x align none/activations x regimes short, xlong x teachers both, "
          "balanced"),
    # What decides whether and how to recombine: the recipes that reached the top of frontier (activation alignment;
    # weighted, slerp and layer), at two budgets, with AgentFarm's teacher and the teacher of both parents,
    # three replicates each, against the controls, scored on 300 fresh episodes from the environment.
    Space("decisive", (Recipe.of("weighted", alpha=0.5), Recipe.of("slerp", alpha=0.5), Recipe.of("layer")),
          {"align": ("activations",), "regime": ("short", "xlong"), "teacher": ("a", "both"), "replicate": (0, 1, 2)},
          "weighted 0.5, slerp 0.5 and layer, aligned by activations, x regimes short, xlong x teachers a, both x 3 "
          "replicates, with the controls, scored on 300 fresh evaluation episodes", controls=True, eval_episodes=300),
):
    SPACES.register(_space.name, _space)


def space_names() -> tuple[str, ...]:
    return (*SPACES.names(), CUSTOM)


def custom_recipes(modes: Sequence[str], grids: Mapping[str, Sequence[Any]] | None = None) -> list[Recipe]:
    """Recipes in AgentFarm's CLI's order: modes as given; per mode, the product of its parameters' values
    (from ``grids`` by parameter name, else the parameter's declared grid), outermost parameter first
    (random: seed-major x alpha; weighted: x alpha; layer: one recipe)."""
    grids = grids or {}
    recipes: list[Recipe] = []
    for mode in modes:
        op = _operator(mode)
        axes = [[(p.name, v) for v in (grids.get(p.name) or p.grid or (p.default,))] for p in op.params]
        recipes.extend(Recipe(op.name, tuple(combo)) for combo in itertools.product(*axes))
    return recipes


def build_space(
    name: str,
    *,
    modes: Sequence[str] | None = None,
    grids: Mapping[str, Sequence[Any]] | None = None,
    levels: Mapping[str, Sequence[Any] | None] | None = None,
    defaults: Mapping[str, Any] | None = None,
    max_runs: int | None = None,
    extra_regimes: Mapping[str, Regime] | None = None,
    controls: bool = False,
) -> list[ChildSpec]:
    """Enumerate a space recipe-major (each recipe x the product of the axes, :func:`harness.search.axes.nested`
    order), then cut to ``max_runs``.

    ``modes``, ``grids`` (parameter name -> values) and ``levels`` (axis name -> values) apply to the custom space
    only, but for the repetition axes (``replicate``), which any space takes; ``defaults`` (axis name -> value) is
    what a child takes on an axis its space does not list (the session's teacher). With ``controls`` the space ends
    with the control children (:mod:`harness.crossing.operators.controls`) on every combination of the other axes
    but those applied before crossing (alignment). Raises :class:`SpaceError` (with ``field`` set) for an unknown
    name, a value outside its declared range, a value given twice, two values that give one child id, or a knob
    given to a preset space.
    """
    check_name("search space", name, space_names(), field="space")
    known = {"regime": {**{n: REGIMES.get(n) for n in REGIMES.names()}, **(extra_regimes or {})}}
    given = {k: tuple(v) for k, v in (levels or {}).items() if v}
    if name == CUSTOM:
        modes = tuple(modes or CUSTOM_MODES)
        _check_unique("crossover mode", modes, "modes")
        for param, values in (grids or {}).items():
            _check_unique(param, values, param)
        recipes: Sequence[Recipe] = custom_recipes(modes, grids)
        listed = {"regime": CUSTOM_REGIMES, **given}
    else:
        knobs = [k for k, v in (("modes", modes), *(grids or {}).items()) if v]
        knobs += [AXES.get(k).option for k in given if AXES.get(k).stage != "seed"]
        if knobs:
            raise SpaceError(f"{', '.join(knobs)} only apply to the custom space, not {name!r}", field=knobs[0])
        space = SPACES.get(name)
        recipes, listed = space.recipes, {**space.levels, **{k: v for k, v in given.items()
                                                             if AXES.get(k).stage == "seed"}}
    axes = nested()
    values = []
    for axis in axes:
        raw = listed.get(axis.name) or ((defaults or {}).get(axis.name, axis.default),)
        check_values(axis, raw)
        values.append([axis.resolve(v, known) for v in raw])
    searched = frozenset(listed)
    if max_runs is not None and (isinstance(max_runs, bool) or max_runs < 1):
        raise SpaceError(f"max_runs must be >= 1, got {max_runs}", field="max_runs")
    combos = [(rec, combo) for rec in recipes for combo in itertools.product(*values)]
    if controls:
        plain = [vals if a.stage != "cross" else [a.resolve(a.default, known)] for a, vals in zip(axes, values)]
        combos += [(Recipe.of(c), combo) for c in CONTROLS for combo in itertools.product(*plain)]
    specs = [ChildSpec(i, rec, Levels(tuple((a.name, v) for a, v in zip(axes, combo)), searched))
             for i, (rec, combo) in enumerate(combos)]
    _check_ids(specs)  # the whole space: a cut by max_runs must not hide a collision its full run would hit
    _check_regimes(specs)
    return specs[:max_runs]


CHILD_ID_MAX = 200  # bytes: a folder name (255 on common file systems) less the staging name's ".<pid>.tmp"


def _check_regimes(specs: Sequence[ChildSpec]) -> None:
    """An axis that adjusts the regime (a learning-rate factor) must leave a valid one: checked before any child."""
    for s in specs:
        regime: Regime = s.levels["regime"]
        for axis in AXES.values():
            if axis.adjust is not None and axis.name in s.levels:
                try:
                    regime = axis.adjust(regime, s.levels[axis.name])
                except SpaceError as exc:
                    raise SpaceError(str(exc), field=axis.option) from None


def _check_unique(kind: str, values: Sequence[Any], field: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise SpaceError(f"{kind} {v!r} is given twice; give each value once", field=field)
        seen.add(v)


def _check_ids(specs: Sequence[ChildSpec]) -> None:
    """Two recipes whose ids are equal would write one child folder twice (alphas 0.301 and 0.299 both read a0p30);
    an id longer than a folder name may be (255 bytes, less the staging name's suffix) could not be written."""
    seen: dict[str, ChildSpec] = {}
    for s in specs:
        cid = s.child_id
        if len(cid.encode()) > CHILD_ID_MAX:
            shown = cid[:60] + "…"
            raise SpaceError(f"child id {shown!r} is {len(cid.encode())} bytes, more than the {CHILD_ID_MAX} its "
                             "folder's name may have; use shorter regime names or fewer axes", field="regimes")
        key = cid.split("_", 1)[1]  # without the run index, which always differs (and may have 4 digits)
        if key in seen:
            a, b = seen[key].recipe, s.recipe
            differ = next((k for (k, va), (_, vb) in zip(a.params, b.params) if va != vb), "params")
            raise SpaceError(f"recipes {a.to_dict()} and {b.to_dict()} give the same child id ({key}); "
                             f"pass {differ} values that differ in the shown digits", field=differ)
        seen[key] = s
