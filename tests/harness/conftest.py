"""Fixtures shared by the library's tests."""

from __future__ import annotations

import pytest

from harness import embedded
from harness.checkpoints import load_parent
from harness.pipeline import Context
from harness.settings import Settings
from harness.states import load_buffer


@pytest.fixture(scope="session")
def embedded_ctx() -> Context:
    """The embedded LunarLander parents and states, 20 % of the episodes held out, teacher both (read-only)."""
    a, b = (load_parent(p) for p in embedded.parent_paths())
    return Context.build(a, b, load_buffer(embedded.states_path()), Settings(holdout=0.2, teacher="both"))
