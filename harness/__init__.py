"""harness: crossover, fine-tuning and evaluation of recombined Q-networks (no pytest import).

``import harness`` stays light (no torch): the plugin's xdist controller imports it. The public entry points live in
their modules (harness.crossing.crossover, harness.search.space, harness.search.child, ...);
:func:`load_child` is re-exported here.
"""

from __future__ import annotations

import os
from typing import Any

from harness.core.version import __version__

__all__ = ["__version__", "load_child"]


def load_child(child_dir: str | os.PathLike[str]) -> Any:
    """The model the leaderboard ranked for a child (int8 for QAT children), from ``<run-dir>/<child_id>``, as a
    ``torch.nn.Module`` in eval mode: ``model = harness.load_child("runs/crossover_search/007_weighted_...")``."""
    from harness.search.rundir import load_child as load

    return load(child_dir)
