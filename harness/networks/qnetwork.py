"""Q-networks of the established layout (architecture inference lives in harness.networks.architecture)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from harness.networks.architecture import Architecture, infer_architecture

__all__ = ["Architecture", "QNetwork", "StudentQNetwork", "infer_architecture", "network_from_state_dict"]


class QNetwork(nn.Module):
    """Linear → LayerNorm → ReLU → Dropout per hidden layer, then Linear (keys ``network.0/1/4/5/8`` for two).

    Same module tree and state-dict keys as the established tool's ``BaseQNetwork`` (two hidden layers of
    ``hidden_size``) so its checkpoints load unchanged; ``hidden`` gives other depths and widths. Dropout
    follows the caller's ``train()``/``eval()``.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_size: int = 64, dropout_rate: float = 0.1, *,
                 hidden: tuple[int, ...] | None = None) -> None:
        super().__init__()
        widths = tuple(hidden) if hidden is not None else (hidden_size, hidden_size)
        self.architecture = Architecture(input_dim, output_dim, widths)
        self.dropout_rate = dropout_rate
        layers: list[nn.Module] = []
        previous = input_dim
        for width in widths:
            layers += [nn.Linear(previous, width), nn.LayerNorm(width), nn.ReLU(), nn.Dropout(dropout_rate)]
            previous = width
        layers.append(nn.Linear(previous, output_dim))
        self.network = nn.Sequential(*layers)
        for layer in self.network:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    @classmethod
    def of(cls, arch: Architecture, dropout_rate: float = 0.1) -> QNetwork:
        return cls(arch.input_dim, arch.output_dim, dropout_rate=dropout_rate, hidden=arch.hidden)

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
    net = QNetwork.of(infer_architecture(state_dict), dropout_rate=dropout_rate)
    net.load_state_dict({k: v.dequantize() if v.is_quantized else v for k, v in state_dict.items()}, strict=True)
    return net.eval()
