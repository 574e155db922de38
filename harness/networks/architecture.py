"""What a state dict's shapes say: its architecture (through its network family), and whether two parents can be
crossed.

Only shapes and dtype kinds are read, so the same checks run on real tensors and on the metadata that
:mod:`harness.inputs.checkpoint_meta` reads from a checkpoint without importing torch (the plugin's controller).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.core.errors import CrossoverError

DROPOUT = 0.1  # the dropout children fine-tune with

DEFAULT_FAMILY = "qnetwork"


@dataclass(frozen=True, slots=True)
class Architecture:
    """A network's widths and its family (:mod:`harness.networks.family`), which names the keys: the Q-network of the
    ``qnetwork`` family with ``hidden=(64, 64)`` has keys ``network.0/1/4/5/8``."""

    input_dim: int
    output_dim: int
    hidden: tuple[int, ...]
    family: str = DEFAULT_FAMILY

    @property
    def hidden_size(self) -> int:
        """The first hidden width (AgentFarm's layout has one width)."""
        return self.hidden[0]

    def describe_layers(self) -> str:
        return "-".join(str(n) for n in (self.input_dim, *self.hidden, self.output_dim))

    def to_dict(self) -> dict[str, Any]:
        # The default family is left out, so a Q-network's run_config.json reads as it always has.
        family = {} if self.family == DEFAULT_FAMILY else {"family": self.family}
        return {"input_dim": self.input_dim, "output_dim": self.output_dim, "hidden_size": self.hidden_size,
                "hidden": list(self.hidden), **family}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        hidden = data.get("hidden") or [data["hidden_size"]] * 2
        return cls(int(data["input_dim"]), int(data["output_dim"]), tuple(int(h) for h in hidden),
                   str(data.get("family", DEFAULT_FAMILY)))


def is_tensor(value: Any) -> bool:
    """A torch tensor, or checkpoint metadata standing in for one (both have shape, dtype, is_floating_point)."""
    return hasattr(value, "shape") and hasattr(value, "dtype") and callable(getattr(value, "is_floating_point", None))


def is_floatlike(value: Any) -> bool:
    # Quantized tensors count as float: they are dequantized, which is what AgentFarm does too.
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
