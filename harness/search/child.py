"""One child of the search: crossover → fine-tune → evaluate (→ int8, → returns), on a per-process context.

The context holds everything children share — parents, the holdout split, the teacher's soft targets and the
parents' logits on the evaluation states. It is built once per process and never changes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.core.errors import StatesError
from harness.crossing.crossover import check_parents, crossover
from harness.evaluate.intervals import pack_bits
from harness.evaluate.vs_parents import evaluate_model, parent_baseline, predict
from harness.inputs.states import Buffer, Split, split_buffer
from harness.networks.family import build_network, infer_architecture, network_from_state_dict
from harness.networks.qnetwork import Architecture
from harness.networks.quantize import is_int8
from harness.networks.sequential import convert
from harness.search.populations import Trained, train
from harness.search.result import ChildResult, _identity
from harness.search.settings import Settings
from harness.search.space import ChildSpec, Recipe
from harness.train.finetune import TEMPERATURE, FinetuneResult, soft_targets
from harness.train.teachers import TEACHERS, Targets


def _gather(states: np.ndarray, idx: np.ndarray) -> np.ndarray:
    if len(idx) == len(states) and idx[-1] == len(states) - 1:
        return states  # identity selection: no copy
    return np.ascontiguousarray(states[idx], dtype=np.float32)


def _buffer(states: np.ndarray | Buffer) -> Buffer:
    return states if isinstance(states, Buffer) else Buffer(np.asarray(states), None, "", "(array)")


@dataclass(frozen=True)
class Context:
    """Per-process shared, read-only state for a search over one parent pair and one state buffer.

    Build it with :meth:`build`; fine-tuning runs on ``settings.device``, evaluation streams CPU chunks through
    the model's device.
    """

    settings: Settings
    provenance: Mapping[str, Any]
    split: Split
    sd_a: Mapping[str, torch.Tensor]
    sd_b: Mapping[str, torch.Tensor]
    arch: Architecture
    parent_a: torch.nn.Module
    parent_b: torch.nn.Module
    n_states: int
    train_states: torch.Tensor
    eval_states: np.ndarray
    probs_a: torch.Tensor  # each parent's soft targets on the fine-tune states (T = 3), on the device
    probs_b: torch.Tensor
    train_states_dev: torch.Tensor
    logits_a: torch.Tensor  # the reference's Q-values on the evaluation states (the parents, unless one is given)
    logits_b: torch.Tensor
    baseline: Mapping[str, Any]  # reference A -> reference B pair metrics
    # What agreement is scored against when it is not the parents (harness.inputs.lineage): the teachers stay the
    # parents, only the scoring moves, so the scores of generations with one reference are on one scale.
    reference_a: torch.nn.Module | None = None
    reference_b: torch.nn.Module | None = None
    # B aligned to A by each method asked for so far: computed once per process, never once per child.
    _aligned: dict[str, Mapping[str, torch.Tensor]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, sd_a: Mapping[str, torch.Tensor], sd_b: Mapping[str, torch.Tensor], states: np.ndarray | Buffer,
              settings: Settings | None = None, *, eval_states: np.ndarray | Buffer | None = None,
              provenance: Mapping[str, Any] | None = None,
              reference: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]] | None = None) -> Context:
        """``states`` (an array, or a :class:`harness.inputs.states.Buffer` with episode ids) is split by
        :func:`harness.inputs.states.split_buffer`; with ``eval_states`` every state fine-tunes and those evaluate;
        with ``reference`` (two state dicts of the parents' architecture) agreement is scored against them."""
        sd_a, sd_b = convert(sd_a), convert(sd_b)  # a plain nn.Sequential's keys, renamed to its family's
        check_parents(sd_a, sd_b)
        settings = settings or Settings()
        settings.check_device()
        a = {k: v.detach().clone() for k, v in sd_a.items()}
        b = {k: v.detach().clone() for k, v in sd_b.items()}
        arch = infer_architecture(a)
        buffer = _buffer(states)
        evals = None if eval_states is None else _buffer(eval_states)
        for what, buf in (("states", buffer), ("eval_states", evals)):
            if buf is not None and (buf.states.ndim != 2 or buf.states.shape[1] != arch.input_dim):
                raise StatesError(f"{what} have shape {tuple(buf.states.shape)} but the parents take "
                                  f"{arch.input_dim} inputs; pass a (N, input_dim) float32 buffer", field=what)
        parent_a, parent_b = network_from_state_dict(a), network_from_state_dict(b)
        split = split_buffer(buffer, settings.holdout, settings.split_seed, evals)
        train_states = torch.from_numpy(np.array(_gather(buffer.states, split.train_idx), dtype=np.float32))
        eval_states_ = _gather((evals or buffer).states, split.eval_idx)
        chunk = settings.chunk_size
        device = torch.device(settings.device)
        probs_a, probs_b = (soft_targets(predict(p, train_states, chunk_size=chunk), TEMPERATURE).to(device)
                            for p in (parent_a, parent_b))
        refs = None
        if reference is not None:
            refs = tuple(network_from_state_dict({k: v.detach().clone() for k, v in convert(r).items()})
                         for r in reference)
            check_parents(dict(refs[0].state_dict()), a)
        scored = refs or (parent_a, parent_b)
        logits_a = predict(scored[0], eval_states_, chunk_size=chunk)
        logits_b = predict(scored[1], eval_states_, chunk_size=chunk)
        return cls(settings, dict(provenance or {}), split, a, b, arch, parent_a, parent_b, len(buffer.states),
                   train_states, eval_states_, probs_a, probs_b, train_states.to(device), logits_a, logits_b,
                   parent_baseline(logits_a, logits_b), *(refs or (None, None)))

    @property
    def scored(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The networks agreement is scored against: the reference, else the parents (the baseline rows)."""
        if self.reference_a is not None and self.reference_b is not None:
            return self.reference_a, self.reference_b
        return self.parent_a, self.parent_b

    def targets(self, teacher: str) -> Targets:
        """What a teacher trains toward on the fine-tune states, on the device: both parents' soft targets and the
        teacher that mixes them (harness.train.teachers); the trainer also measures the validation primary with them."""
        return Targets(self.probs_a, self.probs_b, TEACHERS.get(teacher))

    @property
    def n_train(self) -> int:
        return int(self.train_states.shape[0])

    @property
    def n_eval(self) -> int:
        return int(self.eval_states.shape[0])

    @property
    def agree_ab(self) -> float:
        return float(self.baseline["top1"])

    @property
    def n_params(self) -> int:
        return sum(int(v.numel()) for v in self.sd_a.values())

    @property
    def latency_input(self) -> torch.Tensor:
        return torch.from_numpy(np.array(self.eval_states[:1], dtype=np.float32))

    def aligned_b(self, align: str) -> Mapping[str, torch.Tensor]:
        """Parent B with its hidden units permuted to match A's (``none``: B as it is)."""
        if align == "none":
            return self.sd_b
        if align not in self._aligned:
            from harness.crossing.align import align as align_b

            # Activation matching looks at the fine-tune states only, never the held-out ones.
            self._aligned[align] = align_b(self.sd_a, self.sd_b, align, states=self.train_states)
        return self._aligned[align]

    def cross(self, recipe: Recipe, align: str = "none") -> dict[str, torch.Tensor]:
        """The recipe's crossover child of A and B (aligned to A by ``align``)."""
        return crossover(self.sd_a, self.aligned_b(align), recipe.operator, **recipe.kwargs)

    def new_child(self, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        net = build_network(self.arch)
        net.load_state_dict(state_dict, strict=True)
        return net.eval()

    def evaluate(self, model: torch.nn.Module, actions: list[torch.Tensor] | None = None) -> dict[str, Any]:
        if self.settings.device != "cpu" and not is_int8(model):
            model = copy.deepcopy(model).to(self.settings.device)  # float children run on the device; int8 on CPU
        return evaluate_model(model, self.eval_states, self.logits_a, self.logits_b, self.agree_ab,
                              chunk_size=self.settings.chunk_size, actions=actions)

    def rows(self, actions: list[torch.Tensor]) -> dict[str, Any]:
        """Per evaluation row, whether the child's action is A's and B's, packed (builtins, for the bootstrap)."""
        chosen = torch.cat(actions)
        return {"n": int(len(chosen)), "agree_a": pack_bits(chosen == self.logits_a.argmax(1)),
                "agree_b": pack_bits(chosen == self.logits_b.argmax(1))}

    def parent_rows(self) -> dict[str, Any]:
        """The A-vs-B baseline, as builtins (latency and returns: :func:`harness.search.parents.parent_baselines`)."""
        same = self.logits_a.argmax(1) == self.logits_b.argmax(1)
        return {"agree_ab": self.agree_ab, "bound": (1 + self.agree_ab) / 2, "vs": dict(self.baseline),
                "rows": {"n": int(len(same)), "agree_ab": pack_bits(same)}}


@dataclass
class ChildOutcome:
    """A finished child: its result, plus the models (for latency timing and saving)."""

    spec: ChildSpec
    result: ChildResult
    crossed: dict[str, torch.Tensor]
    model: torch.nn.Module
    int8_model: torch.nn.Module | None = None

    @property
    def ranked_model(self) -> torch.nn.Module:
        """The model the leaderboard ranks: the int8 model of a QAT child, else the float one."""
        return self.int8_model if self.int8_model is not None else self.model


def _timed(timings: dict[str, float], phase: str, start: float) -> float:
    now = time.perf_counter()
    timings[phase] = round(timings.get(phase, 0.0) + now - start, 6)
    return now


def child_status(primary: float | None, threshold: float, diverged: bool, control: bool = False) -> str:
    """diverged, control (a control that finished: never gated), degenerate (below the threshold) or ok."""
    if diverged or primary is None or not np.isfinite(primary):
        return "diverged"
    if control:
        return "control"
    if threshold > 0 and primary < threshold:
        return "degenerate"
    return "ok"


def run_child(spec: ChildSpec, ctx: Context, *, trained: Trained | None = None) -> ChildOutcome:
    """Cross, fine-tune and evaluate one child.

    ``trained`` is the child's crossover and fine-tune result when it was trained in a population
    (:class:`harness.search.populations.Finetuner`); without it the child is crossed and trains alone (same numbers).
    """
    timings: dict[str, float] = {}
    t = time.perf_counter()
    trained = trained if trained is not None else train(ctx, [spec])[spec.child_id]
    ft = trained.result
    timings["crossover"], timings["finetune"] = trained.cross_seconds, ft.seconds
    before = ctx.evaluate(ctx.new_child(trained.crossed))
    t = _timed(timings, "evaluate", t)
    float_actions: list[torch.Tensor] = []
    after = ctx.evaluate(ft.model, float_actions)
    ranked_actions = float_actions
    int8_model = int8 = None
    if spec.regime.qat and not ft.diverged:
        int8_model = ft.int8_model
        assert int8_model is not None  # a QAT regime's result always carries its int8 model
        ranked_actions = []
        int8 = ctx.evaluate(int8_model, ranked_actions)
        int8["vs_float"] = _agreement(predict(int8_model, ctx.eval_states), predict(ft.model, ctx.eval_states))
    t = _timed(timings, "evaluate", t)
    returns = _returns(ctx, ft, int8_model)
    if returns is not None:
        _timed(timings, "rollout", t)
    # A QAT child ships as int8, so its int8 metrics rank it (AgentFarm ranked the float model).
    ranked = int8 if int8 is not None else after
    primary = ranked["primary"] if not ft.diverged else None
    float_returns, int8_returns = returns or (None, None)
    result = ChildResult(
        **_identity(spec),
        status=child_status(primary, ctx.settings.gate(ctx.agree_ab), ft.diverged, spec.control),
        primary=primary,
        ranked_model="int8" if int8 is not None else "float", before_finetune=before, after_finetune=after,
        int8=int8, return_=int8_returns if int8_returns is not None else float_returns,
        returns={"float": float_returns, "int8": int8_returns}, finetune=ft.history,
        finetune_steps=ft.history.get("steps"),
        model_bytes=None if ft.diverged else _model_bytes(int8_model if int8_model is not None else ft.model),
        timings_s=timings, split=ctx.split.digest, rows=None if ft.diverged else ctx.rows(ranked_actions))
    return ChildOutcome(spec, result, trained.crossed, ft.model, int8_model)


def _returns(ctx: Context, ft: FinetuneResult, int8_model: torch.nn.Module | None) -> tuple[Any, Any] | None:
    """(float model's, int8 model's) greedy returns, when the session measures returns."""
    s = ctx.settings
    if not s.returns or ft.diverged:
        return None
    from harness.evaluate.rollout import episode_returns  # gymnasium only when returns are asked for

    assert s.env_id is not None
    float_returns = episode_returns(ft.model, s.env_id, s.episodes, seed=s.episode_seed)
    int8_returns = None
    if int8_model is not None:
        int8_returns = episode_returns(int8_model, s.env_id, s.episodes, seed=s.episode_seed)
    return float_returns, int8_returns


def _model_bytes(model: torch.nn.Module) -> int:
    return sum(int(t.numel() * t.element_size()) for t in model.state_dict().values())


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).double().mean())


def run_config(spec: ChildSpec, ctx: Context) -> dict[str, Any]:
    """AgentFarm's reproducibility fields plus what makes the child reproducible here (teacher, holdout,
    hashes, versions)."""
    from harness.core.version import __version__

    reg = spec.regime
    return {
        "child_id": spec.child_id,
        "crossover": spec.crossover_record(),
        "finetune": {
            "regime": reg.name, "epochs": reg.epochs, "lr": reg.lr, "batch_size": reg.batch_size,
            "val_fraction": reg.val_fraction, "loss_fn": "kl", "seed": reg.seed,
            "quantization_applied": reg.quantization_applied, "temperature": TEMPERATURE,
            "optimizer": "adam", "max_grad_norm": 1.0,
        },
        "teacher": spec.teacher,
        "levels": spec.levels.labels(),
        "holdout": ctx.settings.holdout,
        "settings": ctx.settings.to_dict(),
        "states": {"n_states": ctx.n_states, "n_finetune": ctx.n_train, "n_eval": ctx.n_eval},
        "split": {k: v for k, v in ctx.split.describe().items() if k not in ("held_out_rows", "held_out_episodes")},
        "architecture": ctx.arch.to_dict(),
        "harness_version": __version__,
        "torch_version": torch.__version__,
        **ctx.provenance,
    }
