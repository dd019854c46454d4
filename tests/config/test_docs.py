"""docs/config.md documents every key the config accepts, and what a reload does with it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edged.config.diff import RELOAD, Reload, config_keys
from edged.config.validate import config_schema

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def table_ref(value: dict[str, Any]) -> str | None:
    """The struct a property holds (a table, or an array of tables), if any."""
    items = value.get("items")
    ref = value.get("$ref") or (items.get("$ref") if isinstance(items, dict) else None)
    return ref.rsplit("/", 1)[1] if ref else None


def keys(schema: dict[str, Any], struct: str, prefix: str) -> list[tuple[str, str]]:
    """(section, key) for every property of `struct`, following nested tables."""
    out: list[tuple[str, str]] = []
    for key, value in schema["$defs"][struct]["properties"].items():
        nested = table_ref(value)
        if nested:
            out += keys(schema, nested, f"{prefix}.{key}" if prefix else key)
        else:
            out.append((prefix, key))
    return out


def test_every_config_key_is_documented_in_its_section() -> None:
    schema = config_schema()
    text = DOC.read_text()
    sections = {}
    for block in text.split("\n## ")[1:] + text.split("\n### ")[1:]:
        title, _, body = block.partition("\n")
        sections[title.strip("`[] ")] = body.split("\n## ")[0].split("\n### ")[0]
    missing = []
    for section, key in keys(schema, "Config", ""):
        body = sections.get(section, "")
        if f"| `{key}` |" not in body:
            missing.append(f"{section}.{key}")
    assert not missing, f"not documented in docs/config.md: {missing}"


def test_every_keys_reload_column_matches_the_reload_table() -> None:
    # The "on reload" cell of each key's row says what edged.config.diff.RELOAD decides.
    text = DOC.read_text()
    section = ""
    documented: dict[str, str] = {}
    for line in text.splitlines():
        heading = re.match(r"^#{2,3} `\[\[?([a-z.]+)\]?\]`", line)
        if heading:
            section = heading.group(1)
        row = re.match(r"^\| `([a-z_]+)` \|.*\| ([^|]+) \|$", line)
        if section and row:
            documented[f"{section}.{row.group(1)}"] = row.group(2).strip()
    expected = {key: RELOAD[key].value for key in config_keys()}
    # A row that names a table (`tracking`, `zones`) points at its own rows.
    tables = {k: v for k, v in documented.items() if k not in expected}
    assert set(tables.values()) <= {"by key, below"}, tables
    assert {k: v for k, v in documented.items() if k in expected} == expected
    legend = text.split("## What a reload changes", 1)[1].split("\n## ", 1)[0]
    for reload in Reload:
        assert f"| {reload.value} |" in legend, f"docs/config.md does not explain {reload.value!r}"
