"""The loop's fixed control slice, shared by the worklist (which never picks from it) and the
simulator's evaluation (which measures learning on it)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

__all__ = ["held_out"]


def held_out(case_ids: pd.Series | np.ndarray, share: float, salt: str) -> np.ndarray:
    """The cases of a fixed control slice: a salted hash of the case id below ``share``.

    Deterministic (the same ids, share and salt give the same slice on any machine) and
    independent of everything about the case but its id.
    """
    ids = np.asarray(case_ids, dtype=object)
    if share <= 0 or len(ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    key = hashlib.blake2b(salt.encode(), digest_size=8).hexdigest()  # 16 characters
    h = pd.util.hash_array(ids, hash_key=key, categorize=False)
    return h < np.uint64(int(share * 2**64))
