"""A study as the outputs show it: its trials by state and host, the trials one session asked, the best trial and
how much its score shrank over its confirmation runs, and the Pareto front with two objectives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.search.study import CONFIRMS, RECORD


def _brief(t: Any) -> dict[str, Any]:
    attrs = t.user_attrs
    return {"number": t.number, "child_id": attrs.get("child_id") or (attrs.get(RECORD) or {}).get("child_id"),
            "state": t.state.name.lower(), "status": attrs.get("status"),
            "values": list(t.values) if t.values is not None else None, "host": attrs.get("host"),
            "session": attrs.get("session"), **({CONFIRMS: attrs[CONFIRMS]} if CONFIRMS in attrs else {})}


def summarize(study: Any, objectives: Sequence[str], *, name: str, storage: str, session: str, asked: Sequence[int],
              failed_dead: Sequence[int], errors: Sequence[str] = ()) -> dict[str, Any]:
    """The study as outputs show it: every trial (state, values, host, session), the counts, the best trial and how
    much its score shrank over its confirmation runs, and the Pareto front with two objectives."""
    trials = [_brief(t) for t in study.get_trials(deepcopy=False)]
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    complete = [t for t in trials if t["state"] == "complete"]
    out: dict[str, Any] = {
        "name": name, "storage": storage, "objectives": list(objectives), "session": session,
        "asked_this_session": list(asked), "failed_dead": list(failed_dead), "counts": counts,
        "confirmation_runs": sum(CONFIRMS in t for t in complete),
        "confirmed_this_session": sum(CONFIRMS in t and t["session"] == session for t in trials),
        "trials": trials, "errors": list(errors),
        "hosts": sorted({str(t["host"]) for t in trials if t["host"]}), "best": _best(complete), "pareto": None,
    }
    if len(objectives) > 1 and complete:
        out["pareto"] = [_brief(t) for t in study.best_trials]
    return out


def _best(complete: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The best complete trial by the first objective, and its score over it and its confirmation runs."""
    bases = [t for t in complete if CONFIRMS not in t]
    if not bases:
        return None
    best = max(bases, key=lambda t: (t["values"][0], -t["number"]))
    runs = [best["values"][0]] + [t["values"][0] for t in complete if t.get(CONFIRMS) == best["number"]]
    mean = sum(runs) / len(runs)
    return {**best, "alone": best["values"][0], "runs": len(runs), "mean": mean, "shrank": best["values"][0] - mean}


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The study's lines in recommendation.txt and the report."""
    c = summary["counts"]
    asked = summary["asked_this_session"]
    this = (f"t{asked[0]:04d}..t{asked[-1]:04d}" if len(asked) > 1 else f"t{asked[0]:04d}") if asked else "none"
    lines = [f"Study {summary['name']} ({summary['storage']}; maximises {', '.join(summary['objectives'])}):",
             f"  {sum(c.values())} trials: {c.get('complete', 0)} complete ({summary['confirmation_runs']} of them "
             f"confirmation runs), {c.get('fail', 0)} failed, {c.get('running', 0)} running elsewhere; this session "
             f"asked {len(asked)} ({this}) and ran {summary['confirmed_this_session']} confirmation run(s)"]
    by_host: dict[str, list[int]] = {}
    for t in summary["trials"]:
        by_host.setdefault(str(t["host"] or "?"), []).append(int(t["number"]))
    if by_host:
        lines.append("  trials by host: " + "; ".join(f"{h} {len(n)} ({_ranges(n)})" for h, n in by_host.items()))
    if summary["failed_dead"]:
        lines.append("  failed by this session (their own session died before they finished): "
                     + _ranges(summary["failed_dead"]))
    best = summary.get("best")
    if best:
        if best["runs"] > 1:
            lines.append(f"  best trial {best['child_id']}: {summary['objectives'][0]} {best['alone']:.4f} alone, "
                         f"{best['mean']:.4f} over it and {best['runs'] - 1} confirmation run(s): it shrank by "
                         f"{best['shrank']:+.4f}")
        else:
            lines.append(f"  best trial {best['child_id']}: {summary['objectives'][0]} {best['alone']:.4f}, one run "
                         "(not confirmed yet: the next session re-runs the top trials with other seeds; "
                         "--crossover-trials 0 only confirms)")
    if summary.get("pareto"):
        lines.append(f"  Pareto front ({', '.join(summary['objectives'])}): " + "; ".join(
            f"{t['child_id']} " + " / ".join(f"{v:.4g}" for v in t["values"]) for t in summary["pareto"]))
    lines += [f"  not told to the study: {e}" for e in summary.get("errors") or ()]
    return lines


def _ranges(numbers: Sequence[int]) -> str:
    """``t0000..t0003, t0007``: trial numbers as runs."""
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return ", ".join(f"t{a:04d}" if a == b else f"t{a:04d}..t{b:04d}" for a, b in out)


def session_note(summary: Mapping[str, Any]) -> str:
    """One sentence for the leaderboard: its rows are the study's, and which trials this session asked."""
    asked = summary["asked_this_session"]
    return (f"Study `{summary['name']}`: every trial of the study ({len(summary['trials'])}); this session asked "
            f"{len(asked)} ({_ranges(asked) if asked else 'none'}) and ran {summary['confirmed_this_session']} "
            "confirmation run(s).")
