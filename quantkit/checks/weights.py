"""Stage 1 (files): weight files are whole, checked cheaply (headers and directories only, never the data).

* ``*.safetensors``: 8-byte little-endian header length, a JSON header that parses into a mapping,
  every tensor's ``data_offsets`` inside the data section, and the file size equal to
  ``8 + header length + the largest end offset`` (an interrupted download is shorter).
* ``pytorch_model*.bin`` saved as a zip (torch >= 1.6): the zip central directory at the end of the
  file reads (a truncated file has none). Legacy pickles are not checked.
* ``*.index.json``: it parses, and every shard it names is in the folder.
"""

from __future__ import annotations

import json
import logging
import struct
import zipfile
from pathlib import Path

from .base import CheckContext, Problem, check, error
from .files import is_local_model, weight_files

logger = logging.getLogger(__name__)

__all__ = ["safetensors_problem", "torch_zip_problem", "index_problem", "check_weight_files"]

#: A safetensors header above this is not a real one (the format caps it at 100 MB).
_MAX_HEADER = 100 * 1024 * 1024


def safetensors_problem(path: Path) -> str | None:
    """None when ``path``'s header is consistent with its size, else what is wrong."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes: too short for a safetensors header (truncated?)"
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                return f"header length {n} does not fit in the file's {size} bytes (truncated?)"
            raw = f.read(n)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return f"header is not valid JSON ({exc.__class__.__name__}; truncated or not safetensors?)"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    data_size = size - 8 - n
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            return f"tensor {name!r} has no valid data_offsets"
        start, stop = offsets
        if not 0 <= start <= stop:
            return f"tensor {name!r} has data_offsets {offsets} out of order"
        if stop > data_size:
            return (f"tensor {name!r} ends at byte {stop} of the data but the file holds only {data_size} "
                    "(truncated: an interrupted download?)")
        end = max(end, stop)
    if end != data_size:
        return f"the tensors end at byte {end} of the data but the file holds {data_size} (corrupted?)"
    return None


def torch_zip_problem(path: Path) -> str | None:
    """None when ``path`` is a readable zip (or a legacy pickle, not checked), else what is wrong."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":
            return None if magic else "empty file"
        with zipfile.ZipFile(path) as z:  # reads the central directory at the end of the file
            if not z.namelist():
                return "zip archive holds nothing"
    except zipfile.BadZipFile as exc:
        return f"not a complete zip archive ({exc}; truncated: an interrupted download?)"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    return None


def index_problem(path: Path) -> str | None:
    """None when a sharded-weights index parses and every shard it names exists."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"cannot read the index ({exc.__class__.__name__}: {exc})"
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        return "the index has no weight_map of tensor → shard file"
    missing = sorted({v for v in weight_map.values() if not (path.parent / v).is_file()})
    if missing:
        return f"shard(s) named by the index are missing: {', '.join(missing[:5])}"
    return None


@check("files.weights", stage="files")
def check_weight_files(ctx: CheckContext) -> list[Problem]:
    """Local weight files are complete: safetensors headers match the file sizes, .bin zips and indexes read."""
    if ctx.loaded is not None:
        return []
    name = ctx.model_name
    if not name or not is_local_model(name):
        return []
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return []  # files.model reports it
    problems: list[Problem] = []
    for w in weight_files(folder):
        if w.name.endswith(".index.json"):
            why = index_problem(w)
        elif w.suffix == ".safetensors":
            why = safetensors_problem(w)
        else:
            why = torch_zip_problem(w)
        if why is not None:
            problems.append(error("model.name_or_path", f"weights file {w} is damaged: {why}",
                                  "download or save the model again (save_pretrained())"))
    return problems
