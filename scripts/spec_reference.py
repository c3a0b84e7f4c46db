"""Render the spec's JSON schema as the Markdown reference in docs/spec.md.

    .venv/bin/python scripts/spec_reference.py            # rewrite docs/spec.md between the markers
    .venv/bin/python scripts/spec_reference.py --check    # exit 1 when docs/spec.md is out of date
    .venv/bin/python scripts/spec_reference.py --stdout   # print the reference

Everything comes from ``quantkit.spec.spec_json_schema()`` (the schema ``quantkit schema`` prints and
``schema/quantkit-spec.schema.json`` publishes), so a new spec field or section appears here without
touching this script: one table of the top-level keys, then one table per section (key / type /
default / description), nested mappings (``quantization.calibration``, ``data.evaluation``, ...) in
their own tables. A definition used at several places (``evaluation.latency`` and ``tuning.latency``)
is listed once, under all its key paths. Sections keep the order in which the spec declares them.
tests/unit/test_docs.py fails when docs/spec.md is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import doc_sections  # noqa: E402  (scripts/doc_sections.py)
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "spec.md"
START = "<!-- spec-reference:start -->"
END = "<!-- spec-reference:end -->"
REGENERATE = ".venv/bin/python scripts/spec_reference.py"

_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "bool", "array": "list",
          "object": "mapping", "null": "null"}


def _ref_name(prop: dict[str, Any]) -> str | None:
    """The ``$defs`` name a property points to (directly, or as the non-null branch of an anyOf)."""
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1 and "$ref" in branches[0]:
        return branches[0]["$ref"].rsplit("/", 1)[-1]
    return None


def _value(value: Any) -> str:
    """A default as it would be written in the YAML spec."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and value.strip() == value and not value[0] in "[{'\"&*!|>%@`#" else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _bounds(prop: dict[str, Any]) -> str:
    parts = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in prop:
            parts.append(f"{sign} {_value(prop[key])}")
    if "minItems" in prop:
        parts.append(f"≥ {prop['minItems']} item{'s' if prop['minItems'] != 1 else ''}")
    if "maxItems" in prop:
        parts.append(f"≤ {prop['maxItems']} items")
    return ", ".join(parts)


def _type(prop: dict[str, Any], path: str) -> str:
    """A short human type: `a` | `b` for enums, `list of string`, `mapping → path`, `... or null`."""
    if "anyOf" in prop:
        branches = prop["anyOf"]
        texts = [_type(b, path) for b in branches if b.get("type") != "null"]
        nullable = any(b.get("type") == "null" for b in branches)
        return " or ".join(texts + (["null"] if nullable else []))
    if _ref_name(prop) is not None:
        return f"mapping → `{path}`"
    if "const" in prop:
        return f"`{_value(prop['const'])}`"
    if "enum" in prop:
        return " | ".join(f"`{_value(v)}`" for v in prop["enum"])
    kind = prop.get("type")
    if kind == "array":
        items = prop.get("items") or {}
        text = f"list of {_type(items, path)}" if items else "list"
    elif kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        text = f"mapping of key → {_type(prop['additionalProperties'], path)}"
    else:
        text = _TYPES.get(kind, kind or "any")
    bounds = _bounds(prop)
    return f"{text} ({bounds})" if bounds else text


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(name: str, prop: dict[str, Any], required: list[str]) -> str:
    if name in required:
        return "**required**"
    if "default" in prop:
        return f"`{_value(prop['default'])}`"
    if _ref_name(prop) is not None:
        return "its keys' defaults"
    return "—"


def _collect(schema: dict[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """Definitions reachable from the root, in first-seen (declaration) order, with every key path to each."""
    defs = schema.get("$defs", {})
    order: list[str] = []
    paths: dict[str, list[str]] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for name, prop in node.get("properties", {}).items():
            ref = _ref_name(prop)
            if ref is None or ref not in defs:
                continue
            path = f"{prefix}{name}"
            if ref not in paths:
                order.append(ref)
                paths[ref] = []
            paths[ref].append(path)
            if len(paths[ref]) == 1:
                walk(defs[ref], path + ".")

    walk(schema, "")
    return order, paths


def _table(node: dict[str, Any], prefix: str, defs: dict[str, Any]) -> list[str]:
    required = node.get("required", [])
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, prop in node.get("properties", {}).items():
        ref = _ref_name(prop)
        description = prop.get("description") or (defs.get(ref, {}).get("description", "") if ref else "")
        if not description and ref:
            description = f"The `{prefix}{name}` keys below."
        rows.append(f"| `{name}` | {_cell(_type(prop, prefix + name))} | {_cell(_default(name, prop, required))} | "
                     f"{_cell(description)} |")
    return rows


def render(schema: dict[str, Any]) -> str:
    """The Markdown reference of ``schema`` (without the markers)."""
    order, paths = _collect(schema)
    defs = schema.get("$defs", {})
    out = [
        f"<!-- generated from the spec's JSON schema by scripts/spec_reference.py; regenerate with: {REGENERATE} -->",
        "",
        "Top-level keys:",
        "",
        *_table(schema, "", defs),
    ]
    for ref in order:
        node = defs[ref]
        heading = ", ".join(f"`{p}`" for p in paths[ref])
        out += ["", f"#### {heading}", ""]
        if node.get("description"):
            out += [_cell(node["description"]), ""]
        out += _table(node, paths[ref][0] + ".", defs)
    return "\n".join(out) + "\n"


def current_reference() -> str:
    from quantkit.schema import spec_json_schema

    return render(spec_json_schema())


def splice(page: str, text: str) -> str:
    """``page`` with the text between the markers replaced by ``text``."""
    return doc_sections.splice(page, START, END, text)


def page_section(page: str) -> str:
    return doc_sections.section(page, START, END)


def main(argv: list[str] | None = None) -> int:
    return doc_sections.main(argv, doc=__doc__, generate=current_reference, start_marker=START, end_marker=END,
                             what="spec reference", regenerate=REGENERATE, page=PAGE)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
