"""Test ids of the search: one test per child, its id in the brackets (``test_child[000_random_a0p50_s0_short]``)."""

from __future__ import annotations

FIXTURE = "crossover_child"


def child_id_of(nodeid: str) -> str | None:
    """The child id inside a test id's brackets: ``test_search.py::test_child[000_random_a0p50_s0_short]``."""
    if "@" in nodeid and "]@" in nodeid:
        nodeid = nodeid.rsplit("@", 1)[0]  # xdist's --dist loadgroup appends "@<group>"
    if nodeid.endswith("]") and "[" in nodeid:
        return nodeid[nodeid.rindex("[") + 1:-1]
    return None
