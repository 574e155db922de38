"""Work units under xdist: which children go to one worker and train there as one population, and the scheduler
that sends them, the most expensive unit first.

The scheduler implements xdist's public ``Scheduling`` protocol (``xdist.scheduler.protocol``) on its own; it uses
only the worker controller's public calls (``send_runtest_some``, ``shutdown``, ``shutting_down``). It relies on
one xdist behaviour that the protocol leaves implicit, as xdist's own schedulers do: a worker keeps its last
pending test until it is sent more work or told to shut down (tested in tests/plugin/test_scheduling.py; the
xdist version range is pinned in pyproject.toml).

Before xdist starts its workers, :func:`fit_workers` decides how many local workers ``-n N`` gets: no more than
the cores this process may use, and none when the search is too small for workers to pay for their start-up
(the rule is :func:`workers_that_pay`'s).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_crossover.collect import child_id_of

if TYPE_CHECKING:
    from harness.search.space import ChildSpec
    from pytest_crossover.options import CrossoverOptions


def regime_costs(specs: Sequence[ChildSpec]) -> dict[str, float]:
    """Relative cost of each regime's children on one worker: Adam steps (epochs over batch size) times a
    population's per-step cost, which grows slowly with its size (0.38 + 0.054 K ms at hidden 64, profiled); a
    QAT regime counts 1.6x for its int8 conversion, evaluation and files per child (measured in a timeline)."""
    sizes = Counter(s.regime.name for s in specs)
    regimes = {s.regime.name: s.regime for s in specs}
    return {name: r.epochs / r.batch_size * (1.6 if r.qat else 1.0) * (1 + sizes[name] / 10)
            for name, r in regimes.items()}


def work_units(specs: Sequence[ChildSpec], workers: int) -> dict[str, tuple[str, float]]:
    """``{child_id: (unit, cost)}``: the children of one unit go to one worker and train there as one population.

    Children that can share a population (one teacher, the same batches) are dealt into up to ``workers`` stripes:
    each child, the most expensive first, to the stripe with the least work so far. Every worker then gets the
    same work, in one population that mixes the regimes as a serial session's does, where one regime a worker gave
    the workers unequal work (minimal's long regime is 4 times its short one) and small stacks (hidden 64: 0.065 ms
    a child-step in a stack of 3, 0.051 in one of 9). A child's result does not depend on its population: the
    units change speed only. The scheduler and every worker compute the same units from the same selected children.
    """
    costs = regime_costs(specs)
    sizes = Counter(s.regime.name for s in specs)
    groups: dict[Any, list[ChildSpec]] = {}
    for s in specs:
        groups.setdefault((s.teacher, s.regime.batches), []).append(s)
    out: dict[str, tuple[str, float]] = {}
    for members in groups.values():
        each = {s.child_id: costs[s.regime.name] / sizes[s.regime.name] for s in members}
        stripes = max(1, min(workers, len(members)))
        load, stripe = [0.0] * stripes, {}
        for s in sorted(members, key=lambda m: -each[m.child_id]):  # stable: run order among equals
            i = min(range(stripes), key=lambda j: (load[j], j))
            load[i] += each[s.child_id]
            stripe[s.child_id] = i
        base = "+".join(dict.fromkeys(s.regime.name for s in members))
        for s in members:
            i = stripe[s.child_id]
            out[s.child_id] = (base if stripes == 1 else f"{base}/{i + 1}", load[i])
    return out


UNITS_KEY = "crossover_units"  # in a worker's workerinput: True when the controller sends it work units
WORKERS_KEY = pytest.StashKey[str]()  # the header's line when fit_workers changed the workers

Unit = dict[str, bool]  # node id -> done


class UnitScheduling:
    """xdist scheduling by work unit: a unit's tests all go to one worker; the most expensive unit goes first.

    Tests that are not children of the search are units of their own, sent after the children's units. A worker
    that dies while running a child reports that child once (lost); the rest of its unit is sent to another worker.
    """

    def __init__(self, numnodes: int, log: Any, specs: Mapping[str, ChildSpec], config: Any = None) -> None:
        self.numnodes, self.log, self.specs, self.config = numnodes, log, specs, config
        self.collection: list[str] | None = None
        self.registered: dict[Any, list[str]] = {}
        self.assigned: dict[Any, dict[str, Unit]] = {}
        self.queue: list[tuple[str, Unit]] = []  # units not yet sent, most expensive first
        self.unit_of: dict[str, str] = {}

    # -- the Scheduling protocol ----------------------------------------------------------------------------
    @property
    def nodes(self) -> list[Any]:
        return list(self.assigned)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.registered) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or self.queue:
            return False
        return all(_pending(work) < 2 for work in self.assigned.values())

    @property
    def has_pending(self) -> bool:
        return bool(self.queue) or any(_pending(work) for work in self.assigned.values())

    def add_node(self, node: Any) -> None:
        self.assigned[node] = {}

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        if self.collection_is_completed and self.collection is not None and \
                self._differs(next(iter(self.registered)), self.collection, node, collection):
            return
        self.registered[node] = list(collection)

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        nodeid = self.registered[node][item_index]
        self.assigned[node][self.unit_of[nodeid]][nodeid] = True
        self._reschedule(node)

    def mark_test_pending(self, item: str) -> None:
        """Send ``item`` again (a ``pytest_handlecrashitem`` that asks for a rerun), as a unit of its own, first."""
        self.unit_of[item] = f"rerun:{item}"
        self.queue.insert(0, (self.unit_of[item], {item: False}))
        for node in self.nodes:
            self._reschedule(node)

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        raise NotImplementedError("work units are never taken back from a live worker")

    def remove_node(self, node: Any) -> str | None:
        """Forget a worker; when it died with work pending, return the test it was running (reported lost once,
        not run again: a child that always kills its worker would otherwise run until xdist's restart limit) and
        send the rest of its units to the others."""
        workload = self.assigned.pop(node)
        pending = [(unit, work) for unit, work in workload.items() if not all(work.values())]
        if not pending:
            return None
        crashitem = next(nid for _, work in pending for nid, done in work.items() if not done)
        for _, work in pending:
            if crashitem in work:
                work[crashitem] = True
        self.queue[:0] = [(unit, work) for unit, work in pending if not all(work.values())]
        for other in self.nodes:
            self._reschedule(other)
        return crashitem

    def _differs(self, first: Any, first_collection: Sequence[str], node: Any, collection: Sequence[str]) -> bool:
        """Whether ``node`` collected other tests than ``first``; as xdist's own schedulers, a difference is logged
        and reported as a failed collection (an error the session shows and exits on), never a session that
        silently runs nothing."""
        from xdist.report import report_collection_diff

        message = report_collection_diff(list(first_collection), list(collection), first.gateway.id, node.gateway.id)
        if message is None:
            return False
        self.log(message)
        if self.config is not None:
            import pytest

            report = pytest.CollectReport(nodeid=node.gateway.id, outcome="failed", longrepr=message, result=[])
            self.config.hook.pytest_collectreport(report=report)
        return True

    def schedule(self) -> None:
        if self.collection is not None:
            for node in self.nodes:
                self._reschedule(node)
            return
        (first, collection), *rest = self.registered.items()
        if any([self._differs(first, collection, node, other) for node, other in rest]):  # report every one
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = list(collection)
        if not self.collection:
            return
        self.queue = self._units(self.collection)
        for _ in range(len(self.nodes) - len(self.queue)):  # more workers than units: shut the spare ones down
            spare, _work = self.assigned.popitem()
            spare.shutdown()
        for node in self.nodes:
            self._assign(node)
        # A worker runs a test only once it holds the next one (or is told to shut down): give every worker a
        # second unit where there is one, and shut them all down when the first round sent everything.
        for node in self.nodes:
            self._reschedule(node)
        if not self.queue:
            for node in self.nodes:
                if not node.shutting_down:
                    node.shutdown()

    # -- internals ------------------------------------------------------------------------------------------
    def _units(self, collection: Sequence[str]) -> list[tuple[str, Unit]]:
        children = [(nid, child_id_of(nid)) for nid in collection]
        specs = [self.specs[c] for _, c in children if c is not None and c in self.specs]
        units = work_units(specs, self.numnodes)
        grouped: dict[str, Unit] = {}
        cost: dict[str, float] = {}
        for nid, cid in children:
            unit, c = units.get(cid or "", (nid, -1.0))
            self.unit_of[nid] = unit
            grouped.setdefault(unit, {})[nid] = False
            cost[unit] = c
        # Most expensive first (LPT): it goes to the first free worker and the cheap ones fill in around it, so
        # the workers finish together. sorted() is stable: other tests keep their collection order, last.
        return sorted(grouped.items(), key=lambda item: -cost[item[0]])

    def _reschedule(self, node: Any) -> None:
        if node.shutting_down:
            return
        if not self.queue:
            node.shutdown()
            return
        if _pending(self.assigned[node]) > 2:
            return
        self._assign(node)

    def _assign(self, node: Any) -> None:
        unit, work = self.queue.pop(0)
        self.assigned[node][unit] = work
        collection = self.registered[node]
        node.send_runtest_some([collection.index(nid) for nid, done in work.items() if not done])


def _pending(workload: Mapping[str, Unit]) -> int:
    return sum(not done for work in workload.values() for done in work.values())


# -- how many local workers pay for themselves ------------------------------------------------------------------
# Measured on the 2-core machines of docs/performance.md ("Workers"): what a local worker costs before its first child
# (pytest's start-up, torch's import, loading the inputs and building the context: CPU seconds), and the serial
# cost of the work it takes over. A worker is started only when its share of the work is at least PAYBACK times
# its start-up: on free cores the session then finishes up to N times sooner; on cores that other programs keep
# busy (where N workers cost CPU rather than save wall time) it spends at most 1 / PAYBACK more.
WORKER_START_S = 2.5
PAYBACK = 4.0
STEP_MS = 0.04  # one child's Adam step at batch 32: a fixed part (dispatch) ...
STEP_MS_PER_PARAM = 5.2e-6  # ... plus one proportional to the network's parameters (0.067 ms at hidden 64)
CHILD_S = 0.02  # crossover, evaluation, latency timing and files of one child (0.01 s measured at 10k states)
EPISODE_S = 0.04  # one greedy episode of the embedded LunarLander parents, batched


def serial_work_s(specs: Sequence[ChildSpec], *, rows: int, holdout: float, n_params: int, episodes: int) -> float:
    """Seconds a serial session spends on its children and the parents' rows, from the sizes alone (the same cost
    model as the measured rows of docs/performance.md; a coarse estimate, used only to choose the workers)."""
    train = rows * (1.0 - holdout)
    step_s = (STEP_MS + STEP_MS_PER_PARAM * n_params) / 1000.0
    steps = sum(s.regime.epochs * math.ceil(train * (1 - s.regime.val_fraction) / s.regime.batch_size)
                for s in specs)
    return steps * step_s + len(specs) * (CHILD_S + episodes * EPISODE_S) + 2 * episodes * EPISODE_S


def workers_that_pay(asked: int, cores: int, work_s: float | None) -> int:
    """Local workers for ``-n asked``: at most ``cores``, and only as many as each get at least PAYBACK times a
    worker's start-up in work; 0 (a serial session) when fewer than two would. ``-n 1`` stays as asked (a worker
    of its own isolates a crashing child); ``work_s`` None (unknown) caps to the cores only."""
    n = min(asked, max(1, cores))
    if asked < 2:
        return asked
    if work_s is not None:
        while n > 1 and work_s / n < PAYBACK * WORKER_START_S:
            n -= 1
    return n if n > 1 else 0


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or ``taskset`` narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


WORKERS_HELP = ("What -n N starts: fit (at most the cores this process may use, and a serial session when the search "
                "is too small for workers to pay for their start-up; the header says so) or asked (exactly N) "
                "(default fit)")
WORKERS_MODES = ("fit", "asked")


def add_workers_option(parser: pytest.Parser) -> None:
    group = parser.getgroup("crossover", "crossover search harness")
    group.addoption("--crossover-workers", action="store", default=None, dest="crossover_workers",
                    metavar="fit|asked", help=WORKERS_HELP)
    parser.addini("crossover_workers", WORKERS_HELP, type="string", default="")


def workers_mode(config: pytest.Config) -> str:
    """``--crossover-workers`` (or its ini key); a usage error naming it as the user wrote it when it is neither
    fit nor asked."""
    given = config.getoption("crossover_workers", None)
    value = given if given is not None else (config.getini("crossover_workers") or "fit")
    if value not in WORKERS_MODES:
        name = "--crossover-workers" if given is not None else "crossover_workers (ini)"
        raise pytest.UsageError(f"{name}: {value!r} is neither fit nor asked; fit lets the plugin choose the "
                                "workers of -n N, asked starts exactly N")
    return str(value)


def fit_workers(config: pytest.Config, options: CrossoverOptions) -> str | None:
    """Set xdist's ``-n`` to :func:`workers_that_pay` (called after xdist turned ``-n N`` into N gateways, before
    it starts them); the header's line when it changed anything, else None. Explicit ``--tx`` gateways (remote
    machines) are left as given."""
    asked = getattr(config.option, "numprocesses", None)
    if not isinstance(asked, int) or asked < 2 or getattr(config.option, "dist", "no") == "no":
        return None
    asked = min(asked, len(getattr(config.option, "tx", None) or ()) or asked)  # after xdist's --maxprocesses
    cores = usable_cores()
    work = _work_estimate(options)
    n = workers_that_pay(asked, cores, work)
    if n == asked:
        return None
    if n == 0:
        config.option.numprocesses, config.option.dist, config.option.tx = 0, "no", []
        if cores < 2 or work is None:
            why = f"this process may use {cores} core"
        else:
            seconds = f"{work:.1f}" if work < 10 else f"{work:.0f}"
            why = f"~{seconds} s of work, under {PAYBACK:g}x the start-up of two workers ({WORKER_START_S:g} s each)"
        return f"crossover: -n {asked} runs serially: {why}; --crossover-workers=asked starts them"
    config.option.numprocesses, config.option.tx = n, ["popen"] * n
    why = f"this process may use {cores} cores" if n == min(asked, cores) else \
        f"~{work:.0f} s of work pays for {n} workers' start-up, not more"
    return f"crossover: -n {asked} uses {n} workers ({why}); --crossover-workers=asked starts {asked}"


def _work_estimate(options: CrossoverOptions) -> float | None:
    """:func:`serial_work_s` of the selected space from the inputs' sizes (read from headers, without torch);
    None when a size cannot be read this way (the checks that follow report any problem with the inputs)."""
    from harness.inputs import embedded
    from harness.inputs.checkpoint_meta import read_meta

    try:
        parent = Path(options.parent_a) if options.parent_a else embedded.parent_paths()[0]
        states = Path(options.states) if options.states else embedded.states_path()
        meta = read_meta(parent)
        if not isinstance(meta, Mapping):
            return None
        n_params = sum(math.prod(v.shape) for v in meta.values() if hasattr(v, "shape"))
        rows = _rows(states)
        episodes = options.episodes
        if episodes is None:
            episodes = 10 if options.env or not options.parent_a else 0
        holdout = options.holdout if options.eval_states is None else 0.0
        return serial_work_s(options.space_specs(), rows=rows, holdout=holdout, n_params=n_params,
                             episodes=episodes)
    except Exception:  # an estimate only: never the reason a session fails
        return None


def _rows(path: Path) -> int:
    """Rows of a .npy states file, or of the ``states`` of a .npz, from its header alone."""
    from harness.inputs.states import header_rows

    return header_rows(path)
