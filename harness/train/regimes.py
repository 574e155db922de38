"""Fine-tune regimes: named hyper-parameter sets, registered like operators (:data:`REGIMES`).

The built-ins are AgentFarm's presets (short, medium, long, lr_high, short_qat). A user adds one with
:func:`register_regime` or through the entry-point group ``pytest_crossover.regimes``; the plugin's
``--crossover-define-regime NAME:epochs=..,lr=..`` builds one from :data:`REGIME_FIELDS`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from harness.core.errors import SpaceError
from harness.core.registry import Registry, check_name
from harness.train.schedule import LR_SCHEDULES

NAME_MAX = 64  # a defined regime's name: part of each of its children's ids (folder names)
_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{NAME_MAX}}}")
FLOAT32_MAX = 3.4028234663852886e38  # a learning rate beyond it is inf in float32
QUANTIZATION_MODES = ("none", "ptq_dynamic", "ptq_static", "qat_float")  # the last three all mean int8 QAT
GRAD_CLIP = 1.0  # the clipping norm of every regime that does not set its own
# The fields a regime definition may set, their types and what each means (--help and the README derive from this).
REGIME_FIELDS: dict[str, tuple[type, str]] = {
    "epochs": (int, "passes over the fine-tune states (>= 1)"),
    "lr": (float, "Adam learning rate (> 0)"),
    "batch_size": (int, "rows per Adam step (>= 1)"),
    "val_fraction": (float, "share of the fine-tune states used to pick the best epoch, in [0, 1)"),
    "seed": (int, "seed of the validation split, batch order and dropout masks (>= 0)"),
    "quantization_applied": (str, "none, or int8 weight fake-quant fine-tuning: " + ", ".join(QUANTIZATION_MODES[1:])),
    "patience": (int, "stop a child after this many epochs without a better validation score (0: never)"),
    "lr_schedule": (str, "the learning rate over the steps: constant, or cosine (lr·½(1+cos(πt/T)), t the step, "
                         "T = epochs × steps per epoch)"),
    "dropout": (float, "dropout rate while fine-tuning, in [0, 1) (default: the network's own, 0.1 for the "
                       "built-in families)"),
    "grad_clip": (float, f"largest L2 norm of a child's whole gradient per step (>= 0; 0: no clipping; default "
                         f"{GRAD_CLIP:g})"),
}
# Fields a record shows only off their defaults, so the record of a regime that leaves them keeps its shape.
_LATER = {"lr_schedule": "constant", "dropout": None, "grad_clip": GRAD_CLIP}


@dataclass(frozen=True, slots=True)
class Regime:
    """A named fine-tune hyper-parameter set. T and the loss are fixed harness-wide (harness.train.finetune); the
    learning-rate schedule, dropout and clipping are the regime's (harness.train.schedule)."""

    name: str
    epochs: int
    lr: float
    batch_size: int = 32
    val_fraction: float = 0.1
    seed: int = 42
    quantization_applied: str = "none"
    patience: int = 0  # epochs without a better validation score before a child stops; 0: never stops early
    lr_schedule: str = "constant"
    dropout: float | None = None  # None: the network's own rate
    grad_clip: float = GRAD_CLIP  # 0: no clipping

    def __post_init__(self) -> None:
        check_name("quantization_applied", self.quantization_applied, QUANTIZATION_MODES)
        check_name("lr_schedule", self.lr_schedule, LR_SCHEDULES.names(), field="regime")
        problems = []
        for field, value, ok in (
            ("epochs", self.epochs, _is_int(self.epochs) and self.epochs >= 1),
            ("batch_size", self.batch_size, _is_int(self.batch_size) and self.batch_size >= 1),
            ("seed", self.seed, _is_int(self.seed) and 0 <= self.seed < 2**63),
            ("patience", self.patience, _is_int(self.patience) and 0 <= self.patience <= self.epochs),
            ("lr", self.lr, _is_real(self.lr) and 0 < self.lr <= FLOAT32_MAX),
            ("val_fraction", self.val_fraction, _is_real(self.val_fraction) and 0.0 <= self.val_fraction < 1.0),
            ("dropout", self.dropout, self.dropout is None or _is_real(self.dropout) and 0.0 <= self.dropout < 1.0),
            ("grad_clip", self.grad_clip, _is_real(self.grad_clip) and 0.0 <= self.grad_clip <= FLOAT32_MAX),
        ):
            if not ok:
                problems.append(f"{field}={value!r}")
        if problems:
            raise SpaceError(
                f"regime {self.name!r} has {', '.join(problems)}; it needs epochs >= 1, batch_size >= 1, "
                "0 < lr <= float32's largest, val_fraction in [0, 1), 0 <= seed < 2**63, 0 <= patience <= epochs, "
                "dropout in [0, 1) and a finite grad_clip >= 0 (0: off)",
                field="regime")

    @property
    def qat(self) -> bool:
        return self.quantization_applied != "none"

    @property
    def batches(self) -> tuple[int, float, int, str, float | None]:
        """Regimes with equal ``batches`` see the same split, batch order and dropout masks, epoch by epoch (all
        drawn from ``seed``, the masks at the ``dropout`` rate); they differ only in learning rate, its schedule,
        clipping and length (each a child's own row), so their children can train together."""
        return (self.batch_size, self.val_fraction, self.seed, self.quantization_applied, self.dropout)

    def describe(self) -> str:
        quant = "" if not self.qat else ", int8 QAT"
        stop = f", early stop after {self.patience}" if self.patience else ""
        extra = "" if self.lr_schedule == "constant" else f", {self.lr_schedule} lr"
        extra += "" if self.dropout is None else f", dropout {self.dropout:g}"
        if self.grad_clip != GRAD_CLIP:
            extra += f", clip {self.grad_clip:g}" if self.grad_clip else ", no clipping"
        return f"{self.epochs} epochs, lr {self.lr:g}, batch {self.batch_size}{quant}{stop}{extra}"

    def to_dict(self) -> dict[str, Any]:
        """Every field; the later ones only when set (a record of a regime without them reads as before)."""
        return {k: v for k, v in asdict(self).items() if k not in _LATER or v != _LATER[k]}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


REGIMES: Registry[Regime] = Registry("fine-tune regime", group="pytest_crossover.regimes")


def register_regime(regime: Regime, *, replace: bool = False) -> Regime:
    """Register ``regime`` under its name; returns it."""
    return REGIMES.register(regime.name, regime, replace=replace)


for _regime in (
    Regime("short", epochs=5, lr=1e-3),
    Regime("medium", epochs=10, lr=5e-4),
    Regime("long", epochs=20, lr=1e-4),
    Regime("lr_high", epochs=5, lr=5e-3),
    Regime("short_qat", epochs=5, lr=1e-4, batch_size=16, quantization_applied="ptq_dynamic"),
    # Regimes that converge: early stopping on the validation split keeps their cost bounded.
    Regime("xlong", epochs=50, lr=1e-3, patience=5),
    Regime("xlong_lo", epochs=50, lr=3e-4, patience=5),
    # The fine-tune loop that moved a child's score most: a long cosine decay, batch 64, clipping, no dropout;
    # early stopping keeps it affordable.
    Regime("tuned", epochs=200, lr=1e-3, batch_size=64, patience=10, lr_schedule="cosine", dropout=0.0),
):
    register_regime(_regime)


def parse_regime(definition: str, *, builtin: tuple[str, ...] | None = None) -> Regime:
    """``NAME:epochs=5,lr=1e-3[,batch_size=32,...]`` -> Regime; a bad definition raises a one-line SpaceError.

    A definition may not reuse a registered regime's name (``builtin``, default: every registered name).
    """
    fields = ",".join(f"{k}={'5' if k == 'epochs' else '1e-3' if k == 'lr' else '…'}" for k in REGIME_FIELDS)
    fix = f"write NAME:{fields}"
    name, sep, body = definition.strip().partition(":")
    name = name.strip()
    if not sep or not name:
        raise SpaceError(f"{definition!r} has no NAME: prefix; {fix}", field="define_regime")
    if not _NAME.fullmatch(name):  # a regime's name is part of its children's folder names, in any locale
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise SpaceError(f"regime name {shown!r} ({len(name)} characters) must be 1 to {NAME_MAX} ASCII letters, "
                         "digits, _ or -; rename it", field="define_regime")
    if name in (REGIMES.names() if builtin is None else builtin):
        raise SpaceError(f"{name!r} is a built-in regime; pick another name", field="define_regime")
    values: dict[str, Any] = {}
    for part in (p.strip() for p in body.split(",") if p.strip()):
        key, eq, text = part.partition("=")
        key = key.strip()
        if not eq or key not in REGIME_FIELDS:
            raise SpaceError(f"{part!r} in {definition!r} is not one of {', '.join(k + '=' for k in REGIME_FIELDS)}; "
                             f"{fix}", field="define_regime")
        if key in values:
            raise SpaceError(f"{key}= is given twice in {definition!r}; give each field once", field="define_regime")
        kind = REGIME_FIELDS[key][0]
        try:
            values[key] = kind(text.strip()) if kind is not int else int(text.strip(), 10)
        except ValueError:
            raise SpaceError(f"{text.strip()!r} is not a valid {key} in {definition!r}",
                             field="define_regime") from None
    missing = [k for k in ("epochs", "lr") if k not in values]
    if missing:
        raise SpaceError(f"{definition!r} lacks {', '.join(missing)}; {fix}", field="define_regime")
    try:
        return Regime(name, **values)
    except SpaceError as exc:
        raise SpaceError(str(exc), field="define_regime") from None
