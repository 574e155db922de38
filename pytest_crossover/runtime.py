"""What one process of a session builds once: the inputs, the shared context, and who fine-tunes with whom.

Everything is built lazily, so a pytest run that collects no child never imports torch; the xdist controller
only checks the inputs (torch-free, :func:`harness.inputs.load.check_inputs`) and never builds a context.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_crossover.options import CrossoverOptions, naming

if TYPE_CHECKING:
    from harness.inputs.load import SearchInputs
    from harness.inputs.states import Split
    from harness.search.child import Context
    from harness.search.populations import Finetuner
    from harness.search.space import ChildSpec


class Runtime:
    """Per-process state of a search: built on first use, never changed."""

    def __init__(self, options: CrossoverOptions, *, rootpath: Path, workerinput: dict[str, Any] | None) -> None:
        self.options = options
        self.rootpath = rootpath
        self.workerinput = workerinput
        self._inputs: SearchInputs | None = None
        self._checked: SearchInputs | None = None  # checked torch-free (parents as metadata) on the controller
        self._split: Split | None = None
        self._ctx: Context | None = None
        self._finetuner: Finetuner | None = None
        self._git: dict[str, Any] | None = None
        self._arithmetic: dict[str, Any] | None = None

    def inputs(self) -> SearchInputs:
        if self._inputs is None:
            from harness.inputs.load import load_inputs
            from pytest_crossover import transfer

            o = self.options
            # A worker reads where the controller's manifest says (its own cache on a remote host) and checks the
            # files are the ones the controller checked (pytest_crossover.transfer).
            with naming(o.sources), transfer.controller_names(self.workerinput):
                inputs = load_inputs(**transfer.load_paths(o, self.workerinput),
                                     allow_unsafe_unpickle=o.allow_unsafe_unpickle, env_id=o.env,
                                     episodes=o.episodes, check_environment=self.workerinput is None,
                                     reference_a=o.reference_a, reference_b=o.reference_b)
                transfer.verify(inputs.provenance, self.workerinput)
            self._inputs = inputs
            _freeze_long_lived()
        return self._inputs

    def check_inputs(self, *, load: bool) -> SearchInputs:
        """Check the inputs before any child runs (and the split they make), and return them.

        ``load``: load them (a serial session, whose children need them loaded anyway). Otherwise (an xdist
        controller, which never trains) check them without importing torch, leaving the cores to the workers,
        and load them only for a checkpoint that only ``torch.load`` can judge.
        """
        if self._checked is None:
            if not load and self._inputs is None:
                from harness.inputs.load import check_inputs

                o = self.options
                with naming(o.sources):
                    self._checked = check_inputs(o.parent_a, o.parent_b, o.states, eval_states=o.eval_states,
                                                 env_id=o.env, episodes=o.episodes, reference_a=o.reference_a,
                                                 reference_b=o.reference_b)
            if self._checked is None:
                self._checked = self.inputs()
            self.split()
        return self._checked

    @property
    def provenance(self) -> dict[str, Any] | None:
        """The inputs' provenance and the session's arithmetic (what its numbers depend on besides the settings)."""
        from harness.core.arithmetic import session

        checked = self._inputs or self._checked
        return None if checked is None else {**checked.provenance, "arithmetic": session(self.options.arithmetic)}

    def arithmetic(self) -> dict[str, Any]:
        """This process's CPU arithmetic, checked against the pin (imports torch): refused in one line when torch
        chose its kernels before the pin (harness.core.arithmetic)."""
        if self._arithmetic is None:
            from harness.core.arithmetic import check

            with naming(self.options.sources):
                self._arithmetic = check(self.options.arithmetic)
        return self._arithmetic

    def split(self) -> Split:
        """Which rows fine-tune and which evaluate: numpy only, so the controller computes it as the workers do."""
        if self._split is None:
            from harness.inputs.states import split_buffer

            inputs = self._inputs or self._checked or self.check_inputs(load=False)
            o = self.options
            with naming(o.sources):
                self._split = split_buffer(inputs.buffer, o.holdout, o.split_seed, inputs.eval_buffer)
        return self._split

    def context(self) -> Context:
        if self._ctx is None:
            import torch

            from harness.search.child import Context
            from harness.search.settings import Settings

            o = self.options
            torch.set_num_threads(o.threads)
            arithmetic = self.arithmetic()
            inp = self.inputs()
            with naming(o.sources):
                settings = Settings(holdout=o.holdout, teacher=o.teacher, degenerate_threshold=o.degenerate_threshold,
                                    env_id=inp.env_id, episodes=inp.episodes, device=o.device, threads=o.threads,
                                    split_seed=o.split_seed)
                reference = None if inp.ref_a is None or inp.ref_b is None else (inp.ref_a, inp.ref_b)
                self._ctx = Context.build(inp.sd_a, inp.sd_b, inp.buffer, settings, eval_states=inp.eval_buffer,
                                          provenance={**inp.provenance, "git": self.git(),
                                                      "arithmetic": arithmetic}, reference=reference)
            _freeze_long_lived()
        return self._ctx

    def release(self) -> None:
        """Forget the training context and the populations (a serial session's end, once the parents' baselines and
        the barrier are computed): what is left reads the records, and a 1,000,000-state session's statistics then
        run without the states, the parents' logits and the soft targets beside them (~190 MB)."""
        self._ctx, self._finetuner = None, None

    def finetuner(self, selected: Sequence[ChildSpec],
                  unit_of: Callable[[ChildSpec], Hashable] | None) -> Finetuner:
        """Who fine-tunes with whom in this process, planned once from the children it collected."""
        if self._finetuner is None:
            from harness.search.populations import Finetuner, plan_populations

            ctx = self.context()
            self._finetuner = Finetuner(ctx, plan_populations(selected, n_params=ctx.n_params, unit_of=unit_of))
        return self._finetuner

    def git(self) -> dict[str, Any]:
        """Commit, branch and dirty flag of the rootdir's repository; asked once, on the controller (xdist
        workers receive it through ``workerinput``)."""
        if self.workerinput is not None and "crossover_git" in self.workerinput:
            return dict(self.workerinput["crossover_git"])
        if self._git is None:
            from harness.records.store import git_info

            self._git = git_info(self.rootpath)
        return self._git


def _freeze_long_lived() -> None:
    """Move every object alive now (torch's and harness's modules, the loaded inputs, the context) out of the
    cyclic collector's way: ~10^5 objects that are never garbage, which every later full collection would walk
    (pytest runs one at unconfigure, the interpreter more at exit: ~0.2 s a process, profiled)."""
    gc.freeze()
