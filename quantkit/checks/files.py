"""Stage 1: the files and folders the spec names exist and are readable; the output folder is writable."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import QuantkitError
from ..models import gguf_source
from ..spec import DATA_FILE_FORMATS, DatasetSpec
from .base import CheckContext, Problem, check, error, warning

__all__ = ["is_local_model", "weight_files", "dataset_entries", "nearest_existing"]

#: Files that hold PyTorch (or safetensors) weights transformers can load.
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json",
                   "pytorch_model.bin.index.json")


def is_local_model(name_or_path: str) -> bool:
    """Whether ``name_or_path`` means a local folder (same rule as :func:`quantkit.models.load_model`)."""
    return Path(name_or_path).expanduser().exists() or name_or_path.startswith((".", "/", "~"))


def weight_files(folder: Path) -> list[Path]:
    return sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)})


def dataset_entries(ctx: CheckContext) -> list[tuple[str, DatasetSpec]]:
    """``(key path, entry)`` of each dataset in the spec, calibration first."""
    data = ctx.spec.data
    entries = [("data.calibration", data.calibration)] if data.calibration is not None else []
    return [*entries, ("data.evaluation", data.evaluation)]


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def missing_path_hint(path: Path, spec_dir: Path | None = None) -> str:
    """The fix for a local ``path`` that does not exist: its closest existing folder and, when the path exists
    relative to the current folder instead of the spec file's (a spec kept elsewhere), that."""
    import os

    hint = f"the closest folder that exists is {nearest_existing(path)}"
    if spec_dir is not None:
        try:
            rel = os.path.relpath(path, spec_dir)
            here = (Path.cwd() / rel).resolve()
        except (OSError, ValueError):
            return hint
        if here.exists():
            hint += (f"; {rel} exists relative to the current folder, but relative paths in a spec resolve against "
                     f"the spec file's folder ({spec_dir}): write {here} or move the spec")
        elif not rel.startswith(".."):  # under the spec's folder: most likely written relative to it
            hint += f" (relative paths in a spec resolve against the spec file's folder, {spec_dir})"
    return hint


def _readable(path: Path) -> str | None:
    """None when the file opens for reading, else why not."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


@check("files.model", stage="files")
def check_model_files(ctx: CheckContext) -> list[Problem]:
    """model.name_or_path is set; a local folder exists, holds config.json and weights."""
    if ctx.loaded is not None:
        return []
    name = ctx.model_name
    if not name:
        return [error("model.name_or_path", "no model: expected a Hub model id or a local folder",
                      "set model.name_or_path in the spec or pass --model")]
    if not is_local_model(name):
        return []  # a Hub id: model.config checks it can be reached
    folder = Path(name).expanduser()
    if not folder.exists():
        return [error("model.name_or_path", f"cannot load model: folder not found: {folder}",
                      "check model.name_or_path / --model (relative paths resolve against the spec file)")]
    try:
        gguf = gguf_source(name)
    except QuantkitError as exc:
        return [error("model.name_or_path", str(exc))]
    if gguf is not None:  # a GGUF file: model.config reads it
        why = _readable(Path(gguf[0]) / gguf[1])
        return [error("model.name_or_path", f"cannot read {gguf[1]}: {why}")] if why else []
    if not folder.is_dir():
        return [error("model.name_or_path", f"cannot load model: {folder} is a file; expected a folder with "
                      "config.json, the weights and the tokenizer files, or a .gguf file")]
    problems: list[Problem] = []
    config = folder / "config.json"
    if not config.is_file():
        problems.append(error("model.name_or_path", f"cannot load model: no config.json in {folder}",
                              "point to a folder saved by save_pretrained()"))
    elif (why := _readable(config)) is not None:
        problems.append(error("model.name_or_path", f"cannot read {config}: {why}"))
    weights = weight_files(folder)
    if not weights:
        found = "model.onnx only: " if (folder / "model.onnx").is_file() else ""
        problems.append(error(
            "model.name_or_path",
            f"cannot load model: {found}no PyTorch weights in {folder} "
            "(expected model.safetensors, a sharded *.safetensors index or pytorch_model.bin)",
            "quantize exports from the PyTorch weights: point to the folder saved by save_pretrained()",
        ))
    for w in weights:
        if (why := _readable(w)) is not None:
            problems.append(error("model.name_or_path", f"cannot read weights {w}: {why}"))
    return problems


@check("files.data", stage="files")
def check_data_files(ctx: CheckContext) -> list[Problem]:
    """Local dataset files exist, are readable and have a known format."""
    problems: list[Problem] = []
    for key, ds in dataset_entries(ctx):
        if not ds.is_local:
            continue
        used = key != "data.calibration" or ctx.calibration_used
        make = error if used else warning
        unused = "" if used else " (not used by this run's approach)"
        path = Path(ds.path)
        if not path.exists():
            problems.append(make(f"{key}.path", f"file not found: {path}{unused}",
                                 missing_path_hint(path, ctx.spec_dir)))
        elif path.is_dir():
            if not any(path.iterdir()):
                problems.append(make(f"{key}.path", f"folder {path} is empty{unused}"))
        elif ds.file_format is None:
            problems.append(make(f"{key}.path", f"cannot tell the format of {path.name}: expected one of "
                                 f"{', '.join(sorted(DATA_FILE_FORMATS))}{unused}"))
        elif (why := _readable(path)) is not None:
            problems.append(make(f"{key}.path", f"cannot read {path}: {why}{unused}"))
    return problems


@check("files.output", stage="files")
def check_output(ctx: CheckContext) -> list[Problem]:
    """The artifact folder is given, is not an existing non-empty folder (unless overwriting), and is writable."""
    target = ctx.output_dir or (Path(ctx.spec.output.dir) if ctx.spec.output.dir else None)
    if target is None:
        return [warning("output.dir", "no artifact folder: quantize will need one",
                        "set output.dir in the spec or pass --output")]
    target = Path(target).expanduser().resolve()
    if target.exists():
        if not target.is_dir():
            return [error("output.dir", f"output {target} exists and is not a folder",
                          "choose another output.dir / --output")]
        if not ctx.overwrite and any(target.iterdir()):
            return [error("output.dir", f"output folder {target} already exists and is not empty",
                          "pass --overwrite (or output.overwrite: true) to replace it, or choose another --output")]
    base = nearest_existing(target.parent)
    if not base.is_dir():
        return [error("output.dir", f"cannot create {target}: {base} is a file, not a folder",
                      "choose another output.dir / --output")]
    try:  # os.access says yes to root even on read-only or immutable folders: really try
        fd, probe = tempfile.mkstemp(prefix=".quantkit-check-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return [error("output.dir", f"output folder not writable: cannot create files in {base} "
                      f"({exc.strerror or exc}); needed for {target}",
                      "choose a writable output.dir / --output, or fix the folder's permissions")]
    return []
