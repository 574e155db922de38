"""The study against the grid, measured as a user would run them (embedded parents, held-out episodes, 2 cores).

    python benchmarks/study_targets.py [--trials 64] [--workers 2] [--confirm 3]

1. the ``frontier`` grid (64 children) at ``-n WORKERS``, timed; its best crossover recipe re-run with
   ``--crossover-replicates``;
2. a TPE study over the same space (``--crossover-space frontier``, controls among its choices, the same child
   budget, seed 0), timed, then one session that only confirms (``--crossover-trials 0``): its best trial re-run
   with other seeds;
3. CMA-ES over per-layer alphas (``weighted_layerwise``, ``layer_alphas=0..1``, controls off), the same budget,
   then its top three trials confirmed;
4. TPE with the fine-tune loop in the space (frontier's operators, alignments and teachers, regimes short, xlong and
   ``tuned``), the same budget, its top three trials confirmed; and the grid's best recipe re-run with ``tuned``.

Then, on the evaluation rows all these sessions share (the same split, checked): each confirmed recipe's mean and
interval, its share of the parents' bound, the paired gap of each study's best to the grid's best recipe, and each
study's best crossover trial against its best control trial. The numbers are the tool's own statistics
(:func:`harness.evaluate.statistics.recipe_statistics`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sessions import spawn

from harness.evaluate.intervals import groups_from_rle
from harness.evaluate.statistics import recipe_statistics

ROOT = Path(__file__).resolve().parents[1]


def run(tmp: Path, name: str, args: list[str]) -> tuple[dict[str, Any], float]:
    """One session into ``tmp/name``, or what an earlier run of this script left there complete (no rerun)."""
    run_dir = tmp / name
    done = run_dir / "manifest.json"
    if done.is_file() and json.loads(done.read_text()).get("complete") and (tmp / f"{name}.wall").is_file():
        return json.loads(done.read_text()), float((tmp / f"{name}.wall").read_text())
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-q", "-p", "no:cacheprovider",
           "--crossover-no-save", "--crossover-report=off", f"--crossover-run-dir={run_dir}", *args]
    wall, _, code, _, out = spawn(cmd, tmp)
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        raise SystemExit(f"{name}: no manifest (exit {code}):\n{out[-3000:]}")
    print(f"{name}: {wall:.1f} s, exit {code}", flush=True)
    (tmp / f"{name}.wall").write_text(str(wall))
    return json.loads(manifest.read_text()), wall


def by_unit(manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The scored children by recipe (a study's trials of the same recipe, and confirmation runs, pool)."""
    units: dict[str, list[dict[str, Any]]] = {}
    for c in manifest["children"]:
        if c.get("rows") and c.get("status") in ("ok", "return-drop", "control", "degenerate"):
            units.setdefault(c["unit"], []).append(c)
    return units


def _primary(child: dict[str, Any]) -> float:
    p = child["primary"]
    return float(p["value"] if isinstance(p, dict) else p)


def best_unit(units: dict[str, list[dict[str, Any]]], *, control: bool | None = None) -> str | None:
    """The recipe of the best single child (a trial), among controls, crossovers or both (None)."""
    pool = [u for u, cs in units.items() if control is None or cs[0]["unit"].startswith("control") == control]
    return max(pool, key=lambda u: max(_primary(c) for c in units[u]), default=None)


def grid_recipe_args(child: dict[str, Any], *, regime: str | None = None) -> list[str]:
    """The custom-space flags that rebuild one grid child's recipe (with another regime, if given)."""
    cross, levels = child["crossover"], child["levels"]
    params = {k: cross.get(k) for k in ("alpha", "seed")}
    args = [f"--crossover-modes={cross['mode'] if 'mode' in cross else cross['operator']}",
            f"--crossover-regimes={regime or levels['regime']}", f"--crossover-align={levels['align']}",
            f"--crossover-teachers={levels['teacher']}"]
    if params.get("alpha") is not None:
        args.append(f"--crossover-alphas={params['alpha']}")
    if params.get("seed") is not None:
        args.append(f"--crossover-seeds={params['seed']}")
    return ["--crossover-space=custom", *args]


def compare(title: str, pools: dict[str, list[dict[str, Any]]], split: dict[str, Any], parents: dict[str, Any],
            best: str) -> None:
    """Each pool's mean primary over its runs with its interval and its share of the bound, and its paired gap to
    ``best``'s, on the same resamples of the evaluation episodes (the tool's recipe statistics)."""
    groups = groups_from_rle(split["eval_groups"], split["n_eval"])
    stats = recipe_statistics({k: [c["rows"] for c in v] for k, v in pools.items()}, groups, best=best,
                              parents=(parents.get("rows") or {}).get("agree_ab")).summary()
    bound = parents["bound"]
    print(f"\n{title} (parents agree on {parents['agree_ab']:.4f}; bound {bound:.4f}):")
    for name, st in stats.items():
        lo, hi = st["primary"]
        glo, ghi = st["gap"]
        print(f"  {name}: {st['replicates']} runs, mean primary {st['mean']:.4f} [{lo:.4f}, {hi:.4f}], "
              f"{st['mean'] / bound:.3f} of the bound; minus {best}: {st['mean'] - stats[best]['mean']:+.4f} "
              f"[{glo:+.4f}, {ghi:+.4f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--confirm", type=int, default=3, help="confirmation runs of each best (other seeds)")
    ap.add_argument("--out", type=Path, default=Path("study_targets"), help="the sessions' folder (kept: a rerun "
                    "reads the sessions that finished)")
    a = ap.parse_args()
    n = [f"-n{a.workers}", "--crossover-workers=asked"] if a.workers else []
    a.out.mkdir(parents=True, exist_ok=True)
    tmp = a.out.resolve()
    grid, grid_wall = run(tmp, "grid", ["--crossover-space=frontier", *n])
    gbest = best_unit(by_unit(grid), control=False)
    gchild = next(c for c in grid["children"] if c["unit"] == gbest)
    regrid, _ = run(tmp, "grid_replicates", [*grid_recipe_args(gchild), f"--crossover-replicates={a.confirm + 1}",
                                             *n])
    study = ["--crossover-search=optuna", "--crossover-sampler-seed=0"]
    tpe = [*study, "--crossover-space=frontier", "--crossover-sampler=tpe", f"--crossover-study={tmp / 'tpe.log'}"]
    _, tpe_wall = run(tmp, "tpe", [*tpe, f"--crossover-trials={a.trials}", "--crossover-confirm=0x0", *n])
    tpe_c, _ = run(tmp, "tpe_confirm", [*tpe, "--crossover-trials=0", f"--crossover-confirm=1x{a.confirm}", *n])
    # CMA-ES samples numbers: the per-layer alphas alone (a categorical choice such as the controls would be
    # drawn at random beside it), then its top trials confirmed.
    layer = [*study, "--crossover-space=custom", "--crossover-modes=weighted_layerwise",
             "--crossover-param=layer_alphas=0..1", "--crossover-align=activations", "--crossover-regimes=xlong",
             "--crossover-teachers=both", "--crossover-controls=off", "--crossover-sampler=cmaes",
             f"--crossover-study={tmp / 'cma2.log'}"]
    _, cma_wall = run(tmp, "cmaes", [*layer, f"--crossover-trials={a.trials}", "--crossover-confirm=0x0", *n])
    cma_c, _ = run(tmp, "cmaes_confirm", [*layer, "--crossover-trials=0", f"--crossover-confirm=3x{a.confirm}",
                                          *n])
    # The fine-tune loop in the space: frontier's operators, alignments and teachers, with the tuned regime too.
    loop = [*study, "--crossover-space=custom", "--crossover-modes=random,layer,weighted,slerp",
            "--crossover-align=none,activations", "--crossover-regimes=short,xlong,tuned",
            "--crossover-teachers=both,balanced", "--crossover-sampler=tpe", f"--crossover-study={tmp / 'tpe3.log'}"]
    _, loop_wall = run(tmp, "tpe_loop", [*loop, f"--crossover-trials={a.trials}", "--crossover-confirm=0x0", *n])
    loop_c, _ = run(tmp, "tpe_loop_confirm", [*loop, "--crossover-trials=0", f"--crossover-confirm=3x{a.confirm}",
                                              *n])
    tuned, _ = run(tmp, "grid_tuned", [*grid_recipe_args(gchild, regime="tuned"),
                                       f"--crossover-replicates={a.confirm + 1}", *n])
    digests = {m["split"]["digest"] for m in (grid, regrid, tpe_c, cma_c, loop_c, tuned)}
    assert len(digests) == 1, f"the sessions scored on different splits: {digests}"
    print(f"wall at -n {a.workers}: frontier grid {grid_wall:.1f} s, TPE study {tpe_wall:.1f} s "
          f"({tpe_wall / grid_wall:.2f}x), CMA-ES study {cma_wall:.1f} s ({cma_wall / grid_wall:.2f}x), TPE with the "
          f"loop {loop_wall:.1f} s ({loop_wall / grid_wall:.2f}x)")
    pools = {f"grid best {gbest}": by_unit(regrid)[gbest]}
    tuned_unit = gbest.replace(f"_{gchild['levels']['regime']}", "_tuned", 1)
    pools[f"grid best recipe, tuned {tuned_unit}"] = by_unit(tuned)[tuned_unit]
    for label, m in (("tpe", tpe_c), ("cmaes", cma_c), ("tpe with the loop", loop_c)):
        units = by_unit(m)
        for what, control in (("best trial", None), ("best crossover", False), ("best control", True)):
            unit = best_unit(units, control=control)
            if unit is not None:
                pools[f"{label} {what} {unit}"] = units[unit]
        summary = (m.get("study") or {}).get("best") or {}
        if summary:
            print(f"{label}: best trial {summary.get('child_id')} {summary.get('alone', 0):.4f} alone, "
                  f"{summary.get('mean', 0):.4f} over {summary.get('runs')} runs "
                  f"(shrank {summary.get('shrank', 0):+.4f})")
    compare("recipes, on the same evaluation episodes", pools, regrid["split"], regrid["parents"],
            f"grid best {gbest}")


if __name__ == "__main__":
    main()
