"""Crossover operators and permutation alignment."""
