"""The study against the grid, measured as a user would run them (embedded parents, held-out episodes, 2 cores).

    python benchmarks/study_targets.py [--trials 64] [--workers 2] [--confirm 3]

1. the ``frontier`` grid (64 children) at ``-n WORKERS``, timed; its best recipe re-run with ``--crossover-replicates``;
2. a TPE study over the same space (``--crossover-space frontier``, the same child budget, seed 0), timed, then one
   session that only confirms (``--crossover-trials 0``): its best trial re-run with other seeds;
3. CMA-ES over per-layer alphas (``weighted_layerwise``, ``layer_alphas=0..1``), the same budget, then confirmed.

Then, on the evaluation rows all these sessions share (the same split, checked): each confirmed recipe's mean and
interval, its share of the parents' bound, the paired gap of each study's best to the grid's best recipe, and each
study's best crossover trial against its best control trial. The numbers are the tool's own statistics
(:func:`harness.evaluate.statistics.recipe_statistics`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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
    units: dict[str, list[dict[str, Any]]] = {}
    for c in manifest["children"]:
        if c.get("rows") and c.get("status") in ("ok", "return-drop", "control"):
            units.setdefault(c["unit"], []).append(c)
    return units


def best_unit(manifest: dict[str, Any], *, control: bool = False) -> str:
    rec = json.loads((Path(manifest["options"]["run_dir"]) / "recommendation.json").read_text()) \
        if Path(manifest["options"]["run_dir"]).is_absolute() else None
    units = by_unit(manifest)
    ranked = [r for r in (rec or {}).get("recipes", []) if bool(r["control"]) == control and r["recipe"] in units]
    if ranked:
        return str(ranked[0]["recipe"])
    top = max((c for cs in units.values() for c in cs if c["unit"].startswith("control") == control),
              key=lambda c: c["primary"]["value"] if isinstance(c["primary"], dict) else c["primary"])
    return str(top["unit"])


def grid_recipe_args(child: dict[str, Any]) -> list[str]:
    """The custom-space flags that rebuild one grid child's recipe."""
    cross, levels = child["crossover"], child["levels"]
    params = {k: cross.get(k) for k in ("alpha", "seed")}
    args = [f"--crossover-modes={cross['mode'] if 'mode' in cross else cross['operator']}",
            f"--crossover-regimes={levels['regime']}", f"--crossover-align={levels['align']}",
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
    if True:
        tmp = a.out.resolve()
        results: dict[str, Any] = {}
        grid, grid_wall = run(tmp, "grid", ["--crossover-space=frontier", *n])
        gbest = best_unit(grid)
        gchild = next(c for c in grid["children"] if c["unit"] == gbest)
        regrid, _ = run(tmp, "grid_replicates", [*grid_recipe_args(gchild),
                                                 f"--crossover-replicates={a.confirm + 1}", *n])
        study_args = ["--crossover-search=optuna", "--crossover-sampler-seed=0"]
        tpe, tpe_wall = run(tmp, "tpe", ["--crossover-space=frontier", *study_args, "--crossover-sampler=tpe",
                                         f"--crossover-study={tmp / 'tpe.log'}", f"--crossover-trials={a.trials}",
                                         "--crossover-confirm=0x0", *n])
        tpe_c, _ = run(tmp, "tpe_confirm", ["--crossover-space=frontier", *study_args, "--crossover-sampler=tpe",
                                            f"--crossover-study={tmp / 'tpe.log'}", "--crossover-trials=0",
                                            f"--crossover-confirm=1x{a.confirm}", *n])
        layer = ["--crossover-space=custom", "--crossover-modes=weighted_layerwise",
                 "--crossover-param=layer_alphas=0..1", "--crossover-align=activations", "--crossover-regimes=xlong",
                 "--crossover-teachers=both", *study_args, "--crossover-sampler=cmaes",
                 f"--crossover-study={tmp / 'cma.log'}"]
        cma, cma_wall = run(tmp, "cmaes", [*layer, f"--crossover-trials={a.trials}", "--crossover-confirm=0x0", *n])
        cma_c, _ = run(tmp, "cmaes_confirm", [*layer, "--crossover-trials=0", f"--crossover-confirm=1x{a.confirm}",
                                              *n])
        digests = {m["split"]["digest"] for m in (grid, regrid, tpe_c, cma_c)}
        assert len(digests) == 1, f"the sessions scored on different splits: {digests}"
        results["walls"] = {"grid": grid_wall, "tpe": tpe_wall, "cmaes": cma_wall}
        print(json.dumps(results, indent=1))
        for m in (regrid, tpe_c, cma_c):
            (Path.cwd() / f"study_targets_{m['space']}_{int(time.time())}.json").write_text(json.dumps(m))
        pools = {"grid best": by_unit(regrid)[gbest]}
        tpe_units = by_unit(tpe_c)
        for label, _m, units in (("tpe", tpe_c, tpe_units), ("cmaes", cma_c, by_unit(cma_c))):
            confirmed = max((u for u, cs in units.items() if len(cs) > 1 and not u.startswith("control")),
                            key=lambda u: len(units[u]))
            pools[f"{label} best"] = units[confirmed]
            print(f"{label}: best confirmed recipe {confirmed} ({len(units[confirmed])} runs)")
            rec = json.loads((tmp / ("tpe_confirm" if label == "tpe" else "cmaes_confirm") /
                              "recommendation.json").read_text())
            print(f"{label}: crossover vs control: {rec.get('crossover_vs_control')}")
            study = rec.get("study", {}).get("best")
            print(f"{label}: best trial {study}")
        compare("confirmed recipes", pools, regrid["split"], regrid["parents"], "grid best")


if __name__ == "__main__":
    main()
