"""Fixtures shared by the library's tests."""

from __future__ import annotations

import pytest

from harness.inputs import embedded
from harness.inputs.checkpoints import load_parent
from harness.inputs.states import load_buffer
from harness.search.child import Context
from harness.search.settings import Settings


@pytest.fixture(scope="session")
def embedded_ctx() -> Context:
    """The embedded LunarLander parents and states, 20 % of the episodes held out, teacher both (read-only)."""
    a, b = (load_parent(p) for p in embedded.parent_paths())
    return Context.build(a, b, load_buffer(embedded.states_path()), Settings(holdout=0.2, teacher="both"))
