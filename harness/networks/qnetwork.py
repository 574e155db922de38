"""The modules of the built-in network families (:mod:`harness.networks.family`): the Q-network and the plain MLP."""

from __future__ import annotations

import torch
from torch import nn

from harness.networks.architecture import DROPOUT, Architecture

__all__ = ["DROPOUT", "Architecture", "PlainMLP", "QNetwork"]



def _sequential(input_dim: int, output_dim: int, widths: tuple[int, ...], dropout_rate: float,
                norm: bool) -> nn.Sequential:
    """``[Linear, (LayerNorm,) ReLU, Dropout] * len(widths), Linear``, Linear weights xavier-uniform, biases 0."""
    layers: list[nn.Module] = []
    previous = input_dim
    for width in widths:
        layers += [nn.Linear(previous, width), *([nn.LayerNorm(width)] if norm else []), nn.ReLU(),
                   nn.Dropout(dropout_rate)]
        previous = width
    layers.append(nn.Linear(previous, output_dim))
    network = nn.Sequential(*layers)
    for layer in network:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return network


class _SequentialNet(nn.Module):
    """A ``.network`` Sequential that takes one state (a vector) or a batch (rows)."""

    network: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.network(x.unsqueeze(0)).squeeze(0) if x.dim() == 1 else self.network(x)
        return out


class QNetwork(_SequentialNet):
    """Linear → LayerNorm → ReLU → Dropout per hidden layer, then Linear (keys ``network.0/1/4/5/8`` for two).

    Same module tree and state-dict keys as AgentFarm's ``BaseQNetwork`` (two hidden layers of
    ``hidden_size``) so its checkpoints load unchanged; ``hidden`` gives other depths and widths. Dropout
    follows the caller's ``train()``/``eval()``.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_size: int = 64, dropout_rate: float = DROPOUT, *,
                 hidden: tuple[int, ...] | None = None) -> None:
        super().__init__()
        widths = tuple(hidden) if hidden is not None else (hidden_size, hidden_size)
        self.architecture = Architecture(input_dim, output_dim, widths)
        self.dropout_rate = dropout_rate
        self.network = _sequential(input_dim, output_dim, widths, dropout_rate, norm=True)

    @classmethod
    def of(cls, arch: Architecture, dropout_rate: float = DROPOUT) -> QNetwork:
        return cls(arch.input_dim, arch.output_dim, dropout_rate=dropout_rate, hidden=arch.hidden)


class PlainMLP(_SequentialNet):
    """Linear → ReLU → Dropout per hidden layer, then Linear (keys ``network.0/3/6`` for two): the ``mlp`` family,
    a plain multilayer perceptron without normalisation."""

    def __init__(self, input_dim: int, output_dim: int, hidden: tuple[int, ...], dropout_rate: float = DROPOUT) -> None:
        super().__init__()
        self.architecture = Architecture(input_dim, output_dim, tuple(hidden), "mlp")
        self.dropout_rate = dropout_rate
        self.network = _sequential(input_dim, output_dim, tuple(hidden), dropout_rate, norm=False)
