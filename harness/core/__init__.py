"""Errors, atomic writes, the registry and the release: what every other part uses."""
