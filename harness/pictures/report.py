"""``report.html``: one self-contained page per session (the leaderboard, the pictures, how the session ran).

The page holds its pictures inline (PNG data URIs) and its style in the page: no network, no JavaScript. Each
picture is also a file beside it (``report_<name>.png``) for a paper or a PR comment. A picture that fails to
draw takes its place in the page as a note saying why; the other pictures and the page are still written.
Everything derives from the manifest (and, when a session wrote one, ``barrier.json``), so
``python -m harness.pictures.report RUN_DIR`` redraws the report of any run directory.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.answer.leaderboard import BEFORE, MARKS, axis_columns, legend_items, manifest_rows
from harness.answer.recommend import DECISION_TITLE, chosen_id, decision_lines, recipe_text, recommend
from harness.core.errors import first_line
from harness.evaluate.metrics import METRICS, RANKABLE
from harness.pictures.files import BARRIER, PICTURE_PREFIX, REPORT
from harness.pictures.page import document, esc, legend, table
from harness.search.axes import AXES


class Drawer(Protocol):
    """A process that draws pictures (harness.pictures.drawer): sent the inputs and its share, it returns them."""

    def send(self, inputs: Mapping[str, Any], names: Sequence[str]) -> None: ...
    def receive(self) -> Sequence[Drawn] | None: ...


@dataclass(frozen=True)
class Drawn:
    """A picture as the page shows it: its PNG, or why there is none (``error``: it failed; ``empty``: nothing
    to draw in this session)."""

    name: str
    title: str
    caption: str
    png: bytes | None = None
    error: str | None = None
    empty: bool = False

    @property
    def file(self) -> str:
        return f"{PICTURE_PREFIX}{self.name}.png"


def draw_shared(pictures: Sequence[Any], inputs: Mapping[str, Any], drawers: Sequence[Drawer]) -> list[Drawn]:
    """:func:`draw`, the pictures shared out between ``drawers`` (processes warmed up while the session ran, see
    harness.pictures.drawer) and drawn at once; those a drawer could not draw are drawn here."""
    names = [p.name for p in pictures]
    # The costliest picture first, each to the drawer with the least work so far: the drawers finish together.
    shares: list[list[str]] = [[] for _ in drawers]
    loads = [0.0] * len(drawers)
    for p in sorted(pictures, key=lambda p: -p.cost) if drawers else ():
        i = loads.index(min(loads))
        shares[i].append(p.name)
        loads[i] += p.cost
    for drawer, share in zip(drawers, shares):
        drawer.send(inputs, share)
    by_name: dict[str, Drawn] = {}
    for drawer, share in zip(drawers, shares):
        by_name.update(zip(share, drawer.receive() or ()))
    rest = [p for p in pictures if p.name not in by_name]
    by_name.update(zip((p.name for p in rest), draw(rest) if rest else ()))
    return [by_name[n] for n in names]


def draw(pictures: Sequence[Any]) -> list[Drawn]:
    """Draw each picture (a :class:`harness.pictures.plots.Picture`); one that raises is kept as its error."""
    from harness.pictures import figure

    try:
        import matplotlib  # noqa: F401  (the plots extra; without it every picture says so)
    except ImportError:
        why = "matplotlib is not installed (pip install 'pytest-crossover[plots]')"
        return [Drawn(p.name, p.title, p.caption, error=why) for p in pictures]
    out = []
    for p in pictures:
        fig = None
        try:
            with figure.style():
                fig = p.draw()
                out.append(Drawn(p.name, p.title, p.caption, png=None if fig is None else figure.png(fig),
                                 empty=fig is None))
        except Exception as exc:  # a picture's bug must not cost the session its report, nor its other outputs
            out.append(Drawn(p.name, p.title, p.caption, error=f"{type(exc).__name__}: {first_line(exc)}"))
    return out


def _enrich(rows: list[dict[str, Any]], records: Sequence[Mapping[str, Any]], run_dir: Path | None) -> None:
    """What the pictures use beyond the leaderboard's columns: each axis's value from the record where the row has
    none, and ``model_kb``, the size of the ranked model's file (int8 children are smaller)."""
    by_id = {r["child_id"]: r for r in records}
    for row in rows:
        rec = by_id.get(row["child_id"])
        if rec is None:
            continue
        for axis in AXES.values():
            if row.get(axis.key) is None:
                row[axis.key] = axis.read(rec)
        files = rec.get("files") or {}
        rel = files.get("int8") if row.get("ranked_model") == "int8" else files.get("child")
        if run_dir is not None and rel and (run_dir / rel).is_file():
            row["model_kb"] = (run_dir / rel).stat().st_size / 1024


def load_barrier(manifest: Mapping[str, Any], run_dir: Path | None) -> dict[str, Any] | None:
    """The interpolation barrier of the session: in the manifest, or ``barrier.json`` beside it."""
    if isinstance(manifest.get("barrier"), Mapping):
        return dict(manifest["barrier"])
    path = None if run_dir is None else run_dir / BARRIER
    if path is None or not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def session_rows(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The leaderboard rows the report shows, built in this one place from the manifest, as the leaderboard's."""
    return manifest_rows(manifest)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No garbage collection while drawing: matplotlib allocates many small objects, which start full collections
    that walk every object of the session (torch's included, ~0.15 s each) and free almost nothing; the figures'
    cycles are collected once it is back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def report_outputs(manifest: Mapping[str, Any], run_dir: str | os.PathLike[str] | None = None,
                   drawers: Sequence[Drawer] = ()) -> tuple[dict[str, Any], list[str]]:
    """The report's files by name (``report.html`` and a PNG per drawn picture) and one line per picture that
    failed (``name: why``); the pictures are drawn by ``drawers`` where given (harness.pictures.drawer), else here."""
    from harness.pictures import plots

    folder = None if run_dir is None else Path(run_dir)
    records = manifest.get("children") or []
    rows = session_rows(manifest)
    rec = recommend(rows, manifest)
    _enrich(rows, records, folder)
    failures: list[str] = []
    try:
        barrier = load_barrier(manifest, folder)
    except (OSError, ValueError) as exc:
        barrier, failures = None, [f"barrier: {BARRIER} unreadable ({first_line(exc)})"]
    inputs: dict[str, Any] = {"rows": rows, "records": records, "parents": manifest.get("parents"),
                              "barrier_data": barrier}
    with _gc_paused():
        drawn = draw_shared(plots.session_pictures(**inputs), inputs, drawers)
    failures += [f"{d.name}: {d.error}" for d in drawn if d.error]
    files: dict[str, Any] = {REPORT: page(manifest, rows, drawn, failures, rec)}
    files.update({d.file: d.png for d in drawn if d.png is not None})
    return files, failures


# -- the page -------------------------------------------------------------------------------------------------------
def _interval(m: Any, lo: float, hi: float) -> str:
    """``[lo, hi]`` one digit shorter than the value: the interval is read, not copied."""
    spec = m.fmt
    if spec.startswith(".") and spec.endswith("f") and spec[1:-1].isdigit():
        spec = f".{max(0, int(spec[1:-1]) - 1)}f"
    return f"[{lo:{spec}}, {hi:{spec}}]"


def _row_class(r: Mapping[str, Any], chosen: str | None, child_chosen: bool) -> str:
    """The decision's choice stands out; children tied with it are highlighted only when a child was chosen (when
    a parent wins no child row is)."""
    if r["child_id"] == chosen:
        return "chosen"
    if r.get("is_parent_baseline"):
        return "baseline"
    if child_chosen and r.get("tied_with_best"):
        return "best"
    return "" if r["status"] in RANKABLE else "bad"


def leaderboard_table(rows: Sequence[Mapping[str, Any]], chosen: str | None = None) -> str:
    """The leaderboard as an HTML table with its legend (the terminal's): every child, then the parents (the
    parents first when the decision chose one); a 95% interval under a value where the row has ``<column>_lo`` /
    ``_hi``; the chosen row and, when it is a child, those tied with it highlighted.

    Laid out for the 1160 px column: the mode has no column (the child id names it first), and a metric no child
    has (return without episodes) and an axis value every child shares get none either (the header line
    of the page and the heatmap say them)."""
    kids = [r for r in rows if not r.get("is_parent_baseline")]
    parents = [r for r in rows if r.get("is_parent_baseline")]
    child_chosen = any(r["child_id"] == chosen for r in kids)
    shown = [m for m in METRICS.values() if m.shown and any(r.get(m.column) is not None for r in kids)]
    extra = [c for c in axis_columns() if len({r.get(c) for r in kids} - {None}) > 1]
    with_p = any(r.get("p_best") is not None for r in rows)
    before = any(r.get("primary_before_finetune") is not None for r in kids)
    labels = [m.label for m in shown]
    heads = ["rank", "child_id", "regime", *extra, *labels[:1], *[BEFORE[0]] * before, *labels[1:],
             *(["P(best)"] * with_p), "status", "mark"]
    body, classes = [], []
    for r in ([*parents, *kids] if chosen and not child_chosen else [*kids, *parents]):
        cells = [esc(r["rank"]), esc(r["child_id"]), esc(r["finetune_regime"]),
                 *(esc(r.get(c)) for c in extra)]
        for m in shown:
            cell = esc(m.format(r.get(m.column)))
            lo, hi = r.get(f"{m.column}_lo"), r.get(f"{m.column}_hi")
            if lo is not None and hi is not None:
                cell += f"<br><span class=ci>{esc(_interval(m, lo, hi))}</span>"
            cells.append(cell)
            if m.name == "primary" and before:
                cells.append(esc(m.format(r.get("primary_before_finetune"))))
        if with_p:
            cells.append(esc(None if r.get("p_best") is None else f"{r['p_best']:.2f}"))
        marks = [f'<span title="{t}">{esc(MARKS[k])}</span>' for k, t, on in (
            ("chosen", "the decision's choice", r["child_id"] == chosen), ("tied", "tied with #1",
                                                                           r.get("tied_with_best")),
            ("pareto", "Pareto front", r.get("pareto"))) if on]
        cells += [esc(r["status"]), "".join(marks)]
        body.append(cells)
        classes.append(_row_class(r, chosen, child_chosen))
    numeric = [True, *[False] * (2 + len(extra)), *[True] * (len(shown) + before + with_p), False, False]
    return table(heads, body, row_classes=classes, numeric=numeric, raw=True, table_id="leaderboard-table") + \
        legend(legend_items(rows))


def decision_html(rec: Mapping[str, Any]) -> str:
    """The decision block as the report opens with it: the same lines as the terminal's (harness.answer.recommend)."""
    lines = decision_lines(rec)
    head = next(i for i, line in enumerate(lines) if line.startswith("Use "))
    items = "".join(f"<li>{_labelled(line)}</li>" for line in lines[head + 1:])
    notes = "".join(f"<p>{esc(line)}</p>" for line in lines[:head])
    return (f'<section id="decision" class="decision"><h2>{esc(DECISION_TITLE.capitalize())}</h2>{notes}'
            f"<p class=use>{esc(lines[head])}</p><ul>{items}</ul></section>")


def recipes_html(rec: Mapping[str, Any]) -> str:
    """The recipes, the lever verdicts and crossing against the controls: the same lines as recommendation.txt."""
    lines = recipe_text(rec)
    if not lines:
        return ""
    blocks: list[str] = []
    for line in lines:
        if not line:
            continue
        if not line.startswith(" "):
            blocks.append(f"<h3>{esc(line.rstrip(':'))}</h3>")
        else:
            blocks.append(f"<p>{esc(line.strip().removeprefix('- '))}</p>")
    return f'<section id="recipes"><h2>Recipes and levers</h2>{"".join(blocks)}</section>'


def _labelled(line: str) -> str:
    label, sep, rest = line.partition(": ")
    return f"<b>{esc(label)}:</b> {esc(rest)}" if sep else esc(line)


def _png_size(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk, right after the 8-byte signature
    return width, height


def _figure(d: Drawn) -> str:
    head = f'<h2 id="{d.name}">{esc(d.title)}</h2>'
    if d.png is None:
        what = ("failed to draw: " + esc(d.error)) if d.error else "has nothing to draw in this session"
        cls = "failed" if d.error else "note"
        return f'{head}<p class="{cls}">Picture <b>{esc(d.name)}</b> {what}.</p>'
    w, h = _png_size(d.png)
    src = "data:image/png;base64," + base64.b64encode(d.png).decode()
    return (f'{head}<figure><img src="{src}" width="{w}" height="{h}" alt="{esc(d.title)}">'
            f"<figcaption>{esc(d.caption)} <span class=file>({esc(d.file)})</span></figcaption></figure>")


def _status(manifest: Mapping[str, Any]) -> str:
    done, expected = len(manifest.get("children") or []), len(manifest.get("expected_children") or [])
    if manifest.get("complete"):
        return f'<p class="ok">Complete: {done} children.</p>'
    missing = ", ".join(manifest.get("missing_children") or []) or "none listed"
    return (f'<p class="failed"><b>INCOMPLETE</b>: {done} of {expected} children finished (the session was '
            f"interrupted or children were lost); the report holds those that finished. Missing: {esc(missing)}.</p>")


def _installed(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "—"


def _details(manifest: Mapping[str, Any], drawn: Sequence[Drawn]) -> str:
    """Options, inputs (file names and sha256 prefixes), versions and how latency was timed."""
    from harness.records.store import versions

    opts = manifest.get("options") or {}
    explicit = set(opts.get("explicit") or [])
    opt_rows = [[k, "—" if v is None or v in ((), [], {}) else v if isinstance(v, str) else json.dumps(v),
                 "yes" if k.replace("_", "-") in explicit else ""] for k, v in opts.items() if k != "explicit"]
    prov = manifest.get("provenance") or {}
    inputs = []
    for key in ("parent_a", "parent_b", "states_file"):
        item = prov.get(key) or {}
        shape = "×".join(map(str, item["shape"])) if item.get("shape") else ""
        inputs.append([key, os.path.basename(str(item.get("path") or "—")), str(item.get("sha256") or "—")[:12],
                       shape])
    env = [["source", str(prov.get("source") or "files")], ["environment", str(prov.get("env_id") or "none")],
           ["episodes per child", str(prov.get("episodes") or 0)]]
    git = prov.get("git") or {}
    if git:
        env.append(["commit", f"{git.get('short') or git.get('commit')} ({git.get('branch') or 'detached'}"
                              f"{', dirty' if git.get('dirty') else ''})"])
    vers = [[k, str(v or "—")] for k, v in versions().items()]
    if any(d.png is not None for d in drawn):  # drawn here or by a drawer process: the installed matplotlib
        vers.append(["matplotlib", _installed("matplotlib")])
    return ("<h2 id=session>How this session ran</h2><div class=cols>"
            f"<div><h3>Inputs</h3>{table(['input', 'file', 'sha256', 'shape'], inputs)}{table(['', ''], env)}"
            f"<h3>Latency</h3><p>{esc(manifest.get('latency_mode') or '—')}</p>"
            f"<h3>Versions</h3>{table(['package', 'version'], vers)}</div>"
            f"<div><h3>Options</h3>{table(['option', 'value', 'given'], opt_rows)}</div></div>")


def page(manifest: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], drawn: Sequence[Drawn],
         failures: Sequence[str] = (), rec: Mapping[str, Any] | None = None) -> str:
    space = manifest.get("space")
    title = f"Crossover report: space {space}" + ("" if manifest.get("complete") else " (INCOMPLETE)")
    nav = " · ".join(f'<a href="#{d.name}">{esc(d.title)}</a>' for d in drawn)
    failed = "".join(f'<p class="failed">Picture {esc(f)}</p>' for f in failures)
    wall = manifest.get("wall_s")
    rec = recommend(rows, manifest) if rec is None else rec
    return document(title, f"<h1>{esc(title)}</h1>{_status(manifest)}{failed}{decision_html(rec)}"
                    f"<p>{len(manifest.get('children') or [])} children; parents agree on "
                    f"{_fmt(manifest.get('parents'), 'agree_ab')} of the held-out states; session wall time "
                    f"{'—' if wall is None else f'{wall:.1f} s'}.</p>"
                    f'<nav><a href="#decision">Decision</a> · <a href="#leaderboard">Leaderboard</a> · {nav} · '
                    f'<a href="#session">How this session ran</a></nav>'
                    f'<h2 id="leaderboard">Leaderboard</h2>{leaderboard_table(rows, chosen_id(rec))}{recipes_html(rec)}'
                    + "".join(_figure(d) for d in drawn) + _details(manifest, drawn))


def _fmt(d: Mapping[str, Any] | None, key: str) -> str:
    v = (d or {}).get(key)
    return "—" if v is None else f"{v:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.pictures.report RUN_DIR``: redraw a run directory's report from its manifest."""
    from harness.core.atomic import write_bytes, write_text

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m harness.pictures.report RUN_DIR", file=sys.stderr)
        return 2
    folder = Path(args[0])
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        print(f"error: {manifest_path} does not exist; pass a run directory of a crossover session", file=sys.stderr)
        return 2
    files, failures = report_outputs(json.loads(manifest_path.read_text(encoding="utf-8")), folder)
    for name, content in files.items():
        path = (write_bytes if isinstance(content, bytes) else write_text)(folder / name, content)
        print(f"written: {path}")
    for f in failures:
        print(f"picture {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

