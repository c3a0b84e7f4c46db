"""The published JSON schema of the spec file (``schema/quantkit-spec.schema.json``, ``quantkit schema``)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from .spec import QuantizationSpec

__all__ = ["spec_json_schema", "spec_json_schema_text"]


def _factory_defaults(schema: dict[str, Any]) -> None:
    """Write the defaults of ``default_factory`` fields (lists like ``op_types: [MatMul]``) into ``schema``.

    pydantic leaves them out of the JSON schema; sections (fields whose default is a whole spec model)
    stay without one: their own keys carry the defaults.
    """
    from pydantic_core import to_jsonable_python

    defs = schema.get("$defs", {})
    seen: set[type[BaseModel]] = set()

    def models_in(annotation: Any) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in getattr(annotation, "__args__", ()) for m in models_in(arg)]

    def walk(model: type[BaseModel], node: dict[str, Any] | None) -> None:
        if model in seen or node is None:
            return
        seen.add(model)
        props = node.get("properties", {})
        for name, info in model.model_fields.items():
            key = info.alias or name
            if info.default_factory is not None and key in props and "default" not in props[key]:
                value = info.default_factory()  # type: ignore[call-arg]
                if not isinstance(value, BaseModel):
                    props[key]["default"] = to_jsonable_python(value)
            for sub in models_in(info.annotation):
                walk(sub, defs.get(sub.__name__))

    walk(QuantizationSpec, schema)


def spec_json_schema() -> dict[str, Any]:
    """The published JSON schema of the spec file (with the defaults of list-valued fields filled in)."""
    schema = QuantizationSpec.model_json_schema()
    _factory_defaults(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "quantkit spec"
    return schema


def spec_json_schema_text() -> str:
    return json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"
