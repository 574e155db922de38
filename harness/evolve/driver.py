"""The evolution loop: G generations, each an ordinary pytest session in its own run folder, its children the next
generation's parents, every generation scored against the founders.

State lives in ``lineage.json`` at the top of the evolution folder, rewritten atomically after each generation:
an interrupted evolution resumes from the last finished generation, and a generation whose run folder is complete
(its manifest says so, for the parents it was given) is read, not run again.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.core.atomic import write_json, write_text
from harness.core.errors import HarnessError
from harness.evolve.ranking import SELECTIONS, paired_gap, summary
from harness.inputs import embedded, lineage
from harness.inputs.checkpoints import file_sha256

LINEAGE = "lineage.json"
CLIENT = "crossover_generation.py"  # given explicitly to pytest; a bare `pytest` never collects it
CLIENT_TEXT = ("# The search as a test suite: one test per child (written by python -m harness.evolve).\n\n"
               "def test_child(crossover_child):\n    crossover_child.run()\n")
SCHEMA = 1


@dataclass(frozen=True)
class EvolveConfig:
    """What an evolution runs: its generations, space, selection, replicates, founders and extra pytest args."""

    out: str
    generations: int = 3
    space: str = "minimal"
    select: str = "top2"
    replicates: int = 1
    founder_a: str | None = None  # None: the embedded parents
    founder_b: str | None = None
    pytest_args: tuple[str, ...] = ()
    stop_early: bool = True  # stop when a generation's best does not beat the previous one beyond its interval

    def __post_init__(self) -> None:
        if not 1 <= self.generations <= 100:
            raise HarnessError(f"{self.generations} is outside [1, 100]", field="generations")
        if self.select not in SELECTIONS:
            raise HarnessError(f"{self.select!r} is not one of {', '.join(SELECTIONS)}", field="select")
        if (self.founder_a is None) != (self.founder_b is None):
            raise HarnessError("give both founders or neither (neither: the embedded parents)",
                               field="parent_a" if self.founder_a is None else "parent_b")

    def founders(self) -> tuple[str, str]:
        if self.founder_a is None or self.founder_b is None:
            a, b = embedded.parent_paths()
            return str(a), str(b)
        return str(Path(self.founder_a).resolve()), str(Path(self.founder_b).resolve())

    def same_run(self) -> dict[str, Any]:
        """What must not change when an evolution resumes (more generations may be asked for)."""
        kept = {k: v for k, v in asdict(self).items() if k not in ("generations", "out", "stop_early")}
        return dict(json.loads(json.dumps(kept)))  # as lineage.json holds it (lists, not tuples)


Runner = Callable[[list[str], Path], int]


def run_pytest(command: list[str], log: Path) -> int:
    """Run one generation's pytest session, its output in ``log``; its exit code (a Ctrl-C stops it and raises)."""
    with log.open("w", encoding="utf-8") as fh:
        return subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode


def command(cfg: EvolveConfig, out: Path, run_dir: Path, parents: tuple[str, str]) -> list[str]:
    args = [sys.executable, "-m", "pytest", str(out / CLIENT), f"--crossover-space={cfg.space}",
            f"--crossover-run-dir={run_dir}", f"--crossover-replicates={cfg.replicates}",
            f"--crossover-parent-a={parents[0]}", f"--crossover-parent-b={parents[1]}"]
    own = " ".join(cfg.pytest_args)
    if (cfg.founder_a is None and importlib.util.find_spec("gymnasium") is not None
            and "--crossover-env" not in own and "--crossover-episodes" not in own):
        args.append(f"--crossover-env={embedded.EMBEDDED_ENV_ID}")  # children of the embedded parents keep returns
    return [*args, *cfg.pytest_args]


def _sha(path: str) -> str:
    return file_sha256(lineage.parent_file(path))


def _finished(run_dir: Path, parents: tuple[str, str]) -> dict[str, Any] | None:
    """The run folder's manifest when it is complete and was run on these parents' bytes; else None."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    prov = manifest.get("provenance") or {}
    shas = tuple((prov.get(f"parent_{s}") or {}).get("sha256") for s in lineage.SLOTS)
    if not manifest.get("complete") or shas != tuple(_sha(p) for p in parents):
        return None
    return dict(manifest)


def _state(cfg: EvolveConfig, out: Path) -> dict[str, Any]:
    path = out / LINEAGE
    if not path.is_file():
        return {"schema": SCHEMA, "config": cfg.same_run(), "founders": _founders(cfg), "generations": [],
                "stopped": None}
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("config") != cfg.same_run():
        raise HarnessError(f"{str(path)!r} is an evolution with other settings ({state.get('config')}); resume it "
                           "with the same ones, or pass another --out", field="out")
    return dict(state)


def _founders(cfg: EvolveConfig) -> dict[str, Any]:
    return {f"parent_{s}": {"kind": "file", "path": p, "sha256": _sha(p)}
            for s, p in zip(lineage.SLOTS, cfg.founders())}


def _next_parents(state: Mapping[str, Any], cfg: EvolveConfig, out: Path) -> tuple[str, str]:
    gens = state["generations"]
    if not gens:
        return cfg.founders()
    nxt = gens[-1]["next_parents"]
    return str(out / nxt["a"]), str(out / nxt["b"])  # absolute paths (founders) stay as they are


def _relative(value: Any, out: Path) -> Any:
    """``value`` with every path inside the evolution folder relative to it: lineage.json names the same files
    wherever the folder is."""
    prefix = str(out) + "/"
    if isinstance(value, str) and value.startswith(prefix):
        return value[len(prefix):]
    if isinstance(value, Mapping):
        return {k: _relative(v, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, out) for v in value]
    return value


def _generation(cfg: EvolveConfig, out: Path, g: int, manifest: Mapping[str, Any], run_dir: Path,
                parents: tuple[str, str], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    gen = {"generation": g, "run_dir": run_dir.name, **summary(manifest),
           "parents": {s: {"path": p, "sha256": _sha(p)} for s, p in zip(lineage.SLOTS, parents)},
           "lineage": (manifest.get("provenance") or {}).get("lineage")}
    from harness.evolve.ranking import candidates

    a, b = SELECTIONS[cfg.select](candidates(manifest), run_dir, cfg.founders())
    gen["next_parents"] = {"a": a, "b": b}
    if previous is not None:
        earlier = _manifest(out / previous["run_dir"])
        gen["vs_previous"] = paired_gap(manifest, earlier, gen["best"]["children"], previous["best"]["children"])
    return gen


def _manifest(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "manifest.json").read_text(encoding="utf-8")))


def evolve(cfg: EvolveConfig, runner: Runner = run_pytest, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the evolution; its lineage.json state."""
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    state = _state(cfg, out)
    if not cfg.stop_early:
        state["stopped"] = None  # resumed past an early stop: the next generations run
    write_text(out / CLIENT, CLIENT_TEXT)
    for g in range(len(state["generations"]) + 1, cfg.generations + 1):
        if state["stopped"]:
            break
        parents, run_dir = _next_parents(state, cfg, out), out / f"gen_{g:03d}"
        manifest = _finished(run_dir, parents)
        if manifest is None:
            progress(f"generation {g}: pytest in {run_dir} (log {run_dir.name}.log)")
            code = runner(command(cfg, out, run_dir, parents), out / f"{run_dir.name}.log")
            manifest = _finished(run_dir, parents)
            if manifest is None:
                raise HarnessError(f"generation {g} did not finish (pytest exit code {code}); see "
                                   f"{out / (run_dir.name + '.log')}")
        else:
            progress(f"generation {g}: {run_dir} is complete; read, not run again")
        previous = state["generations"][-1] if state["generations"] else None
        gen = _generation(cfg, out, g, manifest, run_dir, parents, previous)
        state["generations"].append(_relative(gen, out))
        if cfg.stop_early and gen.get("vs_previous") and gen["vs_previous"]["lo"] <= 0:
            state["stopped"] = (f"generation {g}'s best does not beat generation {g - 1}'s beyond its interval "
                                f"({gen['vs_previous']['gap']:+.4f} [{gen['vs_previous']['lo']:+.3f}, "
                                f"{gen['vs_previous']['hi']:+.3f}])")
        state["overall"] = _overall(out, state)
        write_json(out / LINEAGE, state)
    return state


def _overall(out: Path, state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The last generation's best recipe minus the first's, paired (None with one generation)."""
    gens = state["generations"]
    if len(gens) < 2:
        return None
    first, last = gens[0], gens[-1]
    gap = paired_gap(_manifest(out / last["run_dir"]), _manifest(out / first["run_dir"]), last["best"]["children"],
                     first["best"]["children"])
    return {"later": last["generation"], "earlier": first["generation"], **gap}


def lines(state: Mapping[str, Any]) -> list[str]:
    """The evolution in a few lines: each generation's best recipe against the reference, and the overall gap."""
    out = []
    for gen in state["generations"]:
        b = gen["best"]
        vs = gen.get("vs_previous")
        step = f"; vs previous {vs['gap']:+.4f} [{vs['lo']:+.3f}, {vs['hi']:+.3f}]" if vs else ""
        out.append(f"generation {gen['generation']}: best {b['recipe']} primary {b['primary']:.4f} "
                   f"[{b['lo']:.3f}, {b['hi']:.3f}] ({b['replicates']} replicates; bound {gen['bound']:.4f}){step}")
    o = state.get("overall")
    if o:
        out.append(f"generation {o['later']} minus generation {o['earlier']}: {o['gap']:+.4f} "
                   f"[{o['lo']:+.3f}, {o['hi']:+.3f}] (paired over the same held-out episodes)")
    if state.get("stopped"):
        out.append(f"stopped early: {state['stopped']}")
    return out


def parse_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the evolution's own arguments, the pytest arguments after ``--``)."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []

