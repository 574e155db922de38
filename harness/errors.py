"""One exception family, so callers (the plugin) can turn any of them into a one-line usage error."""

from __future__ import annotations


class HarnessError(ValueError):
    """Bad input to the harness; the message names the value and the fix."""


class CheckpointError(HarnessError):
    """A parent checkpoint cannot be loaded or does not fit."""


class StatesError(HarnessError):
    """A states buffer cannot be loaded or does not fit the parents."""


class CrossoverError(HarnessError):
    """Parents that cannot be crossed (keys, shapes, types) or a bad mode/alpha."""


class SpaceError(HarnessError):
    """An unknown space, mode or regime name, or a bad knob value."""
