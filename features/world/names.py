"""Name pools per citizenship region, and the spelling variants between them.

Names are built from syllables so the world needs no external data and has a
large name space (collisions of name and date of birth stay rare, as in life).
Frequencies are Zipf-like: a few names are very common, which is what makes
linkage hard.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NamePools", "TRANSLITERATIONS", "build_pools"]

# Syllable inventories give each region its own look; the spelling rules below then
# produce the variants a name acquires when transliterated by different clerks.
_SYLLABLES: dict[str, tuple[str, ...]] = {
    "africa": (
        "ba",
        "ko",
        "fi",
        "ade",
        "mu",
        "nko",
        "si",
        "la",
        "wa",
        "tun",
        "oye",
        "chi",
        "ka",
        "bu",
        "ze",
    ),
    "caribbean": (
        "jo",
        "mar",
        "den",
        "lis",
        "ton",
        "ra",
        "bel",
        "che",
        "van",
        "ro",
        "mel",
        "dor",
        "ka",
        "sa",
    ),
    "central_america": (
        "ro",
        "dri",
        "guez",
        "mar",
        "ti",
        "nez",
        "her",
        "nan",
        "lo",
        "pez",
        "san",
        "cho",
        "ra",
        "mi",
    ),
    "east_asia": (
        "zh",
        "ang",
        "li",
        "wei",
        "chen",
        "yu",
        "xia",
        "ng",
        "hua",
        "jun",
        "min",
        "kim",
        "park",
        "lee",
    ),
    "europe": (
        "an",
        "der",
        "son",
        "mil",
        "ler",
        "ko",
        "va",
        "sch",
        "midt",
        "ber",
        "gen",
        "ov",
        "ski",
        "lo",
    ),
    "middle_east": (
        "al",
        "ha",
        "mad",
        "sa",
        "eed",
        "kha",
        "lid",
        "mus",
        "ta",
        "fa",
        "rah",
        "yu",
        "sef",
        "ib",
    ),
    "south_america": (
        "sil",
        "va",
        "sou",
        "za",
        "pe",
        "rei",
        "ra",
        "gon",
        "cal",
        "ves",
        "oli",
        "vei",
        "ro",
        "da",
    ),
    "south_asia": (
        "ra",
        "jes",
        "kum",
        "ar",
        "sha",
        "rma",
        "pa",
        "tel",
        "sin",
        "gh",
        "dev",
        "an",
        "pri",
        "ya",
    ),
}

# Pairs (a, b): either spelling can appear for the same name.
TRANSLITERATIONS: tuple[tuple[str, str], ...] = (
    ("ou", "u"),
    ("ph", "f"),
    ("y", "i"),
    ("kh", "h"),
    ("sh", "ch"),
    ("ee", "i"),
    ("v", "w"),
    ("j", "dj"),
    ("ks", "x"),
    ("oo", "u"),
    ("ie", "y"),
    ("q", "k"),
    ("z", "s"),
    ("c", "k"),
    ("a", "ah"),
)


class NamePools:
    """Given-name and family-name pools for each region, with Zipf-like weights."""

    def __init__(self, given: dict[str, np.ndarray], family: dict[str, np.ndarray]):
        self.given = given
        self.family = family

    def draw(
        self,
        rng: np.random.Generator,
        regions: np.ndarray,
        region_names: tuple[str, ...],
        kind: str,
    ) -> np.ndarray:
        """Draw one name per person from their region's pool (object array of str)."""
        pools = self.given if kind == "given" else self.family
        out = np.empty(len(regions), dtype=object)
        for code, region in enumerate(region_names):
            idx = np.flatnonzero(regions == code)
            if idx.size == 0:
                continue
            pool = pools[region]
            # Zipf-like: rank r drawn with weight 1 / (r + 10); the offset keeps the head modest.
            weights = 1.0 / (np.arange(pool.size) + 10.0)
            weights /= weights.sum()
            out[idx] = pool[rng.choice(pool.size, size=idx.size, p=weights)]
        return out


def _make_names(
    rng: np.random.Generator, syllables: tuple[str, ...], n: int, lo: int, hi: int
) -> np.ndarray:
    """``n`` distinct names of ``lo``..``hi`` syllables, drawn in bulk (oversampled, deduplicated)."""
    names: set[str] = set()
    syl = np.array(syllables, dtype=object)
    while len(names) < n:
        m = 3 * n
        parts = syl[rng.integers(0, len(syl), size=(m, hi))]
        lengths = rng.integers(lo, hi + 1, size=m)
        for row, k in zip(parts, lengths, strict=True):
            names.add("".join(row[:k]).capitalize())
            if len(names) >= n:
                break
    return np.array(sorted(names), dtype=object)


def build_pools(n_given: int = 900, n_family: int = 2500) -> NamePools:
    """Build the pools. Fixed internal seed: the world's 'language' is the same in every world."""
    rng = np.random.default_rng(20240611)
    given = {r: rng.permutation(_make_names(rng, s, n_given, 2, 3)) for r, s in _SYLLABLES.items()}
    family = {
        r: rng.permutation(_make_names(rng, s, n_family, 2, 4)) for r, s in _SYLLABLES.items()
    }
    return NamePools(given, family)
