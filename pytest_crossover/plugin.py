"""pytest-crossover plugin entry point (being built)."""
