"""The study's options (``--crossover-search optuna`` and the settings only a study reads), checked with the others
before any work: builtins that travel to the workers with the rest of the options (pytest_crossover.options)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.core.errors import HarnessError
from harness.crossing.operators import OPERATORS
from harness.search.suggest import REGIME_PREFIX, Range, check_range, is_range, parse_range
from harness.train.regimes import REGIME_FIELDS

STUDY_OPTIONS = ("study", "trials", "sampler", "sampler-seed", "objectives", "confirm")


def settings(values: Mapping[str, Any], params: Sequence[str], explicit: Sequence[str]) -> dict[str, Any] | None:
    """The study's settings (builtins, they travel to workers) from the resolved option values; None for the grid.
    Raises HarnessError naming the option."""
    from harness.core.registry import check_name
    from harness.search.study import OBJECTIVES, SAMPLERS

    search = values["search"]
    check_name("search", search, ("grid", "optuna"), field="search")
    ranges, regime_values = study_params(params)
    if search == "grid":
        given = [n for n in STUDY_OPTIONS if n in explicit]
        if given:
            raise HarnessError("only applies to --crossover-search optuna; add it or drop this option", field=given[0])
        if ranges or regime_values:
            first = next(iter([*ranges, *regime_values]))
            raise HarnessError(f"{first}: a range or a regime field is searched by a study only; add "
                               "--crossover-search optuna, or list values NAME=V1,V2", field="param")
        return None
    for name, instead in (("max-runs", "--crossover-trials"), ("replicates", "--crossover-confirm")):
        if name in explicit:
            raise HarnessError(f"is a grid setting; a study takes {instead}", field=name)
    check_name("sampler", values["sampler"], SAMPLERS, field="sampler")
    objectives = [o.strip() for o in str(values["objectives"]).split(",") if o.strip()]
    if not objectives or len(objectives) > 2 or objectives[0] != "primary" or len(set(objectives)) != len(objectives):
        raise HarnessError(f"{values['objectives']!r}: give primary or primary,return", field="objectives")
    for o in objectives:
        check_name("objective", o, OBJECTIVES, field="objectives")
    if "return" in objectives and (values["episodes"] == 0 or (values["parent-a"] and not values["env"])):
        raise HarnessError("return needs greedy episodes in an environment; add --crossover-env ID and episodes > 0, "
                           "or maximise primary alone", field="objectives")
    if values["trials"] < 0:
        raise HarnessError(f"{values['trials']} trials: give 0 (only confirm earlier trials) or more", field="trials")
    return {"storage": values["study"], "trials": values["trials"], "sampler": values["sampler"],
            "sampler_seed": values["sampler-seed"], "objectives": objectives,
            "confirm": list(confirm_value(values["confirm"])),
            "ranges": {k: [r.low, r.high, r.log, r.kind.__name__] for k, r in ranges.items()},
            "regime_values": {k: list(v) for k, v in regime_values.items()}}


def confirm_value(text: str) -> tuple[int, int]:
    """``TOPxREPLICATES`` (``3x2``) or ``off``."""
    if text.strip() == "off":
        return 0, 0
    top, x, reps = text.strip().partition("x")
    if not x or not top.isdigit() or not reps.isdigit():
        raise HarnessError(f"{text!r} is not TOPxREPLICATES (e.g. 3x2: the 3 best trials re-run twice each) or off",
                           field="confirm")
    return int(top), int(reps)


def study_params(lines: Sequence[str]) -> tuple[dict[str, Range], dict[str, tuple[Any, ...]]]:
    """The ``--crossover-param`` lines a study reads: ranges (``alpha=0.2..0.8``, ``regime.lr=1e-4..1e-2:log``)
    and a regime field's values (``regime.batch_size=16,64``)."""
    declared = {p.name: p.kind for op in OPERATORS.values() for p in op.params}
    ranges: dict[str, Range] = {}
    values: dict[str, tuple[Any, ...]] = {}
    for line in lines:
        name, eq, text = line.partition("=")
        name = name.strip()
        regime = name.startswith(REGIME_PREFIX)
        kind = REGIME_FIELDS.get(name[len(REGIME_PREFIX):], (None,))[0] if regime else declared.get(name)
        if not eq or (regime and kind is None):
            continue  # the grid's parser names the problem
        if is_range(text):
            ranges[name] = parse_range(name, text, kind or float)
            check_range(name, ranges[name])
        elif regime:
            values[name] = tuple((kind or str)(v) for v in text.replace(",", " ").split())
    return ranges, values


def ranged_vectors(settings: Mapping[str, Any], grids: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    """A per-layer parameter the study samples from a range has no listed vector for the grid the study's space
    is derived from: a one-layer stand-in (the range's middle) lets that grid be built; the study's own trials
    carry one value per layer of the parents."""
    per_layer = {p.name for op in OPERATORS.values() for p in op.params if p.per_layer}
    return {name: (((low + high) / 2,),) for name, (low, high, *_) in settings["ranges"].items()
            if name in per_layer and name not in grids}


def grid_lines(lines: Sequence[str]) -> tuple[str, ...]:
    """The ``--crossover-param`` lines the grid parses: not ranges, not regime fields."""
    return tuple(ln for ln in lines if not (is_range(ln.partition("=")[2])
                                            or ln.strip().startswith(REGIME_PREFIX)))
