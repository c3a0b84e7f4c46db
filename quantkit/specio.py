"""Reading and validating a spec: bytes → text → YAML → mapping → :class:`~quantkit.spec.QuantizationSpec`,
refusing hostile documents before they can hurt, and rendering every problem as ``file: key.path: message``.

:func:`load_spec` reads a file, :func:`parse_spec` validates a mapping (the schema, then the rules that need
a registry: :func:`quantkit.resolve.spec_rule_issues`), :func:`with_overrides` re-validates a copy. Whatever the file holds,
it returns a :class:`~quantkit.spec.QuantizationSpec` or raises :class:`~quantkit.errors.SpecError` naming
the file (and the key path when there is one); never another exception. Before ``yaml.safe_load`` builds
anything, the document's event stream (parsed iteratively, so deep nesting cannot overflow the stack) is
measured: nesting depth, node count with aliases expanded (alias "bombs"), aliases to an anchor that
is still open (recursive structures), and the file size are all bounded.
"""

from __future__ import annotations

import codecs
import difflib
import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import SpecError, SpecIssue
from .resolve import config_issues, spec_rule_issues
from .spec import SPEC_VERSION, KeyedError, QuantizationConfig, QuantizationSpec, looks_local

logger = logging.getLogger(__name__)

__all__ = ["MAX_SPEC_BYTES", "MAX_DEPTH", "MAX_NODES", "decode_spec_bytes", "measure_yaml", "read_yaml", "load_spec",
           "parse_spec", "with_overrides", "format_error", "resolve_paths"]

#: A spec is a few kilobytes; anything above this is not one.
MAX_SPEC_BYTES = 1 << 20
#: The deepest real spec nests 5 levels (tuning.space.<key>: [..]); leave ample room.
MAX_DEPTH = 64
#: Nodes after expanding aliases (a real spec has a few hundred).
MAX_NODES = 100_000

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _issue(file: str, message: str, path: str = "") -> SpecError:
    return SpecError([SpecIssue(file, path, message)])


def decode_spec_bytes(data: bytes, file: str) -> str:
    """UTF-8 text (a byte-order mark for UTF-8/16/32 is honoured and dropped); else a SpecError."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            data, chosen = data[len(bom):], encoding
            break
    else:
        chosen = "utf-8"
    try:
        text = data.decode(chosen)
    except UnicodeDecodeError as exc:
        raise _issue(file, f"cannot read: not {chosen.upper()} text (invalid byte at offset {exc.start}); "
                           "save the spec as UTF-8") from None
    if "\x00" in text:
        raise _issue(file, "cannot read: binary data (NUL bytes), not a YAML text file")
    return text


def measure_yaml(text: str, file: str) -> None:
    """Refuse documents too deep, too large once aliases are expanded, recursive, or holding several documents.

    Runs on the event stream (PyYAML's parser is iterative), before anything is constructed.
    """
    stack: list[list[Any]] = []  # [anchor, nodes so far] per open collection
    anchors: dict[str, int] = {}  # anchor -> expanded node count (completed anchors only)
    open_anchors: set[str] = set()
    total = 0
    documents = 0

    def add(n: int) -> None:
        nonlocal total
        total += n
        if stack:
            stack[-1][1] += n
        if total > MAX_NODES:
            raise _issue(file, f"the document expands to more than {MAX_NODES} values (anchors/aliases repeated "
                               "too often?); a spec is a small mapping")

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _issue(file, "several YAML documents (---) in one file; a spec is one mapping")
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(stack) >= MAX_DEPTH:
                    raise _issue(file, f"nested more than {MAX_DEPTH} levels deep; a spec is a few levels of "
                                       "mappings and lists")
                if event.anchor is not None:
                    open_anchors.add(event.anchor)
                stack.append([event.anchor, 1])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                anchor, count = stack.pop()
                if anchor is not None:
                    anchors[anchor] = count
                    open_anchors.discard(anchor)
                add(count)
            elif isinstance(event, yaml.ScalarEvent):
                if event.anchor is not None:
                    anchors[event.anchor] = 1
                add(1)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor in open_anchors:
                    raise _issue(file, f"alias *{event.anchor} refers to a collection that contains it "
                                       "(a recursive structure)")
                add(anchors.get(event.anchor, 1))  # undefined aliases: yaml.safe_load reports them
    except yaml.YAMLError:
        return  # yaml.safe_load reports it with line and column


def read_yaml(path: Path) -> Any:
    """The parsed YAML document of ``path`` (None when empty); SpecError for anything unreadable."""
    name = path.name
    try:
        if path.is_dir():
            folder = True
        else:
            folder = False
            size = path.stat().st_size
            if size <= MAX_SPEC_BYTES:
                with open(path, "rb") as f:
                    data = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise _issue(str(path), "file not found") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise _issue(str(path), f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if folder:
        raise _issue(str(path), "is a folder; expected a YAML spec file")
    if size > MAX_SPEC_BYTES:
        raise _issue(str(path), f"file is {size} bytes; a spec is at most {MAX_SPEC_BYTES} bytes")
    if len(data) > MAX_SPEC_BYTES:  # grew while reading (or a pipe)
        raise _issue(str(path), f"file is larger than {MAX_SPEC_BYTES} bytes; not a spec")
    text = decode_spec_bytes(data, name)
    measure_yaml(text, name)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise _issue(name, f"invalid YAML: {where}{problem}") from None
    except (RecursionError, MemoryError) as exc:  # measure_yaml should have refused it first
        raise _issue(name, f"invalid YAML: too large or too deep ({type(exc).__name__})") from None
    except ValueError as exc:  # e.g. a timestamp or number the constructor cannot build
        raise _issue(name, f"invalid YAML: {exc}") from None


def load_spec(path: str | Path) -> QuantizationSpec:
    """Read and validate a YAML spec; relative paths resolve against the spec's folder.

    Returns a :class:`~quantkit.spec.QuantizationSpec`; raises :class:`~quantkit.errors.SpecError` naming the
    file and key path for anything else the file may hold.
    """
    path = Path(path)
    name = path.name
    raw = read_yaml(path)
    if raw is None:
        raise _issue(name, "the file is empty")
    try:
        if isinstance(raw, dict):
            resolve_paths(raw, path.resolve().parent)
        return parse_spec(raw, file=name)
    except SpecError:
        raise
    except RecursionError:
        raise _issue(name, "nested too deeply to validate") from None


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at the parent of ``loc`` (for 'unknown key' messages)."""
    model: type[BaseModel] | None = QuantizationSpec
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        ann = model.model_fields[part].annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return list(model.model_fields) if model is not None else []


def format_error(err: dict[str, Any]) -> tuple[str, str]:
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    path = ".".join(str(p) for p in loc)
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return path, f"{value!r} is not one of {expected}"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return path, f"unknown key{hint} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return path, "required key is missing"
    if kind == "value_error":
        exc = ctx.get("error")
        if isinstance(exc, KeyedError):
            if exc.detail is not None:  # a nested value check (tuning.space values): render it as a field error
                return exc.path, format_error({**exc.detail, "loc": ()})[1]
            return exc.path, exc.message
        msg = str(exc) if exc is not None else err["msg"]
        # "field: message" from a model validator → attach the field to the path
        head, sep, rest = msg.partition(": ")
        if sep and " " not in head and head.isidentifier():
            return (f"{path}.{head}" if path else head), rest
        return path, msg
    type_names = {
        "int_parsing": "an integer",
        "int_type": "an integer",
        "int_from_float": "a whole number",
        "float_parsing": "a number",
        "float_type": "a number",
        "bool_parsing": "true or false",
        "bool_type": "true or false",
        "string_type": "a string",
        "list_type": "a list",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
        "dict_type": "a mapping",
    }
    if kind in type_names:
        return path, f"expected {type_names[kind]}, got {value!r}"
    return path, err["msg"][0].lower() + err["msg"][1:]


def _issues_from_validation(exc: ValidationError, file: str | None) -> list[SpecIssue]:
    return [SpecIssue(file, *format_error(e)) for e in exc.errors(include_url=False)]


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Resolve relative local paths in-place against the spec file's folder."""

    def fix(value: Any, must_look_local: bool) -> Any:
        if not isinstance(value, str) or not value:
            return value
        try:
            p = Path(value).expanduser()
            if p.is_absolute():
                return str(p)
            if (not must_look_local) or looks_local(value) or (base / value).exists():
                return str((base / p).resolve())
        except (OSError, ValueError, RuntimeError):  # NUL byte, name too long, unknown ~user: validation says so
            return value
        return value

    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("name_or_path"), str):
        v = model["name_or_path"]
        if v.startswith((".", "/", "~")) or _exists(base / v):
            model["name_or_path"] = fix(v, False)
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("calibration", "evaluation"):
            ds = data.get(key)
            if isinstance(ds, dict) and "path" in ds:
                ds["path"] = fix(ds["path"], True)
    out = raw.get("output")
    if isinstance(out, dict) and isinstance(out.get("dir"), str):
        out["dir"] = fix(out["dir"], False)


def _quantization_issues(raw: dict[str, Any], file: str | None) -> list[SpecIssue]:
    """The backend's rules on a ``quantization`` section that validates on its own, so that they are listed
    with the problems elsewhere in a spec that does not."""
    section = raw.get("quantization")
    if not isinstance(section, dict):
        return []
    try:
        config = QuantizationConfig.model_validate(section)
    except ValidationError:
        return []  # its own problems are already listed
    return [SpecIssue(file, path, message) for path, message in config_issues(config)]


def parse_spec(raw: Any, *, file: str | None = None) -> QuantizationSpec:
    """Validate an already-parsed mapping; raises :class:`SpecError` listing every problem."""
    if not isinstance(raw, dict):
        raise SpecError([SpecIssue(file, "", f"expected a mapping at the top level, got {type(raw).__name__}")])
    if "spec_version" in raw and raw["spec_version"] != SPEC_VERSION:
        raise SpecError(
            [SpecIssue(file, "spec_version", f"{raw['spec_version']!r} is not supported (this quantkit reads {SPEC_VERSION})")]
        )
    try:
        spec = QuantizationSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_issues_from_validation(exc, file) + _quantization_issues(raw, file)) from None
    issues = [SpecIssue(file, path, message) for path, message in spec_rule_issues(spec)]
    if issues:
        raise SpecError(issues)
    return spec


def with_overrides(spec: QuantizationSpec, **changes: Any) -> QuantizationSpec:
    """A copy of ``spec`` with dotted-key overrides, e.g. ``{"model.name_or_path": "x"}``, re-validated."""
    data = spec.model_dump(mode="json", exclude_unset=True)  # keeps "what the user set" (hardware defaults)
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_spec(data)
