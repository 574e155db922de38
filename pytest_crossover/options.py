"""The ``crossover`` option group: every flag ``--crossover-*``, each also an ini key ``crossover_*``.

Resolution happens once, in ``resolve``: the command line wins over the ini file, which wins over the default.
Every check raises ``pytest.UsageError`` naming the option, the value and the fix. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.space import CROSSOVER_MODES, DEVICES, REGIMES, SPACE_NAMES, TEACHERS, Regime, build_space, check_name

# name, help, default (None = unset); list-valued knobs take comma- or space-separated values.
_OPTIONS: tuple[tuple[str, str, str | None], ...] = (
    ("space", f"Search space: {', '.join(SPACE_NAMES)} (default: default)", "default"),
    ("modes", f"Custom space only: crossover modes, comma-separated ({', '.join(CROSSOVER_MODES)})", None),
    ("alphas", "Custom space only: alphas in [0, 1], comma-separated (default 0.3,0.5,0.7)", None),
    ("seeds", "Custom space only: random-mode seeds, comma-separated (default 0,1,2)", None),
    ("regimes", f"Custom space only: fine-tune regimes, comma-separated ({', '.join(REGIMES)} or a defined one)",
     None),
    ("define-regime", "Custom space only: define a regime for --crossover-regimes, "
                      "NAME:epochs=5,lr=1e-3[,batch_size=32,val_fraction=0.1,seed=42,quantization_applied=none]; "
                      "repeatable (ini: one per line)", None),
    ("max-runs", "Run only the first N children of the space (N >= 1)", None),
    ("parent-a", "Parent A checkpoint (.pt state dict); default: the embedded LunarLander parents", None),
    ("parent-b", "Parent B checkpoint (.pt state dict); default: the embedded LunarLander parents", None),
    ("states", "States buffer (.npy, float32, N x input_dim); default: the embedded states", None),
    ("allow-unsafe-unpickle", "Allow full-pickle checkpoints: unpickling runs arbitrary code from the file, "
                              "so only for files you trust (default: off)", None),
    ("holdout", "Fraction of states held out of fine-tuning and used for every metric; 0 = evaluate on all "
                "(default 0.2)", "0.2"),
    ("teacher", "Distillation teacher: a, b or both (mean of soft targets) (default a)", "a"),
    ("degenerate-threshold", "Fail children whose primary metric is below X; 0 disables (default 0)", "0"),
    ("run-dir", "Where results are written (default runs/crossover_search)", "runs/crossover_search"),
    ("env", "Gymnasium environment for returns (default: LunarLander-v3 with the embedded parents)", None),
    ("episodes", "Greedy episodes per child for returns; 0 disables (default 10 with an environment)", None),
    ("threads", "Torch intra-op threads per process (default 1: xdist workers must not fight over cores)", "1"),
    ("device", "cpu or cuda (default cpu)", "cpu"),
)
_FLAGS = {"allow-unsafe-unpickle"}
_METAVARS = {"space": "NAME", "modes": "MODES", "alphas": "ALPHAS", "seeds": "SEEDS", "regimes": "REGIMES",
             "define-regime": "SPEC", "max-runs": "N", "parent-a": "PATH", "parent-b": "PATH", "states": "PATH.npy",
             "holdout": "FRACTION", "teacher": "a|b|both", "degenerate-threshold": "X", "run-dir": "DIR",
             "env": "ID", "episodes": "N", "threads": "N", "device": "cpu|cuda"}
_REPEATABLE = {"define-regime"}
# Regime fields a definition may set, and how each is parsed.
_REGIME_FIELDS: dict[str, Callable[[str], Any]] = {"epochs": int, "lr": float, "batch_size": int,
                                                   "val_fraction": float, "seed": int, "quantization_applied": str}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("crossover", "crossover search harness")
    for name, help_text, _default in _OPTIONS:
        dest = "crossover_" + name.replace("-", "_")
        if name in _FLAGS:
            group.addoption(f"--crossover-{name}", action="store_true", default=None, dest=dest, help=help_text)
            parser.addini(dest, help_text, type="bool", default=False)
        elif name in _REPEATABLE:
            group.addoption(f"--crossover-{name}", action="append", default=None, dest=dest, metavar=_METAVARS.get(name, "VALUE"),
                            help=help_text)
            parser.addini(dest, help_text, type="linelist", default=[])
        else:
            group.addoption(f"--crossover-{name}", action="store", default=None, dest=dest, metavar=_METAVARS.get(name, "VALUE"),
                            help=help_text)
            parser.addini(dest, help_text, type="string", default="")


@dataclass(frozen=True, slots=True)
class CrossoverOptions:
    """Every setting, resolved and checked; builtins only, so it can travel to xdist workers."""

    space: str
    modes: tuple[str, ...] | None
    alphas: tuple[float, ...] | None
    seeds: tuple[int, ...] | None
    regimes: tuple[str, ...] | None
    define_regime: tuple[str, ...]  # the definitions as given; parsed by ``extra_regimes``
    max_runs: int | None
    parent_a: str | None
    parent_b: str | None
    states: str | None
    allow_unsafe_unpickle: bool
    holdout: float
    teacher: str
    degenerate_threshold: float
    run_dir: str
    env: str | None
    episodes: int | None
    threads: int
    device: str
    explicit: tuple[str, ...]  # the settings given on the command line or in the ini file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def extra_regimes(self) -> dict[str, Regime]:
        return dict(parse_regime(d) for d in self.define_regime)

    def space_specs(self) -> list[Any]:
        return build_space(self.space, modes=self.modes, alphas=self.alphas, seeds=self.seeds,
                           regimes=self.regimes, max_runs=self.max_runs, extra_regimes=self.extra_regimes())


def parse_regime(definition: str) -> tuple[str, Regime]:
    """``NAME:epochs=5,lr=1e-3[,...]`` -> (name, Regime); a bad definition raises a one-line UsageError."""
    fix = "write NAME:epochs=5,lr=1e-3[,batch_size=32,val_fraction=0.1,seed=42,quantization_applied=none]"
    name, sep, body = definition.strip().partition(":")
    name = name.strip()
    if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise pytest.UsageError(f"--crossover-define-regime: {definition!r} has no NAME: prefix; {fix}")
    if name in REGIMES:
        raise pytest.UsageError(f"--crossover-define-regime: {name!r} is a built-in regime; pick another name")
    fields: dict[str, Any] = {}
    for part in (p.strip() for p in body.split(",") if p.strip()):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in _REGIME_FIELDS:
            raise pytest.UsageError(f"--crossover-define-regime: {part!r} in {definition!r} is not one of "
                                    f"{', '.join(k + '=' for k in _REGIME_FIELDS)}; {fix}")
        fields[key] = _parse("define-regime", value.strip(), _REGIME_FIELDS[key], f"a valid {key}")
    missing = [k for k in ("epochs", "lr") if k not in fields]
    if missing:
        raise pytest.UsageError(f"--crossover-define-regime: {definition!r} lacks {', '.join(missing)}; {fix}")
    try:
        return name, Regime(name, **fields)
    except HarnessError as exc:
        raise pytest.UsageError(f"--crossover-define-regime: {exc}") from None


def _raw(config: pytest.Config, name: str) -> tuple[Any, bool]:
    dest = "crossover_" + name.replace("-", "_")
    cli = config.getoption(dest, default=None)
    if cli is not None:
        return cli, True
    ini = config.getini(dest)
    if name in _FLAGS:
        return bool(ini), bool(ini)
    if name in _REPEATABLE:
        items = [str(v) for v in (ini if isinstance(ini, list) else str(ini).splitlines()) if str(v).strip()]
        return (items, True) if items else (None, False)
    if ini not in ("", None):
        return str(ini), True
    default = next(d for n, _, d in _OPTIONS if n == name)
    return default, False


def _parse(name: str, value: str, convert: Callable[[str], Any], what: str) -> Any:
    try:
        return convert(value)
    except ValueError:
        raise pytest.UsageError(f"--crossover-{name}: {value!r} is not {what}") from None


def _split(value: str) -> list[str]:
    return [v for v in value.replace(",", " ").split() if v]


def resolve(config: pytest.Config) -> CrossoverOptions:
    raw, explicit = {}, []
    for name, _, _ in _OPTIONS:
        raw[name], given = _raw(config, name)
        if given:
            explicit.append(name)
    try:
        space = check_name("search space", str(raw["space"]), SPACE_NAMES)
    except HarnessError as exc:
        raise pytest.UsageError(f"--crossover-space: {exc}") from None
    lists = _custom_knobs(raw, space)
    scalars = _scalars(raw)
    opts = CrossoverOptions(
        space=space, modes=lists["modes"], alphas=lists["alphas"], seeds=lists["seeds"], regimes=lists["regimes"],
        define_regime=lists["define-regime"] or (), parent_a=raw["parent-a"], parent_b=raw["parent-b"],
        states=raw["states"], allow_unsafe_unpickle=bool(raw["allow-unsafe-unpickle"]), run_dir=str(raw["run-dir"]),
        env=raw["env"], explicit=tuple(explicit), **scalars,
    )
    _check(opts.space_specs, "space")
    return opts


def _custom_knobs(raw: dict[str, Any], space: str) -> dict[str, Any]:
    """The custom-space lists, parsed and checked; any of them with another space is an error."""
    lists: dict[str, Any] = {}
    for name, conv, what in (("modes", str, "a mode"), ("alphas", float, "a number"), ("seeds", int, "an integer"),
                             ("regimes", str, "a regime"), ("define-regime", str, "a regime definition")):
        if raw[name] is None:
            lists[name] = None
            continue
        if space != "custom":
            raise pytest.UsageError(
                f"--crossover-{name} only applies to --crossover-space custom (got --crossover-space {space}); "
                f"add --crossover-space custom or drop --crossover-{name}")
        values = list(raw[name]) if name in _REPEATABLE else _split(raw[name])
        items = tuple(_parse(name, v, conv, what) for v in values)
        if not items:
            raise pytest.UsageError(f"--crossover-{name}: give at least one value")
        lists[name] = items
    for mode in lists["modes"] or ():
        _check(lambda: check_name("crossover mode", mode, CROSSOVER_MODES), "modes")
    defined = dict(parse_regime(d) for d in lists["define-regime"] or ())
    if len(defined) != len(lists["define-regime"] or ()):
        raise pytest.UsageError("--crossover-define-regime: a regime name is defined twice; give each one once")
    for regime in lists["regimes"] or ():
        _check(lambda: check_name("fine-tune regime", regime, {**REGIMES, **defined}), "regimes")
    for alpha in lists["alphas"] or ():
        if not 0.0 <= alpha <= 1.0:
            raise pytest.UsageError(f"--crossover-alphas: alpha {alpha} is outside [0, 1]; use values like 0.3,0.5,0.7")
    return lists


def _scalars(raw: dict[str, Any]) -> dict[str, Any]:
    """The numeric and choice options, parsed and range-checked."""
    max_runs = None if raw["max-runs"] is None else _parse("max-runs", raw["max-runs"], int, "an integer")
    if max_runs is not None and max_runs < 1:
        raise pytest.UsageError(f"--crossover-max-runs: {max_runs} is not >= 1; pass a positive number of children")
    holdout = _parse("holdout", raw["holdout"], float, "a number")
    if not 0.0 <= holdout < 1.0:
        raise pytest.UsageError(f"--crossover-holdout: {holdout} is outside [0, 1); 0.2 holds out a fifth, "
                                "0 evaluates on all states")
    teacher = str(raw["teacher"])
    if teacher not in TEACHERS:
        raise pytest.UsageError(f"--crossover-teacher: {teacher!r} is not one of {', '.join(TEACHERS)}")
    threshold = _parse("degenerate-threshold", raw["degenerate-threshold"], float, "a number")
    if not 0.0 <= threshold <= 1.0:
        raise pytest.UsageError(f"--crossover-degenerate-threshold: {threshold} is outside [0, 1]")
    episodes = None if raw["episodes"] is None else _parse("episodes", raw["episodes"], int, "an integer")
    if episodes is not None and episodes < 0:
        raise pytest.UsageError(f"--crossover-episodes: {episodes} is negative; 0 disables returns")
    threads = _parse("threads", raw["threads"], int, "an integer")
    if threads < 1:
        raise pytest.UsageError(f"--crossover-threads: {threads} is not >= 1")
    device = str(raw["device"])
    if device not in DEVICES:
        raise pytest.UsageError(f"--crossover-device: {device!r} is not one of {', '.join(DEVICES)}")
    if (raw["parent-a"] is None) != (raw["parent-b"] is None):
        raise pytest.UsageError("--crossover-parent-a and --crossover-parent-b go together; give both or neither "
                                "(neither uses the embedded LunarLander parents)")
    return {"max_runs": max_runs, "holdout": holdout, "teacher": teacher, "degenerate_threshold": threshold,
            "episodes": episodes, "threads": threads, "device": device}


def _check(fn: Callable[[], Any], name: str) -> None:
    try:
        fn()
    except HarnessError as exc:
        raise pytest.UsageError(f"--crossover-{name}: {exc}") from None
