"""Generations: a search's children as the next search's parents, every generation scored against the founders.

``python -m harness.evolve`` (:mod:`harness.evolve.__main__`) drives it; :mod:`harness.evolve.driver` is the loop
and its resumable state (``lineage.json``), :mod:`harness.evolve.ranking` reads a generation's run folder. Each
generation is an ordinary pytest session: this package never imports pytest or the plugin.
"""
