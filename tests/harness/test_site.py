"""The history site and the trend: series keyed by space/teacher/inputs, recipes without their run index, steps by
their documented rule, the pages built from a store of several commits, one of them looked at in Chromium."""

from __future__ import annotations

import re

import pytest

from harness import history
from harness.pictures import trend as ht
from harness.pictures.site import build_site
from harness.records import store as hs
from harness.records.compare import parse_fail

MACHINE = {"node": "box", "system": "Linux", "release": "6", "machine": "x86_64", "processor": "x86_64",
           "cpu_count": 2, "python_implementation": "CPython", "python_version": "3.11.9"}
VERS = {"python": "3.11.9", "harness": "0.1", "torch": "2.13.0+cpu", "numpy": "2.0"}
FP = {"parent_a": {"sha256": "a" * 64}, "parent_b": {"sha256": "b" * 64}, "states_file": {"sha256": "c" * 64}}
RECIPES = [(m, g) for m in ("random", "layer") for g in ("short", "long")]


def _child(index: int, mode: str, regime: str, primary: float) -> dict:
    evals = {"vs_parent_a": {"top1": primary + 0.2}, "vs_parent_b": {"top1": primary}}
    return {"child_id": f"{index:03d}_{mode}_a0p50_sNone_{regime}", "index": index, "status": "ok",
            "primary": primary, "crossover": {"mode": mode, "alpha": 0.5}, "finetune_regime": {"name": regime},
            "after_finetune": evals, "return": {"mean": 200.0 + index, "std": 5.0}, "latency_ms": {"ranked": 0.05},
            "finetune_steps": 100}


def _save(store: hs.HistoryStore, n: int, primaries: list[float], *, space: str = "minimal", teacher: str = "a",
          first_index: int = 0, max_runs: int | None = None, dirty: bool = False) -> None:
    kids = [_child(first_index + i, m, g, p) for i, ((m, g), p) in enumerate(zip(RECIPES, primaries))]
    git = {"commit": f"{n:02d}" + "e" * 38, "short": f"{n:02d}eeeeeeee", "branch": "main", "dirty": dirty}
    manifest = {"space": space, "options": {"space": space, "teacher": teacher, "max_runs": max_runs},
                "complete": True, "provenance": FP, "parents": {"agree_ab": 0.55}, "children": kids}
    store.save(hs.build_record(manifest, git=git, machine=MACHINE, vers=VERS,
                               timestamp=f"2025-01-{n + 1:02d}T00:00:00+00:00"))


@pytest.fixture
def store(tmp_path):
    """Seven commits of one series with a sustained drop of 0.05 from the fifth on (a single bad record at the
    third), and a second series: another space, with another teacher, numbering its recipes from 5."""
    s = hs.HistoryStore(tmp_path / "store")
    base = [0.50, 0.52, 0.54, 0.56]
    for n in range(7):
        shift = -0.05 if n >= 4 else (-0.03 if n == 2 else 0.0)
        _save(s, n, [p + shift for p in base], dirty=n == 1)
    _save(s, 7, base[:2], space="smoke", teacher="both", first_index=5, max_runs=2)
    _save(s, 8, base[:2], space="smoke", teacher="both", first_index=5, max_runs=2)
    return s


def test_series_are_keyed_by_space_teacher_and_inputs(store):
    records = store.load()[0]
    series = ht.group_series(records)
    assert [len(s.records) for s in series] == [7, 2]
    assert [s.info["space"] for s in series] == ["minimal", "smoke"]
    assert series[0].title == "space minimal, teacher a, inputs aaaaaaaa/bbbbbbbb/cccccccc"
    assert re.fullmatch(r"minimal-a-[0-9a-f]{8}", series[0].slug)
    # Other inputs are another series; max_runs (a subset of the same space) is not.
    other = dict(records[0].data, fingerprints={"parent_a": "d" * 64, "parent_b": "b" * 64, "states": "c" * 64})
    assert ht.series_key(other) != ht.series_key(records[0].data)
    assert ht.series_key(dict(records[0].data, options={"teacher": "a", "max_runs": 3})) == \
        ht.series_key(records[0].data)


def test_recipes_are_keyed_without_the_run_index(store):
    series = ht.group_series(store.load()[0])
    assert ht.recipe_key("003_layer_a0p50_sNone_short") == "layer_a0p50_sNone_short"
    assert list(ht.recipes(series[1])) == ["random_a0p50_sNone_short", "random_a0p50_sNone_long"]
    assert ht.recipes(series[1])["random_a0p50_sNone_long"] == {"regime": "long", "label": "random_a0p50_sNone"}
    assert ht.recipe_values(series[0], "layer_a0p50_sNone_long", "primary") == pytest.approx(
        [0.56, 0.56, 0.53, 0.56, 0.51, 0.51, 0.51])


def test_steps_need_a_sustained_shift():
    chk = parse_fail("primary:0.02")[0]
    # A single bad record is no step; three worse ones in a row are, called once, at the first.
    assert ht.steps([0.8, 0.8, 0.7, 0.8, 0.8, 0.8], chk) == []
    assert ht.steps([0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7], chk) == [ht.Step(3, 0.8, 0.7)]
    # Two worse records at the end are not confirmed yet; missing values are skipped.
    assert ht.steps([0.8, 0.8, 0.8, 0.7, 0.7], chk) == []
    assert ht.steps([0.8, None, 0.8, 0.7, None, 0.7, 0.7], chk) == [ht.Step(3, 0.8, 0.7)]
    # Within the threshold, or for the better, is no step.
    assert ht.steps([0.8, 0.8, 0.79, 0.79, 0.79], chk) == []
    assert ht.steps([0.7, 0.7, 0.8, 0.8, 0.8], chk) == []
    assert ht.steps([100, 100, 80, 80, 80], parse_fail("return:10%")[0]) == [ht.Step(2, 100, 80)]


def test_the_site_holds_sessions_series_and_regressions(store, tmp_path):
    records, _ = store.load()
    series = ht.group_series(records)
    written = build_site(records, tmp_path / "site", parse_fail("primary:0.02"))
    names = sorted(p.name for p in written)
    assert names == sorted(["index.html", "regressions.html", *(f"series-{s.slug}{e}" for s in series
                                                                 for e in (".html", ".png"))])
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.count('<a href="series-') == 9 + 2  # one per session, one per series in the list
    assert "<td>0002_01eeeeeeee_dirty</td>" in index and "subset (first 2)" in index and "<td>both</td>" in index
    assert "aaaaaaaa/bbbbbbbb/cccccccc" in index and "003_layer_a0p50_sNone_long" in index
    page = (tmp_path / "site" / f"series-{series[0].slug}.html").read_text()
    assert f'src="series-{series[0].slug}.png"' in page and "<td>layer_a0p50_sNone_long</td>" in page
    assert (tmp_path / "site" / f"series-{series[0].slug}.png").read_bytes()[:4] == b"\x89PNG"
    regressions = (tmp_path / "site" / "regressions.html").read_text()
    # Drops between consecutive records: the single bad record (and back), then the sustained drop.
    drops = re.findall(r"<td>(\d{4}_\w+)</td><td>(\d{4}_\w+)</td><td>([^<]+)</td>", regressions)
    assert sorted({(a[:4], b[:4]) for a, b, _ in drops}) == [("0002", "0003"), ("0004", "0005")]
    assert all("primary" in line and "[primary:0.02]" in line for _, _, line in drops)
    assert len(drops) == 4 + 4
    # One step for the best child and one for each recipe, at the first record after the shift.
    steps = re.findall(r"<tr><td>[^<]+</td><td>([^<]+)</td><td>primary:0.02</td><td>(\d{4})_", regressions)
    assert sorted(steps) == sorted([("best child", "0005"), *((f"{m}_a0p50_sNone_{g}", "0005")
                                                              for m, g in RECIPES)])


def test_a_history_page_in_a_browser(store, tmp_path, chromium):
    records, _ = store.load()
    build_site(records, tmp_path / "site", parse_fail("primary:0.02"))
    series = ht.group_series(records)
    page, tab = chromium.load(tmp_path / "site" / f"series-{series[0].slug}.html")
    assert page.errors == []
    (img,) = page.images
    assert img["ok"] and img["width"] == 1100 and img["height"] > 600
    rows = chromium.evaluate(tab, "Array.from(document.querySelectorAll('#recipes tbody tr td:first-child'))"
                                  ".map(td => td.textContent)")
    assert rows == ["best child", "", *(f"{m}_a0p50_sNone_{g}" for m, g in RECIPES)]
    index, tab = chromium.load(tmp_path / "site" / "index.html")
    assert index.errors == [] and index.images == []
    assert chromium.evaluate(tab, "document.querySelectorAll('#sessions tbody tr').length") == 9


def test_plot_draws_one_file_per_series(store, tmp_path, capsys):
    assert history.main(["--storage", str(store.root), "--plot", str(tmp_path / "trend.png"),
                         "--site", str(tmp_path / "site")]) == 0
    out = capsys.readouterr().out
    series = ht.group_series(store.load()[0])
    for s in series:
        path = tmp_path / f"trend-{s.slug}.png"
        assert f"plot: {path}" in out and path.read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "trend.png").exists()
    assert f"site: {tmp_path / 'site' / 'index.html'} (6 files)" in out


def test_a_bad_fail_expression_is_a_usage_error(store, capsys):
    with pytest.raises(SystemExit) as exit_:
        history.main(["--storage", str(store.root), "--site", "x", "--fail", "primary:abc"])
    assert exit_.value.code == 2
    assert "--fail: cannot parse 'primary:abc'" in capsys.readouterr().err


def test_the_trend_keeps_every_childs_point_and_marks_the_ones_not_ok(tmp_path):
    """A child whose last record is return-drop (or degenerate) keeps its point on the line, marked; the series
    reads as its title, not its hash."""
    import matplotlib

    matplotlib.use("Agg")
    s = hs.HistoryStore(tmp_path / "store")
    for n in range(3):
        _save(s, n, [0.50, 0.52, 0.54, 0.56])
    last = s.load()[0][-1]
    for c in last.data["children"]:
        if c["child_id"].startswith("003_"):
            c["status"], c["primary"] = "return-drop", 0.40
    series = ht.group_series(s.load()[0][:-1] + [last])
    assert ht.recipe_values(series[0], "layer_a0p50_sNone_long", "primary") == pytest.approx([0.56, 0.56, 0.40])
    fig = ht.trend_figure(series[0])
    marked = {ax.get_title(): [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()
                               if ln.get_marker() == ht.NOT_OK_MARKER] for ax in fig.axes}
    assert marked["regime long: primary per recipe"] == [([2], [pytest.approx(0.40)])]
    assert marked["regime long: return per recipe"] == [([2], [pytest.approx(203.0)])]
    assert marked["best child: primary"] == marked["regime short: primary per recipe"] == []
    assert ht.NOT_OK_LABEL in [t.get_text() for t in fig.legends[0].get_texts()]
    build_site(s.load()[0][:-1] + [last], tmp_path / "site", parse_fail("primary:0.02"))
    index = (tmp_path / "site" / "index.html").read_text()
    assert f">{series[0].title}</a>" in index and f">{series[0].slug}</a>" not in index
