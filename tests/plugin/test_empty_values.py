"""No option silently ignored: an empty, blank or whitespace value of every crossover option (an unset CI
variable, ``--crossover-compare=$BASELINE``) is an error in one line naming the option, before any work."""

from __future__ import annotations

import pytest

from pytest_crossover.history import HISTORY_KEYS
from pytest_crossover.options import option_table

# Flags take no value: argparse refuses one ("ignored explicit argument"), naming the flag.
FLAGS = {o.name for o in option_table() if o.kind == "flag"} | {"no-save"}
OPTIONS = sorted({o.name for o in option_table()} | {k[len("crossover_"):].replace("_", "-") for k in HISTORY_KEYS})
VALUES = ("", " ", "\t \t")


@pytest.mark.parametrize("name", OPTIONS)
def test_an_empty_value_is_one_line_naming_the_option(pytester, name):
    pytester.makepyfile(test_search="def test_child(crossover_child):\n    crossover_child.run()\n")
    for value in VALUES:
        result = pytester.runpytest_inprocess(f"--crossover-{name}={value}", "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, (name, value, result.stdout.str())
        if name in FLAGS:  # pytest's own argument parser: its usage line, then the error naming the flag
            assert f"argument --crossover-{name}: ignored explicit argument {value!r}" in result.stderr.str()
            continue
        errors = [line for line in result.stderr.lines if line.startswith(("ERROR:", "pytest: error:"))]
        assert len(errors) == 1, (name, value, result.stderr.str())
        assert f"--crossover-{name}" in errors[0], (name, value, errors[0])
        assert "Traceback" not in result.stderr.str() + result.stdout.str()
        assert not (pytester.path / "runs").exists()  # nothing written


def test_every_option_is_swept():
    assert "compare" in OPTIONS and "compare-fail" in OPTIONS and "storage" in OPTIONS and "arithmetic" in OPTIONS
    assert len(OPTIONS) == len(option_table()) + len(HISTORY_KEYS)
    assert {"allow-unsafe-unpickle", "no-save"} == FLAGS
