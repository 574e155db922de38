"""Which lever matters: for each value of a lever, the paired gap between its best recipe and the best of the
others, and a verdict that says only what the interval supports.

A lever is a name and a mapping ``value -> recipe ids having that value`` (operator, regime or budget, alignment,
teacher, crossover vs control, an operator parameter). For each value, its best recipe (highest replicate-mean
primary) is compared with the best recipe of the lever's other values: for a value that does not hold the lever's
best recipe the gap is ≤ 0 (what choosing this value costs), for the value that does it is ≥ 0 (what it gains over
the runner-up value). The gap's 95 % interval comes from the resamples of :mod:`harness.evaluate.statistics` (replicates
and evaluation episodes together, the same for every recipe), with the best recipe of each value fixed by its
point estimate.

Verdicts:

- ``matters``: the interval excludes 0;
- ``no difference``: the interval lies within ±δ (an equivalence test at the interval's level: both one-sided
  tests of |gap| ≥ δ reject), δ = 0.01 of primary unless told otherwise;
- ``undecided``: neither; then ``need`` says how many replicates and evaluation episodes would decide it.

The ``need`` rule. The gap's variance is the sum of a seed part and an episode part (the variances of the gap
under resampling replicates only and episodes only); each scales as 1/n in its own count (K replicates, E
evaluation episodes), so the interval's half-width h scales as sqrt(V_seeds·K/K' + V_episodes·E/E'). A verdict is
reached, with 80 % power if the observed gap is the true one, once the half-width falls to
h* = z/(z + z_0.8) · |gap| (to show it ``matters``) or to z/(z + z_0.8) · (δ − |gap|) (to show ``no difference``,
when |gap| < δ); the larger (cheaper) target is taken, i.e. a gap variance of (h*/z)². The seed part is planned
with the replicates' plain spread S²/K (which also holds their evaluation noise) at its 80 % upper confidence
bound (a handful of replicates measure their spread poorly; two barely), times the few-replicates widening
(t(K−1)/z)² of :mod:`harness.evaluate.statistics`, which shrinks as K grows: the need errs on the side of deciding.
The dominant part's count alone is raised when that suffices (the other part stays as it is); else each part is
brought to half the wanted variance. With one replicate the seed part is not measured at all, so ``need`` asks for
at least 3 replicates besides the episodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.evaluate.statistics import _Z975 as _Z
from harness.evaluate.statistics import Gap, RecipeStats, _t975

MARGIN = 0.01  # δ: gaps within ±δ of primary are "no difference"
VERDICTS = ("matters", "no difference", "undecided")
_Z_POWER = 0.841621  # one-sided 80 %
_MIN_REPLICATES = 3  # the fewest that measure the seed spread at all (K − 1 = 2 degrees of freedom)
_MAX_REPLICATES = 100_000


def verdict(lo: float, hi: float, margin: float = MARGIN) -> str:
    """``matters`` when [lo, hi] excludes 0, ``no difference`` when it lies within ±margin, else ``undecided``."""
    if lo > 0.0 or hi < 0.0:
        return "matters"
    if -margin <= lo and hi <= margin:
        return "no difference"
    return "undecided"


def _upper(replicates: int) -> float:
    """(K−1)/χ²_{0.2}(K−1): the factor from a sample variance of K values to its 80 % upper confidence bound
    (Wilson–Hilferty's χ² quantile), 1 below two values."""
    if replicates < 2:
        return 1.0
    df = replicates - 1
    c = 2 / (9 * df)
    return df / (df * (1 - c - _Z_POWER * math.sqrt(c)) ** 3)


def need(gap: Gap, replicates: int, episodes: int, margin: float = MARGIN) -> dict[str, int]:
    """The replicates (per recipe) and evaluation episodes that would decide an undecided ``gap`` (module
    docstring: the rule)."""
    power = _Z / (_Z + _Z_POWER)
    target = max(abs(gap.point), margin - abs(gap.point)) * power
    wanted = (target / _Z) ** 2  # the gap's variance that gives the target half-width
    raw_seeds = max(gap.var_seeds, 0.0) * _upper(replicates)

    def seeds(k: int) -> float:
        return raw_seeds * replicates / k * (_t975(k - 1) / _Z) ** 2 if k > 1 else raw_seeds

    def more_replicates(budget: float) -> int:
        k = max(replicates, 2)
        while seeds(k) > budget and k < _MAX_REPLICATES:
            k += 1
        return k

    def more_episodes(budget: float) -> int:
        return max(episodes, math.ceil(episodes * gap.var_episodes / budget - 1e-9)) if budget > 0 else episodes

    if seeds(replicates) >= gap.var_episodes and gap.var_episodes < wanted:
        k, e = more_replicates(wanted - gap.var_episodes), episodes
    elif gap.var_episodes > seeds(replicates) and seeds(replicates) < wanted:
        k, e = replicates, more_episodes(wanted - seeds(replicates))
    else:  # neither part alone gets there: each takes half of the wanted variance
        k, e = more_replicates(wanted / 2), more_episodes(wanted / 2)
    if replicates < 2:
        k = max(k, _MIN_REPLICATES)
    return {"replicates": k, "episodes": e}


def _best(stats: RecipeStats, recipes: Sequence[str]) -> str:
    present = [r for r in recipes if r in stats.ids]
    return max(present, key=lambda r: float(stats.point["primary"][stats.column(r)]))


def lever_verdicts(stats: RecipeStats, levers: Mapping[str, Mapping[str, Sequence[str]]], *,
                   margin: float = MARGIN) -> list[dict[str, Any]]:
    """One row per (lever, value): ``{lever, value, recipe, versus, gap, lo, hi, verdict, need}``, where
    ``recipe`` is the value's best recipe, ``versus`` the recipe it is compared with (the best of the lever's
    other values), ``gap`` = primary(recipe) − primary(versus) with its 95 % interval [lo, hi], and ``need``
    (undecided only, else None) ``{"replicates", "episodes"}``. Values with no recipe in ``stats`` are left out,
    and so is a lever with fewer than two values left."""
    rows: list[dict[str, Any]] = []
    for lever, values in levers.items():
        bests = {v: _best(stats, rs) for v, rs in values.items() if any(r in stats.ids for r in rs)}
        if len(bests) < 2:
            continue
        for value, recipe in bests.items():
            versus = max((b for v, b in bests.items() if v != value),
                         key=lambda r: float(stats.point["primary"][stats.column(r)]))
            gap = stats.gap(recipe, versus)
            said = verdict(gap.lo, gap.hi, margin)
            k = max(stats.replicates[stats.column(recipe)], stats.replicates[stats.column(versus)])
            rows.append({"lever": lever, "value": value, "recipe": recipe, "versus": versus, "gap": gap.point,
                         "lo": gap.lo, "hi": gap.hi, "verdict": said,
                         "need": need(gap, k, stats.units, margin) if said == "undecided" else None})
    return rows
