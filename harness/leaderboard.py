"""Ranking, the Pareto front, leaderboard rows and tables, and the recommendation text. No I/O here."""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tabulate import tabulate

from harness.metrics import METRICS, RANKABLE, dig
from harness.operators import OPERATORS

# The established CSV's columns, in its order (its metric columns come from harness.metrics), then ours.
_HEAD = ("rank", "child_id", "crossover_mode", "crossover_alpha", "crossover_seed", "finetune_regime",
         "finetune_epochs", "finetune_lr", "finetune_quantization_applied")
_ESTABLISHED_TAIL = ("degenerate", "child_pt_path", "eval_report_path", "run_config_path", "is_parent_baseline")


def _param_columns() -> tuple[str, ...]:
    """``crossover_<param>`` for every registered operator parameter beyond the alpha and seed slots."""
    names = dict.fromkeys(p.name for op in OPERATORS.values() for p in op.params if p.name not in ("alpha", "seed"))
    return tuple(f"crossover_{n}" for n in names)


def columns() -> tuple[str, ...]:
    metrics = METRICS.values()
    return (*_HEAD, *(m.column for m in metrics if m.established), *_ESTABLISHED_TAIL, "status", "ranked_model",
            *(m.column for m in metrics if not m.established), *_param_columns(), "pareto")


def child_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten one child record into a leaderboard row (rank and pareto are set by ``build_rows``)."""
    cross, reg, files = rec.get("crossover") or {}, rec.get("finetune_regime") or {}, rec.get("files") or {}
    row: dict[str, Any] = {
        "rank": None, "child_id": rec["child_id"], "crossover_mode": cross.get("mode"),
        "crossover_alpha": cross.get("alpha"), "crossover_seed": cross.get("seed"),
        "finetune_regime": reg.get("name"), "finetune_epochs": reg.get("epochs"), "finetune_lr": reg.get("lr"),
        "finetune_quantization_applied": reg.get("quantization_applied"),
    }
    row.update({m.column: m.extract(rec) for m in METRICS.values()})
    row.update({
        "degenerate": rec.get("status") == "degenerate", "child_pt_path": files.get("child"),
        "eval_report_path": files.get("eval"), "run_config_path": files.get("run_config"),
        "is_parent_baseline": False, "status": rec.get("status"), "ranked_model": rec.get("ranked_model"),
        "pareto": False, "index": rec.get("index"),
    })
    row.update({c: cross.get(c[len("crossover_"):]) for c in _param_columns()})
    return row


def parent_rows(parents: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The two baseline rows (as the established tool's): primary = A-vs-B agreement."""
    ab = parents.get("agree_ab")
    vs = parents.get("vs") or {}
    rows = []
    for name, other in (("parent_a", "b"), ("parent_b", "a")):
        row: dict[str, Any] = dict.fromkeys(columns())
        own = "a" if name == "parent_a" else "b"
        row.update({
            "child_id": name, "crossover_mode": "—", "finetune_regime": "—", "finetune_quantization_applied": "—",
            "primary_metric": ab, f"child_vs_parent_{own}_agreement": 1.0, f"child_vs_parent_{other}_agreement": ab,
            f"kl_divergence_{own}": 0.0, f"mse_{own}": 0.0, f"cosine_{own}": 1.0,
            f"kl_divergence_{other}": vs.get("kl"), f"mse_{other}": vs.get("mse"), f"cosine_{other}": vs.get("cosine"),
            "degenerate": False, "is_parent_baseline": True, "status": "baseline", "pareto": False,
            "bound_ratio": None if ab is None else ab / ((1 + ab) / 2),
            "return_mean": dig(parents, "returns", name, "mean"),
            "return_std": dig(parents, "returns", name, "std"),
            "latency_ms": dig(parents, "latency_ms", name),
        })
        rows.append(row)
    return rows


def _sort_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    # Ties on the primary metric go to the child closer to both parents on average, then to the better
    # return, then to the cheaper fine-tune; run order is the last resort (reference §8.13 had only that).
    rankable = row["status"] in RANKABLE and row["primary_metric"] is not None
    mean_agree = ((row["child_vs_parent_a_agreement"] or 0) + (row["child_vs_parent_b_agreement"] or 0)) / 2
    ret = row["return_mean"] if row["return_mean"] is not None else float("-inf")
    return (not rankable, -(row["primary_metric"] or 0.0) if rankable else 0.0, -mean_agree, -ret,
            row["finetune_steps"] or 0, row["index"] if row["index"] is not None else 0)


# Batch-1 latencies of same-sized nets differ by timer noise (a few %); closer than this they count as equal,
# so the Pareto mark reflects real trade-offs (an int8 child, a bigger net), not noise.
LATENCY_TOLERANCE = 0.10


def pareto_front(rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Ids no other child dominates on primary ↑, fine-tune steps ↓ and latency ↓ (latency within
    ``LATENCY_TOLERANCE`` counts as equal; ignored when any child has none)."""
    pts = [r for r in rows if r["status"] in RANKABLE and r["primary_metric"] is not None]
    use_latency = all(p["latency_ms"] is not None for p in pts)

    def no_worse(o: Mapping[str, Any], r: Mapping[str, Any]) -> tuple[bool, bool]:
        """(o is at least as good as r everywhere, o is better somewhere)."""
        steps_o, steps_r = o["finetune_steps"] or 0, r["finetune_steps"] or 0
        ge = o["primary_metric"] >= r["primary_metric"] and steps_o <= steps_r
        gt = o["primary_metric"] > r["primary_metric"] or steps_o < steps_r
        if use_latency:
            ge = ge and o["latency_ms"] <= r["latency_ms"] * (1 + LATENCY_TOLERANCE)
            gt = gt or o["latency_ms"] < r["latency_ms"] * (1 - LATENCY_TOLERANCE)
        return ge, gt

    front = set()
    for r in pts:
        if not any(all(no_worse(o, r)) for o in pts if o is not r):
            front.add(r["child_id"])
    return front


def build_rows(records: Iterable[Mapping[str, Any]], parents: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    rows = sorted((child_row(r) for r in records), key=_sort_key)
    front = pareto_front(rows)
    for i, row in enumerate(rows, 1):
        row["rank"] = i
        row["pareto"] = row["child_id"] in front
    if parents:
        rows.extend(parent_rows(parents))
    return rows


def table(rows: Sequence[Mapping[str, Any]], *, limit: int | None = None, tablefmt: str = "github") -> str:
    """The human table: rank, id, every shown metric (harness.metrics), status and the Pareto mark."""
    children = [r for r in rows if not r["is_parent_baseline"]]
    parents = [r for r in rows if r["is_parent_baseline"]]
    shown = [m for m in METRICS.values() if m.shown]
    body = [["—" if r["rank"] is None else str(r["rank"]), r["child_id"], *(m.format(r[m.column]) for m in shown),
             r["status"], "*" if r["pareto"] else ""] for r in [*(children[:limit] if limit else children), *parents]]
    headers = ["rank", "child_id", *(m.label for m in shown), "status", "pareto"]
    return str(tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True))


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    cols = columns()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in cols})
    return buf.getvalue()


def _means(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(str(r[key]), []).append(r["primary_metric"])
    return {k: statistics.fmean(v) for k, v in groups.items()}


def recommendation(rows: Sequence[Mapping[str, Any]], parents: Mapping[str, Any] | None = None) -> str:
    """Data-driven recommendation in the established layout (reference §5.7), plus what it lacked."""
    rule = "=" * 72
    children = [r for r in rows if not r["is_parent_baseline"]]
    ranked = [r for r in children if r["status"] in RANKABLE and r["primary_metric"] is not None]
    if not ranked:
        return "No runs to analyse — manifest is empty." if not children else (
            "No child finished with finite metrics; see the status column of leaderboard.md.")
    best = ranked[0]
    lines = [rule, "Crossover Search — Strategy Recommendation", rule,
             f"Total children evaluated : {len(children)}",
             f"Degenerate children      : {sum(r['status'] == 'degenerate' for r in children)}"]
    failed = [r for r in children if r["status"] not in RANKABLE]
    if failed:
        listed = ", ".join(f"{r['child_id']} {r['status']}" for r in failed)
        lines.append(f"Failed children          : {len(failed)} ({listed})")
    lines += ["", "Top children by primary metric (min agreement with A and B):"]
    for r in ranked[:3]:
        lines.append(f"  #{r['rank']:>2}  {r['child_id']:<40}  primary={r['primary_metric']:.4f}  "
                     f"agree_a={r['child_vs_parent_a_agreement']:.4f}  agree_b={r['child_vs_parent_b_agreement']:.4f}")
    mode_avg, regime_avg = _means(ranked, "crossover_mode"), _means(ranked, "finetune_regime")
    best_mode, best_regime = max(mode_avg, key=mode_avg.__getitem__), max(regime_avg, key=regime_avg.__getitem__)
    for title, avg, pick in (("crossover mode", mode_avg, best_mode), ("fine-tune regime", regime_avg, best_regime)):
        lines += ["", f"Mean primary by {title}:"]
        for k, v in sorted(avg.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {k:<12}  avg={v:.4f}" + ("  ← recommended" if k == pick else ""))
    in_regime = next(r for r in ranked if r["finetune_regime"] == best_regime)
    lines += ["", "Recommended default strategy:", f"  Crossover : {best_mode}",
              f"  Fine-tune : {best_regime}  (LR={in_regime['finetune_lr']:.0e}  "
              f"epochs={in_regime['finetune_epochs']})"]
    lines += ["", "Best child per crossover mode:"]
    scenario = {"random": "maximum diversity", "layer": "structural coherence", "weighted": "smooth interpolation"}
    for mode in scenario:
        top = next((r for r in ranked if r["crossover_mode"] == mode), None)
        if top:
            lines.append(f"  {scenario[mode]:<22} {top['child_id']:<40} primary={top['primary_metric']:.4f}")
    ab = (parents or {}).get("agree_ab")
    if ab is not None:
        lines += ["", f"Parent A vs Parent B agreement (inter-parent diversity baseline) : {ab:.4f}"]
        beating = [r for r in ranked if r["primary_metric"] > ab]
        lines.append(f"Children above the parent baseline: {len(beating)} of {len(ranked)}" if beating else
                     "No child beats the parent baseline: every child agrees with one parent less than the parents "
                     "agree with each other; prefer a parent, or try longer fine-tuning or teacher 'both'.")
    with_return = [r for r in ranked if r["return_mean"] is not None]
    if with_return:
        by_return = max(with_return, key=lambda r: r["return_mean"])
        note = ("the same child" if by_return["child_id"] == best["child_id"] else
                f"NOT the top child by agreement: {by_return['child_id']} earns the best return")
        lines += ["", f"Best return: {by_return['return_mean']:.1f} ({by_return['child_id']}); {note}."]
    lines += ["", "Best individual child:", f"  id        : {best['child_id']}",
              f"  mode      : {best['crossover_mode']}",
              f"  alpha     : {best['crossover_alpha']}", f"  seed      : {best['crossover_seed']}",
              f"  regime    : {best['finetune_regime']}", f"  epochs    : {best['finetune_epochs']}",
              f"  lr        : {best['finetune_lr']:.0e}", f"  primary   : {best['primary_metric']:.4f}",
              f"  agree_a / agree_b : {best['child_vs_parent_a_agreement']:.4f} / "
              f"{best['child_vs_parent_b_agreement']:.4f}",
              f"  oracle    : {METRICS.get('oracle').format(best['oracle_agreement'])}", rule]
    return "\n".join(lines)


def outputs(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Every session output file by name: the manifest, the leaderboard (json rows, csv, md) and the
    recommendation; derived from the manifest alone."""
    rows = build_rows(manifest.get("children") or [], manifest.get("parents"))
    done, expected = len(manifest.get("children") or []), len(manifest.get("expected_children") or [])
    status = "complete" if manifest.get("complete") else f"INCOMPLETE: {done} of {expected} children"
    md = (f"# Crossover leaderboard ({status})\n\nSpace `{manifest.get('space')}`; latency: "
          f"{manifest.get('latency_mode')}.\n\n{table(rows)}\n")
    return {
        "manifest.json": manifest,
        # A plain list of rows, as the established tool writes it; completeness lives in manifest.json.
        "leaderboard.json": rows,
        "leaderboard.csv": to_csv(rows),
        "leaderboard.md": md,
        "recommendation.txt": recommendation(rows, manifest.get("parents")) + "\n",
    }
