"""How sure a ranking is: a paired bootstrap over the held-out states, and over the evaluation episodes for returns.

Every child of a session is evaluated on the same held-out states, so children are compared on the same resamples
(paired): a resample draws evaluation units with replacement — whole episodes when the buffer has episode ids
(neighbouring states of one trajectory are not independent), else single states — and every child's agreement
with A and with B is recomputed on it. From the resamples: a 95 % percentile interval for each child's primary,
agree_a and agree_b; the interval of its gap to the rank-1 child (a child whose gap interval contains 0 is
statistically tied with #1); and its probability of being best (the share of resamples in which it is). Returns
are paired the same way over the episodes, which every child and parent plays with the same seeds.

numpy only (the plugin's controller runs it), with a seeded local generator: the same inputs give the same
intervals bitwise.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RESAMPLES = 1000
SEED = 20_231  # fixed: a session's intervals are a function of its inputs alone
LEVEL = 0.95
_CHUNK = 200  # resamples per block at most
# Resample counts per block at most (units x resamples): a block holds two int64 arrays of this size, so ~16 MB
# whatever the evaluation set; at 1,000,000 per-state units that is 1 resample a block instead of 200 (4.8 GB).
_BLOCK_ENTRIES = 1_000_000
_FLOAT_COUNTS = 8_000_000  # per-unit counts kept as floats at most (32 MB a side in float32)


def pack_bits(mask: Any) -> str:
    """A boolean vector as compact text (base64 of its packed bits), for records that travel as builtins."""
    arr = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask, dtype=bool)
    return base64.b64encode(np.packbits(arr).tobytes()).decode("ascii")


def unpack_bits(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=n).astype(bool)


def groups_from_rle(rle: Sequence[Sequence[int]] | None, n: int) -> np.ndarray:
    """Evaluation units per row from ``[[unit, count], ...]`` (None: every row is its own unit)."""
    if not rle:
        return np.arange(n)
    return np.repeat(np.array([u for u, _ in rle]), np.array([c for _, c in rle]))


def _counts(rng: np.random.Generator, units: int, count: int) -> np.ndarray:
    """(count, units) multinomial resample counts (int64): each row of the result is one bootstrap resample."""
    picks = rng.integers(0, units, size=(count, units))
    picks += np.arange(count)[:, None] * units  # in place: each row's picks index its own stretch of the counts
    return np.bincount(picks.ravel(), minlength=count * units).reshape(count, units)


def per_block(width: int) -> int:
    """How many rows of ``width`` entries one block of the bootstrap's arithmetic holds (at least one)."""
    return max(1, _BLOCK_ENTRIES // max(1, width))


def resample_blocks(units: int, resamples: int) -> list[tuple[int, int]]:
    """``(start, count)`` blocks of resamples, each small enough for memory. numpy's generator fills the same
    values whether a matrix of draws is asked for at once or row-block by row-block, so the blocks' sizes change
    memory, not the intervals."""
    step = min(_CHUNK, per_block(units))
    return [(start, min(step, resamples - start)) for start in range(0, resamples, step)]


def unit_counts(packed: Sequence[str], unit: np.ndarray, units: int) -> np.ndarray:
    """(len(packed), units): per evaluation unit, how many of its rows are set in each packed bit vector.

    As floats when they are few (at most ``_FLOAT_COUNTS`` values): BLAS multiplies them ~10x faster than numpy's
    integer loops, and exactly, since every resampled sum is an integer no larger than units x the largest unit
    (float32 below 2**24, float64 beyond). Else in the narrowest unsigned dtype that holds a unit's size: one byte
    a unit when every state is its own unit (18 MB for 18 children at 1,000,000 states, where int64 took 144 MB).
    """
    largest = int(np.bincount(unit, minlength=units).max())
    if len(packed) * units <= _FLOAT_COUNTS:
        dtype: Any = np.float32 if units * largest < 2 ** 24 else np.float64
    else:
        dtype = np.min_scalar_type(largest)
    out = np.empty((len(packed), units), dtype=dtype)
    for i, text in enumerate(packed):
        out[i] = np.bincount(unit, weights=unpack_bits(text, len(unit)), minlength=units)
    return out


def resampled_sums(w: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``w @ counts.T`` in int64, exactly: (resamples, units) draws times (columns, units) per-unit counts
    (:func:`unit_counts`). Float counts go through BLAS, whose sums stay integers the float holds exactly; narrow
    integer counts are multiplied a slice of units at a time, so they are never widened whole. Integer sums are
    exact in any order: the values are the very ones a float64 product of the same integers gives."""
    if counts.dtype.kind == "f":
        return np.asarray(w.astype(counts.dtype) @ counts.T).astype(np.int64)
    out = np.zeros((w.shape[0], counts.shape[0]), dtype=np.int64)
    step = per_block(counts.shape[0])
    for s in range(0, counts.shape[1], step):
        out += w[:, s:s + step] @ counts[:, s:s + step].T.astype(np.int64)
    return out


def _weights(rng: np.random.Generator, units: int, count: int) -> np.ndarray:
    return _counts(rng, units, count).astype(np.float64)


def _interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail], axis=0)
    return lo, hi


def resampled_rates(columns: Sequence[tuple[str, str]], parents: str | None, groups: np.ndarray,
                    resamples: int = RESAMPLES, seed: int = SEED) -> tuple[dict[str, np.ndarray], int]:
    """On every bootstrap resample of the evaluation units, the agreement rates with A (``"a"``) and B (``"b"``) of
    each column (packed ``(agree_a, agree_b)`` bits), (resamples, columns); with ``parents`` (A's packed agreement
    with B) the parents' own (``"ab"``, (resamples,)); and the number of units.

    A session's end asks for the same rates twice (the per-child intervals and the recipe statistics, each column
    alone in both): the last answer is kept and its columns picked again (the same values, half the work).
    """
    unique = sorted(set(columns))
    digest = hashlib.blake2b(digest_size=16)
    for text in (*(f"{a}|{b};" for a, b in unique), parents or ""):
        digest.update(text.encode())
    digest.update(np.ascontiguousarray(groups).tobytes())
    key = (digest.hexdigest(), len(groups), resamples, seed)
    if _LAST.get("key") != key:
        _LAST.clear()
        _LAST.update(key=key, value=_rates(unique, parents, groups, resamples, seed))
    rates, units = _LAST["value"]
    at = {c: i for i, c in enumerate(unique)}
    picked = [at[c] for c in columns]
    return {side: v.copy() if side == "ab" else v[:, picked] for side, v in rates.items()}, units


_LAST: dict[str, Any] = {}


def _rates(columns: Sequence[tuple[str, str]], parents: str | None, groups: np.ndarray, resamples: int,
           seed: int) -> tuple[dict[str, np.ndarray], int]:
    _, unit = np.unique(groups, return_inverse=True)
    units = int(unit.max()) + 1
    size = np.bincount(unit, minlength=units)
    per_unit = {side: unit_counts([c[i] for c in columns], unit, units) for i, side in enumerate("ab")}
    if parents is not None:
        per_unit["ab"] = unit_counts([parents], unit, units)
    # The resampled sums are integers (resampled_sums): the very values float64 arithmetic gave; numpy's generator
    # fills the same draws block by block (resample_blocks), so blocks change memory, not a value.
    rng = np.random.default_rng(seed)
    blocks: dict[str, list[np.ndarray]] = {side: [] for side in per_unit}
    for _, count in resample_blocks(units, resamples):
        w = _counts(rng, units, count)
        total = (w @ size).astype(np.float64)
        for side in per_unit:
            blocks[side].append(resampled_sums(w, per_unit[side]).astype(np.float64) / total[:, None])
    rates = {side: np.concatenate(b) for side, b in blocks.items()}
    if "ab" in rates:
        rates["ab"] = rates["ab"][:, 0]
    return rates, units


def agreement_intervals(rows: Mapping[str, Mapping[str, Any]], groups: np.ndarray, best: str,
                        *, parents: str | None = None, resamples: int = RESAMPLES,
                        seed: int = SEED) -> dict[str, dict[str, Any]]:
    """Per child id (``rows``: its packed per-row agreement with A and B), intervals of primary, agree_a and
    agree_b, whether it is tied with ``best`` (the rank-1 child) and its probability of being best; with
    ``parents`` (the packed per-row agreement of A with B), the interval of its primary minus the parents'
    agreement, on the same resamples."""
    ids = list(rows)
    if not ids:
        return {}
    agree, units = resampled_rates([(rows[c]["agree_a"], rows[c]["agree_b"]) for c in ids], parents, groups,
                                   resamples, seed)  # (resamples, children)
    primary = np.minimum(agree["a"], agree["b"])
    gap = primary - primary[:, [ids.index(best)]] if best in ids else np.zeros_like(primary)
    top = primary.max(axis=1, keepdims=True)
    wins = (primary == top) / (primary == top).sum(axis=1, keepdims=True)  # ties share a win
    out: dict[str, dict[str, Any]] = {}
    named = [("primary", primary), ("agree_a", agree["a"]), ("agree_b", agree["b"]), ("gap", gap)]
    if "ab" in agree:
        named.append(("vs_parents", primary - agree["ab"][:, None]))
    for name, samples in named:
        lo, hi = _interval(samples)
        for i, c in enumerate(ids):
            out.setdefault(c, {})[name] = (float(lo[i]), float(hi[i]))
    for i, c in enumerate(ids):
        gap_lo, gap_hi = out[c]["gap"]
        out[c]["tied_with_best"] = bool(gap_lo <= 0.0 <= gap_hi)
        out[c]["p_best"] = float(wins[:, i].mean())
        out[c]["units"] = units
    return out


def return_intervals(returns: Mapping[str, Sequence[float]], reference: Sequence[float] | None,
                     *, resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, dict[str, Any]]:
    """Per child id (its per-episode returns, the same episode seeds for all): the mean's interval and standard
    error, and the interval of its paired difference with ``reference`` (the weaker parent's returns)."""
    ids = [c for c, r in returns.items() if len(r) > 1]
    if not ids:
        return {}
    episodes = len(returns[ids[0]])
    ids = [c for c in ids if len(returns[c]) == episodes]
    matrix = np.array([returns[c] for c in ids], dtype=np.float64)  # (children, episodes)
    ref = None if reference is None or len(reference) != episodes else np.asarray(reference, dtype=np.float64)
    w = _weights(np.random.default_rng(seed + 1), episodes, resamples) / episodes
    means = w @ matrix.T  # (resamples, children)
    lo, hi = _interval(means)
    out = {c: {"return": (float(lo[i]), float(hi[i])),
               "return_se": float(matrix[i].std(ddof=1) / np.sqrt(episodes))} for i, c in enumerate(ids)}
    if ref is not None:
        diff_lo, diff_hi = _interval(means - (w @ ref)[:, None])
        for i, c in enumerate(ids):
            out[c]["return_vs_weaker_parent"] = (float(diff_lo[i]), float(diff_hi[i]))
    return out
