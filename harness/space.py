"""Recipes, the named search spaces, and the child ids they produce.

A recipe is (operator, params) with the params its operator declares (:mod:`harness.operators`); a child is a
recipe × a fine-tune regime (:mod:`harness.regimes`). Everything an id or a grid needs is derived from the
declarations, so a registered operator runs in the custom space with no other change.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.align import ALIGNMENTS
from harness.errors import HarnessError, SpaceError
from harness.operators import ID_SLOTS, OPERATORS, Operator
from harness.regimes import REGIMES, Regime
from harness.registry import Registry, check_name
from harness.teachers import TEACHERS

_SLOT_NAMES = tuple(p.name for p in ID_SLOTS)



@dataclass(frozen=True, slots=True)
class Recipe:
    """One crossover recipe: a registered operator and every parameter it declares (defaults filled in, checked).

    Build one with ``Recipe.of("random", alpha=0.5, seed=0)``; ``params`` are kept in declaration order.
    """

    operator: str
    params: tuple[tuple[str, Any], ...] = ()
    align: str = "none"  # how B's hidden units are permuted to A's before crossing (harness.align)

    def __post_init__(self) -> None:
        check_name("alignment", self.align, ALIGNMENTS.names(), field="align")
        op = _operator(self.operator)
        try:
            resolved = op.resolve(dict(self.params))
        except HarnessError as exc:
            unknown = [k for k, _ in self.params if op.param(k) is None]
            raise SpaceError(str(exc), field=unknown[0] if unknown else _failing_param(op, dict(self.params))) from None
        object.__setattr__(self, "params", tuple(resolved.items()))

    @classmethod
    def of(cls, operator: str, *, align: str = "none", **params: Any) -> Recipe:
        return cls(operator, tuple(params.items()), align)

    @property
    def op(self) -> Operator:
        return OPERATORS.get(self.operator)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def slot(self, name: str) -> Any:
        """A child-id slot's value (alpha, seed): the parameter's, or the established placeholder."""
        return self.kwargs.get(name, next(p.default for p in ID_SLOTS if p.name == name))

    @property
    def id(self) -> str:
        """``random_a0p50_s0``: operator, the alpha and seed slots, then any other parameter as key+value."""
        kw = self.kwargs
        parts = [self.operator, *(p.fragment(self.slot(p.name)) for p in ID_SLOTS)]
        parts += [p.fragment(kw[p.name]) for p in self.op.params if p.name not in _SLOT_NAMES]
        return "_".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The established ``crossover`` record, ``{mode, alpha, seed}``, plus any other declared parameter."""
        out = {"mode": self.operator, **{p.name: self.slot(p.name) for p in ID_SLOTS},
               **{k: v for k, v in self.params if k not in _SLOT_NAMES}}
        if self.align != "none":  # the established record shape, unless the recipe aligns
            out["align"] = self.align
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        op = _operator(str(data["mode"]))
        return cls(op.name, tuple((p.name, data[p.name]) for p in op.params if p.name in data),
                   str(data.get("align", "none")))


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
    """One point of the grid: run index (position in recipe-major order), recipe, regime, and the teacher when
    the space searches teachers (None: the session's ``--crossover-teacher``)."""

    index: int
    recipe: Recipe
    regime: Regime
    teacher: str | None = None

    @property
    def child_id(self) -> str:
        return child_id(self.index, self.recipe, self.regime.name, self.teacher)


def child_id(index: int, recipe: Recipe, regime_name: str, teacher: str | None = None) -> str:
    """The established id, e.g. ``000_random_a0p50_s0_short`` (unused alpha shown, None seed as ``sNone``); an
    aligned recipe adds its method (``…_short_aam``) and a searched teacher its name (``…_tboth``)."""
    key = ALIGNMENTS.get(recipe.align).id_key
    suffix = (f"_{key}" if key else "") + (f"_t{teacher}" if teacher else "")
    return f"{index:03d}_{recipe.id}_{regime_name}{suffix}"


def child_id_grammar() -> str:
    """How to read a child id, for the legends and ``--help`` (the alignment suffixes from their registry)."""
    aligned = ", ".join(f"_{a.id_key} = {a.name} alignment" for a in ALIGNMENTS.values() if a.id_key)
    return ("NNN_<mode>_a<alpha>_s<seed>_<regime>[_<alignment>][_t<teacher>]: NNN the run index, <mode> the "
            "crossover operator, a0p50 = alpha 0.50 (p for the decimal point; shown even where the mode ignores "
            "it), s0 = seed 0 and sNone = no seed (the mode draws nothing at random), other parameters as key and "
            f"value, <regime> the fine-tune regime; {aligned} (none: no suffix); _t<teacher> = the distillation "
            "teacher, when the space searches teachers")


@dataclass(frozen=True, slots=True)
class Space:
    """A named preset: its recipes × its regimes, recipe-major."""

    name: str
    recipes: tuple[Recipe, ...]
    regimes: tuple[str, ...]
    description: str
    teachers: tuple[str | None, ...] = (None,)


SPACES: Registry[Space] = Registry("search space")
CUSTOM = "custom"
# The custom space's defaults, as the established CLI's (each operator's parameters take their declared grid).
CUSTOM_MODES = ("random", "layer", "weighted")
CUSTOM_REGIMES = ("short", "long")

_DEFAULT = (*(Recipe.of("random", alpha=0.5, seed=s) for s in (0, 1, 2)), Recipe.of("layer"),
            *(Recipe.of("weighted", alpha=a) for a in (0.3, 0.5, 0.7)))
_MINIMAL = (Recipe.of("random", alpha=0.5, seed=0), Recipe.of("layer"), Recipe.of("weighted", alpha=0.5))
# In the exact order of the established presets (the QAT column sits in the middle of minimal-qat).
for _space in (
    Space("smoke", _MINIMAL, ("short",), "one recipe per mode x short"),
    Space("minimal", _MINIMAL, ("short", "medium", "long"), "one recipe per mode x short, medium, long"),
    Space("default", _DEFAULT, ("short", "long"), "seven recipes x short, long"),
    Space("minimal-qat", _MINIMAL, ("short", "short_qat", "long"), "one recipe per mode x short, short_qat, long"),
    Space("default-qat", _DEFAULT, ("short", "long", "short_qat"), "seven recipes x short, long, short_qat"),
    Space("extended", _DEFAULT, ("short", "medium", "long", "lr_high"), "seven recipes x four float regimes"),
    # The levers that make blends beat their parents: alignment, a teacher of both parents, regimes that converge.
    Space("frontier", tuple(Recipe(r.operator, r.params, align) for r in (*_DEFAULT, Recipe.of("slerp", alpha=0.5))
                            for align in ("none", "activations")),
          ("short", "xlong"), "the seven default recipes and slerp 0.5, x align none/activations x regimes short, "
          "xlong x teachers both, balanced", teachers=("both", "balanced")),
):
    SPACES.register(_space.name, _space)


def space_names() -> tuple[str, ...]:
    return (*SPACES.names(), CUSTOM)


def custom_recipes(modes: Sequence[str], grids: Mapping[str, Sequence[Any]] | None = None) -> list[Recipe]:
    """Recipes in the established CLI's order: modes as given; per mode, the product of its parameters' values
    (from ``grids`` by parameter name, else the parameter's declared grid), outermost parameter first
    (random: seed-major x alpha; weighted: x alpha; layer: one recipe)."""
    grids = grids or {}
    recipes: list[Recipe] = []
    for mode in modes:
        op = _operator(mode)
        axes = [[(p.name, v) for v in (grids.get(p.name) or p.grid or (p.default,))] for p in op.params]
        recipes.extend(Recipe(op.name, tuple(combo)) for combo in itertools.product(*axes))
    return recipes


def _check_unique(kind: str, values: Sequence[Any], field: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise SpaceError(f"{kind} {v!r} is given twice; give each value once", field=field)
        seen.add(v)


def build_space(
    name: str,
    *,
    modes: Sequence[str] | None = None,
    grids: Mapping[str, Sequence[Any]] | None = None,
    regimes: Sequence[str] | None = None,
    aligns: Sequence[str] | None = None,
    teachers: Sequence[str] | None = None,
    max_runs: int | None = None,
    extra_regimes: Mapping[str, Regime] | None = None,
) -> list[ChildSpec]:
    """Enumerate a space recipe-major (each recipe × every regime), then cut to ``max_runs``.

    ``modes``, ``grids`` (parameter name -> values), ``regimes``, ``aligns`` (each recipe crossed after each
    alignment) and ``teachers`` (each child distilled from each) apply to the custom space only. Raises
    :class:`SpaceError` (with ``field`` set) for an unknown name, a value outside its declared range, a value given
    twice, two values that give one child id, or a knob given to a preset space.
    """
    check_name("search space", name, space_names(), field="space")
    known = {**{n: REGIMES.get(n) for n in REGIMES.names()}, **(extra_regimes or {})}
    if name == CUSTOM:
        modes = tuple(modes or CUSTOM_MODES)
        _check_unique("crossover mode", modes, "modes")
        for param, values in (grids or {}).items():
            _check_unique(param, values, param)
        align_names = tuple(aligns or ("none",))
        _check_unique("alignment", align_names, "align")
        recipes: Sequence[Recipe] = [Recipe(r.operator, r.params, a) for r in custom_recipes(modes, grids)
                                     for a in align_names]
        regime_names: Sequence[str] = tuple(regimes or CUSTOM_REGIMES)
        _check_unique("fine-tune regime", regime_names, "regimes")
        teacher_names: Sequence[str | None] = tuple(teachers) if teachers else (None,)
        _check_unique("teacher", teacher_names, "teachers")
        for t in teacher_names:
            if t is not None:
                check_name("teacher", t, TEACHERS.names(), field="teachers")
    else:
        given = [k for k, v in (("modes", modes), ("regimes", regimes), ("align", aligns), ("teachers", teachers),
                                *(grids or {}).items()) if v]
        if given:
            raise SpaceError(f"{', '.join(given)} only apply to the custom space, not {name!r}", field=given[0])
        space = SPACES.get(name)
        recipes, regime_names, teacher_names = space.recipes, space.regimes, space.teachers
    for r in regime_names:
        check_name("fine-tune regime", r, known, field="regimes")
    if max_runs is not None and (isinstance(max_runs, bool) or max_runs < 1):
        raise SpaceError(f"max_runs must be >= 1, got {max_runs}", field="max_runs")
    combos = [(rec, known[r], t) for rec in recipes for r in regime_names for t in teacher_names]
    specs = [ChildSpec(i, rec, reg, t) for i, (rec, reg, t) in enumerate(combos)]
    _check_ids(specs)  # the whole space: a cut by max_runs must not hide a collision its full run would hit
    return specs[:max_runs]


def _check_ids(specs: Sequence[ChildSpec]) -> None:
    """Two recipes whose ids are equal would write one child folder twice (alphas 0.301 and 0.299 both read a0p30)."""
    seen: dict[str, ChildSpec] = {}
    for s in specs:
        key = s.child_id[4:]  # without the run index, which always differs
        if key in seen:
            a, b = seen[key].recipe, s.recipe
            differ = next((k for (k, va), (_, vb) in zip(a.params, b.params) if va != vb), "params")
            raise SpaceError(f"recipes {a.to_dict()} and {b.to_dict()} give the same child id ({s.child_id[4:]}); "
                             f"pass {differ} values that differ in the shown digits", field=differ)
        seen[key] = s
