"""The ``crossover_child`` handle: one child of the search, run lazily inside its test's call phase."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from pytest_crossover.session import RESULT_KEY, CrossoverSession, child_id_of


def builtins_only(value: Any) -> Any:
    """xdist ships user_properties through execnet, which takes builtins only (no numpy scalars, no NaN issues)."""
    if isinstance(value, dict):
        return {str(k): builtins_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [builtins_only(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else None


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
        self.outcome: Any = None

    def run(self) -> dict[str, Any]:
        if self.record is None:
            from harness.atomic import write_json
            from harness.pipeline import eval_report, run_child

            ctx = self.session.context()
            if ctx.specs is None:
                ctx.specs = self._selected_specs()
                ctx.population_key = self.session.population_key(ctx.specs)
            started = time.time()  # wall clock, so benchmarks/perf.py can measure time-to-first-child
            out = run_child(self.spec, ctx, out_dir=self.session.run_dir)
            record = out.record
            record["started_unix"] = started
            model = out.int8_model if out.int8_model is not None else out.model
            t = time.perf_counter()
            if record["status"] != "diverged":
                mode = "in-worker" if self.session.distributed else "in-test"
                record["latency_ms"] = {"ranked": self._latency(model, ctx.latency_input), "mode": mode}
                record["timings_s"]["latency"] = round(time.perf_counter() - t, 6)
                t = time.perf_counter()
            else:
                record["latency_ms"] = None
            if "files" in record:
                write_json(self.session.run_dir / record["files"]["eval"], eval_report(record), durable=False)
                record["timings_s"]["write"] = round(record["timings_s"].get("write", 0.0)
                                                     + time.perf_counter() - t, 6)
            self.outcome = out
            self.record = builtins_only(record)
            self.item.user_properties.append((RESULT_KEY, self.record))
        return self.record

    def _selected_specs(self) -> list[Any]:
        """The children this process may run (its selected items; the xdist scheduler keeps a regime on one
        worker): those among them that can share a population are fine-tuned together (Context.finetune)."""
        ids = {child_id_of(item.nodeid) for item in getattr(self.item.session, "items", ())}
        specs = [s for s in self.session.specs if s.child_id in ids]
        return specs if self.spec in specs else [self.spec]

    def _latency(self, model: Any, x: Any) -> float:
        import torch

        from harness.timing import measure_latency

        bench = self._benchmark
        if bench is not None and not getattr(bench, "disabled", True):
            bench.extra_info.update({"child_id": self.child_id, "recipe": self.spec.recipe.to_dict(),
                                     "regime": self.spec.regime.name})
            with torch.no_grad():
                bench.pedantic(model, args=(x,), rounds=20, warmup_rounds=3, iterations=1)
            return float(bench.stats.stats.median * 1000.0)
        return float(measure_latency(model, x)["median_ms"])

    def check(self) -> None:
        """Fail the test for a diverged or degenerate child, with one line naming the value and the limit."""
        rec = self.run()
        if rec["status"] == "diverged":
            pytest.fail(f"{self.child_id}: fine-tuning diverged (non-finite loss) in regime "
                        f"{self.spec.regime.name!r} (lr={self.spec.regime.lr}); lower the learning rate", pytrace=False)
        if rec["status"] == "degenerate":
            thr = self.session.options.degenerate_threshold
            pytest.fail(f"{self.child_id}: degenerate child: primary {rec['primary']:.4f} < threshold {thr}",
                        pytrace=False)
