"""Property tests of the normalisers (features/normalize.py) and their SQL twins."""

from __future__ import annotations

import datetime as dt
import string

import duckdb
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features.ingest import name_map, validation_sql
from features.normalize import (
    clean_id,
    clean_name,
    install_sql_macros,
    name_key,
    split_full_name,
    swap_day_month,
)
from features.schemas import SCHEMAS
from features.world.names import _SYLLABLES, TRANSLITERATIONS

ACCENTED = {"a": "áàâä", "e": "éèêë", "i": "íìîï", "o": "óòôö", "u": "úùûü", "c": "ç", "n": "ñ"}

# Names as the world builds them: syllables of one region, capitalised.
syllable_names = st.sampled_from(sorted(_SYLLABLES)).flatmap(
    lambda region: st.lists(st.sampled_from(_SYLLABLES[region]), min_size=2, max_size=4).map(
        lambda parts: "".join(parts).capitalize()
    )
)
ascii_words = st.text(alphabet=string.ascii_letters, min_size=1, max_size=12)
messy_text = st.text(
    alphabet=st.sampled_from(
        list(string.ascii_letters + " ,.-'\t")
        + [c for cs in ACCENTED.values() for c in cs]
        + ["ß", "Ø", "ł", "Ж", "李"]
    ),
    max_size=20,
)


@st.composite
def accented(draw, word: str) -> str:
    """``word`` with some letters given accents."""
    out = []
    for ch in word:
        options = ACCENTED.get(ch.lower())
        if options and draw(st.booleans()):
            acc = draw(st.sampled_from(options))
            out.append(acc.upper() if ch.isupper() else acc)
        else:
            out.append(ch)
    return "".join(out)


def _variant(name: str, rule: int) -> str | None:
    """One transliteration variant, applied exactly as the world generator does."""
    low = name.lower()
    a, b = TRANSLITERATIONS[rule]
    if a in low:
        return low.replace(a, b, 1).capitalize()
    if b in low and len(b) > 1:
        return low.replace(b, a, 1).capitalize()
    return None


@given(messy_text)
def test_clean_name_and_key_are_idempotent(raw):
    """Normalising a normalised name changes nothing (display form and key)."""
    once = clean_name(raw)
    assert clean_name(once) == once
    key = name_key(raw)
    assert name_key(key) == key


@given(st.lists(ascii_words, min_size=1, max_size=3), st.data())
def test_invariant_to_case_accents_and_whitespace(words, data):
    """Case, accents, punctuation between words and extra whitespace do not change a name."""
    name = " ".join(words)
    noisy = "  " + "\t ".join(data.draw(accented(w)) for w in words) + " "
    for variant in (name.upper(), name.lower(), noisy):
        assert clean_name(variant) == clean_name(name)
        assert name_key(variant) == name_key(name)


Z_TO_S = TRANSLITERATIONS.index(("z", "s"))


@given(syllable_names, st.integers(0, len(TRANSLITERATIONS) - 1))
@example("Zhzh", Z_TO_S)  # found by Hypothesis: the variant "Shzh" keyed apart from "Zhzh"
@example("Schsch", TRANSLITERATIONS.index(("sh", "ch")))
def test_transliteration_variants_share_a_key(name, rule):
    """Every spelling variant the world's clerks produce folds to the original's key."""
    variant = _variant(name, rule)
    if variant is not None:
        assert name_key(variant) == name_key(name)


@pytest.mark.parametrize(
    ("names", "key"),
    [
        (["Zhzh", "Shzh", "Shsh", "Chsh", "Khkh", "Hh"], "hh"),
        (["Sch", "Sh", "Kh", "H", "Zh"], "h"),
    ],
)
def test_names_of_silent_letters_key_by_their_h_count(names, key):
    """A name the folding empties keys to one h per h: its variants agree, in SQL too."""
    assert {name_key(n) for n in names} == {key}
    con = duckdb.connect()
    install_sql_macros(con)
    sql_keys = {
        con.execute("SELECT name_key_clean(?)", [clean_name(n)]).fetchone()[0] for n in names
    }
    assert sql_keys == {key}


@given(ascii_words, ascii_words)
def test_full_name_orders_split_alike(family, given_):
    """'FAMILY, Given' and 'Given Family' split into the same family and given names."""
    assert split_full_name(f"{family.upper()}, {given_}") == split_full_name(f"{given_} {family}")
    assert split_full_name(f"{given_} {family}") == (clean_name(family), clean_name(given_))


@given(st.lists(messy_text, min_size=1, max_size=30))
@example(["Zhzh", "Shzh", "ZHANG, Zhzh", "Schsch Sh"])  # names the folding empties
@settings(max_examples=60, deadline=None)
def test_sql_twins_match_python(raws):
    """The DuckDB macros used in bulk give exactly the Python normalisers' answers."""
    con = duckdb.connect()
    install_sql_macros(con)
    con.register("vals", pa.table({"raw": pa.array(raws, pa.string())}))
    for full in (False, True):
        name_map(con, "nm", "SELECT DISTINCT raw FROM vals", full)
        for raw, fam, giv, fkey, gkey in con.execute(
            "SELECT raw, family_name, given_name, family_key, given_key FROM nm"
        ).fetchall():
            want_f, want_g = split_full_name(raw) if full else (clean_name(raw),) * 2
            assert (fam, giv) == (want_f, want_g), raw
            assert (fkey, gkey) == (name_key(want_f), name_key(want_g)), raw


@given(st.text(alphabet=string.ascii_letters + string.digits + " -./", max_size=15))
def test_clean_id_is_idempotent_and_case_blind(raw):
    """Identifiers compare upper-cased without separators, however they were typed."""
    once = clean_id(raw)
    assert clean_id(once) == once
    assert clean_id(raw.lower()) == once
    assert once is None or once.isalnum()


@given(st.dates(dt.date(1900, 1, 1), dt.date(2030, 12, 31)))
def test_swapping_day_and_month_twice_restores_the_date(day):
    """A swap is undone by a second swap, and exists exactly when the day could be a month."""
    swapped = swap_day_month(day)
    assert (swapped is None) == (day.day > 12)
    if swapped is not None:
        assert swap_day_month(swapped) == day


_TEXT_DATES = [
    (system, col)
    for system, schema in SCHEMAS.items()
    for col in schema.columns
    if col.kind == "date" and col.fmt
]


@pytest.mark.parametrize(("system", "col"), _TEXT_DATES, ids=lambda v: getattr(v, "name", v))
@given(day=st.dates(dt.date(1900, 1, 1), dt.date(2025, 6, 30)))
@settings(max_examples=25, deadline=None)
def test_each_system_date_format_parses_back(system, col, day):
    """A date written in a system's own format is read back to the same day by ingestion."""
    raw = int(day.strftime("%Y%m%d")) if col.fmt == "int" else day.strftime(col.fmt)
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE src (record_id VARCHAR, v "
        + ("BIGINT" if col.fmt == "int" else "VARCHAR")
        + ")"
    )
    con.execute("INSERT INTO src VALUES (?, ?)", [f"{SCHEMAS[system].code}-000000001", raw])
    con.execute(f'CREATE VIEW x AS SELECT record_id, v AS "{col.name}" FROM src')
    types = {"record_id": "VARCHAR", col.name: "BIGINT" if col.fmt == "int" else "VARCHAR"}
    sql = validation_sql(SCHEMAS[system], "x", types, dt.date(2025, 6, 30))
    (parsed,) = con.execute(f'SELECT "t__{col.name}" FROM ({sql})').fetchone()
    assert parsed == day
