"""Evaluation: task metrics (via shipped ``evaluate`` scripts), latency, size and memory.

Latency and peak memory are measured in a fresh subprocess per model
(``python -m quantkit.evaluation``), so one model's allocations and thread pools
never colour another's numbers.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import TextDataset
from .tasks.base import Predictions
from .errors import EvaluationError
from .faults import fault_point
from .graph import model_size_bytes
from .metrics import METRICS, MetricDef, compute_metric, to_predictions  # noqa: F401 (re-exported)
from .spec import EvaluationSpec, LatencySpec

logger = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "MetricDef",
    "compute_metric",
    "OnnxRunner",
    "RuntimeStats",
    "measure_runtime",
    "ModelEvaluation",
    "evaluate_model",
    "default_threads",
]

def default_threads() -> int:
    """Physical cores available to this process (ONNX Runtime's own default)."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover
        physical = None
    avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(physical or avail, avail))


class OnnxRunner:
    """An ONNX Runtime CPU session that runs :class:`TextDataset` batches."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise EvaluationError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def predict(self, data: TextDataset, batch_size: int, progress: Any | None = None) -> np.ndarray:
        """The first output of every batch, concatenated (all batches must share its trailing shape)."""
        outputs = []
        for batch in data.batches(batch_size, self.input_names):
            outputs.append(self.session.run(None, batch)[0])
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
            feeds = data.batch(start, start + batch_size, self.input_names)
            outs = dict(zip(self.output_names, self.session.run(None, feeds)))
            parts.append(task.predict_batch(outs, feeds, data, start))
            if raw:
                raws.append(task.raw_output(outs, data.max_length))
            if progress is not None:
                progress.update(len(next(iter(feeds.values()))))
        return parts, raws


@dataclass
class RuntimeStats:
    """Latency (ms), throughput and memory of one model at one input shape."""

    batch_size: int
    sequence_length: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # examples per second at p50
    load_s: float
    peak_rss_mb: float
    model_rss_mb: float  # peak RSS minus the process's RSS before loading the model
    #: Fraction of samples during the timed runs with more runnable threads machine-wide than cores (other work
    #: competing for the CPU), the median runnable count, and the cores this process may use.
    busy_fraction: float = 0.0
    runnable: float = 0.0
    cores: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _probe(path: str, batch: int, seq: int, threads: int, warmup: int, repeats: int, vocab: int) -> dict[str, Any]:
    """Runs in the child process: load, warm up, time, and read peak RSS."""
    import onnxruntime as ort

    def status_mb(field: str) -> float:
        # VmHWM/VmRSS belong to this process image (ru_maxrss would include the parent's peak,
        # which Linux carries across fork and exec).
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def rss_mb() -> float:
        return status_mb("VmRSS")

    before = rss_mb()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    start = time.perf_counter()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for inp in session.get_inputs():
        if inp.name == "input_ids":
            feeds[inp.name] = rng.integers(1000 if vocab > 2000 else 1, vocab, size=(batch, seq), dtype=np.int64)
        elif inp.name == "token_type_ids":
            feeds[inp.name] = np.zeros((batch, seq), dtype=np.int64)
        else:
            feeds[inp.name] = np.ones((batch, seq), dtype=np.int64)
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    runnable: list[int] = []
    for i in range(repeats):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t) * 1000)
        if i % max(repeats // 8, 1) == 0:
            runnable.append(_procs_running())
    peak = status_mb("VmHWM")
    # other work on our cores: more runnable threads than cores while ours (at most `threads`) were timed
    busy = [r > max(cores, threads) for r in runnable if r >= 0]
    arr = np.asarray(times)
    return {
        "batch_size": batch,
        "sequence_length": seq,
        "threads": threads,
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "throughput": float(batch / (np.percentile(arr, 50) / 1000)),
        "load_s": load_s,
        "peak_rss_mb": float(peak),
        "model_rss_mb": float(max(peak - before, 0.0)),
        "busy_fraction": float(np.mean(busy)) if busy else 0.0,
        "runnable": float(np.median([r for r in runnable if r >= 0])) if busy else 0.0,
        "cores": cores,
    }


def _procs_running() -> int:
    """Linux: threads runnable right now, machine-wide (/proc/stat ``procs_running``, ours included); -1 elsewhere."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def measure_side_by_side(
    paths: dict[str, str | Path], latency: LatencySpec, *, sequence_length: int | None = None,
    vocab_size: int = 30522,
) -> dict[str, RuntimeStats]:
    """Time several models in interleaved rounds (A B A B ...); each keeps its best-p50 round."""
    best: dict[str, RuntimeStats] = {}
    for _ in range(latency.rounds):
        for label, path in paths.items():
            stats = _measure_once(path, latency, sequence_length=sequence_length, vocab_size=vocab_size)
            if label not in best or stats.p50_ms < best[label].p50_ms:
                best[label] = stats
    return best


def measure_runtime(
    path: str | Path, latency: LatencySpec, *, sequence_length: int | None = None, vocab_size: int = 30522
) -> RuntimeStats:
    """Latency, load time and peak memory of one model: the best of ``latency.rounds`` fresh-process rounds."""
    return measure_side_by_side({"m": path}, latency, sequence_length=sequence_length, vocab_size=vocab_size)["m"]


def _measure_once(
    path: str | Path, latency: LatencySpec, *, sequence_length: int | None = None, vocab_size: int = 30522
) -> RuntimeStats:
    """Measure latency percentiles, load time and peak memory of ``path`` in a subprocess.

    The shape is ``latency.batch_size`` × (``latency.sequence_length`` or ``sequence_length``).
    """
    threads = latency.threads or default_threads()
    seq = latency.sequence_length or sequence_length
    if seq is None:
        raise EvaluationError("latency measurement needs a sequence length")
    args = [
        str(path),
        str(latency.batch_size),
        str(seq),
        str(threads),
        str(latency.warmup),
        str(latency.repeats),
        str(vocab_size),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, "-m", "quantkit.evaluation", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise EvaluationError(f"latency probe of {path} failed: {proc.stderr.strip()[-2000:]}")
    try:
        return RuntimeStats(**json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, TypeError) as exc:
        raise EvaluationError(f"latency probe of {path} printed no result: {proc.stdout[-500:]}") from exc


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
    #: The task's predictions (class ids, tag lists, embeddings, answers).
    predictions: Any

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
    task: Any = None,
    reference_predictions: Any = None,
    vocab_size: int = 30522,
    measure_speed: bool = True,
    progress: Any | None = None,
) -> ModelEvaluation:
    """Score ``path`` on ``data`` with the spec's metric (as ``task`` computes it), then measure its runtime.

    For label-free metrics (``agreement``, ``cosine``) the references are ``reference_predictions``
    (the FP32 model's); when those are ``None`` the model is its own reference (1.0).
    """
    if task is None:
        from .tasks import task_for

        task = task_for("text-classification")
    from .executors.shards import predict

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


if __name__ == "__main__":  # the latency probe
    _path, *_ints = sys.argv[1:]
    print(json.dumps(_probe(_path, *(int(v) for v in _ints))))
