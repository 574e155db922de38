"""Q-networks of the established layout, and architecture inference from a state dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import CheckpointError

# Indices of the Linear layers inside ``.network``; the LayerNorms sit at +1.
_LINEARS = (0, 4, 8)


@dataclass(frozen=True, slots=True)
class Architecture:
    input_dim: int
    output_dim: int
    hidden_size: int

    def to_dict(self) -> dict[str, int]:
        return {"input_dim": self.input_dim, "output_dim": self.output_dim, "hidden_size": self.hidden_size}


class QNetwork(nn.Module):
    """Linear → LayerNorm → ReLU → Dropout, twice, then Linear (keys ``network.0/1/4/5/8``).

    Same module tree and state-dict keys as the established tool's ``BaseQNetwork`` so its
    checkpoints load unchanged. Dropout follows the caller's ``train()``/``eval()``.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_size: int = 64, dropout_rate: float = 0.1) -> None:
        super().__init__()
        self.architecture = Architecture(input_dim, output_dim, hidden_size)
        self.dropout_rate = dropout_rate
        self.network = nn.Sequential(
            nn.Linear(input_dim, hidden_size),
            nn.LayerNorm(hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout_rate),
            nn.Linear(hidden_size, hidden_size),
            nn.LayerNorm(hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout_rate),
            nn.Linear(hidden_size, output_dim),
        )
        for idx in _LINEARS:
            layer = self.network[idx]
            assert isinstance(layer, nn.Linear)  # for the type checker: the indices above are the Linears
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 1:
            return self.network(x.unsqueeze(0)).squeeze(0)
        return self.network(x)


class StudentQNetwork(QNetwork):
    """The half-size student: ``H = max(16, parent_hidden_size // 2)``, dropout 0.05."""

    def __init__(self, input_dim: int, output_dim: int, parent_hidden_size: int = 64) -> None:
        super().__init__(input_dim, output_dim, max(16, parent_hidden_size // 2), dropout_rate=0.05)
        self.parent_hidden_size = parent_hidden_size


def infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> Architecture:
    """Read in/hidden/out from ``network.0/4/8.weight``; raise CheckpointError if the layout differs."""
    expected = [f"network.{i}.{p}" for i in (0, 1, 4, 5, 8) for p in ("weight", "bias")]
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise CheckpointError(
            f"state dict is not of the QNetwork layout: missing {', '.join(missing)}; "
            "pass a checkpoint with keys network.0/1/4/5/8.{weight,bias}"
        )
    w0, w4, w8 = (state_dict[f"network.{i}.weight"] for i in _LINEARS)
    hidden, input_dim = int(w0.shape[0]), int(w0.shape[1])
    if tuple(w4.shape) != (hidden, hidden) or int(w8.shape[1]) != hidden:
        raise CheckpointError(
            f"state dict has inconsistent layer shapes {tuple(w0.shape)}, {tuple(w4.shape)}, {tuple(w8.shape)}; "
            "expected (H,in), (H,H), (out,H)"
        )
    return Architecture(input_dim=input_dim, output_dim=int(w8.shape[0]), hidden_size=hidden)


def network_from_state_dict(state_dict: Mapping[str, torch.Tensor], dropout_rate: float = 0.1) -> QNetwork:
    """A QNetwork of the inferred architecture with ``state_dict`` loaded strictly, in eval mode."""
    arch = infer_architecture(state_dict)
    net = QNetwork(arch.input_dim, arch.output_dim, arch.hidden_size, dropout_rate=dropout_rate)
    net.load_state_dict({k: v.dequantize() if v.is_quantized else v for k, v in state_dict.items()}, strict=True)
    return net.eval()
