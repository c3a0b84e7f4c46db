"""Sharded evaluation (``evaluation.shards``): the evaluation set is split on row boundaries — whole
batches, so every batch is the one an unsharded run sees — each shard is scored by one worker that
loads the ONNX model once, the per-batch predictions (``Task.predict_batch``, one entry per row)
come back in order, and the driver gathers them with ``Task.collect`` (which also joins the rows of
one question-answering example that landed in two shards) before computing the metric once."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import use_executor

logger = logging.getLogger(__name__)

__all__ = ["predict", "shard_bounds"]


def shard_bounds(rows: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: at most ``shards`` contiguous ranges of whole batches covering ``rows``."""
    batches = -(-rows // batch_size)
    per = -(-batches // max(1, shards))
    return [(start, min(rows, start + per * batch_size)) for start in range(0, rows, per * batch_size)]


@dataclass
class _Model:
    """The model a shard scores: a path (same machine) or its files (sent once through the object store)."""

    name: str
    task: Any
    batch_size: int
    threads: int | None
    path: str | None = None
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    digest: str = ""

    def local_path(self) -> Path:
        if self.path is not None:
            return Path(self.path)
        from ..search.remote import write_files

        folder = Path(os.environ.get("QUANTKIT_RAY_CACHE") or tempfile.gettempdir()) / "quantkit-ray" / self.digest
        write_files(folder, self.files)
        return folder / self.name


def _score_shard(model: _Model, part: Any) -> list[Any]:
    """One shard on one worker: load the model once, run its batches, return the uncollected parts."""
    from ..evaluation import OnnxRunner

    runner = OnnxRunner(model.local_path(), model.threads)
    parts, _ = runner.run_parts(part, model.batch_size, model.task)
    return parts


def predict(path: str | Path, data: Any, spec: Any, task: Any, *, threads: int | None = None,
            progress: Any | None = None) -> Any:
    """``task``'s predictions of the ONNX model at ``path`` on ``data`` (an ``EvaluationSpec`` says the batch
    size and sharding); the same value sharded or not."""
    from ..evaluation import OnnxRunner

    shards = spec.shards or 1
    if shards <= 1 or len(data) <= spec.batch_size:
        return OnnxRunner(path, threads).run(data, spec.batch_size, task, progress=progress).values
    bounds = shard_bounds(len(data), shards, spec.batch_size)
    pieces = [data.slice(start, stop) for start, stop in bounds]
    with use_executor(spec.executor) as executor:
        if executor.name == "local":
            model = _Model(Path(path).name, task, spec.batch_size, threads, path=str(path))
        else:
            from ..search.remote import _digest, model_files

            files = model_files(path)
            model = _Model(Path(path).name, task, spec.batch_size, max(1, int(spec.executor.cpus_per_shard)),
                           files=files, digest=_digest(files))
        logger.info("evaluating %s in %d shard(s) on the %s executor", Path(path).name, len(pieces), executor.name)
        results = executor.map_shards(_score_shard, model, pieces, cpus=spec.executor.cpus_per_shard)
    parts = [p for shard in results for p in shard]
    if progress is not None:
        progress.update(len(data))
    return task.collect(parts, data)
