"""What a state dict's shapes say: the QNetwork architecture, and whether two parents can be crossed.

Only shapes and dtype kinds are read, so the same checks run on real tensors and on the metadata that
:mod:`harness.checkpoint_meta` reads from a checkpoint without importing torch (the plugin's controller).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import CheckpointError, CrossoverError

# Indices of the Linear layers inside ``.network``; the LayerNorms sit at +1.
LINEARS = (0, 4, 8)


@dataclass(frozen=True, slots=True)
class Architecture:
    input_dim: int
    output_dim: int
    hidden_size: int

    def to_dict(self) -> dict[str, int]:
        return {"input_dim": self.input_dim, "output_dim": self.output_dim, "hidden_size": self.hidden_size}


def infer_architecture(state_dict: Mapping[str, Any]) -> Architecture:
    """Read in/hidden/out from ``network.0/4/8.weight``; raise CheckpointError if the layout differs."""
    expected = [f"network.{i}.{p}" for i in (0, 1, 4, 5, 8) for p in ("weight", "bias")]
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise CheckpointError(
            f"state dict is not of the QNetwork layout: missing {', '.join(missing)}; "
            "pass a checkpoint with keys network.0/1/4/5/8.{weight,bias}"
        )
    w0, w4, w8 = (state_dict[f"network.{i}.weight"] for i in LINEARS)
    hidden, input_dim = int(w0.shape[0]), int(w0.shape[1])
    if tuple(w4.shape) != (hidden, hidden) or int(w8.shape[1]) != hidden:
        raise CheckpointError(
            f"state dict has inconsistent layer shapes {tuple(w0.shape)}, {tuple(w4.shape)}, {tuple(w8.shape)}; "
            "expected (H,in), (H,H), (out,H)"
        )
    return Architecture(input_dim=input_dim, output_dim=int(w8.shape[0]), hidden_size=hidden)


def is_tensor(value: Any) -> bool:
    """A torch tensor, or checkpoint metadata standing in for one (both have shape, dtype, is_floating_point)."""
    return hasattr(value, "shape") and hasattr(value, "dtype") and callable(getattr(value, "is_floating_point", None))


def is_floatlike(value: Any) -> bool:
    # Quantized tensors count as float: they are dequantized, which is what the established tool does too.
    return bool(getattr(value, "is_quantized", False) or value.is_floating_point())


def _describe(value: Any) -> str:
    return str(tuple(value.shape)) if is_tensor(value) else type(value).__name__


def check_parents(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any]) -> None:
    """Raise one :class:`CrossoverError` listing every key that keeps the parents from being crossed.

    Reported together: keys only in A, keys only in B, a tensor under a key where the other parent holds a
    non-tensor, an integer tensor where the other parent holds a floating one, and every shape mismatch as
    ``'key': A=(..), B=(..)``. Dtypes are otherwise not compared (a qint8 A with a float32 B is fine).
    """
    for name, sd in (("A", sd_a), ("B", sd_b)):
        if not isinstance(sd, Mapping):
            raise CrossoverError(
                f"parent {name} is a {type(sd).__name__}, not a state dict; pass a mapping of "
                "parameter names to tensors (e.g. model.state_dict())"
            )
    only_a = sorted(set(sd_a) - set(sd_b))
    only_b = sorted(set(sd_b) - set(sd_a))
    problems = [f"only in A: {k!r}" for k in only_a] + [f"only in B: {k!r}" for k in only_b]
    for key in sorted(set(sd_a) & set(sd_b)):
        a, b = sd_a[key], sd_b[key]
        a_tensor, b_tensor = is_tensor(a), is_tensor(b)
        if a_tensor != b_tensor:
            problems.append(f"{key!r}: A={_describe(a)}, B={_describe(b)} (tensor vs non-tensor)")
        elif a_tensor and tuple(a.shape) != tuple(b.shape):
            problems.append(f"{key!r}: A={tuple(a.shape)}, B={tuple(b.shape)}")
        elif a_tensor and is_floatlike(a) != is_floatlike(b):
            problems.append(f"{key!r}: A={a.dtype}, B={b.dtype} (integer vs floating dtype)")
    if problems:
        raise CrossoverError(
            f"parents cannot be crossed: {len(problems)} key(s) differ in name, shape or kind; "
            "pass two checkpoints of the same architecture\n  " + "\n  ".join(problems)
        )
