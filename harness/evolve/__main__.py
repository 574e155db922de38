"""``python -m harness.evolve``: run G generations of a crossover search, each generation's children the next one's
parents, every generation scored against the founders (docs/generations.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness.core.errors import HarnessError
from harness.evolve.driver import LINEAGE, EvolveConfig, evolve, lines, parse_args
from harness.evolve.ranking import SELECTIONS


def main(argv: Sequence[str] | None = None) -> int:
    own, pytest_args = parse_args(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m harness.evolve", description="Evolve crossover children over "
                                 "generations; arguments after -- go to every generation's pytest session.")
    ap.add_argument("--generations", type=int, default=3, help="generations to run (default 3)")
    ap.add_argument("--space", default="minimal", help="each generation's --crossover-space (default minimal)")
    ap.add_argument("--select", default="top2", choices=list(SELECTIONS),
                    help="next parents: the two best crossover recipes' children (top2), or the best one's child "
                         "and founder B (best+founder) (default top2)")
    ap.add_argument("--replicates", type=int, default=1, help="each generation's --crossover-replicates (default 1)")
    ap.add_argument("--parent-a", help="founder A checkpoint (default: the embedded parents)")
    ap.add_argument("--parent-b", help="founder B checkpoint")
    ap.add_argument("--out", default="runs/evolution", help=f"the evolution folder ({LINEAGE} and one run folder "
                    "per generation; default runs/evolution); run again to resume")
    ap.add_argument("--stop-early", choices=("on", "off"), default="on",
                    help="stop when a generation's best recipe does not beat the previous generation's beyond the "
                         "95 %% interval of their paired gap (default on); off runs every generation")
    ap.add_argument("--picture", choices=("on", "off"), default="on",
                    help="draw evolution.png (lineage tree and best score per generation; needs matplotlib)")
    args = ap.parse_args(own)
    try:
        cfg = EvolveConfig(out=args.out, generations=args.generations, space=args.space, select=args.select,
                           replicates=args.replicates, founder_a=args.parent_a, founder_b=args.parent_b,
                           pytest_args=tuple(pytest_args), stop_early=args.stop_early == "on")
        state = evolve(cfg)
    except HarnessError as exc:
        flag = f"--{exc.field.replace('_', '-')}: " if exc.field else ""
        print(f"error: {flag}{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to resume from the last finished generation ({LINEAGE})",
              file=sys.stderr)
        return 130
    print("\n".join(lines(state)))
    if args.picture == "on":
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            print("picture: skipped (matplotlib is not installed: pip install 'pytest-crossover[plots]')")
        else:
            from harness.pictures.evolution import draw_evolution

            print(f"picture: {draw_evolution(state, cfg.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
