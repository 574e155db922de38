"""Ranking, intervals, the Pareto front, leaderboard rows, tables and the legend, and the output files' contents.

No I/O here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tabulate import tabulate

from harness.answer.recommend import chosen_id, recommend, recommendation_text, reference_statement, subset_statement
from harness.core.memo import content_memo
from harness.crossing.operators import OPERATORS
from harness.evaluate import intervals as bootstrap
from harness.evaluate.metrics import METRICS, RANKABLE, dig
from harness.search import axes
from harness.search.axes import AXES

# AgentFarm's CSV columns, in its order (its metric columns come from harness.evaluate.metrics), then ours.
_HEAD = ("rank", "child_id", "crossover_mode", "crossover_alpha", "crossover_seed", "finetune_regime",
         "finetune_epochs", "finetune_lr", "finetune_quantization_applied")
_COMPATIBLE_TAIL = ("degenerate", "child_pt_path", "eval_report_path", "run_config_path", "is_parent_baseline")


def _param_columns() -> tuple[str, ...]:
    """``crossover_<param>`` for every registered operator parameter beyond the alpha and seed slots."""
    names = dict.fromkeys(p.name for op in OPERATORS.values() for p in op.params if p.name not in ("alpha", "seed"))
    return tuple(f"crossover_{n}" for n in names)


STATS = ("tied_with_best", "p_best", "primary_vs_parents_lo", "primary_vs_parents_hi", "primary_before_finetune",
         "return_se", "return_vs_weaker_parent_hi", "latency_q1",
         "latency_q3")


def columns() -> tuple[str, ...]:
    metrics = METRICS.values()
    intervals = [f"{m.column}_{end}" for m in metrics if m.interval for end in ("lo", "hi")]
    return (*_HEAD, *(m.column for m in metrics if m.compatible), *_COMPATIBLE_TAIL, "status", "ranked_model",
            *axis_columns(), *(m.column for m in metrics if not m.compatible), *intervals, *STATS,
            *_param_columns(), "pareto")


def axis_columns() -> tuple[str, ...]:
    """A column per declared search axis beyond AgentFarm's ones (the regime's is ``finetune_regime``)."""
    return tuple(c for c in axes.columns() if c not in _HEAD)


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
        "pareto": False, "index": rec.get("index"), "latency_q1": dig(rec, "latency_ms", "q1"),
        "primary_before_finetune": dig(rec, "before_finetune", "primary"),
        "latency_q3": dig(rec, "latency_ms", "q3"),
    })
    row.update({c: cross.get(c[len("crossover_"):]) for c in _param_columns()})
    row.update({a.key: a.read(rec) for a in AXES.values() if a.key not in _HEAD})
    return row


def parent_rows(parents: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The two baseline rows (as AgentFarm's): primary = A-vs-B agreement."""
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
    # return, then to the cheaper fine-tune; run order is the last resort (AgentFarm had only that).
    rankable = row["status"] in RANKABLE and row["primary_metric"] is not None
    mean_agree = ((row["child_vs_parent_a_agreement"] or 0) + (row["child_vs_parent_b_agreement"] or 0)) / 2
    ret = row["return_mean"] if row["return_mean"] is not None else float("-inf")
    return (not rankable, -(row["primary_metric"] or 0.0) if rankable else 0.0, -mean_agree, -ret,
            row["finetune_steps"] or 0, row["index"] if row["index"] is not None else 0)


def attach_statistics(rows: list[dict[str, Any]], records: Sequence[Mapping[str, Any]],
                      parents: Mapping[str, Any] | None, split: Mapping[str, Any] | None) -> None:
    """Bootstrap intervals, the tied set, P(best) and return-drop on ranked ``rows`` (harness.evaluate.intervals).

    Agreement resamples the evaluation units of ``split`` (episodes when the buffer has ids); returns resample the
    episodes. A child whose return is significantly below the weaker parent's gets status ``return-drop``.
    """
    by_id = {r["child_id"]: r for r in records}
    ranked = [r for r in rows if r["status"] in RANKABLE and r["primary_metric"] is not None]
    packed = {r["child_id"]: by_id[r["child_id"]]["rows"] for r in ranked if by_id[r["child_id"]].get("rows")}
    if packed and split:
        n = next(iter(packed.values()))["n"]
        groups = bootstrap.groups_from_rle(split.get("eval_groups"), n)
        if len(groups) == n:
            stats = bootstrap.agreement_intervals(packed, groups, ranked[0]["child_id"],
                                                  parents=dig(parents, "rows", "agree_ab"))
            for row in ranked:
                got = stats.get(row["child_id"])
                if got:
                    for metric in ("primary", "agree_a", "agree_b"):
                        column = METRICS.get(metric).column
                        row[f"{column}_lo"], row[f"{column}_hi"] = got[metric]
                    row["tied_with_best"], row["p_best"] = got["tied_with_best"], got["p_best"]
                    if "vs_parents" in got:
                        row["primary_vs_parents_lo"], row["primary_vs_parents_hi"] = got["vs_parents"]
    returns = {r["child_id"]: dig(by_id[r["child_id"]], "return", "returns") for r in ranked}
    weaker = _weaker_parent_returns(parents)
    for cid, got in bootstrap.return_intervals({k: v for k, v in returns.items() if v}, weaker).items():
        row = next(r for r in ranked if r["child_id"] == cid)
        row["return_mean_lo"], row["return_mean_hi"] = got["return"]
        row["return_se"] = got["return_se"]
        vs_weaker = got.get("return_vs_weaker_parent")
        row["return_vs_weaker_parent_hi"] = None if vs_weaker is None else vs_weaker[1]
        if vs_weaker is not None and vs_weaker[1] < 0 and row["status"] == "ok":
            row["status"] = "return-drop"


def _weaker_parent_returns(parents: Mapping[str, Any] | None) -> list[float] | None:
    scored = [dig(parents, "returns", p) for p in ("parent_a", "parent_b")]
    scored = [s for s in scored if isinstance(s, Mapping) and s.get("returns")]
    if len(scored) < 2:
        return None
    return list(min(scored, key=lambda s: s["mean"])["returns"])


def _latency_spread(row: Mapping[str, Any]) -> tuple[float, float] | None:
    lo, hi = row.get("latency_q1"), row.get("latency_q3")
    return None if lo is None or hi is None else (lo, hi)


FRONT = ("primary ↑", "return ↑", "fine-tune steps ↓", "model bytes ↓",
         "latency ↓ (only between models that compute differently, and beyond the quartiles of their timed rounds)")


def pareto_front(rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Ids no other child dominates on primary ↑, return ↑ (when measured), fine-tune steps ↓, model size ↓ and
    latency ↓, among the children that finished well (not degenerate, diverged or return-drop).

    Every quantity but latency is the same in identical runs; latency counts only between children whose models
    compute differently (float vs int8, another size) and whose quartile ranges (of the timed rounds) do not
    overlap, so the mark does not flip on timer noise.
    """
    pts = [r for r in rows if r["status"] == "ok" and r["primary_metric"] is not None]
    use_return = all(p["return_mean"] is not None for p in pts)

    def compare(o: Mapping[str, Any], r: Mapping[str, Any]) -> tuple[bool, bool]:
        """(o is at least as good as r everywhere, o is better somewhere)."""
        pairs = [(o["primary_metric"], r["primary_metric"]), (-(o["finetune_steps"] or 0), -(r["finetune_steps"] or 0)),
                 (-(o["model_bytes"] or 0), -(r["model_bytes"] or 0))]
        if use_return:
            pairs.append((o["return_mean"], r["return_mean"]))
        ge, gt = all(a >= b for a, b in pairs), any(a > b for a, b in pairs)
        so, sr = _latency_spread(o), _latency_spread(r)
        # Children that compute alike (same kind of model, same size) have the same latency up to timer noise and
        # machine load, which differ run to run: their latencies are not compared.
        alike = (o["ranked_model"], o["model_bytes"]) == (r["ranked_model"], r["model_bytes"])
        if so is not None and sr is not None and not alike:
            ge = ge and not so[0] > sr[1]  # o is not clearly slower
            gt = gt or so[1] < sr[0]  # o is clearly faster
        return ge, gt

    return {r["child_id"] for r in pts if not any(all(compare(o, r)) for o in pts if o is not r)}


def build_rows(records: Iterable[Mapping[str, Any]], parents: Mapping[str, Any] | None,
               split: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Ranked rows (with intervals, the tied set and P(best) when ``split`` says how to resample), then the two
    parent rows."""
    records = list(records)
    rows = sorted((child_row(r) for r in records), key=_sort_key)
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    attach_statistics(rows, records, parents, split)
    front = pareto_front(rows)
    for row in rows:
        row["pareto"] = row["child_id"] in front
    if parents:
        rows.extend(parent_rows(parents))
    return rows


MARKS = {"chosen": ">", "tied": "=", "pareto": "*"}
BEFORE = ("before ft", "primary of the crossed child before fine-tuning, on the same held-out states (primary is "
                       "after fine-tuning)")


def table(rows: Sequence[Mapping[str, Any]], *, limit: int | None = None, tablefmt: str = "github",
          chosen: str | None = None) -> str:
    """The human table: rank, id, every shown metric (harness.evaluate.metrics) with its interval and, after
    primary, the primary before fine-tuning; P(best), status, marks (``chosen``: the decision's child or parent)."""
    children = [r for r in rows if not r["is_parent_baseline"]]
    parents = [r for r in rows if r["is_parent_baseline"]]
    shown = [m for m in METRICS.values() if m.shown]
    body = []
    for r in [*(children[:limit] if limit else children), *parents]:
        metrics = [m.format_row(r) for m in shown]
        metrics.insert(1, METRICS.get("primary").format(r.get("primary_before_finetune")))
        marks = "".join(MARKS[k] for k, on in (("chosen", r["child_id"] == chosen), ("tied", r.get("tied_with_best")),
                                                ("pareto", r["pareto"])) if on)
        body.append(["—" if r["rank"] is None else str(r["rank"]), r["child_id"], *metrics,
                     "—" if r.get("p_best") is None else f"{r['p_best']:.2f}", r["status"], marks])
    labels = [m.label for m in shown]
    headers = ["rank", "child_id", *labels[:1], BEFORE[0], *labels[1:], "P(best)", "status", "mark"]
    return str(tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True))


STATUSES = {
    "ok": "fine-tuned and evaluated",
    "degenerate": "primary below --crossover-degenerate-threshold (its test fails)",
    "return-drop": "return significantly below the weaker parent's (its paired 95 % interval lies under 0): "
                   "listed, never recommended",
    "diverged": "non-finite fine-tune loss; no metric is shown (its test fails)",
    "error": "the child raised (its test fails)", "lost": "its xdist worker died while running it",
    "baseline": "a parent: primary = the parents' agreement agree_ab",
    "control": "a control, what crossing must beat: a parent fine-tuned (control_a, control_b) or a fresh network "
               "distilled (control_distill) by the same regime and teacher; never gated",
}


def legend_items(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """What the table's columns, intervals, marks and statuses mean (only the statuses that occur), as (key, text):
    the one legend of the terminal, leaderboard.md and report.html."""
    from harness.search.space import child_id_grammar

    items = [("child_id", child_id_grammar())]
    items += [(m.label, m.description) for m in METRICS.values() if m.shown and m.description]
    items.insert(2, BEFORE)
    items += [
        ("± / [lo, hi]", "the 95 % interval of a paired bootstrap over the held-out states (whole episodes when the "
                         "buffer has episode ids), the same resamples for every child: the terminal shows half its "
                         "width (±), the report its ends; return: ± its standard error"),
        ("P(best)", "share of bootstrap resamples in which the child has the highest primary"),
        (f"mark {MARKS['chosen']}", "the decision's choice: the child or the parent to use (see the decision block)"),
        (f"mark {MARKS['tied']}", "statistically tied with rank 1 (the 95 % interval of its gap to rank 1 contains 0)"),
        (f"mark {MARKS['pareto']}", f"Pareto front of the children with status ok, on {', '.join(FRONT)}"),
    ]
    present = {r["status"] for r in rows}
    return items + [(f"status {s}", text) for s, text in STATUSES.items() if s in present]


def legend(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The legend as lines, ``key: text``."""
    return [f"{k}: {v}" for k, v in legend_items(rows)]


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    cols = columns()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(r.get(k)) for k in cols})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    """A CSV cell: empty for None, a per-layer value as its numbers joined by / (as --crossover-layer-alphas)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return "/".join(f"{v:g}" for v in value)
    return "" if value is None else value


def manifest_rows(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The leaderboard rows of a session manifest (with intervals: its split says how to resample)."""
    return _rows_of(manifest.get("children") or [], manifest.get("parents"), manifest.get("split"))


@content_memo()
def _rows_of(children: Sequence[Mapping[str, Any]], parents: Mapping[str, Any] | None,
             split: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    # The rows depend on these three alone; a session's end asks for them of one manifest from several places.
    return build_rows(children, parents, split)


def markdown(rows: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any], chosen: str | None = None) -> str:
    done, expected = len(manifest.get("children") or []), len(manifest.get("expected_children") or [])
    status = "complete" if manifest.get("complete") else f"INCOMPLETE: {done} of {expected} children"
    notes = [n for n in (subset_statement(manifest), reference_statement(manifest)) if n]
    note = "".join(f" **Note: {n}.**" for n in notes)
    if manifest.get("study"):  # the rows are the whole study's: say which of them this session ran
        from harness.search.study_summary import session_note

        note += f" {session_note(manifest['study'])}"
    legend_md = "\n".join(f"- {line}" for line in legend(rows))
    return (f"# Crossover leaderboard ({status})\n\nSpace `{manifest.get('space')}`; latency: "
            f"{manifest.get('latency_mode')}.{note}\n\n{table(rows, chosen=chosen)}\n\n{legend_md}\n")


def outputs(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Every session output file by name: the manifest, the leaderboard (json rows, csv, md) and the
    recommendation (json, txt); derived from the manifest alone."""
    rows = manifest_rows(manifest)
    rec = recommend(rows, manifest)
    return {
        "manifest.json": manifest,
        # A plain list of rows, as AgentFarm writes it; completeness lives in manifest.json.
        "leaderboard.json": rows,
        "leaderboard.csv": to_csv(rows),
        "leaderboard.md": markdown(rows, manifest, chosen_id(rec)),
        "recommendation.json": rec,
        "recommendation.txt": recommendation_text(rec) + "\n",
        **({"barrier.json": manifest["barrier"]} if manifest.get("barrier") else {}),
    }
