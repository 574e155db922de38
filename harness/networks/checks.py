"""Numbers that cannot work, found before any child runs: non-finite parent weights, and parents whose Q-values are
not finite on the states (weights or states so large that the forward pass overflows float32).

numpy only: the plugin's xdist controller runs these checks on the values it reads from the checkpoints without
torch (harness.inputs.checkpoint_meta); a serial session runs them on the loaded tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.core.errors import CheckpointError, StatesError
from harness.networks.architecture import Architecture

LAYER_NORM_EPS = 1e-5  # torch's default, which every LayerNorm of a built-in family uses
# Values per float64 array of the check's forward (rows x width): its chunk of rows shrinks as the network widens,
# so the check holds ~8 MB an array at any width (65,536 rows at width 256 held ~600 MB at once, and 32 MB arrays
# ~150 MB at a 1,000,000-state session's start: measured).
_CHUNK_VALUES = 1 << 20
_ORDINARY = 1e6


def values_of(value: Any) -> np.ndarray | None:
    """A tensor's (or tensor metadata's) values as float64 numpy, or None when they cannot be read here."""
    if hasattr(value, "values") and not callable(value.values):
        return value.values  # type: ignore[no-any-return]
    if hasattr(value, "detach"):
        t = value.detach().cpu()
        if getattr(t, "is_quantized", False):
            t = t.dequantize()
        return np.asarray(t.double().numpy())
    return None


def check_weights(sd: Mapping[str, Any], parent: str) -> None:
    """Raise naming the first parameter of ``parent`` that holds NaN or inf, or integers (weights that cannot be
    fine-tuned, and whose crossover would be rounded)."""
    for key, value in sd.items():
        floating = getattr(value, "is_floating_point", None)
        if callable(floating) and not floating() and not getattr(value, "is_quantized", False):
            raise CheckpointError(f"parent {parent}'s {key} holds integers ({value.dtype}), not floating-point "
                                  "weights; export the trained network's float weights",
                                  field=f"parent_{parent.lower()}")
        arr = values_of(value)
        if arr is not None and not np.isfinite(arr).all():
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise CheckpointError(f"parent {parent}'s {key} holds {bad} NaN or inf value(s); re-export a trained "
                                  "checkpoint with finite weights", field=f"parent_{parent.lower()}")


FLOAT32_MAX = float(np.finfo(np.float32).max)


def forward(sd: Mapping[str, np.ndarray], arch: Architecture, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The network's eval-mode forward (its family's blocks) in float64 numpy, and per row whether it stays within
    float32's range at every step torch computes in float32 (pre-activations, the LayerNorm variance, the
    Q-values)."""
    from harness.networks.family import family_of

    blocks = family_of(arch).blocks(arch)
    h = np.asarray(x, dtype=np.float64)
    ok = np.ones(len(h), dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for block in blocks.hidden:
            a = h @ sd[f"{block.linear}.weight"].T + sd[f"{block.linear}.bias"]
            ok &= (np.abs(a) <= FLOAT32_MAX).all(axis=1)
            if block.norm is not None:
                mean = a.mean(axis=1, keepdims=True)
                var = ((a - mean) ** 2).mean(axis=1, keepdims=True)
                ok &= var[:, 0] <= FLOAT32_MAX
                a = (a - mean) / np.sqrt(var + LAYER_NORM_EPS) * sd[f"{block.norm}.weight"] + sd[f"{block.norm}.bias"]
            h = blocks.activate(a)
        out: np.ndarray = h @ sd[f"{blocks.output}.weight"].T + sd[f"{blocks.output}.bias"]
    ok &= np.isfinite(out).all(axis=1) & (np.abs(out) <= FLOAT32_MAX).all(axis=1)
    return out, ok


def check_outputs(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], arch: Architecture, states: np.ndarray,
                  what: str = "states") -> None:
    """Raise naming the first state row on which a parent's Q-values are not finite."""
    for parent, sd in (("A", sd_a), ("B", sd_b)):
        arrays = {k: values_of(v) for k, v in sd.items()}
        if any(v is None for v in arrays.values()):
            continue  # a dtype numpy cannot read (bfloat16, quantized): the workers' own checks decide
        weights = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items() if v is not None}
        chunk = max(1, _CHUNK_VALUES // max(arch.input_dim, *arch.hidden, arch.output_dim))
        for start in range(0, len(states), chunk):
            _, finite = forward(weights, arch, np.asarray(states[start:start + chunk]))
            if not finite.all():
                row = start + int(np.flatnonzero(~finite)[0])
                scale = float(np.abs(states[row]).max())
                # Ordinary state values put the blame on the weights; huge ones on the states.
                field = "states" if scale > _ORDINARY else f"parent_{parent.lower()}"
                raise StatesError(f"parent {parent}'s Q-values are not finite on {what} row {row} (its largest "
                                  f"|value| is {scale:.3g}): the weights or the states overflow float32; rescale "
                                  "the states or check the checkpoint", field=field)
