"""The search as an installed test module: ``pytest --pyargs pytest_crossover.children --crossover-space=…``.

Every host with pytest-crossover installed has it, so remote xdist workers collect the same children without a
copy of any test folder (nothing is sent with xdist's deprecated ``--rsyncdir``).
"""
