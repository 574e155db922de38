"""The search as a test suite: one test per child of ``--crossover-space`` (see the README).

This module is an ordinary client of the plugin, exactly what another repository would write.
"""


def test_child(crossover_child):
    crossover_child.run()
