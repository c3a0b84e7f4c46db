"""Sharded evaluation (``evaluation.shards``): split the evaluation set, score the shards on an executor,
gather the results in order.

The set is split on row boundaries — whole batches, so every batch is the one an unsharded run sees —
and each shard is scored by one worker that loads the ONNX model once. This module only splits,
dispatches and gathers: the scoring function is passed in
(:func:`quantkit.evaluation.predict` passes one that returns ``Task.predict_batch`` per batch, then
joins them with ``Task.collect`` — which also joins the rows of one question-answering example that
landed in two shards — before computing the metric once)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import use_executor
from .shipping import cache_root, files_digest, model_files, write_files

logger = logging.getLogger(__name__)

__all__ = ["ShardModel", "run_shards", "shard_bounds"]


def shard_bounds(rows: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: at most ``shards`` contiguous ranges of whole batches covering ``rows``."""
    batches = -(-rows // batch_size)
    per = -(-batches // max(1, shards))
    return [(start, min(rows, start + per * batch_size)) for start in range(0, rows, per * batch_size)]


@dataclass
class ShardModel:
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
        folder = cache_root() / self.digest
        write_files(folder, self.files)
        return folder / self.name


def run_shards(score: Callable[[ShardModel, Any], list[Any]], path: str | Path, data: Any, spec: Any, task: Any, *,
               threads: int | None = None) -> list[Any]:
    """``score(model, shard)`` for every shard of ``data`` (``spec.shards`` ranges of whole batches of
    ``spec.batch_size``, an ``EvaluationSpec``) on the executor ``spec.executor`` names; their results
    concatenated in shard order. ``score`` must be a module-level function (a cluster imports it)."""
    bounds = shard_bounds(len(data), spec.shards or 1, spec.batch_size)
    pieces = [data.slice(start, stop) for start, stop in bounds]
    with use_executor(spec.executor) as executor:
        if executor.name == "local":
            model = ShardModel(Path(path).name, task, spec.batch_size, threads, path=str(path))
        else:
            files = model_files(path)
            model = ShardModel(Path(path).name, task, spec.batch_size, max(1, int(spec.executor.cpus_per_shard)),
                               files=files, digest=files_digest(files))
        logger.info("evaluating %s in %d shard(s) on the %s executor", Path(path).name, len(pieces), executor.name)
        results = executor.map_shards(score, model, pieces, cpus=spec.executor.cpus_per_shard)
    return [p for shard in results for p in shard]
