"""The history site (``python -m harness.history --site DIR``): static pages from the history store, as asv's.

- ``index.html``: every stored session (commit, branch, dirty flag, space, teacher, fingerprint, best child,
  complete or a subset of its space) and the list of series;
- ``series-<slug>.html`` (+ its PNG): one comparable series (:func:`harness.pictures.trend.series_key`): the best child
  and each recipe across commits, and the values as a table;
- ``regressions.html``: between consecutive records of a series, every drop the ``--crossover-compare-fail``
  expressions flag (:mod:`harness.records.compare`), and the sustained shifts (:func:`harness.pictures.trend.steps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.core.atomic import write_bytes, write_text
from harness.evaluate.metrics import METRICS
from harness.pictures.page import document, esc, table
from harness.pictures.trend import (
    STEP_WINDOW,
    Series,
    best_child,
    group_series,
    recipe_values,
    recipes,
    steps,
    trend_png,
)
from harness.records.compare import FailCheck, compare, regressions
from harness.records.store import Stored

DEFAULT_FAIL = "primary:0.02,return:10%"


def _nav(current: str) -> str:
    links = [("index.html", "Sessions"), ("regressions.html", "Regressions")]
    return "<nav>" + " · ".join(f"<b>{t}</b>" if h == current else f'<a href="{h}">{t}</a>' for h, t in links) + \
        "</nav>"


def _commit(record: Stored) -> str:
    git = record.data.get("commit_info") or {}
    return f"{git.get('short') or 'nogit'}{'*' if git.get('dirty') else ''}"


def _coverage(record: Stored) -> str:
    if not record.data.get("complete"):
        return "incomplete"
    runs = (record.data.get("options") or {}).get("max_runs")
    return f"subset (first {runs})" if runs else "complete"


def index_page(records: Sequence[Stored], series: Sequence[Series], warnings: Sequence[str]) -> str:
    slug = {r.name: s for s in series for r in s.records}
    body = []
    for r in records:
        git, best, s = r.data.get("commit_info") or {}, best_child(r), slug[r.name]
        fp = r.data.get("fingerprints") or {}
        body.append([esc(r.name), esc(str(r.data.get("datetime") or "")[:19]), esc(git.get("short") or "nogit"),
                     esc(git.get("branch")), "yes" if git.get("dirty") else "", esc(r.data.get("space")),
                     esc((r.data.get("options") or {}).get("teacher")),
                     esc("/".join(str(fp.get(k) or "?")[:8] for k in ("parent_a", "parent_b", "states"))),
                     f'<a href="series-{s.slug}.html">{esc(s.title)}</a>',
                     esc(best.get("child_id")), esc(METRICS.get("primary").format(best.get("primary"))),
                     esc(_coverage(r))])
    heads = ["record", "saved (UTC)", "commit", "branch", "dirty", "space", "teacher", "fingerprint (A/B/states)",
             "series", "best child", "primary", "children"]
    listing = "".join(f'<li><a href="series-{s.slug}.html">{esc(s.title)}</a>: {len(s.records)} records</li>'
                      for s in series)
    warned = "".join(f'<p class="note">warning: {esc(w)}</p>' for w in warnings)
    return document("Crossover history", f"<h1>Crossover history</h1>{_nav('index.html')}{warned}"
                    f"<h2>Series</h2><p>Records compare within a series: same space, teacher and input "
                    f"fingerprints.</p><ul>{listing}</ul><h2>Sessions</h2>"
                    + table(heads, body, raw=True, table_id="sessions"))


def series_page(s: Series, picture: str) -> str:
    cols = [f"{r.number:04d} {_commit(r)}" for r in s.records]
    primary = METRICS.get("primary")
    best = [best_child(r) for r in s.records]
    body = [["best child", "", *(esc(primary.format(b.get("primary"))) for b in best)],
            ["", "", *(esc(b.get("child_id")) for b in best)]]
    for key, info in recipes(s).items():
        body.append([esc(key), esc(info["regime"]),
                     *(esc(primary.format(v)) for v in recipe_values(s, key, "primary"))])
    return document(f"Crossover history: {s.title}",
                    f"<h1>Series: {esc(s.title)}</h1>{_nav('')}<p>{len(s.records)} records (files "
                    f"<code>series-{esc(s.slug)}.*</code>).</p>"
                    f'<figure><img src="{esc(picture)}" alt="trend of {esc(s.title)}"></figure>'
                    f"<h2>Primary per recipe</h2>"
                    + table(["recipe", "regime", *cols], body, raw=True, table_id="recipes"))


def regression_rows(series: Sequence[Series], checks: Sequence[FailCheck]) -> list[list[str]]:
    """``[series, from, to, breach]`` for each breach between consecutive records of a series."""
    return [[s.title, old.name, new.name, line] for s in series for old, new in zip(s.records, s.records[1:])
            for line in breaches(old, new, checks)]


def breaches(old: Stored, new: Stored, checks: Sequence[FailCheck]) -> list[str]:
    """What ``--crossover-compare-fail`` flags comparing ``new`` with ``old`` (harness.records.compare decides)."""
    failed, _within_noise = regressions(compare(old, new.data), checks)
    return failed


def step_rows(series: Sequence[Series], checks: Sequence[FailCheck]) -> list[list[str]]:
    """``[series, recipe, metric, first record after the shift, median before, median after]``."""
    out = []
    for s in series:
        best = [best_child(r) for r in s.records]
        for chk in checks:
            fmt = METRICS.get(chk.metric).format
            lines = [("best child", [None if not b else b.get(chk.metric) for b in best]),
                     *((k, recipe_values(s, k, chk.metric)) for k in recipes(s))]
            for name, vals in lines:
                for st in steps(vals, chk):
                    out.append([s.title, name, str(chk), s.records[st.index].name, fmt(st.before), fmt(st.after)])
    return out


def regressions_page(series: Sequence[Series], checks: Sequence[FailCheck]) -> str:
    expr = ",".join(str(c) for c in checks)
    drops, shifts = regression_rows(series, checks), step_rows(series, checks)
    return document("Crossover history: regressions", (
        f"<h1>Regressions</h1>{_nav('regressions.html')}"
        f"<p>Checks: <code>{esc(expr)}</code> (the grammar of <code>--crossover-compare-fail</code>).</p>"
        f"<h2>Between consecutive records ({len(drops)})</h2><p>What <code>--crossover-compare-fail={esc(expr)}"
        "</code> would have flagged, comparing each record with the previous one of its series.</p>"
        + table(["series", "from", "to", "breach"], drops, table_id="drops")
        + f"<h2>Sustained shifts ({len(shifts)})</h2><p>A step starts at a record when each of it and the next "
        f"{STEP_WINDOW - 1} values is worse than the median of the {STEP_WINDOW} before it by more than the "
        "check's threshold: one bad record is a regression above, not a step.</p>"
        + table(["series", "recipe", "check", "from record", "median before", "median after"], shifts,
                table_id="steps")))


def build_site(records: Sequence[Stored], folder: str | Path, checks: Sequence[FailCheck],
               warnings: Sequence[str] = ()) -> list[Path]:
    """Write the site into ``folder``; the paths written, the index first."""
    out = Path(folder)
    series = group_series(records)
    written = [write_text(out / "index.html", index_page(records, series, warnings))]
    for s in series:
        picture = f"series-{s.slug}.png"
        written.append(write_bytes(out / picture, trend_png(s)))
        written.append(write_text(out / f"series-{s.slug}.html", series_page(s, picture)))
    written.append(write_text(out / "regressions.html", regressions_page(series, checks)))
    return written

