"""The artifact folder: layout, atomic writing, and the report's environment facts.

Layout of ``output.dir``::

    model.onnx              the quantized model (what ORTModelFor* loads)
    config.json             the transformers model config
    tokenizer files         tokenizer.json, vocab, special tokens, ...
    ort_config.json         Optimum's description of the quantization
    quantkit_report.json    spec, versions, CPU, FP32 vs quantized metric/latency/size, timings
    quantkit_spec.yaml      the resolved spec

The folder is built next to its final place and renamed into it at the end, so a
crash never leaves half a folder, and an existing folder is only replaced when
asked to.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import ArtifactError, OutputExistsError

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_FILE",
    "REPORT_FILE",
    "SPEC_FILE",
    "ORT_CONFIG_FILE",
    "check_output_dir",
    "atomic_directory",
    "write_artifacts",
    "package_versions",
]

MODEL_FILE = "model.onnx"
REPORT_FILE = "quantkit_report.json"
SPEC_FILE = "quantkit_spec.yaml"
ORT_CONFIG_FILE = "ort_config.json"

KEY_PACKAGES = (
    "quantkit",
    "torch",
    "transformers",
    "tokenizers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "neural-compressor",
    "torchao",
    "datasets",
    "evaluate",
    "huggingface_hub",
    "numpy",
    "pydantic",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def check_output_dir(target: str | Path, overwrite: bool) -> Path:
    """Fail early (before any expensive work) if ``target`` cannot become the artifact folder."""
    target = Path(target).expanduser().resolve()
    if target.exists():
        if not target.is_dir():
            raise ArtifactError(f"output {target} exists and is not a folder")
        if not overwrite and any(target.iterdir()):
            raise OutputExistsError(
                f"output folder {target} already exists",
                hint="pass --overwrite (or output.overwrite: true) to replace it, or choose another --output",
            )
    parent = target.parent
    probe_dir = parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not os.access(probe_dir, os.W_OK):
        raise ArtifactError(f"cannot write into {probe_dir} (needed for output {target})")
    return target


@contextmanager
def atomic_directory(target: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; on success it atomically becomes ``target``.

    On any exception the temporary folder is removed and ``target`` is untouched.
    """
    target = check_output_dir(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
            try:
                tmp.rename(target)
            except OSError:
                old.rename(target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_dump(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def write_artifacts(
    target: str | Path,
    *,
    model_path: str | Path,
    model_config: Any,
    tokenizer: Any,
    report: dict[str, Any],
    spec_yaml: str,
    ort_config: dict[str, Any] | None = None,
    overwrite: bool = False,
    extra_files: dict[str, str | Path] | None = None,
) -> Path:
    """Write the artifact folder atomically and return its path."""
    with atomic_directory(target, overwrite) as tmp:
        try:
            shutil.copyfile(model_path, tmp / MODEL_FILE)
            data_file = Path(str(model_path) + "_data")
            if data_file.exists():
                shutil.copyfile(data_file, tmp / (MODEL_FILE + "_data"))
            model_config.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if ort_config is not None:
                _json_dump(ort_config, tmp / ORT_CONFIG_FILE)
            for name, src in (extra_files or {}).items():
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            (tmp / SPEC_FILE).write_text(spec_yaml, encoding="utf-8")
            _json_dump(report, tmp / REPORT_FILE)
        except OSError as exc:
            raise ArtifactError(f"writing artifacts for {target} failed: {exc}") from exc
    logger.info("artifacts written to %s", target)
    return Path(target).expanduser().resolve()
