"""Search-wide settings (not part of a child's recipe or regime), each checked here and nowhere else.

Every check raises :class:`~harness.core.errors.HarnessError` with ``field`` set to the setting's name, so a front end
(the plugin) can name the option as its user wrote it. :func:`parse` turns option text into a typed value with the
same kind of error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from harness.core.errors import HarnessError
from harness.core.registry import check_name
from harness.train.teachers import TEACHERS

DEVICES = ("cpu", "cuda")
MAX_EPISODES = 100_000
MAX_THREADS = 1024


def parse(field: str, text: str, kind: type) -> Any:
    """``text`` as ``kind`` (int, float, str); a one-line HarnessError naming ``field`` otherwise.

    Integers are decimal (``1.5`` and ``1e3`` are not integers); floats must be finite.
    """
    raw = str(text).strip()
    if kind is str:
        if not raw:
            raise HarnessError(f"{field}: an empty value; give a value or leave the setting out", field=field)
        return raw
    try:
        value = int(raw, 10) if kind is int else float(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise HarnessError(f"{raw!r} is not {what}", field=field) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise HarnessError(f"{raw!r} is not a finite number", field=field)
    return value


THRESHOLD_FORMS = ("X: an absolute primary in [0, 1] (0 disables the gate)",
                   "bound:F: F times the blend bound (1 + agree_ab) / 2, the best primary any child can reach "
                   "(F in (0, 1]; bound:0.8 = four fifths of it)",
                   "parents:+D: the parents' agreement agree_ab plus D (D in [-1, 1]; parents:+0.02, parents:-0.05)")
_GATE = "degenerate_threshold"


def threshold_value(spec: float | str) -> float | str:
    """A degenerate-threshold as given (a number, or ``bound:F`` / ``parents:+D``): numbers as floats, a relative
    form as its text; a one-line HarnessError otherwise."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        value = float(spec)
    else:
        raw = str(spec).strip()
        base, sep, arg = raw.partition(":")
        if sep:
            _relative(base.strip(), arg.strip(), raw)
            return raw
        try:
            value = float(raw)
        except ValueError:
            raise HarnessError(f"{raw!r} is neither a number nor a relative form; give one of: "
                               + "; ".join(THRESHOLD_FORMS), field=_GATE) from None
    _require(_real(value) and 0.0 <= value <= 1.0, _GATE, f"degenerate threshold {value!r} is outside [0, 1]; "
             "0 disables the gate, bound:0.8 fails children under 80 % of the best primary these parents allow")
    return value


def _relative(base: str, arg: str, raw: str) -> tuple[str, float]:
    ranges = {"bound": (0.0, 1.0), "parents": (-1.0, 1.0)}
    if base not in ranges:
        raise HarnessError(f"{raw!r}: unknown relative form {base!r}; give one of: " + "; ".join(THRESHOLD_FORMS),
                           field=_GATE)
    try:
        value = float(arg)
    except ValueError:
        raise HarnessError(f"{raw!r}: {arg!r} is not a number; e.g. bound:0.8 or parents:+0.02", field=_GATE) from None
    low, high = ranges[base]
    _require(math.isfinite(value) and (low < value <= high if base == "bound" else low <= value <= high), _GATE,
             f"{raw!r}: {value!r} is outside {'(0, 1]' if base == 'bound' else '[-1, 1]'}")
    return base, value


def resolve_threshold(spec: float | str, agree_ab: float) -> float:
    """The primary a child must reach, once the parents' agreement is known. An absolute threshold above the
    blend bound (1 + agree_ab) / 2 is refused: no child could pass it."""
    bound = (1.0 + agree_ab) / 2.0
    if isinstance(spec, str):
        head, _, arg = spec.partition(":")
        base, value = _relative(head.strip(), arg.strip(), spec)
        return value * bound if base == "bound" else agree_ab + value
    _require(spec <= bound, _GATE, f"degenerate threshold {spec} is above the blend bound {bound:.4f} of these "
             f"parents ((1 + agree_ab) / 2, agree_ab {agree_ab:.4f}): no child can reach it; give at most "
             f"{bound:.4f}, or a relative form such as bound:0.8")
    return float(spec)


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise HarnessError(message, field=field)


@dataclass(frozen=True, slots=True)
class Settings:
    """Search-wide knobs: the holdout, the teacher, the degenerate gate, returns, the split, device and threads."""

    holdout: float = 0.2
    teacher: str = "a"
    degenerate_threshold: float | str = 0.0  # a number or a relative form (:data:`THRESHOLD_FORMS`)
    env_id: str | None = None
    episodes: int = 0
    # Return episode i starts from reset(seed=episode_seed + i): past every seed the embedded parents were trained,
    # selected or measured on and their states were gathered from (metadata.json: 10,000-20,003, 500,000+,
    # 1,000,000+, 2,000,000+, 3,000,000+), and before the large evaluation's (harness.inputs.evalbuffer, 5,000,000+).
    episode_seed: int = 4_000_000
    split_seed: int = 0
    chunk_size: int = 65_536
    device: str = "cpu"
    threads: int = 1

    def __post_init__(self) -> None:
        _require(_real(self.holdout) and 0.0 <= self.holdout < 1.0, "holdout",
                 f"holdout {self.holdout!r} is outside [0, 1); 0.2 holds out a fifth, 0 evaluates on all states")
        check_name("teacher", self.teacher, TEACHERS.names(), field="teacher")
        threshold_value(self.degenerate_threshold)
        _require(self.env_id is None or (isinstance(self.env_id, str) and self.env_id.strip() != ""), "env_id",
                 "environment id is empty; pass a gymnasium id such as LunarLander-v3, or --crossover-episodes 0")
        for name, value, high in (("episodes", self.episodes, MAX_EPISODES), ("episode_seed", self.episode_seed, 2**31),
                                  ("split_seed", self.split_seed, 2**63), ("threads", self.threads, MAX_THREADS),
                                  ("chunk_size", self.chunk_size, 2**31)):
            low = 1 if name in ("threads", "chunk_size") else 0
            _require(_int(value) and low <= value <= high, name, f"{name.replace('_', ' ')} {value!r} is outside "
                     f"[{low}, {high}]")
        _require(self.device in DEVICES, "device", f"device {self.device!r} is not one of {', '.join(DEVICES)}")

    def check_device(self) -> None:
        """The device is usable here (imports torch: call it where torch is imported anyway)."""
        if self.device == "cuda":
            import torch

            _require(torch.cuda.is_available(), "device",
                     f"device 'cuda' was asked for but torch.cuda.is_available() is False (torch {torch.__version__});"
                     " use cpu or install a CUDA build of torch")

    def gate(self, agree_ab: float) -> float:
        """The degenerate threshold for parents that agree on ``agree_ab`` of the held-out states."""
        return resolve_threshold(threshold_value(self.degenerate_threshold), agree_ab)

    @property
    def returns(self) -> bool:
        return bool(self.env_id) and self.episodes > 0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
