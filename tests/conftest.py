"""Suite-wide fixtures: one matplotlib cache for every session the tests start, and the headless browser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.core.arithmetic import pin
from tests.browser import Chromium, find_chromium

# The suite's own process computes with the CPU kernels its crossover sessions pin (harness.core.arithmetic), set before
# any test module runs a torch operation: an in-process session then computes as a subprocess one does.
pin()


@pytest.fixture(scope="session", autouse=True)
def _matplotlib_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # pytester gives each session a fresh HOME, where matplotlib would rebuild its font list (~1 s) and write it
    # into the test's folder; one cache folder for the whole suite, as a user's ~/.cache/matplotlib is.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPLCONFIGDIR", str(tmp_path_factory.mktemp("matplotlib")))
        yield


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chromium]:
    """Debian's headless Chromium (``.ci/run`` installs the ``chromium`` package when it is missing)."""
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed and could not be: .ci/run installs it with "
                    "'apt-get install -y chromium' (Debian); elsewhere install a Chromium on PATH as 'chromium'")
    with Chromium(binary) as browser:
        yield browser
