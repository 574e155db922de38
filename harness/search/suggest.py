"""The search space of a study, derived from the same declarations as the grid, and one trial's child.

The grid space (:func:`harness.search.space.build_space`) lists values; a study searches the same space with every
numeric operator parameter widened to its declared ``low``/``high`` (a :class:`Range`), unless the user listed its
values (a choice then) or narrowed it (``NAME=LOW..HIGH``). The operators, alignments, regimes, teachers and any
other declared axis are choices with the grid's values; the controls are choices of the operator, so a study can
find that not crossing is best. A regime field may be a range too (``regime.lr=1e-4..1e-2:log``): the trial then
fine-tunes with an ad-hoc regime named after it.

Nothing here imports optuna: :func:`suggest` takes any object with optuna's ``suggest_*`` methods.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.core.errors import HarnessError, SpaceError
from harness.crossing.operators import OPERATORS, Param
from harness.crossing.operators.controls import CONTROLS
from harness.search.axes import Levels, nested
from harness.search.space import ChildSpec, Recipe
from harness.train.regimes import REGIME_FIELDS, Regime

REGIME_PREFIX = "regime."  # a regime field in --crossover-param: regime.lr=1e-4..1e-2:log


@dataclass(frozen=True, slots=True)
class Range:
    """A numeric range ``[low, high]`` (inclusive), sampled on a log scale with ``log``."""

    low: float
    high: float
    log: bool = False
    kind: type = float

    def text(self) -> str:
        return f"{self.low:g}..{self.high:g}" + (":log" if self.log else "")


@dataclass(frozen=True, slots=True)
class PerLayer:
    """A per-layer parameter (``Param.per_layer``) as a study samples it: one ``domain`` per layer, under the names
    ``keys`` (``layer_alphas_l0``, ...), so a sampler such as CMA-ES sees every layer's weight as its own dimension."""

    keys: tuple[str, ...]
    domain: Range | tuple[Any, ...]


Domain = Range | tuple[Any, ...] | PerLayer  # a range, the choices, or one of either per layer


def is_range(text: str) -> bool:
    return ".." in text


def parse_range(name: str, text: str, kind: type, *, field: str = "param") -> Range:
    """``LOW..HIGH`` or ``LOW..HIGH:log`` -> :class:`Range` of ``kind`` (int or float); a one-line error otherwise."""
    body, _, scale = text.strip().partition(":")
    low_text, _, high_text = body.partition("..")
    fix = f"write {name}=LOW..HIGH or {name}=LOW..HIGH:log, e.g. {name}=0.1..0.9"
    if kind not in (int, float) or scale not in ("", "log"):
        raise SpaceError(f"{name}={text!r}: only a number takes a range; {fix}", field=field)
    try:
        low, high = (kind(float(v)) if kind is float else int(v, 10) for v in (low_text.strip(), high_text.strip()))
    except ValueError:
        raise SpaceError(f"{name}={text!r} is not a range of {kind.__name__}s; {fix}", field=field) from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high or (scale and low <= 0):
        raise SpaceError(f"{name}={text!r} needs finite LOW < HIGH (and LOW > 0 on a log scale); {fix}", field=field)
    return Range(low, high, scale == "log", kind)


def _within(param: Param, rng: Range, operator: str) -> Range:
    """A range inside the parameter's declared one (a wider one is the user's error, named before any work)."""
    try:
        for bound in (rng.low, rng.high):
            value = param.kind(bound)
            param.check((value,) if param.per_layer else value, operator)
    except HarnessError as exc:
        raise SpaceError(f"{param.name}={rng.text()}: {exc}", field="param") from None
    return rng


def check_range(name: str, rng: Range) -> None:
    """``rng`` fits every registered operator that declares a parameter ``name``."""
    for op in OPERATORS.values():
        param = op.param(name)
        if param is not None:
            _within(param, rng, op.name)


@dataclass(frozen=True)
class StudySpace:
    """What a trial chooses: an operator (controls included), that operator's parameters, each axis's value, and
    any regime field sampled on top of the chosen regime."""

    operators: tuple[str, ...]
    params: Mapping[str, Mapping[str, Domain]]  # operator -> parameter -> domain
    axes: Mapping[str, tuple[Any, ...]]  # axis name -> choices (labels: a regime by its name)
    regime_fields: Mapping[str, Domain]
    regimes: Mapping[str, Regime]  # the regimes the axis may choose, by name
    searched: frozenset[str]  # the axes whose fragment the child ids show

    def describe(self) -> dict[str, Any]:
        """Builtins: what the study searches (its name hashes this; the manifest shows it)."""
        def dom(d: Domain) -> Any:
            if isinstance(d, PerLayer):
                return {"per_layer": len(d.keys), "each": dom(d.domain)}
            return d.text() if isinstance(d, Range) else list(d)

        return {"operators": list(self.operators),
                "params": {op: {k: dom(d) for k, d in ps.items()} for op, ps in self.params.items()},
                "axes": {k: list(v) for k, v in self.axes.items()},
                "regime_fields": {k: dom(d) for k, d in self.regime_fields.items()},
                "regimes": {k: r.to_dict() for k, r in self.regimes.items()}}


def study_space(grid: Sequence[ChildSpec], *, given: Mapping[str, Sequence[Any]], ranges: Mapping[str, Range],
                controls: bool, layers: int | None = None) -> StudySpace:
    """The study's space from the grid's specs: the grid's operators (and the controls with ``controls``), each
    numeric parameter a range (its declaration's, or ``ranges``'), unless ``given`` lists its values; a per-layer
    parameter is one such domain per layer of the parents (``layers`` of them)."""
    if not grid:
        raise SpaceError("the space has no child to search; widen it", field="space")
    ops = list(dict.fromkeys(s.recipe.operator for s in grid if not s.control))
    ops += [c for c in CONTROLS if controls and c not in ops]
    params: dict[str, dict[str, Domain]] = {}
    for name in ops:
        op = OPERATORS.get(name)
        seen = [s.recipe.kwargs for s in grid if s.recipe.operator == name]
        params[name] = {p.name: _per_layer(p, _domain(p, name, seen, given, ranges), layers) if p.per_layer
                        else _domain(p, name, seen, given, ranges) for p in op.params}
    axes: dict[str, tuple[Any, ...]] = {}
    regimes: dict[str, Regime] = {}
    for axis in nested():
        if axis.stage == "seed" or axis.name not in grid[0].levels:
            continue
        axes[axis.name] = tuple(dict.fromkeys(axis.label(s.levels[axis.name]) for s in grid))
    for s in grid:
        regimes.setdefault(s.levels["regime"].name, s.levels["regime"])
    fields: dict[str, Domain] = {}
    for key, rng in ranges.items():
        if key.startswith(REGIME_PREFIX):
            fields[key[len(REGIME_PREFIX):]] = rng
    for key, values in given.items():
        if key.startswith(REGIME_PREFIX):
            fields[key[len(REGIME_PREFIX):]] = tuple(values)
    for name in fields:
        if name not in REGIME_FIELDS or name == "seed":
            known = ", ".join(REGIME_PREFIX + f for f in REGIME_FIELDS if f != "seed")
            raise SpaceError(f"{REGIME_PREFIX}{name} is not a regime field a study can sample (known: {known})",
                             field="param")
    return StudySpace(tuple(ops), params, axes, fields, regimes, grid[0].levels.searched)


def _per_layer(p: Param, domain: Domain, layers: int | None) -> PerLayer:
    if layers is None:
        raise SpaceError(f"{p.name} takes one value per layer of the parents, whose layers are not known here; "
                         "pass the parents (--crossover-parent-a/-b)", field="param")
    if isinstance(domain, tuple):  # vectors the user listed: a choice between them, as text a sampler can hold
        return PerLayer((p.name,), tuple("/".join(format(v, "g") for v in vector) for vector in domain))
    assert isinstance(domain, Range)  # _domain gives a per-layer parameter a range or its listed vectors
    return PerLayer(p.layer_keys(layers), domain)


def _domain(p: Param, operator: str, seen: Sequence[Mapping[str, Any]], given: Mapping[str, Sequence[Any]],
            ranges: Mapping[str, Range]) -> Domain:
    if p.name in ranges:
        return _within(p, ranges[p.name], operator)
    if p.name in given:
        return tuple(given[p.name])
    if p.kind in (int, float) and p.low is not None and p.high is not None:
        return Range(float(p.low), float(p.high), False, p.kind)
    values = tuple(dict.fromkeys(kw[p.name] for kw in seen if p.name in kw))
    return values or (p.grid or (p.default,))


def _pick(trial: Any, name: str, domain: Domain) -> Any:
    if isinstance(domain, PerLayer):
        prefix = name.rpartition(".")[0]
        picked = [_pick(trial, f"{prefix}.{key}", domain.domain) for key in domain.keys]
        if len(domain.keys) == 1 and isinstance(picked[0], str):  # one of the listed vectors
            return tuple(float(v) for v in picked[0].split("/"))
        return tuple(picked)
    if isinstance(domain, Range):
        if domain.kind is int:
            return trial.suggest_int(name, int(domain.low), int(domain.high), log=domain.log)
        return trial.suggest_float(name, domain.low, domain.high, log=domain.log)
    return domain[0] if len(domain) == 1 else trial.suggest_categorical(name, list(domain))


def suggest(trial: Any, space: StudySpace) -> dict[str, Any]:
    """One trial's choices as builtins: ``{"operator", "params", "levels" (axis labels), "regime_fields"}``."""
    op = _pick(trial, "operator", space.operators)
    params = {k: _pick(trial, f"{op}.{k}", d) for k, d in space.params[op].items()}
    levels = {a: _pick(trial, a, v) for a, v in space.axes.items()}
    fields = {k: _pick(trial, REGIME_PREFIX + k, d) for k, d in space.regime_fields.items()}
    return {"operator": op, "params": params, "levels": levels, "regime_fields": fields}


def _fragment(value: Any) -> str:
    text = format(value, ".3g") if isinstance(value, float) else str(value)
    return text.replace(".", "p").replace("-", "m").replace("+", "")


def trial_regime(base: Regime, fields: Mapping[str, Any]) -> Regime:
    """The chosen regime with the sampled fields; named after them (``short_lr0p00042``) when there are any."""
    if not fields:
        return base
    name = base.name + "".join(f"_{k}{_fragment(v)}" for k, v in sorted(fields.items()))
    try:
        return dataclasses.replace(base, name=name, **dict(fields))
    except (SpaceError, TypeError) as exc:
        raise SpaceError(f"a sampled regime is invalid ({exc}); narrow the regime.* ranges", field="param") from None


def trial_spec(choice: Mapping[str, Any], space_regimes: Mapping[str, Regime], *, index: int, prefix: str,
               replicate: int = 0, searched: frozenset[str] = frozenset()) -> ChildSpec:
    """The child of a trial's choices (:func:`suggest`'s), id ``<prefix>_<recipe>_<regime>…``."""
    recipe = Recipe(str(choice["operator"]), tuple(dict(choice["params"]).items()))
    labels = dict(choice["levels"])
    known = {"regime": dict(space_regimes)}
    values: list[tuple[str, Any]] = []
    for axis in nested():
        if axis.name == "regime":
            values.append(("regime", trial_regime(space_regimes[labels["regime"]], choice.get("regime_fields") or {})))
        elif axis.stage == "seed":
            values.append((axis.name, axis.resolve(replicate if axis.name == "replicate" else axis.default, known)))
        else:
            values.append((axis.name, axis.resolve(labels.get(axis.name, axis.default), known)))
    return ChildSpec(index, recipe, Levels(tuple(values), searched - {"replicate"}), prefix=prefix)
