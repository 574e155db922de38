"""The harness release: one place, read by the package, its records and the start-up check of remote workers."""

__version__ = "0.1.0"  # keep equal to pyproject.toml's version
