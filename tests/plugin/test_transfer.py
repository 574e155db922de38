"""The inputs on every worker (pytest_crossover.transfer), the options a worker uses, a gateway's own settings, and
the gateway server's address policy: in-process where that is enough, one real xdist session for a changed file."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import execnet
import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.inputs import embedded
from harness.inputs.load import check_inputs
from pytest_crossover import transfer
from pytest_crossover.gateway_server import address_problem
from pytest_crossover.options import CrossoverOptions, resolve
from pytest_crossover.xdist_hooks import gateway_settings
from tests.plugin.conftest import base_args


def _options(files: dict[str, Path] | None) -> types.SimpleNamespace:
    paths = {k: str(files[k]) if files else None for k in ("parent_a", "parent_b", "states")}
    return types.SimpleNamespace(**paths, eval_states=None, sources=None)


def _workerinput(files: dict[str, Path] | None, cache: str | None) -> dict[str, object]:
    opts = _options(files)
    provenance = check_inputs(opts.parent_a, opts.parent_b, opts.states, episodes=0).provenance
    return {transfer.KEY: {"files": transfer.manifest(opts, provenance), "cache": cache, "host": "gpu1"}}


def test_every_input_is_listed_once_by_option_and_provenance_key():
    assert [(i.option, i.field, i.provenance) for i in transfer.INPUTS] == [
        ("parent-a", "parent_a", "parent_a"), ("parent-b", "parent_b", "parent_b"), ("states", "states", "states_file"),
        ("eval-states", "eval_states", "eval_states_file")]
    provenance = check_inputs(episodes=0).provenance  # the embedded default records every listed input
    assert all(i.provenance in provenance for i in transfer.INPUTS)


def test_a_remote_worker_reads_its_cache_a_local_one_the_controllers_files_and_both_verify(search_files, tmp_path):
    opts = _options(search_files)
    local = _workerinput(search_files, None)
    files = local[transfer.KEY]["files"]  # type: ignore[index]
    assert transfer.load_paths(opts, local) == {**{k: str(search_files[k].resolve()) for k in ("parent_a", "parent_b",
                                                                                                 "states")},
                                                "eval_states": None}
    assert files["states"]["sha256"] == hashlib.sha256(search_files["states"].read_bytes()).hexdigest()
    remote = _workerinput(search_files, str(tmp_path))
    paths = transfer.load_paths(opts, remote)
    assert paths["states"] == str(tmp_path / (files["states"]["sha256"] + ".npy"))
    # The loaded files' provenance names them as the controller does, whatever path they were read from here.
    provenance = check_inputs(*(str(search_files[k]) for k in ("parent_a", "parent_b", "states")),
                              episodes=0).provenance
    provenance["states_file"]["path"] = paths["states"]  # as loaded from the cache
    transfer.verify(provenance, remote)
    assert provenance["states_file"]["path"] == str(search_files["states"])
    assert transfer.load_paths(opts, None) == {**{k: str(search_files[k]) for k in ("parent_a", "parent_b", "states")},
                                               "eval_states": None}


def test_a_file_changed_since_the_check_is_a_one_line_error_naming_it(search_files, tmp_path):
    states = tmp_path / "states.npy"
    shutil.copy(search_files["states"], states)
    files = {**search_files, "states": states}
    workerinput = _workerinput(files, None)
    np.save(states, np.random.default_rng(7).standard_normal((300, 8)).astype(np.float32))  # changed since checked
    provenance = check_inputs(str(files["parent_a"]), str(files["parent_b"]), str(states), episodes=0).provenance
    with pytest.raises(HarnessError, match=r"^'.*states\.npy' changed since the session checked it \(sha256 \w{12}… "
                                           r"then, \w{12}… now\); leave the input files unchanged") as info:
        transfer.verify(provenance, workerinput)
    assert info.value.field == "states"


def test_the_embedded_default_is_not_sent_and_is_verified_by_sha256(tmp_path):
    workerinput = _workerinput(None, str(tmp_path))
    files = workerinput[transfer.KEY]["files"]  # type: ignore[index]
    assert {o: (f["embedded"], f["package"]) for o, f in files.items()} == {
        "parent-a": (True, "data/parent_a.pt"), "parent-b": (True, "data/parent_b.pt"),
        "states": (True, "data/states.npz")}
    assert transfer.load_paths(_options(None), workerinput) == {"parent_a": None, "parent_b": None, "states": None,
                                                                "eval_states": None}
    sent = transfer.InputTransfer(_options(None), check_inputs(episodes=0).provenance)
    assert sent._sent() == []
    provenance = check_inputs(episodes=0).provenance
    provenance["states_file"]["sha256"] = "0" * 64  # another install's embedded states
    with pytest.raises(HarnessError, match="the embedded default on host gpu1 differs from the controller's"):
        transfer.verify(provenance, workerinput)
    assert Path(files["states"]["local"]) == embedded.states_path()


def test_an_error_about_a_cached_file_names_the_users_path(search_files, tmp_path):
    workerinput = _workerinput(search_files, str(tmp_path))
    cached = transfer.load_paths(_options(search_files), workerinput)["states"]
    with pytest.raises(HarnessError, match=f"^states file '{search_files['states']}' is broken$"), \
            transfer.controller_names(workerinput):
        raise HarnessError(f"states file '{cached}' is broken")


def test_the_cache_is_removed_only_when_it_is_ours(tmp_path):
    ours = tmp_path / f"{transfer.host_side.CACHE_PREFIX}123-abc"
    ours.mkdir()
    (ours / "x.npy").write_bytes(b"x")
    other = tmp_path / "not-ours"
    other.mkdir()
    transfer.remove_cache({transfer.KEY: {"cache": str(other)}})
    transfer.remove_cache({transfer.KEY: {"cache": str(ours)}})
    transfer.remove_cache({})
    assert other.exists() and not ours.exists()


def test_host_side_receives_in_chunks_checks_sha256_and_leaves_no_half_file(tmp_path, monkeypatch):
    from pytest_crossover import host_side

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    data = os.urandom(3 * transfer.CHUNK + 5)
    sha = hashlib.sha256(data).hexdigest()
    chunks = iter([data[i:i + transfer.CHUNK] for i in range(0, len(data), transfer.CHUNK)] + [b""])
    directory = host_side.receive(types.SimpleNamespace(receive=lambda: next(chunks)), [(sha, ".npy", len(data))])
    assert Path(directory).parent == tmp_path and (Path(directory) / f"{sha}.npy").read_bytes() == data
    bad = iter([b"corrupt", b""])
    with pytest.raises(ValueError, match="the transfer was corrupted"):
        host_side.receive(types.SimpleNamespace(receive=lambda: next(bad)), [(sha, ".npy", len(data))])
    assert [p.name for p in tmp_path.iterdir()] == [Path(directory).name]  # the failed one was removed whole


def test_workers_use_the_controllers_options_with_their_gateways_threads_and_device(pytester):
    config = pytester.parseconfig("--crossover-space=smoke", "--crossover-holdout=0.3", "--crossover-threads=2")
    opts = resolve(config)
    assert CrossoverOptions.from_wire(opts.to_wire()) == opts
    where = "--tx socket=gpu1:8888//crossover_device=cuda"
    mine = CrossoverOptions.from_wire(opts.to_wire(), {"device": ("cuda", where), "threads": (8, where)})
    assert (mine.device, mine.threads, mine.holdout) == ("cuda", 8, 0.3)
    assert mine.sources.display("device") == "--tx socket=gpu1:8888//crossover_device=cuda (crossover_device)"
    spec = execnet.XSpec("execmodel=main_thread_only//socket=gpu1:8888//crossover_threads=8//crossover_device=cuda")
    assert gateway_settings(spec) == {"threads": (8, "--tx socket=gpu1:8888//crossover_threads=8//crossover_device="
                                                     "cuda"), "device": ("cuda", "--tx socket=gpu1:8888//crossover_"
                                                                                 "threads=8//crossover_device=cuda")}
    assert gateway_settings(execnet.XSpec("popen")) == {}
    with pytest.raises(pytest.UsageError, match=r"^--tx popen//crossover_threads=0 \(crossover_threads\): threads 0 "
                                                r"is outside \[1, 1024\]$"):
        gateway_settings(execnet.XSpec("popen//crossover_threads=0"))
    with pytest.raises(pytest.UsageError, match=r"^--tx popen//crossover_device=tpu \(crossover_device\): device"):
        gateway_settings(execnet.XSpec("popen//crossover_device=tpu"))


@pytest.mark.parametrize(("host", "ok"), [("127.0.0.1", True), ("localhost", True), ("10.0.0.5", True),
                                          ("192.168.1.20", True), ("0.0.0.0", False), ("", False), ("8.8.8.8", False),
                                          ("::", False)])
def test_the_gateway_server_listens_on_loopback_or_private_addresses_only(host, ok):
    assert (address_problem(host) is None) is ok


def test_the_gateway_server_refuses_all_interfaces_in_one_line():
    done = subprocess.run([sys.executable, "-m", "pytest_crossover.gateway_server", "0.0.0.0:8888"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "python -m pytest_crossover.gateway_server: error: 0.0.0.0 is 0.0.0.0, not a loopback or private address; "
        "the server runs any code it receives: bind it to 127.0.0.1 or to a private interface")


CHANGE_ON_THE_WORKER = """
import os
import numpy as np

def pytest_collection_finish(session):
    # On the worker, after the controller checked the inputs and before the first child loads them.
    if hasattr(session.config, "workerinput"):
        np.save(os.environ["CROSSOVER_TEST_STATES"], np.arange(2400, dtype=np.float32).reshape(300, 8))
"""


@pytest.mark.slow
def test_a_local_worker_refuses_a_file_changed_after_the_controller_checked_it(pytester, search_files, monkeypatch):
    mine = {**search_files, "states": pytester.path / "mine.npy"}
    shutil.copy(search_files["states"], mine["states"])
    monkeypatch.setenv("CROSSOVER_TEST_STATES", str(mine["states"]))
    pytester.makeconftest(CHANGE_ON_THE_WORKER)
    pytester.makepyfile(test_search="def test_child(crossover_child):\n    crossover_child.run()\n")
    result = pytester.runpytest_subprocess(*base_args(mine), "--crossover-space=smoke", "--crossover-max-runs=1",
                                           "-n", "1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"*--crossover-states: '{mine['states']}' changed since the session checked it "
                                 "(sha256 *… then, *… now); leave the input files unchanged while a search runs*"])
