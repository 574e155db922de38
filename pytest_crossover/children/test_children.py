"""One test per child of ``--crossover-space``: the same client a repository would write (benchmarks/)."""


def test_child(crossover_child):  # type: ignore[no-untyped-def]
    crossover_child.run()
