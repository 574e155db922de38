"""History of blend quality across commits: a store of one JSON record per session, baselines, comparisons,
fail thresholds and a trend view (``python -m harness.history``).

Layout follows pytest-benchmark's: ``<storage>/<machine-id>/NNNN_<short-commit>[_dirty].json``, where the
machine id names the system, the Python and the torch version (``Linux-CPython-3.11-torch2.13.0``). Numbers are
unique across the whole store, so ``--crossover-compare=3`` names one record even with several machine folders.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.atomic import write_json
from harness.errors import HarnessError
from harness.metrics import METRICS, RANKABLE, compared_metrics

DEFAULT_STORAGE = ".crossover"
SCHEMA = "pytest-crossover-history"
SCHEMA_VERSION = 1
# Machine fields that change latency; a difference in any of them makes a latency comparison unreliable.
MACHINE_KEYS = ("node", "system", "machine", "processor", "cpu_count", "python_implementation", "python_version")
_NAME = re.compile(r"^(?P<number>\d{4,})_(?P<commit>[0-9A-Za-z]+)(?P<dirty>_dirty)?\.json$")
_FAIL = re.compile(r"^(?P<metric>[A-Za-z_][A-Za-z0-9_]*):(?P<amount>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(?P<pct>%)?$")


def fail_usage() -> str:
    """The ``--crossover-compare-fail`` grammar, naming the metrics history compares (harness.metrics)."""
    names = ", ".join(m.name for m in compared_metrics())
    return (f"use METRIC:AMOUNT[%] with METRIC one of {names} (e.g. primary:0.02, primary:5%, return:10, "
            "latency:20%), comma-separated")


# A drop exactly at the threshold passes (as in pytest-benchmark); this absorbs float round-off at the boundary.
_EPS = 1e-9


# -- environment --------------------------------------------------------------------------------------------
def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(cwd: str | Path | None = None) -> dict[str, Any]:
    """Commit, branch and dirty flag of the repository around ``cwd``; commit "nogit" outside a repository.

    Untracked files do not make a tree dirty (the store and run folders are usually untracked).
    """
    where = Path(cwd or os.getcwd())
    commit = _git(["rev-parse", "HEAD"], where)
    if not commit:
        return {"commit": "nogit", "short": "nogit", "branch": None, "dirty": False}
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], where)
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return {"commit": commit, "short": commit[:10], "branch": None if branch in (None, "HEAD") else branch,
            "dirty": bool(status)}


def versions() -> dict[str, str | None]:
    """Versions that change results; read from package metadata so torch is not imported here."""
    from importlib import metadata  # here: the plugin imports this module in every pytest run

    from harness import __version__

    out: dict[str, str | None] = {"python": platform.python_version(), "harness": __version__}
    for dist in ("torch", "numpy", "gymnasium", "pytest", "pytest-crossover"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def machine_info() -> dict[str, Any]:
    return {"node": platform.node(), "system": platform.system(), "release": platform.release(),
            "machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "python_implementation": platform.python_implementation(), "python_version": platform.python_version()}


def machine_id(machine: Mapping[str, Any] | None = None, vers: Mapping[str, Any] | None = None) -> str:
    """Sub-folder name, e.g. ``Linux-CPython-3.11-torch2.13.0``."""
    m, v = machine or machine_info(), vers or versions()
    py = ".".join(str(m.get("python_version", "")).split(".")[:2])
    raw = f"{m.get('system')}-{m.get('python_implementation')}-{py}-torch{v.get('torch') or 'none'}"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", raw)


# -- records ----------------------------------------------------------------------------------------------------
def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def child_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """One child's stored metrics, from a ``harness.leaderboard`` row: every metric under its name."""
    return {
        "child_id": row["child_id"], "rank": row.get("rank"), "status": row.get("status"),
        "degenerate": bool(row.get("degenerate")), **{m.name: row.get(m.column) for m in METRICS.values()},
        "ranked_model": row.get("ranked_model"), "pareto": bool(row.get("pareto")),
        "crossover_mode": row.get("crossover_mode"), "crossover_alpha": row.get("crossover_alpha"),
        "crossover_seed": row.get("crossover_seed"), "finetune_regime": row.get("finetune_regime"),
    }


def fingerprints(provenance: Mapping[str, Any] | None) -> dict[str, str | None]:
    p = provenance or {}
    return {k: (p.get(src) or {}).get("sha256") for k, src in
            (("parent_a", "parent_a"), ("parent_b", "parent_b"), ("states", "states_file"))}


def space_key(record: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two searches the same space: its name and custom lists (``max_runs`` only adds/removes)."""
    o = record.get("options") or {}
    return {"space": record.get("space"), **{k: o.get(k) for k in ("modes", "alphas", "seeds", "regimes")}}


def build_record(manifest: Mapping[str, Any], *, git: Mapping[str, Any] | None = None,
                 machine: Mapping[str, Any] | None = None, vers: Mapping[str, Any] | None = None,
                 timestamp: str | None = None) -> dict[str, Any]:
    """A history record from a session manifest (``CrossoverSession.manifest()``)."""
    from harness.leaderboard import build_rows

    rows = build_rows(manifest.get("children") or [], None)
    parents = manifest.get("parents") or {}
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "datetime": timestamp or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "commit_info": dict(git or git_info()), "machine_info": dict(machine or machine_info()),
        "versions": dict(vers or versions()), "space": manifest.get("space"), "options": manifest.get("options"),
        "complete": manifest.get("complete"), "fingerprints": fingerprints(manifest.get("provenance")),
        "latency_mode": manifest.get("latency_mode"),
        "parents": {"agree_ab": parents.get("agree_ab"), "latency_ms": parents.get("latency_ms"),
                    "returns": {k: (v or {}).get("mean") for k, v in (parents.get("returns") or {}).items()}},
        "children": [child_metrics(r) for r in rows],
    }


@dataclass
class Stored:
    """One record in the store."""

    path: Path
    number: int
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.stem

    def commit(self) -> str:
        return str((self.data.get("commit_info") or {}).get("commit", "nogit"))

    def children(self) -> dict[str, dict[str, Any]]:
        return {c["child_id"]: c for c in self.data.get("children") or [] if isinstance(c, dict) and "child_id" in c}


class HistoryStore:
    """The folder of records; loading reports and skips anything that is not a readable record of ours."""

    def __init__(self, root: str | Path = DEFAULT_STORAGE) -> None:
        self.root = Path(root)

    def load(self) -> tuple[list[Stored], list[str]]:
        """All records, oldest first, and one warning line per skipped file."""
        records: list[Stored] = []
        warnings: list[str] = []
        if not self.root.is_dir():
            return records, warnings
        for path in sorted(p for p in self.root.glob("*/*") if p.is_file() and not p.name.startswith(".")):
            m = _NAME.match(path.name)
            if not m:
                warnings.append(f"skipped {path}: not a pytest-crossover record name (NNNN_<commit>[_dirty].json)")
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                warnings.append(f"skipped {path}: unreadable or corrupt JSON ({str(exc).splitlines()[0][:80]})")
                continue
            if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("children"), list):
                warnings.append(f"skipped {path}: not a pytest-crossover record (schema {SCHEMA!r} missing)")
                continue
            records.append(Stored(path, int(m["number"]), data))
        records.sort(key=lambda r: (r.number, str(r.data.get("datetime", ""))))
        return records, warnings

    def next_number(self) -> int:
        numbers = [int(m["number"]) for p in self.root.glob("*/*.json") if (m := _NAME.match(p.name))]
        return max(numbers, default=0) + 1

    def save(self, record: Mapping[str, Any]) -> Path:
        """Write ``record`` atomically as the next number under its machine folder; return the path."""
        git = record.get("commit_info") or {}
        name = f"{self.next_number():04d}_{git.get('short') or 'nogit'}{'_dirty' if git.get('dirty') else ''}.json"
        folder = self.root / machine_id(record.get("machine_info"), record.get("versions"))
        return write_json(folder / name, record)


# -- baseline -----------------------------------------------------------------------------------------------------
def select_baseline(records: Sequence[Stored], current: Mapping[str, Any],
                    ref: str = "latest") -> tuple[Stored | None, list[str]]:
    """The record to compare ``current`` with, and notes to show the user.

    ``ref="latest"``: the newest record with the same space and the same parent/state fingerprints; if none has
    the same fingerprints, the newest of the same space with a note naming what differs. Otherwise ``ref`` is a
    record number (``3``, ``0003``) or a file-name prefix (``0003_ab12``); no match raises HarnessError.
    """
    if ref != "latest":
        return find_record(records, ref), []
    same_space = [r for r in records if space_key(r.data) == space_key(current)]
    if not same_space:
        return None, [(f"no stored record of space {current.get('space')!r} to compare with; "
                      "this run starts its history")]
    fp = current.get("fingerprints") or {}
    same_fp = [r for r in same_space if (r.data.get("fingerprints") or {}) == fp]
    if same_fp:
        return same_fp[-1], []
    base = same_space[-1]
    other = base.data.get("fingerprints") or {}
    differ = [k for k in fp if fp.get(k) != other.get(k)]
    short = ", ".join(f"{k} {str(v)[:8]}" for k, v in fp.items())
    return base, [(f"fingerprints differ: no stored record has the same parents and states ({short}); "
                  f"comparing with the newest record of the space, {base.name}, whose {', '.join(differ)} differ")]


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
        checks.append(FailCheck(m["metric"], float(m["amount"]), bool(m["pct"])))
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
        row: dict[str, Any] = {"child_id": cid, "status_old": old[cid].get("status"), "status": n.get("status")}
        for metric in compared_metrics():
            a, b = _num(old[cid].get(metric.name)), _num(n.get(metric.name))
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


def regressions(cmp: Comparison, checks: Sequence[FailCheck]) -> list[str]:
    """One line per breached check: child, metric, old, new and the threshold.

    A metric present in the baseline but missing now is a breach only when the child no longer finished
    (diverged, error, lost); a metric that simply was not measured (no episodes) is skipped.
    """
    out = []
    for row in cmp.rows:
        for chk in checks:
            old, new, _ = row[chk.metric]
            if old is None:
                continue
            if new is None:
                if row["status"] not in RANKABLE:
                    out.append(f"{row['child_id']}: {chk.metric} {old:.4f} -> missing (status {row['status']}) "
                               f"[{chk}]")
                continue
            if chk.breached(old, new):
                unit = "%" if chk.percent else ""
                out.append(f"{row['child_id']}: {chk.metric} {old:.4f} -> {new:.4f} "
                           f"(worse by {chk.worsening(old, new):.4g}{unit} > {chk.amount:g}{unit}) [{chk}]")
    return out


def _f(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def comparison_table(cmp: Comparison) -> str:
    body = []
    metrics = compared_metrics()
    for r in cmp.rows:
        line = [r["child_id"]]
        for m in metrics:
            a, b, d = r[m.name]
            line += [m.format(a), m.format(b), "—" if d is None else format(d, "+" + m.fmt)]
        body.append(line)
    heads = ["child_id"] + [f"{m.label} {w}" for m in metrics for w in ("old", "new", "delta")]
    from tabulate import tabulate

    return tabulate(body, headers=heads, tablefmt="github", disable_numparse=True)


# -- trend ------------------------------------------------------------------------------------------------------------
def trend_rows(records: Sequence[Stored]) -> list[dict[str, Any]]:
    """Per record: commit, best child (rank 1 among finished children), its primary and return, degenerates."""
    rows = []
    for r in records:
        kids = [c for c in r.data.get("children") or [] if isinstance(c, dict)]
        ranked = sorted((c for c in kids if c.get("status") in RANKABLE and _num(c.get("primary")) is not None),
                        key=lambda c: c.get("rank") or 0)
        best = ranked[0] if ranked else {}
        git = r.data.get("commit_info") or {}
        rows.append({"record": r.name, "commit": git.get("short"), "branch": git.get("branch"),
                     "dirty": bool(git.get("dirty")), "datetime": r.data.get("datetime"), "space": r.data.get("space"),
                     "children": len(kids), "best": best.get("child_id"), "primary": _num(best.get("primary")),
                     "return": _num(best.get("return")),
                     "degenerate": sum(c.get("status") == "degenerate" for c in kids)})
    return rows


def trend_table(rows: Sequence[Mapping[str, Any]]) -> str:
    body = [[r["record"], r["commit"], r["branch"] or "—", "yes" if r["dirty"] else "", r["space"], r["children"],
             r["best"] or "—", _f(r["primary"], ".4f"), _f(r["return"], ".1f"), r["degenerate"]] for r in rows]
    heads = ["record", "commit", "branch", "dirty", "space", "children", "best child", "primary", "return",
             "degenerate"]
    from tabulate import tabulate

    return tabulate(body, headers=heads, tablefmt="github", disable_numparse=True)


def plot_trend(records: Sequence[Stored], path: str | Path) -> Path:
    """Primary (and return, when any record has one) per child across records, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display in CI
    import matplotlib.pyplot as plt

    metrics = ["primary"] + (["return"] if any(_num(c.get("return")) is not None
                                                for r in records for c in r.children().values()) else [])
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 3.5 * len(metrics)), squeeze=False)
    labels = [f"{r.number:04d}\n{(r.data.get('commit_info') or {}).get('short', '?')}" for r in records]
    ids = sorted({cid for r in records for cid in r.children()})
    for ax, metric in zip(axes[:, 0], metrics):
        for cid in ids:
            ys = [_num(r.children().get(cid, {}).get(metric)) for r in records]
            ax.plot(range(len(records)), [math.nan if y is None else y for y in ys], marker="o", label=cid)
        ax.set_ylabel(metric)
        ax.set_xticks(range(len(records)), labels, fontsize=7)
    axes[0, 0].set_title("crossover children across commits")
    axes[0, 0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.history",
                                 description="List stored crossover records per commit; optionally plot them.")
    ap.add_argument("--storage", default=DEFAULT_STORAGE, help=f"history folder (default {DEFAULT_STORAGE})")
    ap.add_argument("--plot", metavar="FILE.png", help="draw primary (and return) per child across records")
    args = ap.parse_args(argv)
    records, warnings = HistoryStore(args.storage).load()
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not records:
        print(f"no crossover records in {args.storage}")
        return 0
    print(trend_table(trend_rows(records)))
    if args.plot:
        print(f"plot: {plot_trend(records, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
