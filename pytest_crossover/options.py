"""The ``crossover`` option group: every flag ``--crossover-*``, each also an ini key ``crossover_*``.

Resolution happens once, in :func:`resolve`: the command line wins over the ini file, which wins over the
default. Values are checked by the library (harness.search.space, harness.search.settings,
harness.train.regimes), once each; its errors name the setting (``HarnessError.field``), and
:func:`usage_error` turns one into a ``pytest.UsageError`` that names the option as the user wrote it: the flag, or
the ini key. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.core.arithmetic import MODES as ARITHMETIC_MODES
from harness.core.errors import HarnessError
from harness.core.registry import check_name
from harness.crossing.operators import OPERATORS
from harness.search.axes import AXES
from harness.search.barrier import MODES as BARRIER_MODES
from harness.search.settings import parse, threshold_value
from harness.search.space import SPACES, ChildSpec, build_space
from harness.train.regimes import Regime, parse_regime
from pytest_crossover.option_table import Option, option_table

CONTROLS_FROM = 9  # --crossover-controls auto: spaces of this many children or more get controls
MAX_REPLICATES = 100
MAX_EVAL_EPISODES = 100_000

# Library field (HarnessError.field) -> option name, where they differ.
_FIELD_OPTION = {"env_id": "env", "regime": "define-regime", "mode": "modes"}


@dataclass(frozen=True)
class Sources:
    """Where each setting came from: ``cli``, ``ini`` or ``default``, and the ini file's folder for paths."""

    origin: Mapping[str, str] = field(default_factory=dict)
    ini_dir: Path | None = None

    def display(self, name: str) -> str:
        """The option as the user wrote it: ``--crossover-holdout``, or ``crossover_holdout`` from the ini file."""
        name = _FIELD_OPTION.get(name, name).replace("_", "-")
        params = [p for op in OPERATORS.values() for p in op.params if p.name == name]
        if params:  # an operator parameter: its knob, or --crossover-param for one without
            name = next((p.knob for p in params if p.knob), "param")
        origin = self.origin.get(name, "")
        if origin == "ini":
            return f"crossover_{name.replace('-', '_')} (ini)"
        if origin.startswith("--tx "):  # set for one worker in its gateway spec (xdist_hooks.gateway_settings)
            return f"{origin} (crossover_{name.replace('-', '_')})"
        return f"--crossover-{name}"


def usage_error(exc: HarnessError, sources: Sources, fallback: str | None = None) -> pytest.UsageError:
    """A library error as one usage line naming the option it is about (``fallback`` when it names none)."""
    name = exc.field or fallback
    text = str(exc)
    return pytest.UsageError(f"{sources.display(name)}: {text}" if name else text)


@contextmanager
def naming(sources: Sources, fallback: str | None = None) -> Iterator[None]:
    """Run a block of library calls; a HarnessError becomes a usage error naming its option."""
    try:
        yield
    except HarnessError as exc:
        raise usage_error(exc, sources, fallback) from None


@dataclass(frozen=True, slots=True)
class CrossoverOptions:
    """Every setting, resolved and checked; builtins only, so it can travel to xdist workers."""

    space: str
    modes: tuple[str, ...] | None
    grids: Mapping[str, tuple[Any, ...]]  # operator parameter -> values (custom space)
    regimes: tuple[str, ...] | None
    align: tuple[str, ...] | None
    teachers: tuple[str, ...] | None
    axes: Mapping[str, tuple[Any, ...]]  # other declared axes' values (--crossover-axis NAME=V1,V2)
    define_regime: tuple[str, ...]  # the definitions as given
    replicates: int
    controls: str  # "on", "off" or "auto"
    equivalence_margin: float
    max_runs: int | None
    parent_a: str | None
    parent_b: str | None
    reference_a: str | None
    reference_b: str | None
    states: str | None
    eval_states: str | None
    eval_episodes: int | None
    allow_unsafe_unpickle: bool
    holdout: float
    split_seed: int
    teacher: str
    degenerate_threshold: float | str  # a number, or a relative form kept as its text (harness.search.settings)
    run_dir: str
    env: str | None
    episodes: int | None
    threads: int
    device: str
    report: str  # "on" or "off"
    barrier: str  # "on", "returns" or "off"
    arithmetic: str  # "portable" or "native" (harness.core.arithmetic)
    explicit: tuple[str, ...]  # the settings given on the command line or in the ini file
    study: Mapping[str, Any] | None = None  # --crossover-search optuna's settings (pytest_crossover.study)
    sources: Sources = field(default_factory=Sources, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("sources", "grids", "axes", "study")}
        out["grids"] = {k: list(v) for k, v in self.grids.items()}
        if self.study is not None:  # only a study's: a grid session's options are as they were
            from harness.search.study import redacted

            out["study"] = {**self.study, "storage": redacted(self.study["storage"]) if self.study["storage"] else None}
        if self.axes:  # only when given: earlier records have no such key, and their fingerprints must not change
            out["axes"] = {k: list(v) for k, v in self.axes.items()}
        # AgentFarm's option names, as earlier records hold them.
        out.update({"alphas": self.grids.get("alpha"), "seeds": self.grids.get("seed")})
        return out

    def to_wire(self) -> dict[str, Any]:
        """Builtins for ``node.workerinput``: every worker uses the controller's options, not its own reading of
        an ini file it may not have (a remote worker's rootdir is its own folder)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("sources", "grids", "axes")}
        out["grids"], out["axes"] = dict(self.grids), dict(self.axes)
        src = self.sources
        out["sources"] = {"origin": dict(src.origin), "ini_dir": str(src.ini_dir) if src.ini_dir else None}
        return out

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> CrossoverOptions:
        """The controller's options on a worker, with the worker's own settings from its gateway spec
        (``overrides``: ``{name: (value, origin)}``)."""
        values = {k: v for k, v in wire.items() if k != "sources"}
        values["grids"] = {k: tuple(v) for k, v in wire["grids"].items()}
        values["axes"] = {k: tuple(v) for k, v in wire["axes"].items()}
        origin = dict(wire["sources"]["origin"])
        for name, (value, where) in (overrides or {}).items():
            values[name] = value
            origin[name] = where
        ini_dir = wire["sources"]["ini_dir"]
        return cls(**values, sources=Sources(origin, Path(ini_dir) if ini_dir else None))

    def extra_regimes(self) -> dict[str, Regime]:
        return {r.name: r for r in (parse_regime(d) for d in self.define_regime)}

    def planned_eval_episodes(self) -> int:
        """The evaluation episodes to collect: the option's, else the space's own (a preset may set it), else 0."""
        if self.eval_episodes is not None or self.eval_states is not None:
            return self.eval_episodes or 0
        return SPACES.get(self.space).eval_episodes if self.space in SPACES.names() else 0

    def levels(self) -> dict[str, tuple[Any, ...] | None]:
        """Each declared axis's values as given: its own option (``--crossover-regimes``), else ``--crossover-axis``."""
        own = {"regime": self.regimes, "align": self.align, "teacher": self.teachers,
               "replicate": tuple(range(self.replicates)) if self.replicates > 1 else None}
        return {a.name: own[a.name] if a.name in own else self.axes.get(a.name) for a in AXES.values()}

    def space_specs(self, **overrides: Any) -> list[ChildSpec]:
        knobs: dict[str, Any] = {"modes": self.modes, "grids": self.grids, "levels": self.levels(),
                                 "defaults": {"teacher": self.teacher}, "max_runs": self.max_runs, **overrides}
        preset = SPACES.get(self.space) if self.space in SPACES.names() else None
        if self.controls == "auto" and preset is not None and preset.controls is not None:
            knobs.setdefault("controls", preset.controls)
        elif self.controls == "auto":  # on for a space of 9 children or more (before its replicates)
            base = build_space(self.space, extra_regimes=self.extra_regimes(),
                               **{**knobs, "levels": {**knobs["levels"], "replicate": None}, "max_runs": None})
            knobs.setdefault("controls", len(base) >= CONTROLS_FROM)
        else:
            knobs.setdefault("controls", self.controls == "on")
        return build_space(self.space, extra_regimes=self.extra_regimes(), **knobs)


def _raw(config: pytest.Config, opt: Option) -> tuple[Any, str]:
    cli = config.getoption(opt.dest, default=None)
    if cli is not None:
        return cli, "cli"
    ini = config.getini(opt.dest)
    if opt.kind == "flag":
        return bool(ini), "ini" if ini else "default"
    if opt.kind == "lines":
        items = [str(v) for v in (ini if isinstance(ini, list) else str(ini).splitlines()) if str(v).strip()]
        return (items, "ini") if items else (None, "default")
    if ini not in ("", None):
        return str(ini), "ini"
    return opt.default, "default"


def _split(value: str) -> list[str]:
    return [v for v in value.replace(",", " ").split() if v]


def _convert(opt: Option, value: Any, origin: str, ini_dir: Path | None) -> Any:
    """Option text -> typed value (syntax only; ranges are the library's)."""
    if value is None or opt.kind == "flag":
        return value
    field_name = opt.name.replace("-", "_")
    if opt.kind in ("list", "vectors"):
        items = _split(str(value))
        if not items:
            raise HarnessError("give at least one value", field=field_name)
        if opt.kind == "vectors":
            return tuple(_vector(field_name, v, opt.item) for v in items)
        return tuple(parse(field_name, v, opt.item) for v in items)
    if opt.kind == "lines":
        return tuple(str(v) for v in value)
    if opt.kind in ("int", "float"):
        return parse(field_name, value, int if opt.kind == "int" else float)
    text = str(value)
    if opt.kind == "path":
        if not text.strip():
            raise HarnessError(f"{text!r} is an empty path; pass a path, or leave the option out for its default",
                               field=field_name)
        # "~/runs" from an ini file, a quoted argument or "--opt=~/runs" (no shell expands those) means the home
        # folder, never a folder named "~".
        text = os.path.expanduser(text)
        if opt.name == "run-dir" and os.path.dirname(os.path.realpath(text)) == os.path.realpath(text):
            raise HarnessError(f"{text!r} is the file system's root (an unset variable before a '/'?); pass a folder "
                               "of its own", field=field_name)
        # A relative path in an ini file is relative to that file, as pytest's own ini paths are.
        if origin == "ini" and ini_dir is not None and not os.path.isabs(text):
            return str(ini_dir / text)
        return text
    return parse(field_name, text, str)


def resolve(config: pytest.Config) -> CrossoverOptions:
    """Read, parse and check every option; a bad one raises a ``pytest.UsageError`` naming it."""
    table = option_table()
    raw, origin = {}, {}
    for opt in table:
        raw[opt.name], origin[opt.name] = _raw(config, opt)
    ini_dir = config.inipath.parent if config.inipath else None
    sources = Sources(origin, ini_dir)
    values: dict[str, Any] = {}
    for opt in table:
        with naming(sources, opt.name):
            values[opt.name] = _convert(opt, raw[opt.name], origin[opt.name], ini_dir)
    knob_param = {p.knob: p.name for op in OPERATORS.values() for p in op.params if p.knob}
    grids = {knob_param[k]: v for k, v in values.items() if k in knob_param and v is not None}
    from pytest_crossover import study_options as study

    with naming(sources, "param"):
        grids.update(_param_grids(study.grid_lines(values["param"] or ())))
    with naming(sources, "search"):
        study_settings = study.settings(values, values["param"] or (), [n for n in origin if origin[n] != "default"])
    if study_settings is not None:
        grids.update(study.ranged_vectors(study_settings, grids))
    with naming(sources, "axis"):
        axes = _axis_values(values["axis"] or ())
    with naming(sources, "degenerate-threshold"):
        threshold = threshold_value(values["degenerate-threshold"])
    opts = CrossoverOptions(
        space=values["space"], modes=values["modes"], grids=grids, regimes=values["regimes"],
        align=values["align"], teachers=values["teachers"], axes=axes,
        define_regime=values["define-regime"] or (), replicates=values["replicates"], controls=values["controls"],
        equivalence_margin=values["equivalence-margin"],
        max_runs=values["max-runs"], parent_a=values["parent-a"],
        parent_b=values["parent-b"], reference_a=values["reference-a"], reference_b=values["reference-b"],
        states=values["states"], eval_states=values["eval-states"],
        eval_episodes=values["eval-episodes"],
        allow_unsafe_unpickle=bool(values["allow-unsafe-unpickle"]), split_seed=values["split-seed"],
        holdout=_holdout(values, origin), teacher=values["teacher"],
        degenerate_threshold=threshold,
        run_dir=values["run-dir"], env=values["env"], episodes=values["episodes"], threads=values["threads"],
        device=values["device"], report=values["report"], barrier=values["barrier"],
        arithmetic=values["arithmetic"], explicit=tuple(n for n in origin if origin[n] != "default"),
        study=study_settings, sources=sources,
    )
    _check(opts)
    return opts


def _holdout(values: Mapping[str, Any], origin: Mapping[str, str]) -> float:
    """The holdout, 0 by default with a separate evaluation buffer (every state then fine-tunes)."""
    holdout: float = values["holdout"]
    return 0.0 if values["eval-states"] is not None and origin["holdout"] == "default" else holdout


def _param_grids(lines: tuple[str, ...]) -> dict[str, tuple[Any, ...]]:
    """``NAME=V1,V2`` lines -> {name: values}, typed by the operators' declarations."""
    declared = {p.name: p for op in OPERATORS.values() for p in op.params}
    grids: dict[str, tuple[Any, ...]] = {}
    for line in lines:
        name, eq, values = line.partition("=")
        name = name.strip()
        if not eq or name not in declared:
            known = ", ".join(declared) or "none"
            raise HarnessError(f"{line!r} is not NAME=V1,V2 with NAME a parameter of a registered operator "
                               f"(known: {known})", field="param")
        p = declared[name]
        grids[name] = tuple(_vector("param", v, p.kind) if p.per_layer else parse("param", v, p.kind)
                            for v in _split(values))
    return grids


def _vector(field_name: str, text: str, kind: type) -> tuple[Any, ...]:
    """``0.2/0.5/0.8`` -> (0.2, 0.5, 0.8): a per-layer value, one number per layer."""
    return tuple(parse(field_name, v, kind) for v in text.split("/"))


def _axis_values(lines: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``NAME=V1,V2`` lines -> {axis: values as text} (each axis resolves its own values)."""
    own = {a.name: a.option for a in AXES.values() if a.option != "axis"}
    out: dict[str, tuple[str, ...]] = {}
    for line in lines:
        name, eq, values = line.partition("=")
        name = name.strip()
        if not eq or name not in AXES:
            known = ", ".join(a for a in AXES.names() if a not in own) or "none but the built-in ones"
            raise HarnessError(f"{line!r} is not NAME=V1,V2 with NAME a declared search axis (known: {known})",
                               field="axis")
        if name in own:
            raise HarnessError(f"{name} has its own option; use --crossover-{own[name]}", field="axis")
        out[name] = tuple(_split(values))
    return out


def _check(opts: CrossoverOptions) -> None:
    """The cross-option checks and the library's checks of every value, before any work."""
    from harness.search.settings import Settings

    src = opts.sources
    with naming(src):
        if opts.space != "custom":
            given = [n for n in ("modes", "regimes", "define-regime", "param", "align", "teachers", "axis", *_knobs())
                     if n in opts.explicit]
            if given:
                raise HarnessError(f"only applies to --crossover-space custom (got --crossover-space {opts.space}); "
                                   f"add --crossover-space custom or drop it", field=given[0])
        if (opts.parent_a is None) != (opts.parent_b is None):
            raise HarnessError("goes with --crossover-parent-b; give both or neither (neither uses the embedded "
                               "LunarLander parents)", field="parent_a" if opts.parent_a is None else "parent_b")
        if (opts.reference_a is None) != (opts.reference_b is None):
            side, other = ("a", "b") if opts.reference_a is not None else ("b", "a")
            raise HarnessError(f"goes with --crossover-reference-{other}; give both or neither (neither: the founders "
                               "of the parents' lineage, else the parents)", field=f"reference_{side}")
        defined = [parse_regime(d) for d in opts.define_regime]
        if len({r.name for r in defined}) != len(defined):
            raise HarnessError("a regime name is defined twice; give each one once", field="define_regime")
        if opts.eval_states is not None and "holdout" in opts.explicit:
            raise HarnessError("is ignored with --crossover-eval-states (every state fine-tunes, the evaluation buffer "
                               "scores); drop one of them", field="holdout")
        _ignored(opts)
        check_name("barrier mode", opts.barrier, BARRIER_MODES, field="barrier")
        check_name("controls switch", opts.controls, ("on", "off", "auto"), field="controls")
        if opts.eval_episodes is not None and not 20 <= opts.eval_episodes <= MAX_EVAL_EPISODES:
            raise HarnessError(f"{opts.eval_episodes} is outside [20, {MAX_EVAL_EPISODES}]; an interval needs at least "
                               "20 episodes, and 300 hold ~6,000 states", field="eval_episodes")
        if opts.eval_episodes is not None and opts.eval_states is not None:
            raise HarnessError("is ignored with --crossover-eval-states (that buffer scores the children); drop one "
                               "of them", field="eval_episodes")
        if not 0.0 < opts.equivalence_margin < 1.0:
            raise HarnessError(f"{opts.equivalence_margin} is outside (0, 1); 0.01 calls two values alike when their "
                               "gap's 95 % interval lies within ±0.01 of primary", field="equivalence_margin")
        if not 1 <= opts.replicates <= MAX_REPLICATES:
            raise HarnessError(f"{opts.replicates} is outside [1, {MAX_REPLICATES}]; 3 to 5 replicates resolve the "
                               "levers that matter", field="replicates")
        check_name("arithmetic", opts.arithmetic, ARITHMETIC_MODES, field="arithmetic")
        Settings(holdout=opts.holdout, teacher=opts.teacher, degenerate_threshold=opts.degenerate_threshold,
                 env_id=opts.env, episodes=opts.episodes or 0, threads=opts.threads, device=opts.device,
                 split_seed=opts.split_seed)
        opts.space_specs()
        from harness.pictures.files import check_switch

        check_switch(opts.report)


def _ignored(opts: CrossoverOptions) -> None:
    """Settings that would be accepted and then have no effect are errors: the user meant something else."""
    given = set(opts.explicit)
    own_parents = opts.parent_a is not None
    if "episodes" in given and (opts.episodes or 0) > 0 and own_parents and opts.env is None:
        raise HarnessError(f"{opts.episodes} episodes need an environment for your parents; add --crossover-env ID, or "
                           "drop --crossover-episodes", field="episodes")
    if "env" in given and opts.episodes == 0:
        raise HarnessError(f"{opts.env!r} is never stepped with --crossover-episodes 0; drop one of them", field="env")
    if "split-seed" in given and opts.holdout == 0.0:
        raise HarnessError("is ignored without a holdout (holdout 0, or a separate evaluation buffer): nothing is "
                           "split; drop it", field="split_seed")
    if "teacher" in given and "teachers" in given:
        raise HarnessError("is ignored with --crossover-teachers (each child has its searched teacher); drop one of "
                           "them", field="teacher")
    if "allow-unsafe-unpickle" in given and not own_parents:
        raise HarnessError("is ignored with the embedded parents (they are plain state dicts); it applies to "
                           "--crossover-parent-a/-b", field="allow_unsafe_unpickle")


def _knobs() -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.knob for op in OPERATORS.values() for p in op.params if p.knob))
