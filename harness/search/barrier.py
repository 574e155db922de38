"""The interpolation barrier: how much worse than its endpoints the straight line between the parents is.

The standard number of the model-merging literature: the weighted child at alpha = 0, 0.1, ..., 1 (B to A) is
evaluated before any fine-tuning, with and without aligning B to A first; the barrier of a curve is its largest
drop below the straight line between its endpoints. A high barrier says the parents sit in different basins
(their units do not line up); alignment that lowers it is what makes crossover work. No training: one evaluation
per alpha and alignment (and, when asked, a batch of greedy episodes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.search.child import Context

ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
MODES = ("on", "returns", "off")  # on: agreement curves; returns: also greedy returns at every alpha
CURVES = ("primary", "agree_a", "agree_b")


def barrier(values: Sequence[float | None]) -> float | None:
    """The largest drop of ``values`` (over evenly spaced alphas) below the line between its endpoints (>= 0)."""
    if not values or any(v is None for v in values):
        return None
    first, last, n = float(values[0]), float(values[-1]), len(values) - 1  # type: ignore[arg-type]
    drops = [first + (last - first) * i / n - float(v) for i, v in enumerate(values)]  # type: ignore[arg-type]
    return max(0.0, max(drops))


def interpolation(ctx: Context, aligns: Iterable[str] = ("none",), *, returns: bool = False) -> dict[str, Any]:
    """The curves and barriers (JSON-safe): ``{"alphas", "curves": {align: {primary, agree_a, agree_b, return}},
    "barrier": {align: {primary, return}}}``; returns only with ``returns`` and an environment."""
    from harness.evaluate.rollout import episode_returns
    from harness.search.space import Recipe

    s = ctx.settings
    with_returns = returns and s.returns
    out: dict[str, Any] = {"alphas": list(ALPHAS), "curves": {}, "barrier": {}}
    for align in dict.fromkeys(aligns):
        curve: dict[str, list[float | None]] = {k: [] for k in CURVES}
        curve_return: list[float | None] = []
        for alpha in ALPHAS:
            child = ctx.new_child(ctx.cross(Recipe.of("weighted", alpha=alpha), align))
            m = ctx.evaluate(child)
            for key, value in (("primary", m["primary"]), ("agree_a", m["vs_parent_a"]["top1"]),
                               ("agree_b", m["vs_parent_b"]["top1"])):
                curve[key].append(float(value))
            if with_returns:
                assert s.env_id is not None
                curve_return.append(episode_returns(child, s.env_id, s.episodes, seed=s.episode_seed)["mean"])
        out["curves"][align] = {**curve, "return": curve_return if with_returns else None}
        out["barrier"][align] = {"primary": barrier(curve["primary"]),
                                 "return": barrier(curve_return) if with_returns else None}
    return out


def summary(data: Mapping[str, Any]) -> list[str]:
    """One line per alignment: its barrier on primary (and return), for the recommendation."""
    lines = []
    for align, b in (data.get("barrier") or {}).items():
        ret = f", on return {b['return']:.1f}" if b.get("return") is not None else ""
        curve = (data.get("curves") or {}).get(align) or {}
        mid = curve.get("primary", [None] * 11)[5]
        mid_text = f" (the un-fine-tuned midpoint child: primary {mid:.4f})" if mid is not None else ""
        lines.append(f"interpolation barrier with alignment {align}: {b['primary']:.4f} on primary{ret}{mid_text}")
    return lines
