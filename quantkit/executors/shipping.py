"""Shipping models to workers: an ONNX model's files as bytes, their digest, and the node-local cache.

A model goes through the object store as bytes once; on each node it is written once into
``$QUANTKIT_RAY_CACHE`` (else the temp folder) ``/quantkit-ray/<digest>/``, the first writer wins."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["cache_root", "files_digest", "model_files", "write_files"]


def cache_root() -> Path:
    """This node's folder for shipped graphs: ``$QUANTKIT_RAY_CACHE``, else the temp folder, + ``quantkit-ray``."""
    return Path(os.environ.get("QUANTKIT_RAY_CACHE") or tempfile.gettempdir()) / "quantkit-ray"


def model_files(path: str | Path) -> dict[str, bytes]:
    """An ONNX model's file and the external-data files its initializers name, by file name."""
    import onnx

    path = Path(path)
    names = {path.name}
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            names.update(e.value for e in tensor.external_data if e.key == "location")
    return {name: (path.parent / name).read_bytes() for name in sorted(names)}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into ``folder`` atomically: a folder that exists is complete (first writer wins)."""
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        try:
            os.rename(tmp, folder)
        except OSError:  # another worker of this node got there first
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def files_digest(files: dict[str, bytes]) -> str:
    """A short content digest of ``files`` (names and bytes): the name of their folder in the node cache."""
    h = hashlib.sha256()
    for name, data in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:24]
