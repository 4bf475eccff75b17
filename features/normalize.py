"""Normalisers for names, identifiers and dates: the values entity resolution compares.

Two views of a name are kept. ``clean_name`` is what a reviewer reads: ASCII upper
case, punctuation gone, single spaces (``"Müller-Lüdenscheidt "`` -> ``"MULLER
LUDENSCHEIDT"``). ``name_key`` is what the linker compares: lower-case letters with
the spelling variants that clerks introduce when transliterating folded to one
canonical form, so ``Mustafa``, ``Moustafa`` and ``Moustapha`` share a key.

The folding rules mirror the spelling pairs in ``features/world/names.py`` (either
side of a pair may appear for the same name) and are applied to a fixed point, which
makes the key idempotent. They are deliberately lossy (every ``h`` is dropped, for
example): a key only has to bring variants together; dates of birth and documents
keep different people apart.

Bulk normalisation runs once per *distinct* raw value (see ``features/ingest.py``),
so these plain Python functions cost seconds even on the full world.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from pathlib import Path

from unidecode import unidecode

__all__ = [
    "FOLD_RULES",
    "SQL_MACROS",
    "clean_id",
    "clean_name",
    "name_key",
    "split_full_name",
    "install_sql_macros",
    "swap_day_month",
]

_NOT_LETTER = re.compile(r"[^A-Z ]+")
_SPACES = re.compile(r"\s+")
_ID_JUNK = re.compile(r"[\s\-./]+")

# Ordered rewrites applied until nothing changes. Why this order:
# - x -> ks first, so "ks"~"x" variants meet the s/h rules below in one spelling;
# - z -> s, c -> k, q -> k fold the single-letter pairs (and "ch" becomes "kh");
# - ph -> f before h disappears; any run of s/k before an h goes with it (sh~ch~kh~h
#   are one class, and "skh" becomes "sh" under kh~h); then every remaining h goes,
#   which also folds "a"~"ah";
# - the vowel pairs (ee/ie/y ~ i, oo/ou ~ u) and v~w, dj~j close the list.
FOLD_RULES: tuple[tuple[str, str], ...] = (
    ("x", "ks"),
    ("z", "s"),
    ("c", "k"),
    ("q", "k"),
    ("ph", "f"),
    ("[sk]+h", ""),
    ("h", ""),
    ("y", "i"),
    ("ee", "i"),
    ("ie", "i"),
    ("oo", "u"),
    ("ou", "u"),
    ("w", "v"),
    ("d+j", "j"),  # a run: "ddj" would otherwise take two passes
)
# Literal rules use str.replace (ten times faster than a regex); the pattern compiles.
_FOLD = tuple(
    (a, b, re.compile(a) if any(ch in a for ch in "[(+") else None) for a, b in FOLD_RULES
)


# The same normalisers as DuckDB macros, for bulk work on ASCII input (see ingest.py).
SQL_MACROS = Path(__file__).with_name("sql") / "normalize_macros.sql"


def install_sql_macros(con) -> None:
    """Define the SQL normalisers (``clean_name_ascii``, ``name_key_clean``,
    ``split_family``, ``split_given``) on a DuckDB connection."""
    con.execute(SQL_MACROS.read_text())


def to_ascii(raw: str) -> str:
    """``raw`` transliterated to ASCII by unidecode (unchanged when already ASCII)."""
    return raw if raw.isascii() else unidecode(raw)


@lru_cache(maxsize=1 << 20)
def clean_name(raw: str | None) -> str | None:
    """A display form of a name: ASCII, upper case, letters and single spaces only.

    Accents and other scripts go through ``unidecode``; hyphens and other punctuation
    become spaces, apostrophes vanish (``O'Neil`` -> ``ONEIL``). Empty results are None.
    """
    if raw is None:
        return None
    text = to_ascii(str(raw))
    if text.isalpha():  # the common case, without regexes
        return text.upper()
    text = text.upper().replace("'", "")
    text = _SPACES.sub(" ", _NOT_LETTER.sub(" ", text)).strip()
    return text or None


@lru_cache(maxsize=1 << 20)
def name_key(raw: str | None) -> str | None:
    """The comparison key of a name: letters only, transliteration variants folded.

    Idempotent, and invariant to case, accents, punctuation and whitespace.
    """
    text = clean_name(raw)
    if text is None:
        return None
    key = text.replace(" ", "").lower()
    previous = None
    while key != previous:  # a fixed point: the key of a key is itself
        previous = key
        for literal, replacement, pattern in _FOLD:
            if pattern is None:
                key = key.replace(literal, replacement)
            else:
                key = pattern.sub(replacement, key)
    # A name made only of letters the folding drops ("Zhzh", "Schsch") folds to nothing. Its
    # key is then one "h" per h it has: every variant rule keeps that count for such a name
    # (kh~h, sh~ch, z~s, c~k, x~ks; "ah" needs a vowel, which the folding keeps), whereas the
    # plain spelling would not ("Zhzh" and its variant "Shzh" must share a key).
    return key or "h" * text.count("H")


def split_full_name(raw: str | None) -> tuple[str | None, str | None]:
    """Split a one-field name into ``(family, given)``, both cleaned.

    Systems write full names two ways: ``"FAMILY, Given"`` (a comma puts the family
    name first) and ``"Given Family"`` (the last word is the family name).
    """
    if raw is None:
        return None, None
    text = to_ascii(str(raw))
    if "," in text:
        family, given = text.split(",", 1)
        return clean_name(family), clean_name(given)
    words = (clean_name(text) or "").split(" ")
    if len(words) == 1:
        return words[0] or None, None
    return words[-1], " ".join(words[:-1])


def clean_id(raw: str | None) -> str | None:
    """An identifier as systems compare it: upper case, no spaces, hyphens, dots or slashes.

    ``features/sql`` applies the same rule in SQL (``upper(regexp_replace(...))``).
    """
    if raw is None:
        return None
    text = _ID_JUNK.sub("", str(raw)).upper()
    return text or None


def swap_day_month(value: dt.date | None) -> dt.date | None:
    """The date with day and month exchanged, or None when that is not a valid date."""
    if value is None:
        return None
    try:
        return value.replace(month=value.day, day=value.month)
    except ValueError:
        return None
