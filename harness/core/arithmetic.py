"""Which CPU kernels compute: pinned, so that a child's metrics are the same bits on any x86-64 CPU.

torch picks its CPU kernels by the CPU it finds: ATen's vectorised kernels (``DEFAULT``, ``AVX2``, ``AVX512``), MKL's
BLAS branch (the matrix products of every Linear layer) and FBGEMM's int8 kernels. Each choice sums in another
order, so the same inputs give other metrics on another CPU (measured in docs/reliability.md). The pin names the
kernels that every x86-64 CPU with AVX2 runs (Intel since 2013, AMD since 2015): ATen's ``avx2`` kernels (its scalar
``default`` ones are as portable but made fine-tuning 1.7x slower: measured), MKL's ``AVX2`` branch in its ``STRICT``
mode (MKL's ``COMPATIBLE`` branch changes its sums with the thread count: measured), FBGEMM and oneDNN held to AVX2
(x86 int8 kernels need AVX2 anyway).

Each variable is read once by its library, at its first operation, so the pin is set in the environment before
any torch operation runs, in every process that computes (xdist workers start pytest, which pins, and inherit the
controller's environment). :func:`check` then compares what torch actually chose with the pin, so a process in
which something ran torch before the pin is refused instead of computing other numbers under the same name.
``native`` leaves the environment alone (each library picks by the CPU: faster, and the numbers are this CPU's);
its records name the CPU, so they are only compared with records of the same CPU model.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from harness.core.errors import HarnessError

# The portable arithmetic: each variable and its value.
PIN: Mapping[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # set to AVX512, it overrides MKL_CBWR (measured)
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}

# MKL's branch codes (mkl_service.h, MKL_CBWR_*), as ``mkl_cbwr_get`` answers them.
_MKL_BRANCH = {1: "AUTO", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
               10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
_STRICT = 0x10000


MODES = ("portable", "native")


def pin(environ: MutableMapping[str, str] | None = None) -> None:
    """Set the portable arithmetic in ``environ`` (``os.environ``), over any value there: the CPU must not choose."""
    env = os.environ if environ is None else environ
    env.update(PIN)


def requested(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The arithmetic the environment asks for, normalised (``None``: not set, so the library picks by CPU)."""
    env = os.environ if environ is None else environ
    out: dict[str, str | None] = {}
    for name in PIN:
        value = env.get(name)
        out[name] = None if value is None or not value.strip() else value.strip().replace(" ", "").upper()
    return out


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags (Linux; empty when unknown)."""
    return set((_cpuinfo("flags") or "").split())


def cpu_model() -> str | None:
    """The CPU's model name (Linux), which fixes the kernels each library picks when nothing is pinned."""
    return _cpuinfo("model name")


def _cpuinfo(key: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read(1 << 16)  # the first processor's block is at the start
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.split(":", 1)[0].strip() == key), None)


def session(mode: str, environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """What a session's numbers depend on besides its inputs and settings (the history fingerprint holds it):
    the mode and the variables; ``native`` adds the CPU model, whose kernels then decide."""
    out: dict[str, object] = {"mode": mode, "requested": requested(environ)}
    if mode != "portable":
        out["cpu"] = cpu_model()
    return out


def _mkl_branch() -> str | None:
    """MKL's conditional-numerical-reproducibility branch as MKL itself reports it (``None``: no MKL in torch)."""
    import torch

    lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        get = ctypes.CDLL(str(lib)).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
    code = int(get(-1))  # MKL_CBWR_ALL: the branch and its STRICT flag
    name = _MKL_BRANCH.get(code & ~_STRICT, str(code))
    return name + (",STRICT" if code & _STRICT else "")


def observed() -> dict[str, str | None]:
    """What this process's torch computes with (imports torch): ATen's kernels and MKL's branch."""
    import torch

    return {"aten": str(torch.backends.cpu.get_cpu_capability()).upper(), "mkl": _mkl_branch()}


def check(mode: str, environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """This process's arithmetic (``session`` plus what torch chose), or a one-line HarnessError when the mode is
    portable and torch chose other kernels (something ran a torch operation before the pin: each library reads its
    variable once)."""
    seen = observed()
    record = {**session(mode, environ), "observed": seen}
    if mode != "portable":
        return record
    wrong = []
    if seen["aten"] != PIN["ATEN_CPU_CAPABILITY"].upper():
        wrong.append(f"ATen's kernels are {seen['aten']}, not {PIN['ATEN_CPU_CAPABILITY'].upper()}")
    if seen["mkl"] is not None and seen["mkl"] != PIN["MKL_CBWR"]:
        wrong.append(f"MKL's branch is {seen['mkl']}, not {PIN['MKL_CBWR']}")
    flags = cpu_flags()
    if flags and "avx2" not in flags:
        raise HarnessError("this CPU has no AVX2, which the portable arithmetic needs (MKL's AVX2 branch); pass "
                           "--crossover-arithmetic native (the numbers are then this CPU's)", field="arithmetic")
    if wrong:
        fix = " ".join(f"{k}={v}" for k, v in PIN.items())
        raise HarnessError(f"torch chose its CPU kernels before pytest-crossover could pin them ({'; '.join(wrong)}): "
                           "something ran a torch operation first (a conftest.py or a plugin at import?); start "
                           f"pytest with {fix} in the environment, move that torch work into a fixture, or pass "
                           "--crossover-arithmetic native",
                           field="arithmetic")
    return record
