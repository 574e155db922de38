"""report.html from synthetic manifests: every child in the table, every picture a real PNG, optional fields drawn
when present and not required, a failing picture reported in its place, an incomplete session marked."""

from __future__ import annotations

import copy
import json
import re
import struct

import pytest

from harness.core.errors import HarnessError
from harness.pictures import figure, files, plots, report

MODES, REGIMES = ("random", "layer", "weighted"), ("short", "long")


def _child(index: int, mode: str, regime: str, primary: float, **extra: object) -> dict:
    a = min(1.0, primary + 0.25)
    evals = {"vs_parent_a": {"top1": a, "kl": 0.1}, "vs_parent_b": {"top1": primary, "kl": 0.2}, "oracle": 0.9,
             "bound_ratio": primary / 0.775}
    epochs = 3 if regime == "short" else 6
    return {"child_id": f"{index:03d}_{mode}_a0p50_sNone_{regime}", "index": index, "status": "ok",
            "primary": primary, "ranked_model": "float", "crossover": {"mode": mode, "alpha": 0.5, "seed": None},
            "finetune_regime": {"name": regime, "epochs": epochs, "lr": 1e-3},
            "after_finetune": evals, "return": {"mean": 150.0 + 300 * primary, "std": 10.0},
            "latency_ms": {"ranked": 0.05 + 0.001 * index}, "finetune_steps": 100 * epochs,
            "finetune": {"val_losses": [0.1 / (e + 1) for e in range(epochs)],
                         "val_agreements": [0.6 + 0.03 * e for e in range(epochs)], "initial_val_loss": 0.6,
                         "initial_val_agreement": 0.2, "best_epoch": epochs - 1}, **extra}


def manifest(n_modes: int = 3, complete: bool = True) -> dict:
    kids = [_child(i, m, g, 0.40 + 0.01 * i) for i, (m, g) in
            enumerate((m, g) for m in MODES[:n_modes] for g in REGIMES)]
    return {"space": "synthetic", "complete": complete, "expected_children": [k["child_id"] for k in kids],
            "missing_children": [], "latency_mode": "harness.evaluate.timing in the test (3 warm-up, 20 timed, median)",
            "options": {"space": "synthetic", "teacher": "a", "holdout": 0.2, "explicit": ["space"]},
            "parents": {"agree_ab": 0.55, "latency_ms": {"parent_a": 0.05, "parent_b": 0.05},
                        "returns": {"parent_a": {"mean": 260.0}, "parent_b": {"mean": 230.0}}},
            "provenance": {"source": "files", "parent_a": {"path": "/x/a.pt", "sha256": "ab" * 32},
                           "parent_b": {"path": "/x/b.pt", "sha256": "cd" * 32},
                           "states_file": {"path": "/x/s.npy", "sha256": "ef" * 32, "shape": [300, 8]},
                           "env_id": "LunarLander-v3", "episodes": 10},
            "wall_s": 3.2, "children": kids}


def _png_ok(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _table_ids(html: str) -> list[str]:
    body = html.split('id="leaderboard-table"', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr[^>]*><td class=num>[^<]*</td><td>([^<]+)</td>", body)


def test_report_holds_every_child_and_four_pictures():
    m = manifest()
    files, failures = report.report_outputs(m)
    assert failures == []
    assert sorted(files) == ["report.html", "report_agreement.png", "report_finetune.png", "report_heatmap.png",
                             "report_tradeoffs.png"]
    for name, data in files.items():
        if name.endswith(".png"):
            w, h = _png_ok(data)
            assert w == 1100 and 200 < h < 700, name  # 11 in at 100 dpi: shown 1:1 in a 1200 px window
    html = files["report.html"]
    # No child beats the parents here: the decision says so first, and the parents come before any child's row.
    assert _table_ids(html) == ["parent_a", "parent_b"] + [k["child_id"] for k in reversed(m["children"])]
    assert html.index('<section id="decision"') < html.index('id="leaderboard-table"')
    assert '<p class=use>Use parent_a (a parent): no child here beats the parents.</p>' in html
    assert html.count('<tr class="chosen">') == 1 and '<tr class="best">' not in html
    assert html.count("data:image/png;base64,") == 4 and "<script" not in html and "http" not in html
    assert "Complete: 6 children." in html and "INCOMPLETE" not in html
    # Inputs by file name and sha256 prefix, never the full path; how latency was timed; the versions.
    assert "a.pt" in html and "abababababab" in html and "/x/a.pt" not in html and "ab" * 32 not in html
    assert "3 warm-up, 20 timed, median" in html and "<td>torch</td>" in html
    assert "status ok" in html and "primary/bound" in html  # the legend
    # The report's legend is the terminal's, item for item (one source: harness.answer.leaderboard.legend_items).
    from harness.answer.leaderboard import legend, legend_items
    from harness.pictures.page import esc

    rows = report.session_rows(m)
    assert all(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" in html for k, v in legend_items(rows))
    assert [f"{k}: {v}" for k, v in legend_items(rows)] == legend(rows)


def test_intervals_ties_and_p_best_are_shown_when_rows_have_them(monkeypatch):
    import harness.pictures.report as rep

    real = rep.session_rows

    def with_intervals(manifest):
        rows = real(manifest)
        for r in rows:
            if r["is_parent_baseline"]:
                continue
            for col in ("primary_metric", "child_vs_parent_a_agreement", "child_vs_parent_b_agreement",
                        "return_mean"):
                r[f"{col}_lo"], r[f"{col}_hi"] = r[col] - 0.01, r[col] + 0.01
            r["tied_with_best"] = r["rank"] <= 2
            r["p_best"] = 0.6 if r["rank"] == 1 else 0.4 if r["rank"] == 2 else 0.0
        return rows

    monkeypatch.setattr(rep, "session_rows", with_intervals)
    files, failures = report.report_outputs(manifest())
    html = files["report.html"]
    assert failures == []
    assert "0.4500<br><span class=ci>[0.440, 0.460]</span>" in html  # the best child's primary with its interval
    assert "285.0<br><span class=ci>[285, 285]</span>" in html  # return 150 + 300 * 0.45, ± 0.01: one digit less
    # A parent wins here: the tied children keep their mark, but no child row is highlighted as the answer.
    assert '<tr class="best">' not in html and html.count('title="tied with #1"') == 2
    assert "<th>P(best)</th>" in html and "<td class=num>0.60</td>" in html
    assert "<dt>± / [lo, hi]</dt>" in html and "<dt>mark =</dt>" in html


def test_plain_rows_draw_without_intervals():
    rows = report.session_rows(manifest())
    assert plots._err(plots.measured(rows), "primary_metric") is None
    assert plots._best_label(rows) == "#1"


def test_barrier_json_beside_the_manifest_is_drawn(tmp_path):
    alphas = [i / 10 for i in range(11)]
    curve = {"primary": [0.55 - 0.2 * a * (1 - a) for a in alphas], "agree_a": [1 - a / 2 for a in alphas],
             "agree_b": [0.5 + a / 2 for a in alphas], "return": [None] * 11}
    barrier = {"alphas": alphas, "curves": {"none": curve, "weights": copy.deepcopy(curve)},
               "barrier": {"none": {"primary": 0.05, "return": None}}}
    (tmp_path / "barrier.json").write_text(json.dumps(barrier))
    files, failures = report.report_outputs(manifest(), tmp_path)
    assert failures == []
    _png_ok(files["report_barrier.png"])
    assert 'id="barrier"' in files["report.html"]


def test_teacher_and_align_get_their_own_heatmaps_when_the_space_varies_them():
    m = manifest()
    for i, k in enumerate(m["children"]):
        k["crossover"]["align"] = ("none", "weights")[i % 2]
        k["teacher"] = ("a", "both")[i // 3]
    rows = report.session_rows(m)
    report._enrich(rows, m["children"], None)
    assert plots.facets(rows) == ["finetune_regime", "align", "teacher"]
    with figure.style():
        fig = plots.heatmaps(rows)
    assert fig is not None and len(fig.axes) == 3
    assert plots.facets(report.session_rows(manifest())) == ["finetune_regime"]


def test_a_failing_picture_is_reported_in_its_place_and_the_others_are_drawn(monkeypatch):
    def broken(rows):
        raise RuntimeError("boom")

    monkeypatch.setattr(plots, "heatmaps", broken)
    files, failures = report.report_outputs(manifest())
    assert failures == ["heatmap: RuntimeError: boom"]
    assert "report_heatmap.png" not in files and "report_agreement.png" in files and "report_finetune.png" in files
    assert "Picture <b>heatmap</b> failed to draw: RuntimeError: boom." in files["report.html"]


def test_without_matplotlib_the_page_says_so_and_holds_the_table(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    files, failures = report.report_outputs(manifest())
    assert list(files) == ["report.html"] and len(failures) == 4
    assert all("matplotlib is not installed" in f for f in failures)
    assert len(_table_ids(files["report.html"])) == 8


def test_an_incomplete_session_and_a_child_without_metrics():
    m = manifest(n_modes=2, complete=False)
    m["expected_children"] = [*m["expected_children"], "004_weighted_a0p50_sNone_short"]
    m["missing_children"] = ["004_weighted_a0p50_sNone_short"]
    m["children"][0] = {**m["children"][0], "status": "diverged", "after_finetune": None, "primary": None}
    files, failures = report.report_outputs(m)
    html = files["report.html"]
    assert failures == []
    assert "INCOMPLETE</b>: 4 of 5 children" in html and "004_weighted_a0p50_sNone_short" in html
    assert "(INCOMPLETE)</title>" in html
    assert '<tr class="bad">' in html and "status diverged" in html
    assert 'title="tied with #1"' not in html and "<th>P(best)</th>" not in html  # rows without the trust fields


def test_the_switch_takes_on_or_off():
    assert files.check_switch("on") == "on" and files.check_switch("off") == "off"
    with pytest.raises(HarnessError, match="'yes' is neither on nor off") as err:
        files.check_switch("yes")
    assert err.value.field == "report"


def test_cli_redraws_a_run_directory(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest()))
    assert report.main([str(tmp_path)]) == 0
    assert (tmp_path / "report.html").is_file() and _png_ok((tmp_path / "report_heatmap.png").read_bytes())
    assert f"written: {tmp_path / 'report.html'}" in capsys.readouterr().out
    assert report.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_report_and_the_site_write_only_through_the_atomic_module():
    """Their files go to a temporary name and are renamed (harness.core.atomic), as every output of a session."""
    from pathlib import Path

    root = Path(report.__file__).parent
    offenders = []
    for name in ("report", "plots", "figure", "page", "site", "trend"):
        for line in (root / f"{name}.py").read_text().splitlines():
            code = line.split("#")[0]
            direct = any(s in code for s in (".write_text(", ".write_bytes(", "open(", "torch.save("))
            if direct or (".savefig(" in code and ".savefig(buf" not in code):  # a figure goes to memory first
                offenders.append(f"{name}: {line.strip()}")
    assert offenders == []
