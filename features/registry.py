"""The systems registry: source systems declared as data (``features/systems.yaml``).

One YAML file says, per source system, where its extract is, its record id, every column
and the rule a valid value obeys, which column carries which kind of strong identifier,
and the columns the linker reads (names, date of birth, citizenship, approximate age,
partial document). Ingestion and linkage read these declarations and nothing else about
a system, so a new system is a new entry, not new code.

``features/systems.yaml`` describes the 27 systems of our world (extracts under
``<data-dir>/world/extracts/``). Any other file with the same layout describes other data
for ``triage link`` (files relative to the config's folder, Parquet or CSV); with
``extends: world`` it adds systems to the world's 27.

The file is validated on load (unknown fields, roles naming undeclared columns, keys of
an undeclared type, malformed patterns are errors naming the system and field).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import duckdb
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from features.schemas import SystemSchema
    from triage.paths import Paths

__all__ = [
    "EVENT_KINDS",
    "WORLD_REGISTRY",
    "KeyType",
    "Registry",
    "RegistryError",
    "load_registry",
    "world_registry",
]

WORLD_REGISTRY = Path(__file__).with_name("systems.yaml")
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SYSTEM = r"^[a-z][a-z0-9_]*$"
_ROLES = (
    "family",
    "given",
    "full_name",
    "birth_date",
    "citizenship",
    "approx_age",
    "doc_last4",
    "postcode",
)


# The kinds of event the feature queries count (features/sql/): a system that declares
# ``feeds: [<kind>]`` has its records read, beside every other system of that kind, through
# the ``ev_<kind>`` table (``system``, ``record_id``, ``cluster_id``, ``event_date``,
# ``birth_date`` and the kind's columns below, which a feeding system must declare). So a
# new system of a known kind changes that kind's counts and recency features by
# configuration alone; a new kind needs its query.
EVENT_KINDS: dict[str, tuple[str, ...]] = {
    "encounter": ("encounter_type", "arrested"),
    "criminal_event": ("event_type", "offense_category"),
    "detention": ("book_in_date", "book_out_date"),
    "court_hearing": ("order_type",),
    "removal": (),
    "watchlist_hit": ("match_score",),
    "lookout": ("lookout_type", "secondary_inspection"),
    "visa_refusal": ("refusal_ground",),
    "booking": ("travel_date", "one_way", "flown"),
    "tip": ("tip_category", "credibility"),
    "employment_check": ("result",),
    "address_change": ("state",),
}


class RegistryError(ValueError):
    """A registry file that cannot be used: the message names the file, system and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _re2_error(pattern: str) -> str | None:
    """Why DuckDB cannot compile ``pattern`` (None when it can)."""
    con = duckdb.connect()
    try:
        con.execute("SELECT regexp_full_match('', ?)", [pattern]).fetchall()
    except duckdb.Error as exc:
        return str(exc).removeprefix("Invalid Input Error: ")
    finally:
        con.close()
    return None


def _regex(value: str | None) -> str | None:
    """A pattern that DuckDB can run: ingestion matches values with DuckDB's regular
    expressions (RE2), which refuse what Python's ``re`` accepts beyond them (look-ahead,
    look-behind, back-references), so DuckDB compiles the pattern here, on load, rather
    than failing mid-ingest."""
    if value is not None:
        detail = _re2_error(value)
        if detail is not None:
            raise ValueError(
                f"{value!r} is not a regular expression DuckDB (RE2) can run: {detail}"
            )
    return value


class _Key(_Strict):
    pattern: str | None = None
    one_per_person: bool = False
    typos: bool = False
    document: bool = False

    _pattern = field_validator("pattern")(_regex)


class _Column(_Strict):
    name: str = Field(pattern=_IDENT)
    kind: Literal[
        "id",
        "name",
        "full_name",
        "date",
        "dob",
        "int",
        "float",
        "category",
        "country",
        "bool",
        "text",
    ]
    required: bool | None = None
    pattern: str | None = None
    fmt: str | None = None
    range: Literal["birth", "event"] | None = None
    lo: int | float | None = None  # an int stays an int: it is written into SQL as given
    hi: int | float | None = None
    values: list[str] = []
    key: str | None = None

    _pattern = field_validator("pattern")(_regex)


class _System(_Strict):
    code: str | None = Field(default=None, pattern=r"^[A-Z]{2,4}$")
    file: str | None = None
    format: Literal["parquet", "csv"] | None = None
    record_id: str = Field(default="record_id", pattern=_IDENT)
    record_id_pattern: str | None = None
    event_date: str | None = None
    event_label: str = "record"
    family: str | None = None
    given: str | None = None
    full_name: str | None = None
    birth_date: str | None = None
    citizenship: str | None = None
    approx_age: str | None = None
    doc_last4: str | None = None
    # An address: one column or several (``[street_number, street]``), compared as one
    # text; a postcode: compared exactly or within one edit.
    address: str | list[str] | None = None
    postcode: str | None = None
    summary: list[str] = []
    read_by: list[str] = []
    # The kinds of event (EVENT_KINDS) whose features count this system's records.
    feeds: list[str] = []
    # Columns that identify a duplicate entry of one event (collapsed to its first record
    # id before the features count it); None: the world's own (features/build.py), else none.
    same_event: list[str] | None = None
    invalid_optional: Literal["drop", "quarantine"] | None = None
    columns: list[_Column]

    _pattern = field_validator("record_id_pattern")(_regex)


class _Registry(_Strict):
    extends: Literal["world"] | None = None
    # What an invalid value of an optional column does: drop the value (keep the row, note
    # the reason) or quarantine the row. Per system it may be overridden.
    invalid_optional: Literal["drop", "quarantine"] = "drop"
    snapshot_date: dt.date | None = None
    keys: dict[str, _Key] = {}
    systems: dict[str, _System]


@dataclass(frozen=True)
class KeyType:
    """A kind of strong identifier.

    Attributes:
        name: its name (``passport``, ``fin``, ...); link methods are ``strong:<name>``.
        pattern: the format a value must match (None: any non-blank value).
        one_per_person: each person holds one, so a cluster holding two is refused.
        typos: values may be mistyped (with ``one_per_person``): the model compares the
            values (within two edits or different, m learnt by EM) and two of them in a
            cluster are refused only when each is held by two records or more (proven).
        document: a travel document, whose last four characters the model compares.
    """

    name: str
    pattern: str | None = None
    one_per_person: bool = False
    document: bool = False
    typos: bool = False


@dataclass(frozen=True)
class Registry:
    """The declared systems and identifier types, in declaration order.

    Attributes:
        keys: the strong identifier types.
        systems: system name -> its schema (``features.schemas.SystemSchema``).
        source: the file it was read from.
        snapshot_date: the date that bounds plausible dates (None: the world manifest's).
    """

    keys: tuple[KeyType, ...]
    systems: dict[str, SystemSchema]
    source: Path
    snapshot_date: dt.date | None = None

    @property
    def key_names(self) -> tuple[str, ...]:
        """The identifier types' names, in declaration order (index = key code)."""
        return tuple(k.name for k in self.keys)

    @property
    def guarded(self) -> tuple[int, ...]:
        """Indices of the identifier types a person holds only one of."""
        return tuple(i for i, k in enumerate(self.keys) if k.one_per_person)

    @property
    def compared(self) -> tuple[str, ...]:
        """Identifier types the model compares for near-matches (``one_per_person`` with
        ``typos``): a disagreement is evidence, not a veto, unless both values are proven."""
        return tuple(k.name for k in self.keys if k.one_per_person and k.typos)

    def feeders(self, kind: str) -> tuple[str, ...]:
        """The systems that feed an event kind, in declaration order."""
        return tuple(name for name, s in self.systems.items() if kind in s.feeds)

    @property
    def link_methods(self) -> tuple[str, ...]:
        """``link_method`` values: singleton, probabilistic, then ``strong:<key>`` by index."""
        return ("singleton", "probabilistic", *(f"strong:{k}" for k in self.key_names))

    def extract(self, paths: Paths, system: str) -> Path:
        """Where a system's extract is: its declared file, else the world's layout."""
        schema = self.systems[system]
        if schema.file is None:
            return paths.extract(system)
        path = Path(schema.file).expanduser()
        return path if path.is_absolute() else self.source.parent / path


def _column(raw: _Column, keys: dict[str, KeyType]):
    from features.schemas import COUNTRY_CODES, Column

    kind, rng, required = raw.kind, raw.range or "event", raw.required
    values = tuple(raw.values)
    if kind == "dob":
        kind, rng, required = "date", "birth", False if required is None else required
    elif kind == "country":
        kind, values = "category", COUNTRY_CODES
    pattern = raw.pattern or (keys[raw.key].pattern if raw.key else None)
    return Column(
        raw.name,
        kind,
        True if required is None else required,
        pattern=pattern,
        fmt=raw.fmt,
        range=rng,
        lo=raw.lo,
        hi=raw.hi,
        values=values,
        key=raw.key,
    )


def _check_system(name: str, raw: _System, keys: dict[str, KeyType]) -> list[str]:
    """Cross-field problems of one system (empty when it is usable)."""
    problems = []
    declared = {c.name for c in raw.columns}
    if len(declared) != len(raw.columns):
        problems.append("a column is declared twice")
    for role in (*_ROLES, "event_date"):
        col = getattr(raw, role)
        if col is not None and col not in declared:
            problems.append(f"{role}: {col!r} is not a declared column")
    address = [raw.address] if isinstance(raw.address, str) else raw.address or []
    for col in address:
        if col not in declared:
            problems.append(f"address: {col!r} is not a declared column")
    for col in raw.summary:
        if col not in declared:
            problems.append(f"summary: {col!r} is not a declared column")
    if raw.full_name and (raw.family or raw.given):
        problems.append("declare either full_name or family/given, not both")
    if raw.given and not raw.family:
        problems.append("given without family")
    for col in raw.columns:
        if col.key is not None and col.key not in keys:
            problems.append(f"column {col.name}: key {col.key!r} is not one of keys")
        if col.kind == "category" and not col.values:
            problems.append(f"column {col.name}: a category needs values")
        if col.kind in ("int", "float") and (col.lo is None or col.hi is None):
            problems.append(f"column {col.name}: a number needs its plausible range (lo and hi)")
    for kind in raw.feeds:
        if kind not in EVENT_KINDS:
            problems.append(f"feeds: {kind!r} is not one of {sorted(EVENT_KINDS)}")
            continue
        if raw.event_date is None:
            problems.append(f"feeds: {kind} needs an event_date")
        missing = [c for c in EVENT_KINDS[kind] if c not in declared]
        if missing:
            problems.append(f"feeds: {kind} needs the columns {missing}")
    for col in raw.same_event or []:
        if col not in declared and col != "record_id":
            problems.append(f"same_event: {col!r} is not a declared column")
    if raw.record_id in declared:
        problems.append(f"record_id {raw.record_id!r} is implicit: do not declare it as a column")
    return problems


def _build(data: dict, source: Path) -> Registry:
    from features.schemas import SystemSchema

    try:
        raw = _Registry.model_validate(data)
    except ValidationError as exc:
        raise RegistryError(f"{source}: {exc}") from None
    base = world_registry() if raw.extends == "world" else None
    keys = {k.name: k for k in base.keys} if base else {}
    for name, key in raw.keys.items():
        if not re.fullmatch(_IDENT, name):
            raise RegistryError(f"{source}: key {name!r} is not an identifier")
        if key.typos and not key.one_per_person:
            raise RegistryError(f"{source}: key {name}: typos needs one_per_person")
        keys[name] = KeyType(name, key.pattern, key.one_per_person, key.document, key.typos)
    systems: dict[str, SystemSchema] = dict(base.systems) if base else {}
    for name, sys_raw in raw.systems.items():
        if not re.fullmatch(_SYSTEM, name):
            raise RegistryError(f"{source}: system {name!r}: use lower case, digits and _")
        if name in systems:
            raise RegistryError(f"{source}: system {name!r} is declared twice")
        problems = _check_system(name, sys_raw, keys)
        if problems:
            raise RegistryError(f"{source}: system {name}: " + "; ".join(problems))
        file = sys_raw.file
        if file is not None and not Path(file).expanduser().is_absolute():
            file = str((source.parent / file).resolve())
        systems[name] = SystemSchema(
            name,
            sys_raw.code or "",
            tuple(_column(c, keys) for c in sys_raw.columns),
            sys_raw.event_date,
            sys_raw.event_label,
            **{role: getattr(sys_raw, role) for role in _ROLES},
            address=(
                (sys_raw.address,)
                if isinstance(sys_raw.address, str)
                else tuple(sys_raw.address or ())
            ),
            summary=tuple(sys_raw.summary),
            record_id=sys_raw.record_id,
            record_id_pattern=sys_raw.record_id_pattern,
            file=file,
            file_format=sys_raw.format,
            read_by=tuple(sys_raw.read_by),
            feeds=tuple(sys_raw.feeds),
            same_event=None if sys_raw.same_event is None else tuple(sys_raw.same_event),
            drop_invalid_optional=(sys_raw.invalid_optional or raw.invalid_optional) == "drop",
        )
    snapshot = raw.snapshot_date or (base.snapshot_date if base else None)
    return Registry(tuple(keys.values()), systems, source, snapshot)


def load_registry(path: str | Path) -> Registry:
    """Read and validate a registry file.

    Raises:
        RegistryError: the file is missing, is not YAML, or declares something unusable.
    """
    source = Path(path).expanduser().resolve()
    try:
        data = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"{source}: {exc}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{source}: expected a mapping with 'systems'")
    return _build(data, source)


@functools.cache
def world_registry() -> Registry:
    """The 27 systems of our world (``features/systems.yaml``), read once."""
    return load_registry(WORLD_REGISTRY)
