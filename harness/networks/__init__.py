"""The Q-network family: the module, the stacked trainer's kernels, Adam, int8, weight checks."""
