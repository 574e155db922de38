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
from harness.networks.family import Blocks, family_of, infer_architecture

if TYPE_CHECKING:  # numpy and scipy load when an alignment is computed, not with the registry (the plugin's load)
    import numpy as np

    Perms = list[np.ndarray]  # one permutation of B's units per hidden layer: aligned unit i is B's unit perm[i]
    Units = list[tuple[tuple[str, ...], tuple[str, ...]]]  # Blocks.units(): per layer, its row keys and column keys

MAX_SWEEPS = 50


@dataclass(frozen=True, slots=True)
class Alignment:
    name: str
    id_key: str  # appended to a child id (``…_short_aam``); "" for none
    description: str
    solve: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray], Blocks, np.ndarray | None], Perms] | None


ALIGNMENTS: Registry[Alignment] = Registry("alignment", group="pytest_crossover.alignments")


def _arrays(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in sd.items():
        t = v.detach().cpu()
        out[k] = (t.dequantize() if t.is_quantized else t).double().numpy()
    return out


def _oriented(arrays: Mapping[str, np.ndarray], key: str, axis: int, perm: np.ndarray | None) -> np.ndarray:
    """The tensor ``key`` with the units of the layer in question along its rows (``axis`` 1: transposed), its
    other axis in the order ``perm`` (the permutation of the layer on that axis, if any)."""
    value = arrays[key]
    if perm is not None and value.ndim == 2:
        value = value[:, perm] if axis == 0 else value[perm]
    return value if axis == 0 else value.T


def _layer_cost(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], units: Units, k: int,
                perms: Perms) -> np.ndarray:
    """Inner products between A's units and B's units of hidden layer ``k``, summed over every tensor that carries
    them, B's other layers held at ``perms``."""
    import numpy as np

    rows, cols = units[k]
    # A Linear's columns carry the previous layer's units (the inputs for the first); the next Linear's rows carry
    # the next layer's (the outputs for the last).
    terms = [(key, 0, perms[k - 1] if k > 0 else None) for key in rows]
    terms += [(key, 1, perms[k + 1] if k + 1 < len(perms) else None) for key in cols]
    cost: np.ndarray | None = None
    for key, axis, other in terms:
        wa, wb = _oriented(a, key, axis, None), _oriented(b, key, axis, other)
        term = np.outer(wa, wb) if wa.ndim == 1 else wa @ wb.T
        cost = term if cost is None else cost + term
    assert cost is not None
    return cost


def weight_matching(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], blocks: Blocks,
                    states: np.ndarray | None = None) -> Perms:
    """Permutations maximising the summed inner products of A's and permuted B's weights (see module doc)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    units = blocks.units()
    perms = [np.arange(a[f"{block.linear}.weight"].shape[0]) for block in blocks.hidden]
    for _ in range(MAX_SWEEPS):
        changed = False
        for k in range(len(perms)):
            _, cols = linear_sum_assignment(_layer_cost(a, b, units, k, perms), maximize=True)
            if not np.array_equal(cols, perms[k]):
                perms[k], changed = cols, True
        if not changed:
            break
    return perms


def pre_activations(sd: Mapping[str, np.ndarray], blocks: Blocks, x: np.ndarray) -> list[np.ndarray]:
    """Each hidden layer's Linear output (before its LayerNorm; eval mode) for the rows of ``x``, in float64."""
    import numpy as np

    from harness.networks.checks import LAYER_NORM_EPS

    h, out = np.asarray(x, dtype=np.float64), []
    for block in blocks.hidden:
        z = h @ sd[f"{block.linear}.weight"].T + sd[f"{block.linear}.bias"]
        out.append(z)
        if block.norm is not None:
            n = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + LAYER_NORM_EPS)
            z = n * sd[f"{block.norm}.weight"] + sd[f"{block.norm}.bias"]
        h = blocks.activate(z)
    return out


def activation_matching(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], blocks: Blocks,
                        states: np.ndarray | None = None) -> Perms:
    """Per layer, the assignment maximising the summed products of A's and B's pre-activations on ``states``."""

    from scipy.optimize import linear_sum_assignment

    if states is None or len(states) < 2:
        raise HarnessError("activation matching needs the fine-tune states (two rows at least)")
    return [linear_sum_assignment(za.T @ zb, maximize=True)[1]
            for za, zb in zip(pre_activations(a, blocks, states), pre_activations(b, blocks, states))]


def permute(sd_b: Mapping[str, Any], perms: Perms, blocks: Blocks | None = None) -> dict[str, Any]:
    """B's state dict with every tensor that carries a hidden unit reordered by ``perms`` (new tensors); the
    blocks are B's family's (inferred when not given)."""
    import torch

    if blocks is None:
        arch = infer_architecture(sd_b)
        blocks = family_of(arch).blocks(arch)
    out = {k: v.detach().clone() for k, v in sd_b.items()}
    for (rows, cols), perm in zip(blocks.units(), perms):
        p = torch.as_tensor(perm, dtype=torch.long)
        for key in rows:
            out[key] = out[key][p].clone()
        for key in cols:
            out[key] = out[key][:, p].clone()
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
    arch = infer_architecture(sd_a)
    blocks = family_of(arch).blocks(arch)
    x = None if states is None else np.asarray(states.cpu() if hasattr(states, "cpu") else states)
    return permute(sd_b, entry.solve(_arrays(sd_a), _arrays(sd_b), blocks, x), blocks)


for _alignment in (
    Alignment("none", "", "cross the parents as they are", None),
    Alignment("weights", "awm", "weight matching: permute B's units to maximise its weights' inner product with A's",
              weight_matching),
    Alignment("activations", "aam", "activation matching: permute B's units to correlate its activations with A's "
              "on the fine-tune states", activation_matching),
):
    ALIGNMENTS.register(_alignment.name, _alignment)
