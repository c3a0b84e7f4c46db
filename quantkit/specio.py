"""Reading a spec file: bytes → text → YAML → mapping, refusing hostile documents before they can hurt.

:func:`load_spec` is the only entry point (re-exported by :mod:`quantkit.spec`). Whatever the file holds,
it returns a :class:`~quantkit.spec.QuantizationSpec` or raises :class:`~quantkit.errors.SpecError` naming
the file (and the key path when there is one); never another exception. Before ``yaml.safe_load`` builds
anything, the document's event stream (parsed iteratively, so deep nesting cannot overflow the stack) is
measured: nesting depth, node count with aliases expanded (alias "bombs"), aliases to an anchor that
is still open (recursive structures), and the file size are all bounded.
"""

from __future__ import annotations

import codecs
import logging
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError, SpecIssue

logger = logging.getLogger(__name__)

__all__ = ["MAX_SPEC_BYTES", "MAX_DEPTH", "MAX_NODES", "decode_spec_bytes", "measure_yaml", "read_yaml", "load_spec"]

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


def load_spec(path: str | Path) -> Any:
    """Read and validate a YAML spec; relative paths resolve against the spec's folder.

    Returns a :class:`~quantkit.spec.QuantizationSpec`; raises :class:`~quantkit.errors.SpecError` naming the
    file and key path for anything else the file may hold.
    """
    from .spec import _resolve_paths, parse_spec

    path = Path(path)
    name = path.name
    raw = read_yaml(path)
    if raw is None:
        raise _issue(name, "the file is empty")
    try:
        if isinstance(raw, dict):
            _resolve_paths(raw, path.resolve().parent)
        return parse_spec(raw, file=name)
    except SpecError:
        raise
    except RecursionError:
        raise _issue(name, "nested too deeply to validate") from None
