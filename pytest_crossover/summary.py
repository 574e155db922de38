"""What the session prints: the report header, each child's status word, and the leaderboard at the end."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_crossover.session import RESULT_KEY, CrossoverSession


def header(cs: CrossoverSession) -> list[str]:
    o = cs.options
    recipes = {s.recipe for s in cs.specs}
    regimes = {s.regime.name for s in cs.specs}
    src = "files" if o.parent_a else "embedded LunarLander-v3 parents"
    from pytest_crossover.scheduling import WORKERS_KEY

    fitted = cs.config.stash.get(WORKERS_KEY, None)  # how many workers -n N got, when the plugin changed it
    line = (f"crossover: space={o.space} ({len(cs.specs)} children: {len(recipes)} recipes x {len(regimes)} regimes), "
            f"parents={src}, holdout={o.holdout}, teacher={o.teacher}, run-dir={o.run_dir}")
    study = [cs.study.header()] if cs.study is not None else []
    return [*([fitted] if fitted else []), line, *study]


def teststatus(report: pytest.TestReport) -> Any:
    """``PASSED primary=0.8123 return=231.4`` in ``-v`` mode, for a passed child's call phase. A failed one keeps
    pytest's own word: the short summary builds ``FAILED <nodeid> - <reason>`` from it, and the reason already
    says the primary."""
    if report.when != "call" or not report.passed:
        return None
    rec = dict(p for p in report.user_properties if isinstance(p, tuple) and len(p) == 2).get(RESULT_KEY)
    if not isinstance(rec, dict) or rec.get("primary") is None:
        return None
    word = f"{report.outcome.upper()} primary={rec['primary']:.4f}"
    if rec.get("return"):
        word += f" return={rec['return']['mean']:.1f}"
    return report.outcome, ".", (word, {"green": True})


DECISION_KEY = pytest.StashKey[list[str]]()  # the decision block's lines, printed after every other summary


def terminal_summary(cs: CrossoverSession, tr: Any) -> None:
    from harness.answer.leaderboard import legend, manifest_rows, table
    from harness.answer.recommend import chosen_id, decision_lines, recommend, reference_statement, subset_statement

    manifest = cs.manifest()
    rows = manifest_rows(manifest)
    rec = recommend(rows, manifest)
    tr.config.stash[DECISION_KEY] = decision_lines(rec)
    tr.write_sep("=", f"crossover leaderboard ({len(cs.records)} children, space {cs.options.space})")
    for note in (subset_statement(manifest), reference_statement(manifest)):
        if note:
            tr.write_line(f"NOTE: {note}", yellow=True)
    tr.write_line(table(rows, limit=None if tr.config.get_verbosity() > 0 else 20, chosen=chosen_id(rec)))
    for line in legend(rows):
        tr.write_line(f"  {line}")
    tr.write_line(f"latency: {cs.latency_mode()}")
    sent = cs.transfer.summary() if cs.transfer is not None else None
    if sent:
        tr.write_line(sent)
    if not cs.complete:
        tr.write_line("session incomplete: the files hold the children that finished", red=True)
    from harness.pictures.files import PICTURE_PREFIX, REPORT

    pictures = [p for p in cs.written if p.name.startswith(PICTURE_PREFIX) and p.suffix == ".png"]
    for p in cs.written:
        if p not in pictures:
            extra = f" (open it in a browser; {len(pictures)} pictures as PNG beside it)" if p.name == REPORT else ""
            tr.write_line(f"written: {p}{extra}")
    for failure in cs.report_failures:
        tr.write_line(f"report: picture {failure}", yellow=True)


def decision_summary(tr: Any) -> None:
    """The decision block (harness.answer.recommend.decision_lines), the last thing the crossover summaries print."""
    lines = tr.config.stash.get(DECISION_KEY, None)
    if not lines:
        return  # not a crossover session: numpy (via the recommendation) is never imported for it
    from harness.answer.recommend import DECISION_TITLE

    tr.write_sep("=", DECISION_TITLE)
    for line in lines:
        head = line.startswith("Use ")
        tr.write_line(line if head or line.startswith("NOTE") else f"  {line}", bold=head, green=head)
