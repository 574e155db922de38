"""Comparing a session with a stored one: the baseline record, per-child deltas, and fail thresholds."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.core.errors import HarnessError
from harness.evaluate.metrics import METRICS, RANKABLE, compared_metrics
from harness.records.store import MACHINE_KEYS, Stored, differences, num

_FAIL = re.compile(r"^(?P<metric>[A-Za-z_][A-Za-z0-9_]*):(?P<amount>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(?P<pct>%)?$")


def fail_usage() -> str:
    """The ``--crossover-compare-fail`` grammar, naming the metrics history compares (harness.evaluate.metrics)."""
    names = ", ".join(m.name for m in compared_metrics())
    return (f"use METRIC:AMOUNT[%] with METRIC one of {names} (e.g. primary:0.02, primary:5%, return:10, "
            "latency:20%), comma-separated")


# A drop exactly at the threshold passes (as in pytest-benchmark); this absorbs float round-off at the boundary.
_EPS = 1e-9


# -- baseline -----------------------------------------------------------------------------------------------------
def select_baseline(records: Sequence[Stored], current: Mapping[str, Any],
                    ref: str = "latest") -> tuple[Stored | None, list[str]]:
    """The record to compare ``current`` with, and notes to show the user.

    ``ref="latest"``: the newest complete, whole-space record with the same fingerprint (the same space, inputs
    and every setting that changes numbers, harness.records.store.comparable_on); when there is none, no baseline and a
    note naming what differs in the newest record: nothing is compared or gated. Otherwise ``ref`` is a record
    number (``3``, ``0003``) or a file-name prefix (``0003_ab12``); no match, or a record that is not comparable,
    raises HarnessError naming the differences.
    """
    fp, mine = current.get("fingerprint"), current.get("comparable_on") or {}
    if ref != "latest":
        named = find_record(records, ref)
        if named.fingerprint != fp:
            differ = differences(named.data.get("comparable_on") or {}, mine)
            raise HarnessError(f"record {named.name} is not comparable with this session: "
                               f"{'; '.join(differ) or 'it predates fingerprints'}; name a record made with the same "
                               "settings, or compare with no value for the newest comparable one")
        return named, []
    same = [r for r in records if r.fingerprint == fp]
    worthy = [r for r in same if r.baseline_worthy]
    if worthy:
        return worthy[-1], []
    if same:
        return None, [f"no complete whole-space record is comparable with this session (only subsets or interrupted "
                      f"sessions: {', '.join(r.name for r in same[-3:])}); nothing compared or gated"]
    if not records:
        return None, ["no stored record to compare with; this run starts its history"]
    newest = records[-1]
    differ = differences(newest.data.get("comparable_on") or {}, mine)
    return None, [f"no stored record is comparable with this session; the newest, {newest.name}, differs in "
                  f"{'; '.join(differ) or 'its schema (it predates fingerprints)'}; nothing compared or gated"]


def find_record(records: Sequence[Stored], ref: str) -> Stored:
    """A record by number or file-name prefix; one-line HarnessError when none or several match."""
    hits = [r for r in records if r.number == int(ref)] if ref.isdigit() else \
        [r for r in records if r.name.startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    names = ", ".join(r.name for r in records[-5:]) or "none"
    if not hits:
        raise HarnessError(f"no stored record matches {ref!r} (newest: {names}); pass a record number or "
                           "file-name prefix, or no value for the newest matching record")
    where = ", ".join(f"{h.path.parent.name}/{h.name}" for h in hits)
    raise HarnessError(f"{ref!r} matches {len(hits)} records ({where}); "
                       "remove the copy you do not want from the store")


# -- comparison and fail thresholds --------------------------------------------------------------------------
@dataclass(frozen=True)
class FailCheck:
    """``metric:amount`` (absolute) or ``metric:amount%`` (relative): a worse change beyond amount is a breach."""

    metric: str
    amount: float
    percent: bool

    def __str__(self) -> str:
        return f"{self.metric}:{self.amount:g}{'%' * self.percent}"

    def worsening(self, old: float, new: float) -> float:
        """How much worse ``new`` is than ``old`` in this check's unit (negative = better)."""
        worse = (old - new) if METRICS.get(self.metric).higher_is_better else (new - old)
        if not self.percent:
            return worse
        if old == 0:
            return math.inf if worse > 0 else 0.0
        return worse / abs(old) * 100.0

    def breached(self, old: float, new: float) -> bool:
        return self.worsening(old, new) > self.amount + _EPS * max(1.0, abs(self.amount))


def parse_fail(text: str) -> list[FailCheck]:
    """Parse ``EXPR[,EXPR...]``; one-line HarnessError naming the bad part and the grammar."""
    checks = []
    for part in (p.strip() for p in text.split(",")):
        m = _FAIL.match(part)
        if not m or m["metric"] not in {c.name for c in compared_metrics()}:
            raise HarnessError(f"cannot parse {part!r}; {fail_usage()}")
        check = FailCheck(m["metric"], float(m["amount"]), bool(m["pct"]))
        metric = METRICS.get(check.metric)
        span = None if metric.low is None or metric.high is None else metric.high - metric.low
        never = (check.percent and check.amount >= 100 and metric.higher_is_better and metric.low == 0) or \
            (not check.percent and span is not None and check.amount >= span)
        if never:
            raise HarnessError(f"{part!r} can never fire: {check.metric} lies in [{metric.low:g}, {metric.high:g}], so "
                               "it cannot drop by that much; pass a smaller amount")
        checks.append(check)
    return checks


@dataclass
class Comparison:
    """Per child old/new/delta for each compared metric, children added or removed, and notes."""

    baseline: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    same_machine: bool = True


def compare(baseline: Stored, current: Mapping[str, Any]) -> Comparison:
    old = baseline.children()
    new = {c["child_id"]: c for c in current.get("children") or []}
    cmp = Comparison(baseline.name, added=[c for c in new if c not in old], removed=[c for c in old if c not in new])
    for cid, n in new.items():
        if cid not in old:
            continue
        row: dict[str, Any] = {"child_id": cid, "status_old": old[cid].get("status"), "status": n.get("status"),
                               "old": old[cid], "new": n}
        for metric in compared_metrics():
            a, b = num(old[cid].get(metric.name)), num(n.get(metric.name))
            row[metric.name] = (a, b, None if a is None or b is None else b - a)
        cmp.rows.append(row)
    om, nm = baseline.data.get("machine_info") or {}, current.get("machine_info") or {}
    differ = [k for k in MACHINE_KEYS if om.get(k) != nm.get(k)]
    if differ:
        cmp.same_machine = False
        cmp.notes.append(f"machine info differs from {baseline.name} ({', '.join(differ)}): latency deltas compare "
                         "different machines and are not meaningful")
    if baseline.commit() == (current.get("commit_info") or {}).get("commit"):
        cmp.notes.append(f"{baseline.name} is from the same commit")
    return cmp


def _noise(metric: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> float:
    """How far apart two records' values may be by chance: the root sum of squares of the half-widths of their 95 %
    intervals (a return: 1.96 standard errors); 0 for a metric without an interval (latency)."""
    def half(c: Mapping[str, Any]) -> float:
        lo, hi = num(c.get(f"{metric}_lo")), num(c.get(f"{metric}_hi"))
        if metric == "return" and num(c.get("return_se")) is not None:
            return 1.96 * float(c["return_se"])
        return 0.0 if lo is None or hi is None else (hi - lo) / 2

    return math.hypot(half(old), half(new))


def regressions(cmp: Comparison, checks: Sequence[FailCheck]) -> tuple[list[str], list[str]]:
    """(breaches, drops within the noise): one line per child, metric and check.

    A drop fails only when it is larger than the check's threshold AND than the noise of the two values
    (:func:`_noise`); a drop past the threshold but inside the noise is reported, not failed. A metric present in
    the baseline but missing now is a breach only when the child no longer finished (diverged, error, lost); a
    metric that simply was not measured (no episodes) is skipped.
    """
    verdicts = [v for row in cmp.rows for v in row_verdicts(row, checks)]
    return [line for kind, _, line in verdicts if kind == "regressed"], \
        [line for kind, _, line in verdicts if kind == "noise"]


def row_verdicts(row: Mapping[str, Any], checks: Sequence[FailCheck]) -> list[tuple[str, FailCheck, str]]:
    """(``regressed`` or ``noise``, the check, its line) for each check one child's row breaches."""
    out = []
    for chk in checks:
        old, new, _ = row[chk.metric]
        if old is None:
            continue
        if new is None:
            if row["status"] not in RANKABLE:
                out.append(("regressed", chk, f"{row['child_id']}: {chk.metric} {old:.4f} -> missing (status "
                                              f"{row['status']}) [{chk}]"))
            continue
        if not chk.breached(old, new):
            continue
        unit = "%" if chk.percent else ""
        line = (f"{row['child_id']}: {chk.metric} {old:.4f} -> {new:.4f} (worse by "
                f"{chk.worsening(old, new):.4g}{unit} > {chk.amount:g}{unit}) [{chk}]")
        noise = _noise(chk.metric, row["old"], row["new"])
        if abs(new - old) > noise:
            out.append(("regressed", chk, line))
        else:
            out.append(("noise", chk, f"{line}: within the noise (±{noise:.4g}), not failed"))
    return out


FLAGS = {"regressed": "regressed", "noise": "within noise"}


def comparison_table(cmp: Comparison, checks: Sequence[FailCheck] = ()) -> str:
    """Per child: its status (old -> new when it changed), each compared metric old/new/delta, and the flag of
    each ``checks`` entry it breaches (``regressed metric:amount``, or ``within noise`` when the drop is inside the
    two values' noise)."""
    body = []
    metrics = compared_metrics()
    for r in cmp.rows:
        old, new = r.get("status_old"), r.get("status")
        line = [r["child_id"], str(new) if old == new or old is None else f"{old} -> {new}"]
        for m in metrics:
            a, b, d = r[m.name]
            line += [m.format(a), m.format(b), "—" if d is None else format(d, "+" + m.fmt)]
        line.append(", ".join(f"{FLAGS[kind]} {chk}" for kind, chk, _ in row_verdicts(r, checks)))
        body.append(line)
    heads = ["child_id", "status"] + [f"{m.label} {w}" for m in metrics for w in ("old", "new", "delta")] + ["flag"]
    from tabulate import tabulate

    return str(tabulate(body, headers=heads, tablefmt="github", disable_numparse=True))
