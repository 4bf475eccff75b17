"""The systems registry (features/systems.yaml): what it declares and what it refuses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from features.registry import (
    EVENT_KINDS,
    WORLD_REGISTRY,
    RegistryError,
    load_registry,
    world_registry,
)
from features.schemas import KEYS, SCHEMAS
from triage.paths import SYSTEMS

SQL_DIR = Path(__file__).parents[2] / "features" / "sql"


def test_the_world_registry_declares_the_27_systems():
    registry = world_registry()
    assert tuple(registry.systems) == SYSTEMS
    assert registry.key_names == KEYS == ("fin", "a_number", "passport", "i94", "sevis", "receipt")
    assert [KEYS[i] for i in registry.guarded] == ["fin", "a_number"]
    assert registry.systems == SCHEMAS
    codes = [s.code for s in registry.systems.values()]
    assert len(set(codes)) == len(codes)
    for schema in registry.systems.values():
        assert schema.file is None  # the world's layout: <data-dir>/world/extracts/
        for col in schema.columns:
            if col.kind == "id":
                assert col.pattern, f"{schema.name}.{col.name} has no format"


def test_read_by_names_the_queries_that_read_each_system():
    """What each system contributes, as declared, is what the SQL actually reads."""
    reads: dict[str, set[str]] = {}
    kinds: dict[str, set[str]] = {}
    for path in SQL_DIR.glob("*.sql"):
        for system in re.findall(r"\brec_([a-z_]+)\b", path.read_text()):
            reads.setdefault(system, set()).add(path.stem)
        for kind in re.findall(r"\bev_([a-z_]+)\b", path.read_text()):
            kinds.setdefault(kind, set()).add(path.stem)
    for name, schema in world_registry().systems.items():
        via_kinds = set().union(*(kinds.get(k, set()) for k in schema.feeds))
        assert set(schema.read_by) == reads.get(name, set()) | via_kinds, name
    assert set(kinds) == set(EVENT_KINDS)  # every kind is read, by its ev_<kind> name


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "systems.yaml"
    path.write_text(text)
    return path


_GOOD = """
keys:
  member: {pattern: "^M[0-9]{4}$", one_per_person: true}
systems:
  clinic:
    file: clinic.csv
    record_id: visit
    family: last
    given: first
    birth_date: born
    columns:
      - {name: last, kind: name, required: false}
      - {name: first, kind: name, required: false}
      - {name: born, kind: dob}
      - {name: member_no, kind: id, key: member, required: false}
"""


def test_a_registry_of_other_data_loads_with_files_beside_it(tmp_path):
    registry = load_registry(_write(tmp_path, _GOOD))
    schema = registry.systems["clinic"]
    assert registry.key_names == ("member",)
    assert registry.link_methods == ("singleton", "probabilistic", "strong:member")
    assert Path(schema.file) == (tmp_path / "clinic.csv").resolve()
    assert schema.record_id == "visit" and schema.code == "" and schema.event_date is None
    assert schema.key_columns == {"member_no": "member"}
    assert schema.column("member_no").pattern == "^M[0-9]{4}$"  # the key's format
    born = schema.column("born")
    assert (born.kind, born.range, born.required) == ("date", "birth", False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("birth_date: born", "birth_date: dob"), "birth_date: 'dob' is not a declared column"),
        (("key: member,", "key: ssn,"), "key 'ssn' is not one of keys"),
        (("kind: dob}", "kind: dob, colour: red}"), "colour"),
        (("kind: dob}", "kind: birthday}"), "kind"),
        (('pattern: "^M[0-9]{4}$"', 'pattern: "^M[0-9"'), "pattern"),
        # Python's re accepts these; DuckDB's RE2 does not, and would fail mid-ingest.
        (('pattern: "^M[0-9]{4}$"', 'pattern: "^(?!M0)M[0-9]{4}$"'), "keys.member.pattern"),
        (("kind: dob}", 'kind: dob}\n      - {name: code, kind: id, pattern: "(?<=x)y"}'), "RE2"),
        (("kind: dob}", 'kind: dob}\n      - {name: code, kind: id, pattern: "(a)\\\\1"}'), "RE2"),
        (
            ("record_id: visit", 'record_id: visit\n    record_id_pattern: "^(?=V)"'),
            "record_id_pattern",
        ),
        (
            ("birth_date: born", "birth_date: born\n    address: [last, street]"),
            "address: 'street'",
        ),
        (("birth_date: born", "birth_date: born\n    postcode: zip"), "postcode: 'zip' is not"),
        (("one_per_person: true", "typos: true"), "typos needs one_per_person"),
        (("  clinic:", "  Clinic:"), "system 'Clinic'"),
        (("kind: dob}", "kind: int}"), "column born: a number needs its plausible range"),
    ],
)
def test_a_broken_registry_is_refused_with_the_system_and_field(tmp_path, change, message):
    old, new = change
    assert old in _GOOD
    with pytest.raises(RegistryError) as exc:
        load_registry(_write(tmp_path, _GOOD.replace(old, new)))
    assert message in str(exc.value)


def test_extending_the_world_adds_a_system_and_keeps_the_27(tmp_path):
    text = """
extends: world
systems:
  interviews:
    code: IV
    file: interviews.parquet
    event_date: held
    family: surname
    given: given
    birth_date: dob
    columns:
      - {name: passport, kind: id, key: passport}
      - {name: surname, kind: name}
      - {name: given, kind: name}
      - {name: dob, kind: dob}
      - {name: held, kind: date}
"""
    registry = load_registry(_write(tmp_path, text))
    assert tuple(registry.systems) == (*SYSTEMS, "interviews")
    assert registry.key_names == KEYS
    assert (
        registry.systems["interviews"].column("passport").pattern
        == SCHEMAS["consular_visas"].column("passport_no").pattern
    )


def test_the_shipped_file_is_the_default():
    assert load_registry(WORLD_REGISTRY).systems == world_registry().systems


def test_a_pattern_python_accepts_but_duckdb_cannot_run_is_refused_at_load(tmp_path):
    """A look-ahead compiles in Python's re but not in DuckDB's RE2: refused on load, naming
    the system and the field, instead of failing mid-ingest."""
    pattern = "^(?!M0)M[0-9]{4}$"
    re.compile(pattern)  # Python's re accepts it
    old = "{name: member_no, kind: id, key: member, required: false}"
    new = f'{{name: member_no, kind: id, key: member, required: false, pattern: "{pattern}"}}'
    with pytest.raises(RegistryError) as exc:
        load_registry(_write(tmp_path, _GOOD.replace(old, new)))
    message = str(exc.value)
    assert "systems.clinic.columns.3.pattern" in message
    assert "RE2" in message and "(?!" in message
