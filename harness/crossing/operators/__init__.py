"""Crossover operators: one module per operator, each registered in :data:`OPERATORS` when imported.

The built-ins are imported here explicitly, in AgentFarm's mode order (random, layer, weighted), then ours
(slerp, the per-layer weighted and slerp, mutate): the registry's order. A user's operator registers from their
own code with :func:`register_operator` (a conftest, their package) or through the entry-point group
``pytest_crossover.operators``, loaded on first lookup.
"""

# isort: off
from harness.crossing.operators import random  # noqa: F401  (importing an operator module registers it)
from harness.crossing.operators import layer  # noqa: F401
from harness.crossing.operators import weighted  # noqa: F401
from harness.crossing.operators import slerp  # noqa: F401
from harness.crossing.operators import layerwise  # noqa: F401
from harness.crossing.operators import mutate  # noqa: F401
from harness.crossing.operators import controls  # noqa: F401

# isort: on
from harness.crossing.operators.base import (  # noqa: I001
    ALPHA, ID_SLOTS, OPERATORS, SEED, Operator, Param, child_value, register_operator,
)
from harness.crossing.operators.blocks import layer_blocks, layer_count, layer_names

__all__ = ["ALPHA", "ID_SLOTS", "OPERATORS", "SEED", "Operator", "Param", "child_value", "layer_blocks",
           "layer_count", "layer_names", "register_operator"]
