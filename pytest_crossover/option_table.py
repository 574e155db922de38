"""The ``crossover`` options, declared once: every flag ``--crossover-*``, each also an ini key ``crossover_*``.

Help texts derive from the registries (operators, regimes, teachers, axes), so a registered entry shows up in
``--help``. Reading and checking the values is :mod:`pytest_crossover.options`' job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from harness.core.arithmetic import MODES as ARITHMETIC_MODES
from harness.crossing.operators import OPERATORS
from harness.search.axes import AXES
from harness.search.settings import DEVICES, THRESHOLD_FORMS
from harness.search.space import child_id_grammar, space_names
from harness.train.regimes import REGIME_FIELDS, REGIMES
from harness.train.teachers import TEACHERS


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its flag suffix, the library field it feeds, how its text parses, help and metavar."""

    name: str
    help: str
    default: str | None = None
    kind: str = "str"  # str, int, float, list, vectors (a list of V/V/V), flag, lines, path
    metavar: str = "VALUE"
    item: type = str  # list items' type

    @property
    def dest(self) -> str:
        return "crossover_" + self.name.replace("-", "_")


def _operator_help() -> str:
    return "; ".join(f"{op.name}: {op.description}" for op in OPERATORS.values())


def _regime_help() -> str:
    return "; ".join(f"{r.name}: {r.describe()}" for r in REGIMES.values())


def _knob_option(knob: str, p: Any) -> Option:
    """The custom-space option of an operator parameter's values; a per-layer one takes vectors ``V/V/V``."""
    if p.per_layer:
        users = ", ".join(op.name for op in OPERATORS.values() if p in op.params)
        return Option(knob, f"Custom space only: values of {p.name} ({p.help}) for {users}: one number per layer of "
                      f"the parents (each Linear with its LayerNorm) joined by /, vectors comma-separated, e.g. "
                      f"0.2/0.5/0.8,0.5/0.5/0.5 for parents of 3 layers (required by those operators)",
                      kind="vectors", item=p.kind, metavar=knob.upper())
    return Option(knob, f"Custom space only: values of {p.name} ({p.help}), comma-separated (default "
                  f"{','.join(map(str, p.grid))})", kind="list", item=p.kind, metavar=knob.upper())


def option_table() -> tuple[Option, ...]:
    """Every option of the search; help texts derive from the registries, so a registered entry shows up."""
    knobs = [p for op in OPERATORS.values() for p in op.params if p.knob]
    seen: dict[str, Any] = {}
    for p in knobs:
        seen.setdefault(p.knob, p)
    return (
        Option("space", f"Search space: {', '.join(space_names())} (default: default). Each child is a test named "
               f"by its child id, {child_id_grammar()}", "default", metavar="NAME"),
        Option("modes", f"Custom space only: crossover operators, comma-separated ({_operator_help()})", kind="list",
               metavar="MODES"),
        *(_knob_option(knob, p) for knob, p in seen.items()),
        Option("param", "Custom space only: values of another operator parameter, NAME=V1,V2 (repeatable); with "
               "--crossover-search optuna also a range NAME=LOW..HIGH[:log] and a regime field regime.FIELD=LOW..HIGH "
               "or regime.FIELD=V1,V2",
               kind="lines", metavar="NAME=VALUES"),
        Option("regimes", f"Custom space only: fine-tune regimes, comma-separated ({_regime_help()}; or a defined "
                          "one)", kind="list", metavar="REGIMES"),
        Option("align", "Custom space only: align B's hidden units to A's before crossover, comma-separated: none "
               "(default), weights (weight matching), activations (activation matching on the fine-tune states)",
               kind="list", metavar="METHODS"),
        Option("teachers", "Custom space only: distillation teachers to search, comma-separated ("
               + ", ".join(TEACHERS.names()) + "); each child id then ends _t<teacher>", kind="list",
               metavar="TEACHERS"),
        Option("axis", "Custom space only: values of any declared search axis, NAME=V1,V2 (repeatable; axes: "
               + ", ".join(f"{a.name}: {a.description}" for a in AXES.values()) + ")", kind="lines",
               metavar="NAME=VALUES"),
        Option("define-regime", "Custom space only: define a regime for --crossover-regimes, NAME:"
               + ",".join(f"{k}=…" for k in REGIME_FIELDS) + " (epochs and lr required); repeatable (ini: one per "
               "line)", kind="lines", metavar="SPEC"),
        Option("search", "How the space is searched: grid (every child of the space, default) or optuna (a study: "
               "--crossover-trials children asked from the space by a sampler, each one a trial; running the command "
               "again continues the study; docs/search.md)", "grid", metavar="grid|optuna"),
        Option("study", "The study's storage: a journal file path (default: <--crossover-storage>/.studies/<space>-"
               "<hash of the space and inputs>.log) or a database URL (postgresql://USER:PASS@HOST/DB, "
               "sqlite:///FILE) for sessions on several machines; open it with optuna or optuna-dashboard",
               metavar="PATH|URL"),
        Option("trials", "Trials asked in this session (default 16; 0: only confirm earlier trials)", "16",
               kind="int", metavar="N"),
        Option("sampler", "The study's sampler: tpe (default; multi-objective with two objectives), cmaes, nsga2 or "
               "random", "tpe", metavar="tpe|cmaes|nsga2|random"),
        Option("sampler-seed", "Seed of the sampler (mixed with the study's trial count, so a resumed session draws "
               "new points; default 0)", "0", kind="int", metavar="N"),
        Option("objectives", "What the study maximises: primary, or primary,return (a Pareto front)", "primary",
               metavar="primary[,return]"),
        Option("confirm", "Each session also re-runs the TOP best complete trials of the study so far REPS times "
               "with other seeds (ids tNNNN_r1_...), so the recommendation ranks recipes by their mean and says how "
               "much the best trial shrank: TOPxREPS or off (default 3x2)", "3x2", metavar="TOPxREPS"),
        Option("replicates", "Train every recipe K times, each replicate with its own derived fine-tune seed (and "
               "operator seed); the answer then ranks recipes by their mean over replicates, with intervals over "
               "replicates and held-out episodes together (default 1)", "1", kind="int", metavar="K"),
        Option("controls", "Control children: each parent fine-tuned, and a fresh network distilled, by every "
               "regime and teacher of the space (with its replicates), to tell whether crossing adds anything: on, "
               "off, or auto (default: on for spaces of 9 or more children)", "auto", metavar="on|off|auto"),
        Option("equivalence-margin", "How close two values of a lever must be to be called no difference: the 95 % "
               "interval of their gap in primary lies within ±this margin (default 0.01)", "0.01", kind="float",
               metavar="DELTA"),
        Option("max-runs", "Run only the first N children of the space (N >= 1)", kind="int", metavar="N"),
        Option("parent-a", "Parent A checkpoint (.pt state dict), or a child of an earlier run (<run-dir>/<child_id>, "
               "a float child; docs/generations.md); default: the embedded LunarLander parents", kind="path",
               metavar="PATH"),
        Option("parent-b", "Parent B checkpoint (.pt state dict), or a child of an earlier run (<run-dir>/<child_id>, "
               "a float child); default: the embedded LunarLander parents", kind="path", metavar="PATH"),
        Option("reference-a", "Score agreement, the primary metric, the bound and the controls against this network "
               "instead of parent A (a checkpoint or a child folder; with --crossover-reference-b); default: the "
               "founders of the parents' lineage when a parent is a child, else the parents", kind="path",
               metavar="PATH"),
        Option("reference-b", "The reference's network B (with --crossover-reference-a)", kind="path",
               metavar="PATH"),
        Option("states", "States buffer: .npy (N x input_dim) or .npz with 'states' and optional 'episode' ids (one "
               "integer per row: the holdout then keeps whole episodes out of fine-tuning); default: the embedded "
               "states", kind="path", metavar="PATH"),
        Option("eval-states", "A separate evaluation buffer (.npy or .npz, as --crossover-states): every state of "
               "--crossover-states fine-tunes and these score the children (instead of a holdout)", kind="path",
               metavar="PATH"),
        Option("eval-episodes", "Before any child, collect N fresh evaluation episodes by running the parents in the "
               "environment (alternating A and B, epsilon-greedy 0.1, seeds from 5,000,000: disjoint from the embedded "
               "parents' training, state and return seeds), keep every 10th state with its episode id, cache the "
               "buffer in the history folder by a hash of what made it, and score every child on it (every state of "
               "--crossover-states then fine-tunes); needs an environment (default: none; the decisive space: 300)",
               kind="int", metavar="N"),
        Option("allow-unsafe-unpickle", "Allow full-pickle checkpoints: unpickling runs arbitrary code from the file, "
               "so only for files you trust (default: off)", kind="flag"),
        Option("holdout", "Fraction of states held out of fine-tuning and used for every metric; 0 = evaluate on all "
               "(default 0.2)", "0.2", kind="float", metavar="FRACTION"),
        Option("split-seed", "Seed of the holdout split (default 0)", "0", kind="int", metavar="N"),
        Option("teacher", "Distillation teacher: " + "; ".join(f"{t.name}: {t.description}" for t in TEACHERS.values())
               + " (default a)", "a", metavar="|".join(TEACHERS.names())),
        Option("degenerate-threshold", "Fail children whose primary metric is below the threshold, one of: "
               + "; ".join(THRESHOLD_FORMS) + ". A relative form is resolved once the parents' agreement is known; "
               "an absolute one above the bound is refused (default 0)", "0", metavar="X|bound:F|parents:+D"),
        Option("run-dir", "Where results are written (default runs/crossover_search)", "runs/crossover_search",
               kind="path", metavar="DIR"),
        Option("env", "Gymnasium environment for returns (default: LunarLander-v3 with the embedded parents)",
               metavar="ID"),
        Option("episodes", "Greedy episodes per child for returns; 0 disables (default 10 with an environment)",
               kind="int", metavar="N"),
        Option("barrier", "Interpolation barrier between the parents before fine-tuning (barrier.json): on (agreement "
               "curves of the weighted child at alpha 0, 0.1, ..., 1 with each alignment of the space), returns (also "
               "greedy returns at every alpha: 11 x episodes per alignment), off (default on)", "on",
               metavar="on|returns|off"),
        Option("threads", "Torch intra-op threads per process (default 1: xdist workers must not fight over cores)",
               "1", kind="int", metavar="N"),
        Option("device", f"{' or '.join(DEVICES)} (default cpu)", "cpu", metavar="|".join(DEVICES)),
        Option("arithmetic", "CPU kernels: portable (the same numbers on any x86-64 CPU with AVX2) or native (fastest; "
               "numbers depend on the CPU) (default portable)", "portable", metavar="|".join(ARITHMETIC_MODES)),
        Option("report", "Write report.html (leaderboard and pictures; needs matplotlib) in the run directory at "
               "the end of the session: on or off (default on)", "on", metavar="on|off"),
    )


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("crossover", "crossover search harness")
    for opt in option_table():
        flag, text = f"--crossover-{opt.name}", opt.help.replace("%", "%%")  # argparse formats help with %
        if opt.kind == "flag":
            group.addoption(flag, action="store_true", default=None, dest=opt.dest, help=text)
            parser.addini(opt.dest, opt.help, type="bool", default=False)
        elif opt.kind == "lines":
            group.addoption(flag, action="append", default=None, dest=opt.dest, metavar=opt.metavar, help=text)
            parser.addini(opt.dest, opt.help, type="linelist", default=[])
        else:
            group.addoption(flag, action="store", default=None, dest=opt.dest, metavar=opt.metavar, help=text)
            parser.addini(opt.dest, opt.help, type="string", default="")
