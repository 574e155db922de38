"""Crossover recipes, fine-tune regimes, the named search spaces and the child ids they produce."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from harness.errors import SpaceError

CROSSOVER_MODES = ("random", "layer", "weighted")
QUANTIZATION_MODES = ("none", "ptq_dynamic", "ptq_static", "qat_float")
TEACHERS = ("a", "b", "both")  # "both": the mean of the two parents' soft targets
DEVICES = ("cpu", "cuda")


def check_name(kind: str, value: str, known: Iterable[str]) -> str:
    known = tuple(known)
    if value not in known:
        close = difflib.get_close_matches(value, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpaceError(f"unknown {kind} {value!r}; known: {', '.join(known)}{hint}")
    return value



@dataclass(frozen=True, slots=True)
class Recipe:
    """One crossover recipe: ``alpha`` is P(A) for random, the A weight for weighted, unused for layer."""

    mode: str
    alpha: float = 0.5
    seed: int | None = None

    def __post_init__(self) -> None:
        check_name("crossover mode", self.mode, CROSSOVER_MODES)
        if not 0.0 <= self.alpha <= 1.0:
            raise SpaceError(f"alpha must be in [0, 1], got {self.alpha!r}; pick a value such as 0.3, 0.5 or 0.7")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Regime:
    """A named fine-tune hyper-parameter set (seed §4). T, clipping and the loss are fixed harness-wide."""

    name: str
    epochs: int
    lr: float
    batch_size: int = 32
    val_fraction: float = 0.1
    seed: int = 42
    quantization_applied: str = "none"

    def __post_init__(self) -> None:
        check_name("quantization_applied", self.quantization_applied, QUANTIZATION_MODES)
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or not 0.0 <= self.val_fraction < 1.0:
            raise SpaceError(
                f"regime {self.name!r} needs epochs >= 1, batch_size >= 1, lr > 0 and val_fraction in [0, 1); "
                f"got epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}, val_fraction={self.val_fraction}"
            )

    @property
    def qat(self) -> bool:
        return self.quantization_applied != "none"

    @property
    def batches(self) -> tuple[int, float, int, str]:
        """Regimes with equal ``batches`` see the same split, batch order and dropout masks, epoch by epoch (all
        drawn from ``seed``); they differ only in learning rate and length, so their children can train together."""
        return (self.batch_size, self.val_fraction, self.seed, self.quantization_applied)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


REGIMES: dict[str, Regime] = {
    r.name: r
    for r in (
        Regime("short", epochs=5, lr=1e-3),
        Regime("medium", epochs=10, lr=5e-4),
        Regime("long", epochs=20, lr=1e-4),
        Regime("lr_high", epochs=5, lr=5e-3),
        Regime("short_qat", epochs=5, lr=1e-4, batch_size=16, quantization_applied="ptq_dynamic"),
    )
}

_DEFAULT_RECIPES = (
    Recipe("random", 0.5, 0),
    Recipe("random", 0.5, 1),
    Recipe("random", 0.5, 2),
    Recipe("layer"),
    Recipe("weighted", 0.3),
    Recipe("weighted", 0.5),
    Recipe("weighted", 0.7),
)
_MINIMAL_RECIPES = (Recipe("random", 0.5, 0), Recipe("layer"), Recipe("weighted", 0.5))

# name -> (recipes, regime names), in the exact order of seed §5 / reference §5.3.
SPACES: dict[str, tuple[tuple[Recipe, ...], tuple[str, ...]]] = {
    "smoke": (_MINIMAL_RECIPES, ("short",)),
    "minimal": (_MINIMAL_RECIPES, ("short", "medium", "long")),
    "default": (_DEFAULT_RECIPES, ("short", "long")),
    "minimal-qat": (_MINIMAL_RECIPES, ("short", "short_qat", "long")),
    "default-qat": (_DEFAULT_RECIPES, ("short", "long", "short_qat")),
    "extended": (_DEFAULT_RECIPES, ("short", "medium", "long", "lr_high")),
}
SPACE_NAMES = (*SPACES, "custom")

# Custom-space defaults, as the established CLI's.
CUSTOM_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "modes": CROSSOVER_MODES,
    "alphas": (0.3, 0.5, 0.7),
    "seeds": (0, 1, 2),
    "regimes": ("short", "long"),
}


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One point of the grid: run index (position in recipe-major order), recipe and regime."""

    index: int
    recipe: Recipe
    regime: Regime

    @property
    def child_id(self) -> str:
        return child_id(self.index, self.recipe, self.regime.name)


def child_id(index: int, recipe: Recipe, regime_name: str) -> str:
    """The established id, e.g. ``000_random_a0p50_s0_short`` (unused alpha shown, None seed as ``sNone``)."""
    alpha = f"{recipe.alpha:.2f}".replace(".", "p")
    return f"{index:03d}_{recipe.mode}_a{alpha}_s{recipe.seed}_{regime_name}"


def custom_recipes(modes: Sequence[str], alphas: Sequence[float], seeds: Sequence[int]) -> list[Recipe]:
    """Recipes in the established CLI's order: modes as given; random = seed-major × alpha; weighted × alpha."""
    recipes: list[Recipe] = []
    for mode in modes:
        check_name("crossover mode", mode, CROSSOVER_MODES)
        if mode == "layer":
            recipes.append(Recipe("layer"))
        elif mode == "random":
            recipes.extend(Recipe("random", a, s) for s in seeds for a in alphas)
        else:
            recipes.extend(Recipe("weighted", a) for a in alphas)
    return recipes


def build_space(
    name: str,
    *,
    modes: Sequence[str] | None = None,
    alphas: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    regimes: Sequence[str] | None = None,
    max_runs: int | None = None,
    extra_regimes: dict[str, Regime] | None = None,
) -> list[ChildSpec]:
    """Enumerate a space recipe-major (each recipe × every regime), then cut to ``max_runs``."""
    check_name("search space", name, SPACE_NAMES)
    known_regimes = {**REGIMES, **(extra_regimes or {})}
    if name == "custom":
        recipes: Sequence[Recipe] = custom_recipes(
            modes or CUSTOM_DEFAULTS["modes"], alphas or CUSTOM_DEFAULTS["alphas"], seeds or CUSTOM_DEFAULTS["seeds"]
        )
        regime_names: Sequence[str] = regimes or CUSTOM_DEFAULTS["regimes"]
    else:
        if any(v is not None for v in (modes, alphas, seeds, regimes)):
            raise SpaceError(f"modes/alphas/seeds/regimes only apply to the custom space, not {name!r}")
        recipes, regime_names = SPACES[name]
    for r in regime_names:
        check_name("fine-tune regime", r, known_regimes)
    if max_runs is not None and max_runs < 1:
        raise SpaceError(f"max_runs must be >= 1, got {max_runs}")
    pairs = [(rec, known_regimes[r]) for rec in recipes for r in regime_names]
    return [ChildSpec(i, rec, reg) for i, (rec, reg) in enumerate(pairs[:max_runs])]
