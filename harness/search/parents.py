"""The parents' rows of a leaderboard: their mutual agreement, and each parent's latency and (optionally) return.

With a reference (harness.inputs.lineage) the rows are the reference's: what every agreement is measured against.

Under xdist the rows are split over the workers (:func:`share_of`): parent j is timed and rolled out by worker
j mod N and worker 0 adds the agreement, so the two parents' episodes run in parallel and the controller never
imports torch. :func:`merge` lays the shares out as a serial session would, so manifests diff cleanly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from harness.core.atomic import json_safe

if TYPE_CHECKING:
    from harness.search.child import Context

PARENTS = ("parent_a", "parent_b")
PARTS = ("latency_ms", "returns")  # per-parent parts; everything else (agreement) is shared


def parent_baselines(ctx: Context, names: Iterable[str] = PARENTS, *, agreement: bool = True) -> dict[str, Any]:
    """Builtins: ``agree_ab``/``bound``/``vs`` (with ``agreement``), and per named parent ``latency_ms`` and,
    when the settings ask for returns, ``returns``."""
    from harness.evaluate.timing import measure_latency

    nets = dict(zip(PARENTS, ctx.scored))  # the reference's rows when the session scores against one
    names = tuple(names)
    out: dict[str, Any] = ctx.parent_rows() if agreement else {}
    out["latency_ms"] = {n: measure_latency(nets[n], ctx.latency_input)["median_ms"] for n in names}
    s = ctx.settings
    if s.returns:
        from harness.evaluate.rollout import episode_returns

        assert s.env_id is not None
        out["returns"] = {n: episode_returns(nets[n], s.env_id, s.episodes, seed=s.episode_seed) for n in names}
    return dict(json_safe(out))


def share_of(worker: int, workers: int) -> tuple[tuple[str, ...], bool] | None:
    """(parents, with agreement) that worker ``worker`` of ``workers`` computes, or None for none."""
    names = tuple(n for j, n in enumerate(PARENTS) if j % max(1, workers) == worker)
    if not names and worker != 0:
        return None
    return names, worker == 0


def merge(shares: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The shares of several workers as one parents' row set, per-parent parts in PARENTS order."""
    merged: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}
    for share in shares:
        for key, value in share.items():
            if key in PARTS:
                parts.setdefault(key, {}).update(value)
            else:
                merged[key] = value
    for part, values in parts.items():
        merged[part] = {n: values[n] for n in PARENTS if n in values}
    return merged


def missing(parents: Mapping[str, Any], returns: bool) -> tuple[tuple[str, ...], bool]:
    """(parents whose parts are missing, whether the agreement is missing) in a merged row set."""
    parts = PARTS if returns else PARTS[:1]
    names = tuple(n for n in PARENTS if any(n not in (parents.get(p) or {}) for p in parts))
    return names, "agree_ab" not in parents
