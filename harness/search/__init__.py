"""The search: settings, axes, the space, one child, populations, the barrier and the run folder."""
