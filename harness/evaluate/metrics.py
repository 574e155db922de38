"""The metrics of a child, each declared once: where it comes from, its leaderboard column, how it is shown,
which way is better, and whether history compares it (and so whether ``--crossover-compare-fail`` takes it).

A child record holds the raw evaluation (``after_finetune`` / ``int8`` / ``return`` / ``latency_ms``); the
leaderboard row holds every metric under its ``column`` (AgentFarm's CSV names come first); a history record
holds them under their ``name``. All three are derived from :data:`METRICS`, so the names live in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.core.registry import Registry

RANKABLE = ("ok", "degenerate", "control")  # statuses whose metrics describe the fine-tuned model


def ranked_metrics(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The evaluation of the model the leaderboard ranks (int8 for QAT children), or None for a child that did
    not finish (a diverged child's weights are not the fine-tuned ones: no metric may suggest otherwise)."""
    if record.get("status") not in RANKABLE:
        return None
    return record.get("int8") if record.get("ranked_model") == "int8" else record.get("after_finetune")


def dig(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric. ``extract(record)`` reads it from a child record; ``higher_is_better`` is None for
    informational metrics; ``compared`` ones are compared across history records and can gate CI."""

    name: str
    column: str
    label: str
    fmt: str
    extract: Callable[[Mapping[str, Any]], Any]
    higher_is_better: bool | None = None
    compared: bool = False
    shown: bool = False
    description: str = ""
    compatible: bool = False  # a column of AgentFarm's CSV (which come first, in its order)
    interval: bool = False  # carries a 95 % bootstrap interval: row columns <column>_lo and <column>_hi
    spread: str | None = None  # a column shown as ``±`` instead of half the interval (return: its standard error)
    spread_fmt: str = ".3f"
    low: float | None = None  # the range the metric lies in, where it has one
    high: float | None = None

    def format(self, value: Any) -> str:
        return "—" if value is None else format(value, self.fmt)

    def format_row(self, row: Mapping[str, Any]) -> str:
        """The value as a table shows it: ``0.6605 ±0.011`` (half its 95 % interval), when the row has one."""
        value = row.get(self.column)
        text = self.format(value)
        if value is None:
            return text
        spread = row.get(self.spread) if self.spread else None
        lo, hi = row.get(f"{self.column}_lo"), row.get(f"{self.column}_hi")
        if spread is None and self.interval and lo is not None and hi is not None:
            spread = (hi - lo) / 2
        return text if spread is None else f"{text} ±{spread:{self.spread_fmt}}"



METRICS: Registry[Metric] = Registry("metric", group="pytest_crossover.metrics")


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    return METRICS.register(metric.name, metric, replace=replace)


def _ranked(*path: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda rec: dig(ranked_metrics(rec), *path)


for _m in (
    Metric("primary", "primary_metric", "primary", ".4f", lambda r: r.get("primary"), True, compared=True, shown=True,
           compatible=True, interval=True, low=0.0, high=1.0,
           description="min(agree_a, agree_b) on the held-out states: a good child agrees with both parents"),
    Metric("agree_a", "child_vs_parent_a_agreement", "agree_a", ".4f", _ranked("vs_parent_a", "top1"), True,
           shown=True, compatible=True, interval=True,
           description="share of held-out states where the child's action is parent A's"),
    Metric("agree_b", "child_vs_parent_b_agreement", "agree_b", ".4f", _ranked("vs_parent_b", "top1"), True,
           shown=True, compatible=True, interval=True,
           description="share of held-out states where the child's action is parent B's"),
    Metric("oracle", "oracle_agreement", "oracle", ".4f", _ranked("oracle"), True, compatible=True,
           description="share of held-out states where the child's action is A's or B's"),
    Metric("kl_a", "kl_divergence_a", "kl_a", ".4f", _ranked("vs_parent_a", "kl"), False, compatible=True,
           description="KL(A ‖ child) of the softmax of the raw Q-values"),
    Metric("kl_b", "kl_divergence_b", "kl_b", ".4f", _ranked("vs_parent_b", "kl"), False, compatible=True,
           description="KL(B ‖ child) of the softmax of the raw Q-values"),
    Metric("mse_a", "mse_a", "mse_a", ".4f", _ranked("vs_parent_a", "mse"), False, compatible=True),
    Metric("mse_b", "mse_b", "mse_b", ".4f", _ranked("vs_parent_b", "mse"), False, compatible=True),
    Metric("cosine_a", "cosine_a", "cosine_a", ".4f", _ranked("vs_parent_a", "cosine"), True, compatible=True),
    Metric("cosine_b", "cosine_b", "cosine_b", ".4f", _ranked("vs_parent_b", "cosine"), True, compatible=True),
    Metric("bound_ratio", "bound_ratio", "primary/bound", ".4f", _ranked("bound_ratio"), True, shown=True,
           description="primary / ((1 + agree_ab) / 2), where (1 + agree_ab) / 2 is the best primary any policy "
                       "can reach when the parents agree on agree_ab of the states"),
    Metric("return", "return_mean", "return", ".1f", lambda r: dig(r, "return", "mean"), True, compared=True,
           shown=True, interval=True, spread="return_se", spread_fmt=".1f",
           description="mean undiscounted return of the greedy policy over the evaluation episodes (± its standard "
                       "error; the same episode seeds for every child and parent)"),
    Metric("return_std", "return_std", "return_std", ".1f", lambda r: dig(r, "return", "std")),
    Metric("int8_vs_float", "int8_vs_float", "int8~float", ".4f", lambda r: dig(ranked_metrics(r), "vs_float"), True,
           shown=True, description="a QAT child's int8 model: share of held-out states where it acts as its own "
                                   "float weights do"),
    Metric("latency", "latency_ms", "latency_ms", ".3f", lambda r: dig(r, "latency_ms", "ranked"), False,
           compared=True, shown=True, low=0.0,
           description="median batch-1 forward time of the ranked model, in ms"),
    Metric("model_bytes", "model_bytes", "bytes", "d", lambda r: r.get("model_bytes"), False,
           description="size of the ranked model's tensors (int8 weights for QAT children)"),
    Metric("finetune_steps", "finetune_steps", "steps", "d", lambda r: r.get("finetune_steps"), False,
           description="Adam steps the child was fine-tuned for"),
):
    register_metric(_m)


def compared_metrics() -> tuple[Metric, ...]:
    return tuple(m for m in METRICS.values() if m.compared)
