"""The ``crossover_child`` handle: one child of the search, run lazily inside its test's call phase."""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness.core.atomic import json_safe
from pytest_crossover.collect import child_id_of
from pytest_crossover.session import FILES_KEY, RESULT_KEY, CrossoverSession


class CrossoverChild:
    """One child of the search. ``run()`` crosses, fine-tunes and evaluates it (once) and returns its record.

    The plugin calls ``run()`` after the test body if the body did not, then fails the test when the child is
    degenerate or diverged — so a test module needs nothing but ``def test_child(crossover_child): ...``.
    """

    def __init__(self, session: CrossoverSession, child_id: str, item: pytest.Item, benchmark: Any) -> None:
        self.session = session
        self.child_id = child_id
        self.spec = session.ids[child_id]
        self.item = item
        self._benchmark = benchmark
        self.record: dict[str, Any] | None = None
        self.threshold: float | None = None  # the degenerate threshold, resolved once the parents are known

    def run(self) -> dict[str, Any]:
        if self.record is None:
            from harness.search.child import run_child
            from harness.search.rundir import child_files

            runtime = self.session.runtime
            ctx = runtime.context()
            self.threshold = self._gate(ctx)
            finetuner = runtime.finetuner(self._selected_specs(), self._unit_of())
            started = time.time()  # wall clock, so benchmarks/perf.py can measure time-to-first-child
            out = run_child(self.spec, ctx, trained=finetuner.result(self.spec))
            result = out.result.with_(started_unix=started)
            if result.status != "diverged":
                t = time.perf_counter()
                mode = "in-worker" if self.session.distributed else "in-test"
                result = result.with_(latency_ms={**self._latency(out.ranked_model, ctx.latency_input), "mode": mode},
                                      timings_s={"latency": round(time.perf_counter() - t, 6)})
            t = time.perf_counter()
            files = child_files(out, ctx, result)
            result = result.with_(timings_s={"write": round(time.perf_counter() - t, 6)})
            self.record = json_safe(result.to_dict())
            # The record and the files' bytes go to the controller, which alone writes the run directory.
            self.item.user_properties.append((RESULT_KEY, self.record))
            self.item.user_properties.append((FILES_KEY, files))
        return self.record

    def _gate(self, ctx: Any) -> float:
        """The degenerate threshold for these parents (a relative form resolves on their agreement); one that no
        child can pass fails each test in one line before any work on its child."""
        from harness.core.errors import HarnessError

        try:
            return float(ctx.settings.gate(ctx.agree_ab))
        except HarnessError as exc:
            pytest.fail(f"{self.session.options.sources.display('degenerate_threshold')}: {exc}", pytrace=False)

    def _selected_specs(self) -> list[Any]:
        """The children this process collected (after -k/-m): those that can share a population train together."""
        ids = {child_id_of(item.nodeid) for item in getattr(self.item.session, "items", ())}
        specs = [s for s in self.session.specs if s.child_id in ids]
        return specs if self.spec in specs else [self.spec]

    def _unit_of(self) -> Any:
        """Under xdist a worker collects every child but is sent one work unit at a time: it trains together only
        the children of one unit (``--dist load``) or, under other modes, of one regime."""
        if not self.session.is_worker:
            return None
        from pytest_crossover.scheduling import UNITS_KEY, work_units

        workerinput = self.session.config.workerinput  # type: ignore[attr-defined]
        if workerinput.get(UNITS_KEY):
            count = int(workerinput.get("workercount", 1))
            units = work_units(self._selected_specs(), count)
            return lambda s: units[s.child_id][0] if s.child_id in units else s.regime.name
        return lambda s: s.regime.name

    def _latency(self, model: Any, x: Any) -> dict[str, float]:
        """The median of 20 timed batch-1 calls after 3 warm-ups, and its quartiles, in ms."""
        import torch

        from harness.evaluate.timing import measure_latency

        bench = self._benchmark
        if bench is not None and not getattr(bench, "disabled", True):
            bench.extra_info.update({"child_id": self.child_id, "recipe": self.spec.recipe.to_dict(),
                                     "regime": self.spec.regime.name})
            with torch.no_grad():
                bench.pedantic(model, args=(x,), rounds=20, warmup_rounds=3, iterations=1)
            stats = bench.stats.stats
            return {"ranked": float(stats.median * 1e3), "q1": float(stats.q1 * 1e3), "q3": float(stats.q3 * 1e3)}
        timed = measure_latency(model, x)
        return {"ranked": float(timed["median_ms"]), "q1": float(timed["q1_ms"]), "q3": float(timed["q3_ms"])}

    def check(self) -> None:
        """Fail the test for a diverged or degenerate child, with one line naming the value and the limit."""
        rec = self.run()
        if rec["status"] == "diverged":
            pytest.fail(f"{self.child_id}: fine-tuning diverged (non-finite loss) in regime "
                        f"{self.spec.regime.name!r} (lr={self.spec.regime.lr}); lower the learning rate", pytrace=False)
        if rec["status"] == "degenerate":
            given = self.session.options.degenerate_threshold
            thr = f"{self.threshold:.4f} ({given})" if isinstance(given, str) else str(given)
            pytest.fail(f"{self.child_id}: degenerate child: primary {rec['primary']:.4f} < threshold {thr}",
                        pytrace=False)
