"""Loading parent checkpoints (state dicts) safely, with one-line errors naming the file.

Parents load with ``torch.load(weights_only=True)``: a full pickle (a saved ``nn.Module``) can run
arbitrary code when unpickled, so it is refused unless the caller opts in. ``peek_parent`` runs the same
checks on a checkpoint's tensor metadata without importing torch (harness.inputs.checkpoint_meta); this module
imports torch only when a checkpoint is actually loaded. Both rename a plain ``nn.Sequential`` state dict's keys to
the built-in family that computes the same function (:mod:`harness.networks.sequential`).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.errors import CheckpointError, HarnessError, existing_file, first_line
from harness.inputs.bounded import read_bounded
from harness.inputs.checkpoint_meta import TensorMeta, read_meta
from harness.inputs.states import load_states
from harness.networks.architecture import check_parents, is_tensor
from harness.networks.sequential import convert

if TYPE_CHECKING:
    import torch

__all__ = ["check_parents", "file_sha256", "load_parent", "load_states", "peek_parent", "peek_parent_sha",
           "read_parent"]

# Keys under which training scripts commonly nest the model's state dict next to optimizer state etc.
_NESTED_KEYS = ("state_dict", "model_state_dict")
_UNSAFE_FLAG = "allow_unsafe_unpickle=True (plugin: --crossover-allow-unsafe-unpickle)"


def _read(p: Path) -> bytes:
    return read_bounded(p, "parent checkpoint", CheckpointError,
                        "save the network's state dict alone: torch.save(model.state_dict(), path)")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (recorded so a leaderboard names its exact parents)."""
    p = existing_file(path, HarnessError, "file", "pass the path of an existing file")
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_parent(path: str | os.PathLike[str], *, allow_unsafe_unpickle: bool = False) -> dict[str, torch.Tensor]:
    """Load a parent checkpoint as a plain ``{name: tensor}`` dict on the CPU.

    Accepts a ``.pt``/``.pth`` state dict (``torch.save(model.state_dict())``, or AgentFarm's plain
    dict of tensors), optionally nested under ``"state_dict"`` or ``"model_state_dict"``, and ``.safetensors``
    when the ``safetensors`` package is installed. A plain ``nn.Sequential`` of Linear, ReLU (and optionally
    LayerNorm and Dropout) layers, under any key prefix, comes back under the keys of the built-in family that
    computes the same function (:func:`harness.networks.sequential.convert`). A full pickled ``nn.Module`` is
    refused unless ``allow_unsafe_unpickle=True``, because unpickling runs arbitrary code from the file; with the
    opt-in its ``state_dict()`` is returned. Any other problem raises :class:`CheckpointError` naming the path and
    the fix.
    """
    return read_parent(path, allow_unsafe_unpickle=allow_unsafe_unpickle)[0]


def read_parent(path: str | os.PathLike[str], *,
                allow_unsafe_unpickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """:func:`load_parent`, and the sha256 of exactly the bytes it loaded (one read of the file)."""
    p = existing_file(path, CheckpointError, "parent checkpoint", "pass the path of a .pt state dict")
    data = _read(p)
    if p.suffix.lower() == ".safetensors":
        payload = _read_safetensors(data, p)
    else:
        payload = _torch_load(data, p, allow_unsafe_unpickle)
    from torch import nn

    if isinstance(payload, nn.Module):
        _check_activations(payload, p)
        payload = payload.state_dict()
    return _state_dict_of(payload, p), hashlib.sha256(data).hexdigest()


def _check_activations(module: Any, p: Path) -> None:
    """A pickled module shows what its state dict cannot: a Sequential whose parameter-free layers are not ReLU
    and Dropout would convert to a different function (harness.networks.sequential), so it is refused."""
    from torch import nn

    from harness.networks.sequential import convertible

    if not isinstance(module, nn.Sequential) and not any(isinstance(m, nn.Sequential) for m in module.children()):
        return  # a module of its own kind: a registered family decides
    free = {type(m).__name__ for m in module.modules() if not any(True for _ in m.children())
            and not any(True for _ in m.parameters(recurse=False))}
    other = sorted(free - {"ReLU", "Dropout", "Identity"})
    if other and not convertible(module.state_dict()):
        raise CheckpointError(f"parent checkpoint {str(p)!r} has {', '.join(other)} layers, but a plain Sequential "
                              "is converted as Linear, ReLU and Dropout layers; use ReLU, or register a network "
                              "family for your architecture (README: Your own networks)")


def peek_parent(path: str | os.PathLike[str]) -> dict[str, TensorMeta] | None:
    """``load_parent``'s checks without torch: the parent's tensor metadata, or ``None`` when only
    ``torch.load`` can tell (not torch's zip format, a full pickle, ``.safetensors``, a damaged archive)."""
    return peek_parent_sha(path)[0]


def peek_parent_sha(path: str | os.PathLike[str]) -> tuple[dict[str, TensorMeta] | None, str]:
    """:func:`peek_parent`, and the sha256 of exactly the bytes it read (one read of the file)."""
    p = existing_file(path, CheckpointError, "parent checkpoint", "pass the path of a .pt state dict")
    data = _read(p)
    digest = hashlib.sha256(data).hexdigest()
    if p.suffix.lower() == ".safetensors":
        return None, digest
    payload = read_meta(data)
    return (None if payload is None else _state_dict_of(payload, p)), digest


def _state_dict_of(payload: Any, p: Path) -> dict[str, Any]:
    if isinstance(payload, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if not isinstance(payload, Mapping):
        raise CheckpointError(
            f"parent checkpoint {str(p)!r} holds a {type(payload).__name__}, not a state dict; "
            "save it with torch.save(model.state_dict(), path)"
        )
    if not payload:
        raise CheckpointError(
            f"parent checkpoint {str(p)!r} is an empty state dict; save a trained model's state_dict()"
        )
    bad = [repr(k) for k, v in payload.items() if not isinstance(k, str) or not is_tensor(v)]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(
            f"parent checkpoint {str(p)!r} has non-tensor entries ({shown}); save only "
            "model.state_dict(), not optimizer state or metadata"
        )
    return dict(convert(payload))


def _torch_load(data: bytes, p: Path, allow_unsafe_unpickle: bool) -> Any:
    try:
        return _quiet_load(data, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _corrupt(p, exc) from exc
        if not allow_unsafe_unpickle:
            raise _refused(p, str(exc)) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged files
        raise _corrupt(p, exc) from exc
    try:
        return _quiet_load(data, weights_only=False)
    except (ImportError, AttributeError) as exc:  # the pickle names a class that cannot be imported
        raise CheckpointError(
            f"parent checkpoint {str(p)!r} could not be unpickled even with "
            f"allow_unsafe_unpickle ({type(exc).__name__}: {first_line(exc)}); make the "
            "classes it references importable, or re-save it as a state_dict()"
        ) from exc
    except Exception as exc:
        raise _corrupt(p, exc) from exc


def _quiet_load(data: bytes, *, weights_only: bool) -> Any:
    # torch warns about its own internals while loading (TypedStorage for quantized tensors, pickle protocol 4);
    # the user can do nothing about them, and a real problem surfaces as an exception anyway.
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=weights_only)


def _refused(p: Path, reason: str) -> CheckpointError:
    """The weights-only unpickler's refusal, as one line that names the opt-in and why it is dangerous."""
    found = re.search(r"GLOBAL ([\w.]+)", reason)
    if found:
        what = f"is a full pickle, not a weights-only state dict (it references {found.group(1)})"
    else:
        # "Unsupported operand N": a pickle protocol the safe loader lacks (e.g. a module saved with
        # pickle_protocol=4), or a damaged file; only the unsafe loader can tell which.
        op = re.search(r"Unsupported [^\n.]*", reason)
        detail = op.group(0).strip() if op else "weights-only load failed"
        what = f"cannot be loaded weights-only ({detail}): it is damaged or a full pickle"
    return CheckpointError(
        f"parent checkpoint {str(p)!r} {what}; unpickling it runs arbitrary code from the file, so it is refused: "
        f"re-save it with torch.save(model.state_dict(), path), or, only if you trust the file, pass {_UNSAFE_FLAG}"
    )


def _read_safetensors(data: bytes, p: Path) -> Any:
    try:
        from safetensors.torch import load  # type: ignore[import-not-found,unused-ignore]  # optional
    except ImportError:
        raise CheckpointError(
            f"parent checkpoint {str(p)!r} is .safetensors but the safetensors package is not "
            "installed; pip install safetensors, or pass a .pt state dict"
        ) from None
    try:
        return load(data)
    except Exception as exc:
        raise _corrupt(p, exc) from exc


def _corrupt(p: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"parent checkpoint {str(p)!r} is truncated or not a torch checkpoint "
        f"({type(exc).__name__}: {first_line(exc)}); re-save it with "
        "torch.save(model.state_dict(), path)"
    )
