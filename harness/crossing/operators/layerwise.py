"""``weighted_layerwise`` and ``slerp_layerwise``: the weighted and SLERP blends with one alpha per layer.

Per-layer merge weights are what evolutionary model merging searches (mergekit-evolve runs CMA-ES over them): a
layer is one Linear with the LayerNorm that follows it (:func:`harness.crossing.operators.blocks.layer_names`), and
every tensor of layer ``l`` is blended as the weighted (or slerp) operator blends it, with ``layer_alphas[l]`` the
weight of A. With every alpha equal to ``a`` the child is bit for bit the weighted (slerp) operator's at ``a``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from harness.crossing.operators.base import Param, StateDict, child_value, float32, register_operator
from harness.crossing.operators.blocks import layer_blocks, layer_count, layer_names
from harness.crossing.operators.slerp import slerp_tensor
from harness.networks.architecture import is_floatlike

__all__ = ["LAYER_ALPHAS", "layer_count", "layer_names", "slerp_layerwise", "weighted_layerwise"]

LAYER_ALPHAS = Param("layer_alphas", float, None, low=0.0, high=1.0, key="la", fmt=".2f", knob="layer-alphas",
                     per_layer=True, help="the weight of A in each layer, first layer first")


def _blend(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], alphas: tuple[float, ...],
           mix: Callable[[Any, Any, float], Any]) -> StateDict:
    """Every float tensor of layer ``l`` mixed by ``mix(a, b, alphas[l])``; integer and non-tensor entries from A."""
    import torch

    alpha_of = {key: alphas[i] for i, block in enumerate(layer_blocks(sd_a)) for key in block}
    return {key: mix(a, sd_b[key], alpha_of[key]) if isinstance(a, torch.Tensor) and is_floatlike(a)
            else child_value(a) for key, a in sd_a.items()}


def _weighted(a: Any, b: Any, alpha: float) -> Any:
    # The weighted operator's expression, so equal alphas give its child bit for bit.
    return alpha * float32(a) + (1 - alpha) * float32(b)


@register_operator("weighted_layerwise", params=(LAYER_ALPHAS,),
                   description="linear blend per layer, layer_alphas[l] * A + (1 - layer_alphas[l]) * B")
def weighted_layerwise(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], *, layer_alphas: tuple[float, ...]
                       ) -> StateDict:
    return _blend(sd_a, sd_b, layer_alphas, _weighted)


@register_operator("slerp_layerwise", params=(LAYER_ALPHAS,),
                   description="spherical interpolation per tensor, layer_alphas[l] the weight of A in layer l")
def slerp_layerwise(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], *, layer_alphas: tuple[float, ...]
                    ) -> StateDict:
    return _blend(sd_a, sd_b, layer_alphas, slerp_tensor)
