"""How sure a ranking of recipes is: each recipe's primary over its replicates, and a stratified bootstrap that
resamples replicates and evaluation episodes together.

A recipe (operator, parameters, regime, teacher) is trained K times with different seeds (its replicates); each
replicate is evaluated on the same held-out states, recorded as packed per-row agreement bits with parent A and B
(:func:`harness.evaluate.intervals.pack_bits`). The recipe's primary is the mean over its replicates of
min(agree_a, agree_b).

The bootstrap has two strata. Evaluation episodes (whole episodes when the buffer has ids, else single states)
are resampled with replacement exactly as :func:`harness.evaluate.intervals.agreement_intervals` does, from the same
generator, so the episode resamples are the same for every recipe (paired) and, with K = 1, the same as the
per-child intervals bit for bit. Replicates are resampled with replacement by index from a second, independent
generator: on each resample, every recipe with K replicates takes the same draw of K indices. Drawing by index is
valid whether or not replicate r of two recipes share seeds (if they do, the pairing is used; if they do not, the
gap's variance is still the sum of the two recipes'). Each resample's statistic is the replicate-mean of the
per-replicate min(agree_a, agree_b) on the episode-resampled rows, plus the replicate draw's deviation from it,
scaled so that the two strata together have a crossed random-effects design's variance (:func:`_shrink`: the
replicate-by-episode noise counted once, not twice, and the seed part widened as a t interval for few
replicates). With that, the 95 % interval covers the true mean in 93-97 % of simulated sessions (the tests).

Besides the joint resamples, two one-stratum sets are kept (replicates only, on all episodes; episodes only, over
all replicates): their variances say which stratum dominates a gap's uncertainty, which
:mod:`harness.answer.verdicts` uses to say how many replicates or episodes would decide a lever.

numpy only, local seeded generators: the same inputs give the same intervals bitwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.core.errors import HarnessError
from harness.evaluate.intervals import RESAMPLES, SEED, _interval, _weights, per_block, resampled_rates, unit_counts

_REPLICATE_STREAM = 0x7265706C  # "repl": the replicate draws' generator, independent of the episode draws
SIDES = ("a", "b")
# Student's t 97.5 % quantiles by degrees of freedom (1..30); beyond, a Cornish-Fisher expansion around 1.96.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z975 = 1.959964  # the normal 97.5 % quantile


def _t975(df: int) -> float:
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class Gap:
    """``x`` minus ``y`` in primary: the point gap, its 95 % interval, and the variance of the gap under
    resampling replicates only and episodes only (what scales with more seeds, and with more episodes). The seed
    part is the plain variance of replicate means, S²/K per recipe, with no correction: an upper estimate, which
    includes the replicates' evaluation noise."""

    point: float
    lo: float
    hi: float
    var_seeds: float
    var_episodes: float


@dataclass(frozen=True)
class RecipeStats:
    """Per recipe (in ``ids`` order): point values and bootstrap resamples of its replicate-mean primary,
    agree_a and agree_b (``samples[m]``: (resamples, recipes)), the one-stratum resamples of its primary, and the
    spread of its replicates. ``best`` is the recipe the tied set and the gaps in :meth:`summary` refer to."""

    ids: tuple[str, ...]
    replicates: tuple[int, ...]
    units: int
    point: dict[str, np.ndarray]
    sd: np.ndarray
    samples: dict[str, np.ndarray]
    seeds_only: np.ndarray
    episodes_only: np.ndarray
    parents: np.ndarray | None
    best: str

    def column(self, recipe: str) -> int:
        if recipe not in self.ids:
            raise HarnessError(f"unknown recipe {recipe!r}; known: {', '.join(self.ids)}")
        return self.ids.index(recipe)

    def interval(self, recipe: str, metric: str = "primary") -> tuple[float, float]:
        lo, hi = _interval(self.samples[metric][:, self.column(recipe)])
        return float(lo), float(hi)

    def gap(self, x: str, y: str) -> Gap:
        """The paired gap ``x − y`` in primary, on the same resamples."""
        i, j = self.column(x), self.column(y)
        lo, hi = _interval(self.samples["primary"][:, i] - self.samples["primary"][:, j])
        return Gap(float(self.point["primary"][i] - self.point["primary"][j]), float(lo), float(hi),
                   float(np.var(self.seeds_only[:, i] - self.seeds_only[:, j])),
                   float(np.var(self.episodes_only[:, i] - self.episodes_only[:, j])))

    def p_best(self) -> np.ndarray:
        """Per recipe, the share of resamples in which its primary is the highest (ties share a win)."""
        primary = self.samples["primary"]
        top = primary == primary.max(axis=1, keepdims=True)
        wins = top / top.sum(axis=1, keepdims=True)
        return np.array([wins[:, i].mean() for i in range(wins.shape[1])])  # column by column, as the per-child

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per recipe id: intervals of ``primary``, ``agree_a``, ``agree_b``, of the ``gap`` to the best recipe and
        (with parents) of ``vs_parents`` (its primary minus the parents' agreement), ``tied_with_best`` (the gap's
        interval contains 0), ``p_best``, ``units`` (evaluation episodes), ``mean`` (the replicate-mean primary),
        ``sd`` (its replicates' standard deviation, None below 2) and ``replicates``; with K = 1 everywhere, the
        keys of :func:`harness.evaluate.intervals.agreement_intervals` hold the same values."""
        primary = self.samples["primary"]
        named = [("primary", primary), ("agree_a", self.samples["agree_a"]), ("agree_b", self.samples["agree_b"]),
                 ("gap", primary - primary[:, [self.column(self.best)]])]
        if self.parents is not None:
            named.append(("vs_parents", primary - self.parents[:, None]))
        out: dict[str, dict[str, Any]] = {r: {} for r in self.ids}
        for name, samples in named:
            lo, hi = _interval(samples)
            for i, r in enumerate(self.ids):
                out[r][name] = (float(lo[i]), float(hi[i]))
        wins = self.p_best()
        for i, r in enumerate(self.ids):
            gap_lo, gap_hi = out[r]["gap"]
            out[r].update(tied_with_best=bool(gap_lo <= 0.0 <= gap_hi), p_best=float(wins[i]), units=self.units,
                          mean=float(self.point["primary"][i]), replicates=self.replicates[i],
                          sd=None if self.replicates[i] < 2 else float(self.sd[i]))
        return out


@dataclass(frozen=True)
class _Layout:
    """Which stacked replicate columns belong to which recipe, by replicate count K."""

    k: int
    recipes: np.ndarray  # (n,) recipe indices with K replicates
    cols: np.ndarray  # (n, K) their columns in the stacked replicate matrix
    draws: np.ndarray  # (resamples, K) replicate resample counts


def _layouts(counts: Sequence[int], resamples: int, seed: int) -> list[_Layout]:
    starts = np.cumsum([0, *counts])
    out = []
    for k in sorted(set(counts)):
        recipes = np.array([i for i, c in enumerate(counts) if c == k])
        cols = np.stack([np.arange(starts[i], starts[i] + k) for i in recipes])
        # K = 1 has nothing to resample: all-ones draws keep the per-child numbers bit for bit
        draws = (np.ones((resamples, 1)) if k == 1
                 else _weights(np.random.default_rng([seed, _REPLICATE_STREAM, k]), k, resamples))
        out.append(_Layout(k, recipes, cols, draws))
    return out


def _over_replicates(values: np.ndarray, layouts: Sequence[_Layout], draws: slice | None) -> np.ndarray:
    """(c, replicate columns) -> (c, recipes): the draw-weighted mean over each recipe's replicates (the plain
    mean when ``draws`` is None)."""
    out = np.empty((values.shape[0], sum(len(lay.recipes) for lay in layouts)))
    for lay in layouts:
        w = np.ones((values.shape[0], lay.k)) if draws is None else lay.draws[draws]
        out[:, lay.recipes] = (values[:, lay.cols] * w[:, None, :]).sum(axis=2) / lay.k
    return out


def _shrink(rates: Callable[[np.ndarray], np.ndarray], size: np.ndarray, layouts: Sequence[_Layout]) -> np.ndarray:
    """Per recipe, the factor on its replicate stratum that makes the two-stratum variance match a crossed
    random-effects design's: seeds/K + episodes/E + cells/(K·E).

    Resampling replicates (whole-data means, which carry each replicate's cell noise averaged over episodes) and
    episodes (which carry it averaged over replicates) counts the replicate-by-episode noise twice and, with few
    replicates, the seed variance short by (K-1)/K. With ``S²`` the replicates' sample variance and ``V_cell`` the
    cell noise's share of the mean's variance (from the two-way residuals of the (replicate, episode) agreement
    rates, ``rates(cols)``: (recipes, K, units) for replicate columns ``cols``), the seed part is
    ``max(0, S²/K − V_cell)``; the factor scales the bootstrap's replicate part (expected variance ``S²(K−1)/K²``)
    to it, times t(K−1)/z at 97.5 %: with a handful of replicates their spread is itself uncertain, as in a t
    interval. K = 1 has no replicate part (factor 1, no effect). Recipes are taken a few at a time (each one's
    arithmetic is its own), so the rates of a large evaluation set are never held for all replicates at once.
    """
    share = size / size.sum()
    out = np.ones(sum(len(lay.recipes) for lay in layouts))
    for lay in layouts:
        if lay.k < 2:
            continue
        step = per_block(lay.k * len(size))
        for s in range(0, len(lay.recipes), step):
            y = rates(lay.cols[s:s + step])  # (recipes, K, units)
            rows = (y * share).sum(axis=2, keepdims=True)
            cols = y.mean(axis=1, keepdims=True)
            resid = y - rows - cols + (cols * share).sum(axis=2, keepdims=True)
            units = y.shape[2]
            v_cell = ((resid ** 2).sum(axis=1) * share ** 2).sum(axis=1) / (lay.k * (lay.k - 1)) * units / max(
                units - 1, 1)
            s2 = rows[..., 0].var(axis=1, ddof=1)
            seed_part = np.maximum(0.0, s2 / lay.k - v_cell)
            boot = s2 * (lay.k - 1) / lay.k ** 2
            scale = np.sqrt(np.divide(seed_part, boot, out=np.zeros_like(boot), where=boot > 0))
            out[lay.recipes[s:s + step]] = scale * _t975(lay.k - 1) / _Z975
    return out


def _mix(plain: np.ndarray, drawn: np.ndarray, shrink: np.ndarray) -> np.ndarray:
    """The replicate-mean on the episode resample plus the scaled replicate draw's deviation from it (exactly
    ``plain`` where a recipe has one replicate)."""
    return np.asarray(plain + shrink * (drawn - plain))


def _resample(agree: Mapping[str, np.ndarray], layouts: Sequence[_Layout],
              shrink: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(resamples, recipes) samples of primary, agree_a and agree_b (both strata), and of primary with episodes
    only (``episodes``), from every replicate's agreement rates on the episode resamples (``agree``: (resamples,
    replicates) a side, :func:`harness.evaluate.intervals.resampled_rates`, whose arithmetic the per-child
    intervals share). Each resample's row is computed alone, so all rows at once give what blocks of them gave."""
    values = {"primary": np.minimum(agree["a"], agree["b"]), "agree_a": agree["a"], "agree_b": agree["b"]}
    out: dict[str, np.ndarray] = {}
    for m, v in values.items():
        plain = _over_replicates(v, layouts, None)
        out[m] = _mix(plain, _over_replicates(v, layouts, slice(None)), shrink[m])
        if m == "primary":
            out["episodes"] = plain
    return out


def recipe_statistics(recipes: Mapping[str, Sequence[Mapping[str, Any]]], groups: np.ndarray, *,
                      best: str | None = None, parents: str | None = None, resamples: int = RESAMPLES,
                      seed: int = SEED) -> RecipeStats:
    """The statistics of every recipe: ``recipes`` maps a recipe id to its replicates' ``rows`` records
    (``{"n", "agree_a", "agree_b"}``, packed bits over the evaluation rows); ``groups`` gives each evaluation row
    its resampling unit (:func:`harness.evaluate.intervals.groups_from_rle`); ``best`` (default: the highest mean
    primary, the first on ties) is the recipe gaps and the tied set refer to; ``parents`` (packed agreement of A
    with B) adds ``vs_parents``."""
    ids = list(recipes)
    n = len(groups)
    if not ids:
        raise HarnessError("no recipe to compare; pass at least one recipe with one replicate")
    for r in ids:
        if not recipes[r] or any(int(rep["n"]) != n for rep in recipes[r]):
            raise HarnessError(f"recipe {r!r} has no replicate or one evaluated on other rows than the {n} "
                               "evaluation rows; pass replicates evaluated on the session's split")
    counts = [len(recipes[r]) for r in ids]
    _, unit = np.unique(groups, return_inverse=True)
    units = int(unit.max()) + 1
    size = np.bincount(unit, minlength=units).astype(np.float64)
    flat = [rep for r in ids for rep in recipes[r]]
    # (replicates, units) agreeing rows per unit, narrow integers; every sum of them is exact (see resampled_sums)
    per_unit = {side: unit_counts([rep[f"agree_{side}"] for rep in flat], unit, units) for side in SIDES}
    layouts = _layouts(counts, resamples, seed)
    whole = {side: per_unit[side].sum(axis=1, dtype=np.int64)[None, :] / size.sum() for side in SIDES}
    rep_primary = np.minimum(whole["a"], whole["b"])
    point = {"primary": _over_replicates(rep_primary, layouts, None)[0],
             **{f"agree_{s}": _over_replicates(whole[s], layouts, None)[0] for s in SIDES}}
    sd = np.array([np.std(rep_primary[0, int(s):int(s) + c], ddof=1) if c > 1 else np.nan
                   for s, c in zip(np.cumsum([0, *counts[:-1]]), counts)])
    def rates(side: str) -> Callable[[np.ndarray], np.ndarray]:  # (replicate, unit) agreement rates, on demand
        return lambda cols: per_unit[side][cols] / size

    lower_a = whole["a"][0] <= whole["b"][0]  # a replicate's primary is its lower side's agreement
    shrink = {"primary": _shrink(lambda cols: np.where(lower_a[cols][..., None], rates("a")(cols), rates("b")(cols)),
                                 size, layouts),
              "agree_a": _shrink(rates("a"), size, layouts), "agree_b": _shrink(rates("b"), size, layouts)}
    reps = np.repeat(rep_primary, resamples, axis=0)
    plain_k = np.ones(len(ids))
    for lay in layouts:
        plain_k[lay.recipes] = np.sqrt(lay.k / max(lay.k - 1, 1))  # resampled variance S²(K-1)/K² -> S²/K
    seeds_only = _mix(point["primary"][None, :], _over_replicates(reps, layouts, slice(None)), plain_k)
    agree, _ = resampled_rates([(rep["agree_a"], rep["agree_b"]) for rep in flat], parents, groups, resamples, seed)
    samples = _resample(agree, layouts, shrink)
    chosen = best if best is not None else ids[int(np.argmax(point["primary"]))]
    episodes_only, ab = samples.pop("episodes"), agree.get("ab")
    return RecipeStats(tuple(ids), tuple(counts), units, point, sd, samples, seeds_only, episodes_only, ab, chosen)
