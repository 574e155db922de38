"""harness: crossover, fine-tuning and evaluation of recombined Q-networks (no pytest import)."""

__version__ = "0.1.0"
