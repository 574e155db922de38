"""Checkpoints, state buffers, the embedded parents and loading the inputs of a search."""
