"""The xdist scheduler on the Scheduling protocol, driven as xdist's DSession drives it, with fake workers."""

from __future__ import annotations

from xdist.scheduler.protocol import Scheduling

from harness.search.space import build_space
from pytest_crossover.scheduling import UnitScheduling, work_units

SPECS = {s.child_id: s for s in build_space("minimal-qat", max_runs=4)}  # short x2, short_qat, long
IDS = [f"test_search.py::test_child[{c}]" for c in SPECS] + ["test_other.py::test_plain"]


class FakeWorker:
    """What the scheduler may touch of xdist's WorkerController: its id, and the three public calls."""

    def __init__(self, name: str) -> None:
        self.gateway = type("Gateway", (), {"id": name})()
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def _start(n: int) -> tuple[UnitScheduling, list[FakeWorker]]:
    sched = UnitScheduling(n, lambda *a: None, SPECS)
    workers = [FakeWorker(f"gw{i}") for i in range(n)]
    for w in workers:
        sched.add_node(w)
        sched.add_node_collection(w, IDS)
    assert sched.collection_is_completed
    sched.schedule()
    return sched, workers


def _run_all(sched: UnitScheduling, workers: list[FakeWorker]) -> dict[str, list[str]]:
    """Complete tests as a worker does: a test runs only once the next one is there or it was told to stop."""
    done: dict[str, list[str]] = {w.gateway.id: [] for w in workers}
    for _ in range(100):
        progressed = False
        for w in workers:
            ran = done[w.gateway.id]
            runnable = w.sent[len(ran):] if w.shutting_down else w.sent[len(ran):-1]
            for index in runnable:
                ran.append(IDS[index])
                sched.mark_test_complete(w, index)
                progressed = True
        if sched.tests_finished:
            for w in workers:
                w.shutdown()
        if not progressed and all(w.shutting_down for w in workers) and not sched.has_pending:
            break
    return done


def test_it_implements_xdists_scheduling_protocol() -> None:
    members = {n for n in vars(Scheduling) if not n.startswith("_")}
    assert len(members) == 11 and all(hasattr(UnitScheduling, name) for name in members)


def test_every_unit_goes_whole_to_one_worker_most_expensive_first_and_every_test_runs_once() -> None:
    sched, workers = _start(2)
    units = work_units(list(SPECS.values()), 2)
    first = [IDS[w.sent[0]] for w in workers]
    costs = sorted({c for _, c in units.values()}, reverse=True)
    assert [units[f[f.index("[") + 1:-1]][1] for f in first] == costs[:2]  # the two most expensive units first
    done = _run_all(sched, workers)
    ran = [t for tests in done.values() for t in tests]
    assert sorted(ran) == sorted(IDS)  # every test once, the plain test included
    for unit in {u for u, _ in units.values()}:
        members = {f"test_search.py::test_child[{c}]" for c, (u, _) in units.items() if u == unit}
        assert sum(bool(members & set(tests)) for tests in done.values()) == 1, unit  # one worker per unit
    assert sched.tests_finished and not sched.has_pending


def test_more_workers_than_units_shuts_the_spare_ones_down() -> None:
    sched, workers = _start(8)
    assert sum(w.shutting_down and not w.sent for w in workers) >= 3
    done = _run_all(sched, workers)
    assert sorted(t for tests in done.values() for t in tests) == sorted(IDS)


def test_a_dead_worker_reports_its_running_test_once_and_its_unit_goes_elsewhere() -> None:
    sched, workers = _start(2)
    victim = next(w for w in workers if len(w.sent) >= 2)
    crashed = sched.remove_node(victim)
    assert crashed == IDS[victim.sent[0]]  # the test it was running: reported lost, not run again
    survivor = next(w for w in workers if w is not victim)
    replacement = FakeWorker("gw2")  # xdist starts a new worker for a dead one; it collects, then is scheduled
    sched.add_node(replacement)
    sched.add_node_collection(replacement, IDS)
    sched.schedule()
    done = _run_all(sched, [survivor, replacement])
    ran = [t for tests in done.values() for t in tests]
    assert {IDS[i] for i in victim.sent[1:]} <= set(done["gw2"]) and crashed not in ran
    assert sorted([*ran, crashed]) == sorted(IDS)


def test_mark_test_pending_sends_a_test_again() -> None:
    sched, workers = _start(2)
    _run_all(sched, workers)
    for w in workers:
        w.shutting_down = False
    sched.mark_test_pending(IDS[0])
    assert sched.has_pending and any(IDS.index(IDS[0]) in w.sent[-1:] for w in workers)



def test_workers_that_collected_different_tests_fail_the_collection_instead_of_running_nothing() -> None:
    """As xdist's own schedulers: e.g. a remote worker whose rootdir differs names every test otherwise."""
    reports = []
    config = type("Config", (), {"hook": type("Hook", (), {"pytest_collectreport": staticmethod(
        lambda report: reports.append(report))})()})()
    sched = UnitScheduling(2, lambda *a: None, SPECS, config)
    workers = [FakeWorker("gw0"), FakeWorker("gw1")]
    for w, ids in zip(workers, (IDS, [f"pyexecnetcache/{i}" for i in IDS])):
        sched.add_node(w)
        sched.add_node_collection(w, ids)
    sched.schedule()
    assert [w.sent for w in workers] == [[], []]
    assert len(reports) == 1 and reports[0].failed and reports[0].nodeid == "gw1"
    assert "Different tests were collected between gw0 and gw1" in str(reports[0].longrepr)
    assert "+pyexecnetcache/test_search.py::test_child[" in str(reports[0].longrepr)
