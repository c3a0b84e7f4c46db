"""Evaluation of one ONNX model: its task predictions (sharded or not), the metric, its size; its runtime
(latency, memory) comes from :mod:`quantkit.latency`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import TextDataset
from .tasks.base import Predictions
from .errors import EvaluationError
from .faults import fault_point
from .executors.shards import ShardModel, run_shards
from .feeds import complete_feeds, fillable
from .graph import model_size_bytes
from .latency import RuntimeStats, cpu_session, measure_runtime
from .metrics import METRICS, MetricDef, compute_metric, to_predictions  # noqa: F401 (re-exported)
from .spec import EvaluationSpec

logger = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "MetricDef",
    "compute_metric",
    "OnnxRunner",
    "ModelEvaluation",
    "evaluate_model",
    "predict",
]

class OnnxRunner:
    """An ONNX Runtime CPU session that runs :class:`TextDataset` batches."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        try:
            self.session = cpu_session(path, threads)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise EvaluationError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.inputs = self.session.get_inputs()
        self.input_names = [i.name for i in self.inputs]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def feeds(self, data: TextDataset, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` as this graph's feeds (a decoder's positions and empty cache added)."""
        names = [n for n in self.input_names if n in data.inputs or not fillable(n)]
        return complete_feeds(self.inputs, data.batch(start, stop, names))

    def predict(self, data: TextDataset, batch_size: int, progress: Any | None = None) -> np.ndarray:
        """The first output of every batch, concatenated (all batches must share its trailing shape)."""
        outputs = []
        for start in range(0, len(data), batch_size):
            outputs.append(self.session.run(None, self.feeds(data, start, start + batch_size))[0])
            if progress is not None:
                progress.update(len(outputs[-1]))
        return np.concatenate(outputs)

    def run(self, data: TextDataset, batch_size: int, task: Any, *, progress: Any | None = None,
            raw: bool = False) -> Predictions:
        """``task``'s predictions on ``data`` (and with ``raw``, its primary output padded to ``data.max_length``)."""
        parts, raws = self.run_parts(data, batch_size, task, progress=progress, raw=raw)
        return Predictions(task.collect(parts, data), np.concatenate(raws) if raws else None)

    def run_parts(self, data: TextDataset, batch_size: int, task: Any, *, progress: Any | None = None,
                  raw: bool = False) -> tuple[list[Any], list[np.ndarray]]:
        """``task.predict_batch`` of every batch, not yet collected (an evaluation shard's share), and with
        ``raw`` the padded primary outputs."""
        missing = [n for n in task.output_names if n not in self.output_names]
        if missing:
            raise EvaluationError(f"the ONNX model has outputs {self.output_names}; {task.name} needs {missing}")
        parts, raws = [], []
        for start in range(0, len(data), batch_size):
            feeds = self.feeds(data, start, start + batch_size)
            outs = dict(zip(self.output_names, self.session.run(None, feeds)))
            parts.append(task.predict_batch(outs, feeds, data, start))
            if raw:
                raws.append(task.raw_output(outs, data.max_length))
            if progress is not None:
                progress.update(len(next(iter(feeds.values()))))
        return parts, raws


def _score_shard(model: ShardModel, part: TextDataset) -> list[Any]:
    """One shard on one worker: load the model once, run its batches, return the uncollected parts."""
    runner = OnnxRunner(model.local_path(), model.threads)
    parts, _ = runner.run_parts(part, model.batch_size, model.task)
    return parts


def predict(path: str | Path, data: TextDataset, spec: EvaluationSpec, task: Any, *, threads: int | None = None,
            progress: Any | None = None) -> Any:
    """``task``'s predictions of the ONNX model at ``path`` on ``data`` (``spec`` says the batch size and
    sharding: :mod:`quantkit.executors.shards`); the same value sharded or not."""
    shards = spec.shards or 1
    if shards <= 1 or len(data) <= spec.batch_size:
        return OnnxRunner(path, threads).run(data, spec.batch_size, task, progress=progress).values
    parts = run_shards(_score_shard, path, data, spec, task, threads=threads)
    if progress is not None:
        progress.update(len(data))
    return task.collect(parts, data)


@dataclass
class ModelEvaluation:
    """Metric, speed and size of one ONNX model."""

    label: str
    path: Path
    metric: str
    value: float
    size_bytes: int
    runtime: RuntimeStats | None
    eval_s: float
    #: The task's predictions (class ids, tag lists, embeddings, answers); left out of ``repr``.
    predictions: Any = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "metric": self.metric,
            "value": self.value,
            "size_bytes": self.size_bytes,
            "size_mb": round(self.size_bytes / 2**20, 3),
            "latency": self.runtime.to_dict() if self.runtime else None,
            "eval_s": round(self.eval_s, 3),
        }


def evaluate_model(
    path: str | Path,
    data: TextDataset,
    spec: EvaluationSpec,
    *,
    label: str,
    task: Any,
    reference_predictions: Any = None,
    vocab_size: int = 30522,
    measure_speed: bool = True,
    progress: Any | None = None,
) -> ModelEvaluation:
    """Score ``path`` on ``data`` with the spec's metric (as ``task`` computes it), then measure its runtime.

    For label-free metrics (``agreement``, ``cosine``) the references are ``reference_predictions``
    (the FP32 model's); when those are ``None`` the model is its own reference (1.0).
    """
    metric = spec.metric or task.default_metric()
    start = time.perf_counter()
    bar = progress(len(data), f"evaluating {label}") if progress else None
    try:
        predictions = predict(path, data, spec, task, threads=spec.latency.threads, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    eval_s = time.perf_counter() - start
    fault_point("evaluation")
    value = task.compute(metric, predictions, data, average=spec.average, reference=reference_predictions)
    runtime = (
        measure_runtime(path, spec.latency, sequence_length=data.max_length, vocab_size=vocab_size)
        if measure_speed
        else None
    )
    logger.info(
        "%s: %s=%.4f%s", label, metric, value, f", p50 {runtime.p50_ms:.1f} ms" if runtime else ""
    )
    return ModelEvaluation(
        label=label,
        path=Path(path),
        metric=metric,
        value=value,
        size_bytes=model_size_bytes(path),
        runtime=runtime,
        eval_s=eval_s,
        predictions=predictions,
    )
