"""``layer``: whole layers alternate between the parents (A, B, A, ...), found from the module structure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.crossing.operators.base import StateDict, child_value, register_operator
from harness.crossing.operators.blocks import layer_blocks


@register_operator("layer", description="whole layers alternate A, B, A, ... (Linear with its LayerNorm)")
def layer(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any]) -> StateDict:
    """Blocks from :func:`layer_blocks` alternate A, B, A, ...; deterministic, so an ordered pair has one child."""
    source: dict[str, Mapping[str, Any]] = {}
    for index, block in enumerate(layer_blocks(sd_a)):
        for key in block:
            source[key] = sd_a if index % 2 == 0 else sd_b
    return {key: child_value(source[key][key]) for key in sd_a}
