"""Permutation alignment: reorder parent B's hidden units to match parent A's before crossing them.

Two independently trained networks compute the same function with their hidden units in different orders, so
mixing their weights unit by unit mixes unrelated features. Permuting B's units changes nothing B computes (a
permutation commutes with ReLU, dropout and LayerNorm, which normalises over the units) but lines them up with
A's (Git Re-Basin, Ainsworth et al., ICLR 2023; Uriot & Izzo, "Safe Crossover", GECCO 2020):

- ``weights`` (weight matching): coordinate descent over the hidden layers; each step solves one assignment
  problem (``scipy.optimize.linear_sum_assignment``) that maximises the inner product of every tensor carrying the
  layer's units (its Linear's rows and bias, its LayerNorm's weight and bias, the next Linear's columns), the
  other layers' permutations held fixed; sweeps in a fixed order until no permutation changes (at most 50).
- ``activations`` (activation matching): per hidden layer, one assignment maximising the summed products of A's
  and B's pre-activations (the Linear outputs, before LayerNorm) over the fine-tune states, never the held-out
  ones. (Measured on the embedded parents, normalised correlations or post-ReLU activations matched far worse:
  the un-fine-tuned weighted-0.5 child reached 0.32-0.39 of the blend bound, against 0.69 with this.)

Methods are registered entries (:data:`ALIGNMENTS`); each declares how it shows in a child id. numpy and scipy
only here; torch only to hand the permuted tensors back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.core.errors import HarnessError
from harness.core.registry import Registry

if TYPE_CHECKING:  # numpy and scipy load when an alignment is computed, not with the registry (the plugin's load)
    import numpy as np

    Perms = list[np.ndarray]  # one permutation of B's units per hidden layer: aligned unit i is B's unit perm[i]

MAX_SWEEPS = 50


@dataclass(frozen=True, slots=True)
class Alignment:
    name: str
    id_key: str  # appended to a child id (``…_short_aam``); "" for none
    description: str
    solve: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray], int, np.ndarray | None], Perms] | None


ALIGNMENTS: Registry[Alignment] = Registry("alignment", group="pytest_crossover.alignments")


def _depth(sd: Mapping[str, Any]) -> int:
    from harness.networks.architecture import infer_architecture

    return len(infer_architecture(sd).hidden)


def _arrays(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:

    out = {}
    for k, v in sd.items():
        t = v.detach().cpu()
        out[k] = (t.dequantize() if t.is_quantized else t).double().numpy()
    return out


def _lin(k: int) -> str:
    return f"network.{4 * k}"


def _norm(k: int) -> str:
    return f"network.{4 * k + 1}"


def weight_matching(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], depth: int,
                    states: np.ndarray | None = None) -> Perms:
    """Permutations maximising the summed inner products of A's and permuted B's weights (see module doc)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    perms = [np.arange(a[f"{_lin(k)}.weight"].shape[0]) for k in range(depth)]
    for _ in range(MAX_SWEEPS):
        changed = False
        for k in range(depth):
            prev = perms[k - 1] if k > 0 else np.arange(a[f"{_lin(0)}.weight"].shape[1])
            wa, wb = a[f"{_lin(k)}.weight"], b[f"{_lin(k)}.weight"][:, prev]
            cost = wa @ wb.T + np.outer(a[f"{_lin(k)}.bias"], b[f"{_lin(k)}.bias"])
            cost += np.outer(a[f"{_norm(k)}.weight"], b[f"{_norm(k)}.weight"])
            cost += np.outer(a[f"{_norm(k)}.bias"], b[f"{_norm(k)}.bias"])
            nxt_a = a[f"{_lin(k + 1)}.weight"]
            nxt_b = b[f"{_lin(k + 1)}.weight"] if k + 1 == depth else b[f"{_lin(k + 1)}.weight"][perms[k + 1]]
            cost += nxt_a.T @ nxt_b
            _, cols = linear_sum_assignment(cost, maximize=True)
            if not np.array_equal(cols, perms[k]):
                perms[k], changed = cols, True
        if not changed:
            break
    return perms


def pre_activations(sd: Mapping[str, np.ndarray], depth: int, x: np.ndarray) -> list[np.ndarray]:
    """Each hidden layer's Linear output (before LayerNorm; eval mode) for the rows of ``x``, in float64."""
    import numpy as np

    from harness.networks.checks import LAYER_NORM_EPS

    h, out = np.asarray(x, dtype=np.float64), []
    for k in range(depth):
        z = h @ sd[f"{_lin(k)}.weight"].T + sd[f"{_lin(k)}.bias"]
        out.append(z)
        n = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + LAYER_NORM_EPS)
        h = np.maximum(n * sd[f"{_norm(k)}.weight"] + sd[f"{_norm(k)}.bias"], 0.0)
    return out


def activation_matching(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], depth: int,
                        states: np.ndarray | None = None) -> Perms:
    """Per layer, the assignment maximising the summed products of A's and B's pre-activations on ``states``."""

    from scipy.optimize import linear_sum_assignment

    if states is None or len(states) < 2:
        raise HarnessError("activation matching needs the fine-tune states (two rows at least)")
    return [linear_sum_assignment(za.T @ zb, maximize=True)[1]
            for za, zb in zip(pre_activations(a, depth, states), pre_activations(b, depth, states))]


def permute(sd_b: Mapping[str, Any], perms: Perms) -> dict[str, Any]:
    """B's state dict with every tensor that carries a hidden unit reordered by ``perms`` (new tensors)."""
    import torch

    out = {k: v.detach().clone() for k, v in sd_b.items()}
    for k, perm in enumerate(perms):
        p = torch.as_tensor(perm, dtype=torch.long)
        for key in (f"{_lin(k)}.weight", f"{_lin(k)}.bias", f"{_norm(k)}.weight", f"{_norm(k)}.bias"):
            out[key] = out[key][p].clone()
        out[f"{_lin(k + 1)}.weight"] = out[f"{_lin(k + 1)}.weight"][:, p].clone()
    return out


def align(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], method: str, *,
          states: Any = None) -> dict[str, Any]:
    """Parent B with its hidden units permuted to match A's by ``method`` (``none``: a copy of B).

    ``states`` (the fine-tune states, array or tensor) are needed by activation matching. The result computes
    exactly B's function. Deterministic: the same inputs give the same permutation.
    """
    import numpy as np

    entry = ALIGNMENTS.get(method)
    if entry.solve is None:
        return {k: v.detach().clone() for k, v in sd_b.items()}
    depth = _depth(sd_a)
    x = None if states is None else np.asarray(states.cpu() if hasattr(states, "cpu") else states)
    return permute(sd_b, entry.solve(_arrays(sd_a), _arrays(sd_b), depth, x))


for _alignment in (
    Alignment("none", "", "cross the parents as they are", None),
    Alignment("weights", "awm", "weight matching: permute B's units to maximise its weights' inner product with A's",
              weight_matching),
    Alignment("activations", "aam", "activation matching: permute B's units to correlate its activations with A's "
              "on the fine-tune states", activation_matching),
):
    ALIGNMENTS.register(_alignment.name, _alignment)
