"""What a state dict's shapes say: the QNetwork architecture, and whether two parents can be crossed.

Only shapes and dtype kinds are read, so the same checks run on real tensors and on the metadata that
:mod:`harness.inputs.checkpoint_meta` reads from a checkpoint without importing torch (the plugin's controller).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.core.errors import CheckpointError, CrossoverError


@dataclass(frozen=True, slots=True)
class Architecture:
    """``.network = [Linear, LayerNorm, ReLU, Dropout] * len(hidden), Linear``: the established Q-network is
    ``hidden=(64, 64)`` (keys ``network.0/1/4/5/8``)."""

    input_dim: int
    output_dim: int
    hidden: tuple[int, ...]

    @property
    def hidden_size(self) -> int:
        """The first hidden width (the established layout has one width)."""
        return self.hidden[0]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every state-dict key of the layout and its shape."""
        out: dict[str, tuple[int, ...]] = {}
        widths = (self.input_dim, *self.hidden)
        for k, width in enumerate(self.hidden):
            out[f"network.{4 * k}.weight"], out[f"network.{4 * k}.bias"] = (width, widths[k]), (width,)
            out[f"network.{4 * k + 1}.weight"], out[f"network.{4 * k + 1}.bias"] = (width,), (width,)
        last = 4 * len(self.hidden)
        out[f"network.{last}.weight"], out[f"network.{last}.bias"] = (self.output_dim, widths[-1]), (self.output_dim,)
        return out

    def describe_layers(self) -> str:
        return "-".join(str(n) for n in (self.input_dim, *self.hidden, self.output_dim))

    def to_dict(self) -> dict[str, Any]:
        return {"input_dim": self.input_dim, "output_dim": self.output_dim, "hidden_size": self.hidden_size,
                "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        hidden = data.get("hidden") or [data["hidden_size"]] * 2
        return cls(int(data["input_dim"]), int(data["output_dim"]), tuple(int(h) for h in hidden))


_LINEAR = re.compile(r"^network\.(\d+)\.weight$")
LAYOUT_FIX = ("pass a checkpoint of the Q-network layout: .network = [Linear, LayerNorm, ReLU, Dropout]*, Linear "
              "(keys network.0/1/4/5/8.{weight,bias} for two hidden layers)")


def infer_architecture(state_dict: Mapping[str, Any]) -> Architecture:
    """The layout from the Linear weights (``network.{4k}.weight``), with every key and shape checked.

    Raises :class:`CheckpointError` listing every missing key, every extra key and every shape that does not fit
    the inferred layout (a LayerNorm of the wrong width, a Linear whose input is not the previous width, ...).
    """
    linears = sorted(int(m.group(1)) for k in state_dict if (m := _LINEAR.match(str(k))) and int(m.group(1)) % 4 == 0)
    weights = [state_dict[f"network.{i}.weight"] for i in linears]
    if len(linears) < 2 or linears != list(range(0, 4 * len(linears), 4)) or \
            any(len(tuple(w.shape)) != 2 for w in weights):
        found = ", ".join(sorted(map(str, state_dict))[:8]) or "no keys"
        raise CheckpointError(f"state dict is not of the Q-network layout (found {found}); {LAYOUT_FIX}")
    arch = Architecture(int(weights[0].shape[1]), int(weights[-1].shape[0]), tuple(int(w.shape[0]) for w in
                                                                                    weights[:-1]))
    expected = arch.shapes()
    problems = [f"missing {k}" for k in expected if k not in state_dict]
    problems += [f"unexpected {k}" for k in state_dict if k not in expected]
    problems += [f"{k} has shape {tuple(state_dict[k].shape)}, expected {shape}" for k, shape in expected.items()
                 if k in state_dict and is_tensor(state_dict[k]) and tuple(state_dict[k].shape) != shape]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise CheckpointError(f"state dict does not fit the Q-network layout {arch.describe_layers()}: {shown}; "
                              f"{LAYOUT_FIX}")
    return arch


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
