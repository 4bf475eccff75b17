"""Data-quality faults applied to source records: the reason linkage is needed.

Each function takes a column and a generator and returns a faulted copy plus the
mask of records it touched, so the world report can count fault rates as generated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.world.names import TRANSLITERATIONS

__all__ = ["add_typos", "blank", "swap_day_month", "transliterate"]

_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def _typo(name: str, kind: int, pos: float, letter: str) -> str:
    if len(name) < 3:
        return name + letter
    i = 1 + int(pos * (len(name) - 2))  # never the first letter: clerks rarely get it wrong
    if kind == 0:  # substitution
        return name[:i] + letter + name[i + 1 :]
    if kind == 1:  # deletion
        return name[:i] + name[i + 1 :]
    return name[: i - 1] + name[i] + name[i - 1] + name[i + 1 :]  # transposition


def add_typos(
    names: np.ndarray, rate: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Substitute, drop or transpose one character in a share ``rate`` of names."""
    mask = rng.random(len(names)) < rate
    idx = np.flatnonzero(mask)
    out = names.copy()
    kinds = rng.integers(0, 3, size=idx.size)
    pos = rng.random(idx.size)
    letters = rng.choice(_LETTERS, size=idx.size)
    for j, i in enumerate(idx):
        if isinstance(out[i], str):
            out[i] = _typo(out[i], kinds[j], pos[j], letters[j])
    return out, mask


def transliterate(
    names: np.ndarray, rate: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one applicable spelling variant to a share ``rate`` of names.

    Rules are tried in a per-call random order; each selected name takes the first
    rule that applies to it (either direction), once.
    """
    mask = rng.random(len(names)) < rate
    idx = np.flatnonzero(mask)
    out = names.copy()
    if idx.size == 0:
        return out, mask
    vals = out[idx]
    is_str = np.fromiter((isinstance(x, str) for x in vals), dtype=bool, count=idx.size)
    # Arrow string kernels: one C pass per rule instead of a Python call per name.
    low = pc.utf8_lower(pa.array(np.where(is_str, vals, ""), type=pa.string()))
    pending = pa.array(is_str)
    for k in rng.permutation(len(TRANSLITERATIONS)):
        a, b = TRANSLITERATIONS[k]
        for src, dst in ((a, b), (b, a)) if len(b) > 1 else ((a, b),):
            hit = pc.and_(pending, pc.match_substring(low, src))
            low = pc.if_else(hit, pc.replace_substring(low, src, dst, max_replacements=1), low)
            pending = pc.and_(pending, pc.invert(hit))
    changed = is_str & ~pending.to_numpy(zero_copy_only=False)
    out[idx[changed]] = pc.utf8_capitalize(low).to_numpy(zero_copy_only=False)[changed]
    return out, mask


def swap_day_month(
    dates: np.ndarray, rate: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Exchange day and month for a share ``rate`` of dates whose day is 12 or less."""
    ts = pd.DatetimeIndex(dates)
    ok = ~ts.isna() & (ts.day <= 12) & (ts.day != ts.month)
    mask = ok & (rng.random(len(dates)) < rate)
    out = dates.copy()
    if mask.any():
        sw = ts[mask]
        out[mask] = pd.to_datetime({"year": sw.year, "month": sw.day, "day": sw.month}).to_numpy(
            dtype="datetime64[D]"
        )
    return out, np.asarray(mask)


def blank(
    values: np.ndarray, rate: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Blank a share ``rate`` of values (None for objects, NaT for dates)."""
    mask = rng.random(len(values)) < rate
    out = values.copy()
    if out.dtype.kind == "M":
        out[mask] = np.datetime64("NaT")
    else:
        out = out.astype(object)
        out[mask] = None
    return out, mask
