"""One child of the search: crossover → fine-tune → evaluate (→ int8, → returns), on a per-process context.

The context holds everything children share — parents, the holdout split, the teacher's soft targets and the
parents' logits on the evaluation states — so it is computed once per process, never once per child.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import __version__
from harness.atomic import publish_dir, torch_save, write_json
from harness.crossover import check_parents, crossover
from harness.errors import HarnessError, StatesError
from harness.evaluate import evaluate_model, parent_baseline, predict
from harness.finetune import TEMPERATURE, FinetuneResult, soft_targets
from harness.networks import QNetwork, infer_architecture, network_from_state_dict
from harness.population import finetune_population
from harness.quantize import convert_int8, is_int8
from harness.space import DEVICES, TEACHERS, ChildSpec
from harness.states import holdout_split

MERGE_LIMIT_FLOATS = 1 << 20  # parameters of a population that trains regimes together (4 MiB of float32)


@dataclass(frozen=True, slots=True)
class Settings:
    """Search-wide knobs that are not part of a child's recipe or regime."""

    holdout: float = 0.2
    teacher: str = "a"
    degenerate_threshold: float = 0.0
    env_id: str | None = None
    episodes: int = 0
    episode_seed: int = 10_000
    split_seed: int = 0
    chunk_size: int = 65_536
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise HarnessError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise HarnessError("device 'cuda' was asked for but torch.cuda.is_available() is False (torch "
                               f"{torch.__version__}); use device cpu or install a CUDA build of torch")
        if self.teacher not in TEACHERS:
            raise HarnessError(f"teacher must be one of {', '.join(TEACHERS)}, got {self.teacher!r}")
        if not 0.0 <= self.holdout < 1.0:
            raise HarnessError(f"holdout must be in [0, 1), got {self.holdout!r}; 0 evaluates on all states")
        if self.episodes < 0:
            raise HarnessError(f"episodes must be >= 0, got {self.episodes}")

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}  # type: ignore[attr-defined]


def _gather(states: np.ndarray, idx: np.ndarray) -> np.ndarray:
    if len(idx) == len(states) and idx[-1] == len(states) - 1:
        return states  # identity selection: keep a memmap a memmap
    return np.ascontiguousarray(states[idx], dtype=np.float32)


class Context:
    """Per-process shared state for a search over one parent pair and one state buffer."""

    def __init__(
        self,
        sd_a: Mapping[str, torch.Tensor],
        sd_b: Mapping[str, torch.Tensor],
        states: np.ndarray,
        settings: Settings = Settings(),
        *,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        check_parents(sd_a, sd_b)
        self.settings = settings
        self.provenance = dict(provenance or {})
        self.sd_a = {k: v.detach().clone() for k, v in sd_a.items()}
        self.sd_b = {k: v.detach().clone() for k, v in sd_b.items()}
        self.arch = infer_architecture(self.sd_a)
        if states.ndim != 2 or states.shape[1] != self.arch.input_dim:
            raise StatesError(
                f"states have shape {tuple(states.shape)} but the parents take {self.arch.input_dim} inputs; "
                "pass a (N, input_dim) float32 .npy buffer"
            )
        self.parent_a = network_from_state_dict(self.sd_a)
        self.parent_b = network_from_state_dict(self.sd_b)
        train_idx, eval_idx = holdout_split(len(states), settings.holdout, settings.split_seed)
        self.n_states, self.n_train, self.n_eval = len(states), len(train_idx), len(eval_idx)
        self.train_states = torch.from_numpy(np.array(_gather(states, train_idx), dtype=np.float32))
        self.eval_states = _gather(states, eval_idx)
        self.latency_input = torch.from_numpy(np.array(self.eval_states[:1], dtype=np.float32))
        self.targets = self._teacher_targets()
        # Fine-tuning runs on the device; evaluation streams CPU chunks through the model's device (evaluate.py).
        self.device = torch.device(settings.device)
        self.train_states_dev = self.train_states.to(self.device)
        self.targets_dev = self.targets.to(self.device)
        # The children this process will run (set by the caller, e.g. the plugin from its selected items): the
        # children among them whose regimes share their batches (Regime.batches) are fine-tuned together as one
        # population (harness.population). A caller that runs only some of them in this process sets
        # ``population_key`` (the plugin's xdist workers: one work unit each): then children train together
        # exactly when their keys are equal.
        self.specs: list[ChildSpec] | None = None
        self.population_key: Callable[[ChildSpec], Hashable] | None = None
        self.n_params = sum(int(v.numel()) for v in self.sd_a.values())
        self._pending: dict[str, FinetuneResult] = {}
        self._trained: set[str] = set()
        self.finetune_share: dict[str, float] = {}
        self.logits_a = predict(self.parent_a, self.eval_states, chunk_size=settings.chunk_size)
        self.logits_b = predict(self.parent_b, self.eval_states, chunk_size=settings.chunk_size)
        self.baseline = parent_baseline(self.logits_a, self.logits_b)
        self.agree_ab = float(self.baseline["top1"])

    def _teacher_targets(self) -> torch.Tensor:
        teachers = {"a": [self.parent_a], "b": [self.parent_b], "both": [self.parent_a, self.parent_b]}
        probs = [soft_targets(predict(t, self.train_states, chunk_size=self.settings.chunk_size), TEMPERATURE)
                 for t in teachers[self.settings.teacher]]
        # "both": the mean of the two parents' soft targets, so B's preferences are taught too (reference §8.2).
        return probs[0] if len(probs) == 1 else (probs[0] + probs[1]) / 2

    def new_child(self, state_dict: Mapping[str, torch.Tensor]) -> QNetwork:
        net = QNetwork(self.arch.input_dim, self.arch.output_dim, self.arch.hidden_size,
                       dropout_rate=self.parent_a.dropout_rate)
        net.load_state_dict(state_dict, strict=True)
        return net.eval()

    def evaluate(self, model: torch.nn.Module) -> dict[str, Any]:
        if self.device.type != "cpu" and not is_int8(model):
            model = copy.deepcopy(model).to(self.device)  # float children run on the device; int8 is CPU-only
        return evaluate_model(model, self.eval_states, self.logits_a, self.logits_b, self.agree_ab,
                              chunk_size=self.settings.chunk_size)

    def finetune(self, spec: ChildSpec, child: torch.nn.Module) -> FinetuneResult:
        """``spec``'s fine-tune result; on a miss, trains it with every not-yet-trained child of ``self.specs``
        whose regime shares its batches (or with its ``population_key``) as one population, and keeps the others'
        results for their own turn.

        A child's result is bitwise independent of its population (tests/harness/test_population.py), so which
        children share a population (``-k``, ``-n``) changes nothing but speed.
        """
        hit = self._pending.pop(spec.child_id, None)
        if hit is not None:
            return hit
        def pending(same: Any) -> list[ChildSpec]:
            return [s for s in (self.specs or ()) if same(s) and s.child_id != spec.child_id
                    and s.child_id not in self._trained]

        key = self.population_key
        if key is not None:
            others = pending(lambda s: key(s) == key(spec))
        else:
            others = pending(lambda s: s.regime == spec.regime)
            mixed = pending(lambda s: s.regime.batches == spec.regime.batches)
            # Regimes merge while the stack stays small: that saves per-op overhead on small nets; a big net's
            # steps are compute-bound, and there a larger stack only spills the caches (hidden 1024: 23% slower).
            if (len(mixed) + 1) * self.n_params <= MERGE_LIMIT_FLOATS:
                others = mixed
        models = [child] + [self.new_child(crossover(self.sd_a, self.sd_b, s.recipe.mode, alpha=s.recipe.alpha,
                                                     seed=s.recipe.seed)) for s in others]
        members = [spec, *others]
        start = time.perf_counter()
        results = finetune_population(models, self.train_states_dev, self.targets_dev, [s.regime for s in members])
        elapsed, epochs = time.perf_counter() - start, sum(s.regime.epochs for s in members)
        for s in members:  # each child's share of the population's time, by its number of (equal-sized) epochs
            self._trained.add(s.child_id)
            self.finetune_share[s.child_id] = round(elapsed * s.regime.epochs / epochs, 6)
        self._pending.update({s.child_id: r for s, r in zip(others, results[1:])})
        return results[0]

    def parent_rows(self) -> dict[str, Any]:
        """The A-vs-B baseline, as builtins (returns are added by the caller, which owns the environment)."""
        return {"agree_ab": self.agree_ab, "bound": (1 + self.agree_ab) / 2, "vs": self.baseline}


@dataclass
class ChildOutcome:
    """A finished child: the JSON-safe record, plus the models (for latency timing and saving)."""

    record: dict[str, Any]
    model: torch.nn.Module
    int8_model: torch.nn.Module | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _timed(timings: dict[str, float], phase: str, start: float) -> float:
    now = time.perf_counter()
    timings[phase] = round(timings.get(phase, 0.0) + now - start, 6)
    return now


def child_status(primary: float | None, threshold: float, diverged: bool) -> str:
    if diverged or primary is None or not np.isfinite(primary):
        return "diverged"
    if threshold > 0 and primary < threshold:
        return "degenerate"
    return "ok"


def run_child(spec: ChildSpec, ctx: Context, *, out_dir: Path | None = None) -> ChildOutcome:
    """Cross, fine-tune and evaluate one child; write its artefacts under ``out_dir`` if given."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    rec = spec.recipe
    sd = crossover(ctx.sd_a, ctx.sd_b, rec.mode, alpha=rec.alpha, seed=rec.seed)
    child = ctx.new_child(sd)
    t = _timed(timings, "crossover", t)
    before = ctx.evaluate(child)
    t = _timed(timings, "evaluate", t)
    ft = ctx.finetune(spec, child)
    t = _timed(timings, "finetune", t)
    # A population's time is shared equally by its children (the first one waited for all of them).
    timings["finetune"] = ctx.finetune_share.get(spec.child_id, timings["finetune"])
    after = ctx.evaluate(ft.model)
    int8_model = int8 = None
    if spec.regime.qat and not ft.diverged:
        int8_model = ft.int8_model if ft.int8_model is not None else convert_int8(ft.model)
        int8 = ctx.evaluate(int8_model)
        int8["vs_float"] = _agreement(predict(int8_model, ctx.eval_states), predict(ft.model, ctx.eval_states))
    t = _timed(timings, "evaluate", t)
    returns = int8_returns = None
    s = ctx.settings
    if s.env_id and s.episodes > 0 and not ft.diverged:
        from harness.rollout import episode_returns  # gymnasium only when returns are asked for

        returns = episode_returns(ft.model, s.env_id, s.episodes, seed=s.episode_seed)
        if int8_model is not None:
            int8_returns = episode_returns(int8_model, s.env_id, s.episodes, seed=s.episode_seed)
        t = _timed(timings, "rollout", t)
    # A QAT child ships as int8, so its int8 metrics rank it (the established tool ranked the float model).
    ranked = int8 if int8 is not None else after
    ranked_return = int8_returns if int8_returns is not None else returns
    primary = ranked["primary"] if not ft.diverged else None
    record = {
        "child_id": spec.child_id,
        "index": spec.index,
        "crossover": rec.to_dict(),
        "finetune_regime": spec.regime.to_dict(),
        "status": child_status(primary, s.degenerate_threshold, ft.diverged),
        "primary": primary,
        "ranked_model": "int8" if int8 is not None else "float",
        "before_finetune": before,
        "after_finetune": after,
        "int8": int8,
        "return": ranked_return,
        "returns": {"float": returns, "int8": int8_returns},
        "finetune": ft.history,
        "finetune_steps": ft.history.get("steps"),
        "timings_s": timings,
    }
    if out_dir is not None:
        t = time.perf_counter()
        record["files"] = write_child(out_dir, spec, ctx, sd, ft.model, int8_model, record)
        _timed(timings, "write", t)
    return ChildOutcome(record=record, model=ft.model, int8_model=int8_model, timings=timings)


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).double().mean())


def run_config(spec: ChildSpec, ctx: Context) -> dict[str, Any]:
    """Seed §7 fields plus what makes the child reproducible here (teacher, holdout, hashes, versions)."""
    reg = spec.regime
    return {
        "child_id": spec.child_id,
        "crossover": spec.recipe.to_dict(),
        "finetune": {
            "regime": reg.name, "epochs": reg.epochs, "lr": reg.lr, "batch_size": reg.batch_size,
            "val_fraction": reg.val_fraction, "loss_fn": "kl", "seed": reg.seed,
            "quantization_applied": reg.quantization_applied, "temperature": TEMPERATURE,
            "optimizer": "adam", "max_grad_norm": 1.0,
        },
        "teacher": ctx.settings.teacher,
        "holdout": ctx.settings.holdout,
        "settings": ctx.settings.to_dict(),
        "states": {"n_states": ctx.n_states, "n_finetune": ctx.n_train, "n_eval": ctx.n_eval},
        "architecture": ctx.arch.to_dict(),
        "harness_version": __version__,
        "torch_version": torch.__version__,
        **ctx.provenance,
    }


def write_child(out_dir: Path, spec: ChildSpec, ctx: Context, crossed: Mapping[str, torch.Tensor],
                model: torch.nn.Module, int8_model: torch.nn.Module | None, record: dict[str, Any]) -> dict[str, str]:
    """Per-child artefacts, each written atomically; paths returned relative to the run directory.

    The files are written to a hidden staging folder first and the folder is renamed into place, so a child's
    folder never mixes files of two sessions (a crash mid-write leaves the previous folder intact).
    """
    final = Path(out_dir) / spec.child_id
    d = Path(out_dir) / f".{spec.child_id}.{os.getpid()}.tmp"
    shutil.rmtree(d, ignore_errors=True)
    files = {"crossover": "crossover.pt", "child": "child.pt", "eval": "eval.json", "run_config": "run_config.json"}
    # No fsync per file: the folder rename below is what makes the child appear whole (~2-3 ms saved per file).
    torch_save(d / files["crossover"], dict(crossed), durable=False)
    torch_save(d / files["child"], model.state_dict(), durable=False)
    if int8_model is not None:
        files["int8"] = "child_int8.pt"
        torch_save(d / files["int8"], int8_model.state_dict(), durable=False)
    cfg = run_config(spec, ctx)
    cfg["finetune_metrics"] = record["finetune"]
    write_json(d / files["run_config"], cfg, durable=False)
    write_json(d / files["eval"], eval_report(record), durable=False)
    publish_dir(d, final)
    return {k: f"{spec.child_id}/{v}" for k, v in files.items()}


def eval_report(record: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("child_id", "status", "primary", "ranked_model", "before_finetune", "after_finetune", "int8",
            "return", "returns", "latency_ms", "finetune", "timings_s")
    return {k: record.get(k) for k in keys}
