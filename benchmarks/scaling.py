"""The states x hidden rows of ``benchmarks/perf.py``, each beside the compute limit of its Adam step.

A row runs the ``minimal`` space (9 children and their 9 controls: the default; holdout 0, no episodes) under
``-n 0`` and ``-n 2`` (the plugin's default ``--crossover-workers=fit``, so the workers column says what a user gets). A
row whose serial work the plugin's own estimate (``pytest_crossover.scheduling.serial_work_s``) puts above
``BUDGET_S`` is *sampled*, ``-n 0`` only: at hidden 64 every child of the session (the same population, so the same
memory) for one epoch each; at wider nets one child (weighted, alpha 0.5) for one epoch. Its per-step time and peak
RSS are measured and its ``minimal`` wall is extrapolated from them (start-up of the sample + the per-step time x
the session's child-steps; the first epoch has the most children per step, so this is a low estimate). A row
predicted to need more memory than ``MEM_CAP_MB`` (:func:`predicted_mb`) is not run on a shared machine; the table
says so. With the established tool (``benchmarks/established.py``), each row also gives AgentFarm's own ``minimal``
search on the same files, where it finishes in under 10 minutes.

The limit of one child's Adam step (batch 32) is the time its arithmetic needs at this machine's measured speed,
one thread: 6 x batch x weights FLOPs (forward 2, backward 4) at the measured large-matmul rate, plus 40 bytes a
parameter (Adam reads parameter, gradient and both moments and writes three of them: 28 B; forward and backward
read the weights twice and write the gradient: 12 B) at the bandwidth measured on a buffer of the network's size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BATCH = 32
STATES = (1_000, 10_000, 100_000, 1_000_000)
HIDDEN = (64, 256, 1024)
BUDGET_S = 40.0  # estimated serial work above which a row is sampled
MEM_CAP_MB = 8000.0  # predicted peak above which a row is not run on a shared machine (of 23 GB here)
SAMPLE = ("--crossover-space=custom", "--crossover-modes=weighted", "--crossover-alphas=0.5",
          "--crossover-define-regime=one:epochs=1,lr=1e-3", "--crossover-regimes=one", "--crossover-controls=off")
# minimal's recipes and learning rates (short, medium, long), one epoch each, with the controls: the session's
# first-epoch population, so its memory is the session's
SAMPLE_POPULATION = ("--crossover-space=custom", "--crossover-modes=random,layer,weighted", "--crossover-alphas=0.5",
                     "--crossover-seeds=0",
                     "--crossover-define-regime=one_s:epochs=1,lr=1e-3", "--crossover-define-regime=one_m:epochs=1,"
                     "lr=5e-4", "--crossover-define-regime=one_l:epochs=1,lr=1e-4",
                     "--crossover-regimes=one_s,one_m,one_l")


def weights(hidden: int, inputs: int = 8, outputs: int = 4) -> int:
    return inputs * hidden + hidden * hidden + hidden * outputs


def params(hidden: int, inputs: int = 8, outputs: int = 4) -> int:
    """Weights, biases and the two layer norms' scales and shifts of AgentFarm's QNetwork layout."""
    return weights(hidden, inputs, outputs) + 2 * hidden + outputs + 4 * hidden


def step_flops(hidden: int) -> float:
    return 6.0 * BATCH * weights(hidden)


def step_bytes(hidden: int) -> float:
    return 40.0 * params(hidden)


@dataclass
class Machine:
    matmul_gflops: float  # 1 thread, 1024 x 1024 float32 matmul
    bandwidth_gbs: dict[int, float]  # 1 thread, by hidden size: a buffer of the network's parameters

    def limit_ms(self, hidden: int) -> float:
        return 1e3 * (step_flops(hidden) / (self.matmul_gflops * 1e9)
                      + step_bytes(hidden) / (self.bandwidth_gbs[hidden] * 1e9))


def _best(fn: Callable[[], Any], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)  # the machine is shared: the fastest repeat is the least disturbed


def measure_machine() -> Machine:
    import torch

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1024, 1024, generator=g), torch.randn(1024, 1024, generator=g)
    gflops = 2 * 1024**3 / _best(lambda: a @ b, 10) / 1e9
    bandwidth = {}
    for h in HIDDEN:
        p, q = torch.randn(params(h), generator=g), torch.randn(params(h), generator=g)
        reps = max(3, int(2e7 // params(h)))
        # p += 0.5 q reads two buffers and writes one: 12 bytes a parameter.
        bandwidth[h] = 12 * params(h) * 100 / _best(lambda p=p, q=q: [p.add_(q, alpha=0.5) for _ in range(100)],
                                                   reps // 100 + 3) / 1e9
    return Machine(gflops, bandwidth)


def predicted_mb(states: int, hidden: int) -> float:
    """torch's ~250 MB, plus ~300 bytes a state (the states, their training copy, both parents' logits and soft
    targets, each child's per-row loss: measured ~270 B at 1,000,000 states), plus the population's buffers
    (parameters, gradients, Adam's moments and each child's best weights: 18 children x 6 x 4 bytes a parameter)."""
    return 250.0 + (300 * states + 18 * 6 * 4 * params(hidden)) / 2**20


def plan(states: int, hidden: int) -> tuple[str, float]:
    """("full" | "sampled" | "skipped", the plugin's estimate of the serial work in seconds)."""
    from harness.search.space import build_space
    from pytest_crossover.scheduling import serial_work_s

    est = serial_work_s(build_space("minimal"), rows=states, holdout=0.0, n_params=params(hidden), episodes=0)
    if predicted_mb(states, hidden) > MEM_CAP_MB:
        return "skipped", est
    return ("full" if est <= BUDGET_S else "sampled"), est


def minimal_child_steps(states: int) -> int:
    """Adam steps of every child of ``minimal`` and its controls (90 % of the states train, batch 32)."""
    from harness.search.space import build_space

    return sum(s.regime.epochs for s in build_space("minimal", controls=True)) * math.ceil(states * 0.9 / BATCH)


HEADER = ("| states | hidden | run | -n 0 wall s | -n 2 wall s (workers) | ms/step | limit ms/step | measured / limit "
          "| peak RSS MB | AgentFarm s |\n|---|---|---|---|---|---|---|---|---|---|")


def grid_rows(machine: Machine, run: Callable[..., Any], say: Callable[[str], None],
              established: Callable[[int, int], Any] | None = None) -> list[dict[str, Any]]:
    """Run the grid; ``run(states, hidden, workers, extra)`` returns a perf.Run, ``established(states, hidden)``
    AgentFarm's outcome (benchmarks/established.py). One Markdown row per cell."""
    from established import cell as af_cell

    out = []
    for hidden in HIDDEN:
        for states in STATES:
            how, est = plan(states, hidden)
            limit = machine.limit_ms(hidden)
            cell: dict[str, Any] = {"states": states, "hidden": hidden, "how": how, "limit_ms": limit, "est_s": est}
            af = established(states, hidden) if established is not None else None
            cell["agentfarm"] = af
            if how == "skipped":
                need = predicted_mb(states, hidden)
                say(f"| {states:,} | {hidden} | not run: would need ~{need:,.0f} MB | – | – | – | {limit:.3f} | – "
                    f"| – | {af_cell(af)} |")
                out.append(cell)
                continue
            if how == "full":
                serial, parallel = run(states, hidden, 0, ()), run(states, hidden, 2, ())
                ms = 1e3 * serial.phases.get("finetune", 0.0) / max(1, serial.steps)
                cell.update(wall0=serial.wall_s, wall2=parallel.wall_s, workers=parallel.workers, ms=ms,
                            rss=max(serial.rss_mb, parallel.rss_mb))
                two = f"{parallel.wall_s:.2f} ({parallel.workers or 'serial'})"
                label, wall0 = "minimal", f"{serial.wall_s:.2f}"
            else:
                population = hidden == HIDDEN[0]
                sample = run(states, hidden, 0, SAMPLE_POPULATION if population else SAMPLE)
                ms = 1e3 * sample.phases.get("finetune", 0.0) / max(1, sample.steps)
                extrapolated = sample.wall_s - sample.phases.get("finetune", 0.0) + ms / 1e3 * minimal_child_steps(
                    states)
                cell.update(wall0=extrapolated, ms=ms, rss=sample.rss_mb, sample_wall=sample.wall_s)
                what = f"{sample.children} children" if population else "1 child"
                two, label = "–", f"sampled ({what} x 1 epoch: {sample.wall_s:.1f} s)"
                wall0 = f"~{extrapolated:.0f} (extrapolated)"
            cell["ratio"] = ms / limit
            say(f"| {states:,} | {hidden} | {label} | {wall0} | {two} | {ms:.3f} | {limit:.3f} | {ms / limit:.1f}x "
                f"| {cell['rss']:.0f} | {af_cell(af)} |")
            out.append(cell)
    big = next(c for c in out if (c["states"], c["hidden"]) == (100_000, 64))
    if big["how"] == "full":  # AgentFarm's own work there: minimal's 9 children, without the controls
        own = ("--crossover-controls=off",)
        serial, parallel = run(100_000, 64, 0, own), run(100_000, 64, 2, own)
        big.update(own0=serial.wall_s, own2=parallel.wall_s, own_workers=parallel.workers)
        say(f"\nAt 100,000 states x hidden 64 doing AgentFarm's work (`--crossover-controls off`: minimal's 9 "
            f"children): `-n 0` {serial.wall_s:.1f} s, `-n 2` {parallel.wall_s:.1f} s "
            f"({parallel.workers or 'serial'}{' workers' if parallel.workers else ''}).")
    return out


def machine_lines(machine: Machine) -> list[str]:
    bw = ", ".join(f"hidden {h}: {machine.bandwidth_gbs[h]:.0f} GB/s" for h in HIDDEN)
    flops = ", ".join(f"hidden {h}: {step_flops(h) / 1e6:.2f} MFLOP + {step_bytes(h) / 1e6:.2f} MB" for h in HIDDEN)
    return [f"- matmul (1 thread, 1024 x 1024 float32, the portable arithmetic's kernels: MKL's AVX2 branch, as the "
            f"sessions compute): {machine.matmul_gflops:.0f} GFLOP/s; bandwidth on a buffer "
            f"of the network's size (1 thread): {bw}",
            f"- one child's Adam step at batch {BATCH}: {flops}"]

