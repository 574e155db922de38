# Repository root: the plugin's own tests drive pytest sessions through pytester.
# The suite's own process computes with the arithmetic its crossover sessions pin (harness.arithmetic), before any
# conftest runs a torch operation: an in-process session then computes as a subprocess one does.
from harness.arithmetic import pin

pin()

pytest_plugins = ["pytester"]
