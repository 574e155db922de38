"""Q-networks of the established layout (architecture inference lives in harness.architecture)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from harness.architecture import LINEARS, Architecture, infer_architecture

__all__ = ["Architecture", "QNetwork", "StudentQNetwork", "infer_architecture", "network_from_state_dict"]


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
        for idx in LINEARS:
            layer = self.network[idx]
            assert isinstance(layer, nn.Linear)  # for the type checker: the indices above are the Linears
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.network(x.unsqueeze(0)).squeeze(0) if x.dim() == 1 else self.network(x)
        return out


class StudentQNetwork(QNetwork):
    """The half-size student: ``H = max(16, parent_hidden_size // 2)``, dropout 0.05."""

    def __init__(self, input_dim: int, output_dim: int, parent_hidden_size: int = 64) -> None:
        super().__init__(input_dim, output_dim, max(16, parent_hidden_size // 2), dropout_rate=0.05)
        self.parent_hidden_size = parent_hidden_size


def network_from_state_dict(state_dict: Mapping[str, torch.Tensor], dropout_rate: float = 0.1) -> QNetwork:
    """A QNetwork of the inferred architecture with ``state_dict`` loaded strictly, in eval mode."""
    arch = infer_architecture(state_dict)
    net = QNetwork(arch.input_dim, arch.output_dim, arch.hidden_size, dropout_rate=dropout_rate)
    net.load_state_dict({k: v.dequantize() if v.is_quantized else v for k, v in state_dict.items()}, strict=True)
    return net.eval()
