"""Regenerate the README's example output from real sessions, so no example is typed by hand.

    python benchmarks/readme.py            # run the sessions, rewrite every generated block of README.md
    python benchmarks/readme.py --check    # run them and fail (exit 1) when a block is out of date

A block is the text between ``<!-- generated: NAME -->`` and ``<!-- /generated -->``. Each comes from one command
run here (shown in the block's first line); latency is masked in ``--check`` (it is timed, so it varies).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import levers
from sessions import ROOT, session

README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)


def leaderboard(args: list[str]) -> Callable[[Path], str]:
    """The session's leaderboard table (its children and the parents), as the terminal shows it."""
    def make(tmp: Path) -> str:
        lines = (session(args, tmp / "_".join(args).replace("-", "")) / "leaderboard.md").read_text().splitlines()
        table = [ln for ln in lines if ln.startswith("|")]
        command = "pytest benchmarks " + " ".join(args)
        return "```\n$ " + command + "\n" + "\n".join(table) + "\n```\n"
    return make


def legend(tmp: Path) -> str:
    lines = (session(["--crossover-space=smoke", "--crossover-episodes=2"], tmp / "legend") /
             "leaderboard.md").read_text().splitlines()
    return "\n".join(ln for ln in lines if ln.startswith("- ")) + "\n"


def recommendation(args: list[str]) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        text = (session(args, tmp / ("rec_" + "_".join(args).replace("-", ""))) / "recommendation.txt").read_text()
        command = "pytest benchmarks " + " ".join(args)
        return f"```\n$ {command} && cat runs/crossover_search/recommendation.txt\n{text}```\n"
    return make


def regimes(_: Path) -> str:
    from harness.train.regimes import REGIMES

    rows = ["| regime | epochs | lr | schedule | batch | validation | seed | int8 QAT | patience | dropout | clip |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in REGIMES.values():
        dropout = "network's" if r.dropout is None else f"{r.dropout:g}"
        clip = f"{r.grad_clip:g}" if r.grad_clip else "off"
        rows.append(f"| `{r.name}` | {r.epochs} | {r.lr:g} | {r.lr_schedule} | {r.batch_size} | {r.val_fraction:g} | "
                    f"{r.seed} | {'yes' if r.qat else ''} | {r.patience or ''} | {dropout} | {clip} |")
    return "\n".join(rows) + "\n"


EVOLVE = ["--generations", "3", "--space", "minimal", "--replicates", "3", "--select", "top2", "--stop-early", "off"]
EVOLVE_PYTEST = ["--crossover-episodes=0", "--crossover-barrier=off", "--crossover-report=off"]


def evolution(tmp: Path) -> str:
    """``python -m harness.evolve``'s summary of three generations on the embedded parents."""
    import subprocess

    out = tmp / "evolution"
    done = subprocess.run([sys.executable, "-m", "harness.evolve", *EVOLVE, "--picture", "off", "--out", str(out),
                           "--", *EVOLVE_PYTEST], cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("generation ") and "pytest in" not in ln]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the evolution failed (exit {done.returncode}): {done.stderr[-2000:]}")
    command = " ".join(["python -m harness.evolve", *EVOLVE, "--out runs/evolution --", *EVOLVE_PYTEST])
    return "```\n$ " + command + "\n" + "\n".join(lines) + "\n```\n"


STUDY = ["--crossover-search=optuna", "--crossover-space=custom", "--crossover-modes=weighted,slerp",
         "--crossover-regimes=short", "--crossover-param=alpha=0.2..0.8", "--crossover-sampler-seed=0"]


def study(tmp: Path) -> str:
    """A study of 8 trials, then a session that only confirms its best: the study block of the recommendation."""
    where = f"--crossover-study={tmp / 'study.log'}"
    session([*STUDY, where, "--crossover-trials=8", "--crossover-confirm=0x0"], tmp / "study_1")
    text = (session([*STUDY, where, "--crossover-trials=0", "--crossover-confirm=1x3"], tmp / "study_2") /
            "recommendation.txt").read_text().replace(str(tmp / "study.log"), ".crossover/.studies/custom-….log")
    lines = text.splitlines()
    decision = [ln for ln in lines if ln.startswith("Use ") or ln.startswith("  why:")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Study "))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    block = lines[start:end]
    shown = " ".join(STUDY)
    return (f"```\n$ pytest benchmarks {shown} --crossover-trials 8 --crossover-confirm 0x0\n"
            f"$ pytest benchmarks {shown} --crossover-trials 0 --crossover-confirm 1x3 "
            "&& cat runs/crossover_search/recommendation.txt\n" + "\n".join([*decision, "", *block]) + "\n```\n")


BLOCKS: dict[str, Callable[[Path], str]] = {
    "minimal": leaderboard(["--crossover-space=minimal"]),
    "minimal-both": leaderboard(["--crossover-space=minimal", "--crossover-teacher=both"]),
    "recommendation": recommendation(["--crossover-space=minimal", "--crossover-teacher=both"]),
    "legend": legend,
    "regimes": regimes,
    "levers": levers.table,
    "study": study,
    "evolution": evolution,
}


def _masked(text: str) -> str:
    """Latency is timed: blank its column, and the marks it can move, for --check."""
    out, blank = [], set()
    for line in text.splitlines():
        cells = line.split("|")
        if line.startswith("| rank"):
            blank = {i for i, c in enumerate(cells) if c.strip() in ("latency_ms", "mark")}
        if line.startswith("|"):
            cells = ["" if i in blank else c for i, c in enumerate(cells)]
        out.append("|".join(cells))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a block differs from a fresh run")
    parser.add_argument("--only", nargs="*", default=None, help="regenerate only these blocks")
    args = parser.parse_args(argv)
    text = README.read_text()
    names = [m["name"] for m in BLOCK.finditer(text)]
    unknown = sorted(set(names) - set(BLOCKS))
    if unknown:
        raise SystemExit(f"README has blocks no command makes: {', '.join(unknown)}")
    fresh: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if args.only is None or name in args.only:
                fresh[name] = BLOCKS[name](Path(tmp))
    new = BLOCK.sub(lambda m: m[1] + fresh.get(m["name"], m["body"]) + m[4], text)
    if args.check:
        stale = [n for n in fresh if _masked(fresh[n]) != _masked(block_body(text, n))]
        for n in stale:
            sys.stdout.writelines(difflib.unified_diff(block_body(text, n).splitlines(True), fresh[n].splitlines(True),
                                                       f"README {n}", f"fresh {n}"))
        return 1 if stale else 0
    README.write_text(new)
    print(f"regenerated: {', '.join(fresh)}")
    return 0


def block_body(text: str, name: str) -> str:
    return str(next(m for m in BLOCK.finditer(text) if m["name"] == name)["body"])


if __name__ == "__main__":
    sys.exit(main())
