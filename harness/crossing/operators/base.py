"""What a crossover operator is: a function of two parent state dicts, its declared parameters, and the registry.

An operator declares each parameter once (:class:`Param`: name, type, default, range, how it shows in a child
id, its default values in the custom space). Everything else derives from the declarations: the range checks of a
recipe, the custom space's grid, the child id, the ``--help`` text and the leaderboard's columns.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from harness.core.errors import CrossoverError
from harness.core.registry import Registry

StateDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of an operator.

    ``kind`` is ``float``, ``int`` or ``str``; ``low``/``high`` bound numbers (inclusive); ``optional`` allows
    ``None`` (a seed of None draws OS entropy). ``key`` prefixes the value in a child id; ``fmt`` formats it
    (``.2f`` for alpha, as AgentFarm's ids). ``grid`` is the custom space's default values and ``knob`` the
    plural name of the custom-space option that sets them (``alphas`` -> ``--crossover-alphas``).

    ``per_layer``: the value is one number per layer of the parents (:func:`harness.crossing.operators.blocks.
    layer_names`), each in ``[low, high]``; a search expands it into one parameter per layer (:meth:`layer_keys`).
    Its length is known once the parents are (:meth:`Operator.check_layers`); ``default`` None makes it required.
    """

    name: str
    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    optional: bool = False
    key: str = ""
    fmt: str = "g"
    grid: tuple[Any, ...] = ()
    knob: str = ""
    help: str = ""
    per_layer: bool = False

    def check(self, value: Any, operator: str) -> Any:
        """``value`` converted to ``kind``; a one-line CrossoverError naming the operator, parameter and range."""
        if value is None and self.optional:
            return None
        where = f"{self.name} of the {operator} operator"
        if self.per_layer:
            if isinstance(value, str) or not isinstance(value, Sequence) or not value:
                raise CrossoverError(f"{where} needs one value per layer of the parents in {self._range()}, got "
                                     f"{value!r}; pass e.g. {self.name}=0.2/0.5/0.8 for parents of 3 layers")
            return tuple(self._number(v, where) for v in value)
        return self._number(value, where)

    def _number(self, value: Any, where: str) -> Any:
        if self.kind is str:
            if not isinstance(value, str) or not value:
                raise CrossoverError(f"{where} must be a non-empty string, got {value!r}")
            return value
        # bool is an int subclass, but True is a caller's bug, not a seed or an alpha.
        if isinstance(value, bool) or not isinstance(value, Integral if self.kind is int else Real):
            raise CrossoverError(f"{where} must be {'an integer' if self.kind is int else 'a number'}, "
                                 f"got {value!r}{self._range_hint()}")
        number = self.kind(value)
        if isinstance(number, float) and not math.isfinite(number):
            raise CrossoverError(f"{where} must be finite, got {value!r}{self._range_hint()}")
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise CrossoverError(f"{where} must be in {self._range()}, got {value!r}{self._range_hint()}")
        return number

    def _range(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"[{low}, {high}]"

    def _range_hint(self) -> str:
        example = self.grid[0] if self.grid else self.default
        return f"; pass e.g. {self.name}={example!r}" if example is not None else ""

    def fragment(self, value: Any) -> str:
        """How ``value`` shows in a child id: ``a0p50`` (alpha 0.5), ``s0`` (seed 0), ``sNone``; a per-layer
        value as its numbers joined by ``-`` (``la0p20-0p50-0p80``)."""
        if self.per_layer and value is not None:
            return f"{self.key or self.name}{'-'.join(self._text(v) for v in value)}"
        return f"{self.key or self.name}{self._text(value)}"

    def _text(self, value: Any) -> str:
        text = "None" if value is None else format(value, self.fmt) if self.kind is not str else value
        return str(text).replace(".", "p").replace("-", "m")

    def layer_keys(self, count: int) -> tuple[str, ...]:
        """The names a search gives a per-layer parameter's ``count`` numbers: ``layer_alphas_l0``, ..."""
        return tuple(f"{self.name}_l{i}" for i in range(count))


@dataclass(frozen=True, slots=True)
class Operator:
    """A registered crossover operator: ``fn(sd_a, sd_b, **params) -> child state dict``."""

    name: str
    fn: Callable[..., StateDict]
    params: tuple[Param, ...]
    description: str
    control: bool = False  # not a crossover: a baseline a crossover must beat (harness.crossing.operators.controls)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared parameter, from ``given`` or its default, checked; an undeclared one is an error."""
        unknown = sorted(set(given) - {p.name for p in self.params})
        if unknown:
            known = ", ".join(p.name for p in self.params) or "none"
            raise CrossoverError(f"the {self.name} operator takes no parameter {', '.join(map(repr, unknown))} "
                                 f"(its parameters: {known})")
        return {p.name: p.check(given.get(p.name, p.default), self.name) for p in self.params}

    def check_layers(self, params: Mapping[str, Any], sd: Mapping[str, Any]) -> None:
        """Each per-layer parameter of ``params`` has one value per layer of parents like ``sd`` (tensors or their
        metadata); else a one-line CrossoverError (``field``: the parameter) with the expected length."""
        from harness.crossing.operators.blocks import layer_names

        declared = [p for p in self.params if p.per_layer and params.get(p.name) is not None]
        names = layer_names(sd) if declared else []
        for p in declared:
            value = params[p.name]
            if len(value) != len(names):
                example = "/".join(["0.5"] * len(names))
                raise CrossoverError(
                    f"{p.name} of the {self.name} operator has {len(value)} values "
                    f"({'/'.join(format(v, 'g') for v in value)}) but the parents have {len(names)} layers "
                    f"({', '.join(names)}); pass {len(names)} values, e.g. {example}", field=p.name)

    def __call__(self, sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], **params: Any) -> StateDict:
        resolved = self.resolve(params)
        self.check_layers(resolved, sd_a)
        return self.fn(sd_a, sd_b, **resolved)


OPERATORS: Registry[Operator] = Registry("crossover operator", group="pytest_crossover.operators")


def register_operator(name: str, *, description: str, params: Sequence[Param] = (), replace: bool = False,
                      control: bool = False) -> Callable[[Callable[..., StateDict]], Callable[..., StateDict]]:
    """Register the decorated ``fn(sd_a, sd_b, **params) -> state dict`` as crossover operator ``name``.

    ``params`` are declared in custom-space grid order, outermost first. The function receives every declared
    parameter as a keyword, already range-checked, and two parents whose keys, shapes and kinds match
    (:func:`harness.networks.architecture.check_parents`); it returns a new state dict that shares no storage with them
    (:func:`child_value` copies a tensor into a child). Returns ``fn`` unchanged.
    """

    def wrap(fn: Callable[..., StateDict]) -> Callable[..., StateDict]:
        OPERATORS.register(name, Operator(name, fn, tuple(params), description, control), replace=replace)
        return fn

    return wrap


# The two parameters of AgentFarm's modes. Every child id shows an alpha and a seed slot, as AgentFarm's
# ids do (``006_layer_a0p50_sNone_short``); an operator that takes neither shows these defaults.
ALPHA = Param("alpha", float, 0.5, low=0.0, high=1.0, key="a", fmt=".2f", grid=(0.3, 0.5, 0.7), knob="alphas",
              help="weight or probability of parent A")
SEED = Param("seed", int, None, low=0, optional=True, key="s", fmt="d", grid=(0, 1, 2), knob="seeds",
             help="seed of the operator's random draws (None: OS entropy)")
ID_SLOTS = (ALPHA, SEED)


def child_value(value: Any) -> Any:
    """A fresh child entry: float32 for float/quantized tensors, same dtype for integer ones, deep copy otherwise."""
    import torch

    if not isinstance(value, torch.Tensor):
        return copy.deepcopy(value)
    value = value.detach()
    if value.is_quantized:
        # dequantize() allocates a new float32 tensor, so no extra copy is needed.
        return value.dequantize().cpu()
    if value.is_floating_point():
        return value.to(device="cpu", dtype=torch.float32, copy=True)
    # Integer/bool buffers (e.g. BatchNorm's num_batches_tracked) keep their dtype: casting them to float and
    # blending them (as AgentFarm does) turns counters into meaningless fractions.
    return value.to(device="cpu", copy=True)


def float32(value: Any) -> Any:
    """A float32 CPU view or copy of a float or quantized tensor (for arithmetic; may alias the parent)."""
    value = value.detach()
    if value.is_quantized:
        value = value.dequantize()
    return value.cpu().float()
