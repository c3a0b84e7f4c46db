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
from .errors import EvaluationError
from .faults import fault_point
from .graph import model_size_bytes
from .registry import Registry
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

METRICS_DIR = Path(__file__).parent / "metrics"


@dataclass(frozen=True)
class MetricDef:
    """How to compute a spec metric with one of the shipped evaluate scripts."""

    script: str
    config_name: str | None = None
    higher_is_better: bool = True
    needs_labels: bool = True
    regression: bool = False
    averaged: bool = False


METRICS: Registry[MetricDef] = Registry("metric")
for _name, _def in {
    "accuracy": MetricDef("accuracy"),
    "agreement": MetricDef("accuracy", needs_labels=False),
    "f1": MetricDef("classification", "f1", averaged=True),
    "precision": MetricDef("classification", "precision", averaged=True),
    "recall": MetricDef("classification", "recall", averaged=True),
    "matthews_correlation": MetricDef("classification", "matthews_correlation"),
    "pearson": MetricDef("correlation", "pearson", regression=True),
    "spearman": MetricDef("correlation", "spearman", regression=True),
}.items():
    METRICS.register(_name)(_def)

_loaded_metrics: dict[tuple[str, str | None], Any] = {}


def _load_metric(defn: MetricDef) -> Any:
    import evaluate

    key = (defn.script, defn.config_name)
    if key not in _loaded_metrics:
        path = METRICS_DIR / defn.script
        kwargs = {"config_name": defn.config_name} if defn.config_name else {}
        _loaded_metrics[key] = evaluate.load(str(path), **kwargs)
    return _loaded_metrics[key]


def compute_metric(name: str, predictions: np.ndarray, references: np.ndarray, *, average: str = "binary") -> float:
    """Compute metric ``name`` with its shipped evaluate script."""
    defn = METRICS.get(name)
    metric = _load_metric(defn)
    kwargs: dict[str, Any] = {}
    if defn.averaged:
        kwargs["average"] = average
    out = metric.compute(predictions=predictions.tolist(), references=references.tolist(), **kwargs)
    key = defn.config_name or defn.script
    return float(out[key])


def to_predictions(logits: np.ndarray, regression: bool) -> np.ndarray:
    """Class ids (argmax) for classification, the squeezed score for regression."""
    if regression or logits.shape[-1] == 1:
        return logits.reshape(len(logits), -1)[:, 0].astype(np.float64)
    return logits.argmax(axis=-1).astype(np.int64)


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

    def predict(self, data: TextDataset, batch_size: int, progress: Any | None = None) -> np.ndarray:
        outputs = []
        for batch in data.batches(batch_size, self.input_names):
            outputs.append(self.session.run(None, batch)[0])
            if progress is not None:
                progress.update(len(outputs[-1]))
        return np.concatenate(outputs)


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
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t) * 1000)
    peak = status_mb("VmHWM")
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
    }


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
    predictions: np.ndarray

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
    reference_predictions: np.ndarray | None = None,
    vocab_size: int = 30522,
    measure_speed: bool = True,
    progress: Any | None = None,
) -> ModelEvaluation:
    """Score ``path`` on ``data`` with the spec's metric, then measure its runtime.

    For ``agreement`` the references are ``reference_predictions`` (the FP32
    model's); when those are ``None`` the model is its own reference (1.0).
    """
    defn = METRICS.get(spec.metric)
    runner = OnnxRunner(path, spec.latency.threads)
    start = time.perf_counter()
    bar = progress(len(data), f"evaluating {label}") if progress else None
    try:
        logits = runner.predict(data, spec.batch_size, bar)
    finally:
        if bar is not None:
            bar.close()
    eval_s = time.perf_counter() - start
    fault_point("evaluation")
    predictions = to_predictions(logits, defn.regression)
    if defn.needs_labels:
        if data.labels is None:
            raise EvaluationError(f"metric {spec.metric!r} needs labels but {data.name} has none")
        references = data.labels
    else:
        references = predictions if reference_predictions is None else reference_predictions
    value = compute_metric(spec.metric, predictions, references, average=spec.average)
    runtime = (
        measure_runtime(path, spec.latency, sequence_length=data.max_length, vocab_size=vocab_size)
        if measure_speed
        else None
    )
    logger.info(
        "%s: %s=%.4f%s", label, spec.metric, value, f", p50 {runtime.p50_ms:.1f} ms" if runtime else ""
    )
    return ModelEvaluation(
        label=label,
        path=Path(path),
        metric=spec.metric,
        value=value,
        size_bytes=model_size_bytes(path),
        runtime=runtime,
        eval_s=eval_s,
        predictions=predictions,
    )


if __name__ == "__main__":  # the latency probe
    _path, *_ints = sys.argv[1:]
    print(json.dumps(_probe(_path, *(int(v) for v in _ints))))
