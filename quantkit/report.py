"""The run report (``quantkit_report.json``): what was loaded, exported, quantized and measured, built from a
resolved :class:`~quantkit.resolve.Run` and the stage results."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .artifacts import REPORT_FILE, package_versions
from .backends import QuantizedModel
from .data import TextDataset
from .evaluation import ModelEvaluation
from .export import ExportedModel
from .hardware import cpu_info
from .resolve import Run

__all__ = ["REPORT_VERSION", "build_report", "example_count"]

REPORT_VERSION = 1


def example_count(data: TextDataset) -> int:
    """Evaluation examples (QA: questions, not context windows; embedding pairs: pairs)."""
    examples = data.examples or {}
    return int(examples.get("count") or examples.get("pairs") or len(data))


def _evaluation_section(run: Run, evaluation: TextDataset) -> dict[str, Any]:
    spec, task = run.spec, run.task
    ds = spec.data.evaluation
    columns = task.columns(ds)
    return {
        "dataset": ds.path,
        "dataset_local": ds.is_local,
        "split": ds.split if not ds.is_local else Path(ds.path).stem,
        "columns": list(columns.text),
        "label_column": columns.label,
        "examples": example_count(evaluation),
        "rows": len(evaluation),
        "max_length": spec.data.max_length,
        "metric": spec.evaluation.metric,
        "higher_is_better": spec.evaluation.higher_is_better,
    }


def build_report(
    run: Run,
    fp32: ExportedModel,
    quantized: QuantizedModel,
    fp32_eval: ModelEvaluation,
    q_eval: ModelEvaluation,
    evaluation: TextDataset,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The report of one run (the timing, shapes and tuning sections are added by the pipeline)."""
    loaded, spec = run.loaded, run.spec
    worse = fp32_eval.value - q_eval.value if spec.evaluation.higher_is_better else q_eval.value - fp32_eval.value
    result: dict[str, Any] = {
        # degradation relative to FP32 (positive: worse), whichever way the metric points
        "relative_drop": worse / abs(fp32_eval.value) if fp32_eval.value else 0.0,
        "size_ratio": q_eval.size_bytes / fp32_eval.size_bytes,
    }
    scores = {"fp32": run.task.extra_scores(fp32_eval.predictions, fp32_eval.predictions, evaluation),
              "quantized": run.task.extra_scores(q_eval.predictions, fp32_eval.predictions, evaluation)}
    if scores["fp32"]:
        result["scores"] = scores
    if fp32_eval.runtime and q_eval.runtime:
        result["latency_ratio_p50"] = q_eval.runtime.p50_ms / fp32_eval.runtime.p50_ms
    return {
        "quantkit_report_version": REPORT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name_or_path": loaded.name_or_path,
            "revision": loaded.revision,
            "task": loaded.task,
            "model_type": loaded.model_type,
            "parameters": loaded.num_parameters,
            "family": run.family,
        },
        "export": {"exporter": fp32.exporter, "opset": fp32.opset, "max_abs_diff": fp32.max_abs_diff,
                   "inputs": fp32.input_names},
        "quantization": {
            "backend": quantized.backend,
            "config": quantized.config.model_dump(mode="json"),
            "graph": quantized.summary,
            "calibration_s": round(quantized.calibration_s, 3),
            **quantized.details,
        },
        "task": run.task.describe(),
        "evaluation": _evaluation_section(run, evaluation),
        "fp32": fp32_eval.to_dict(),
        "quantized": q_eval.to_dict(),
        "result": result,
        "timings": timings,
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu": cpu_info().to_dict(),
            "packages": package_versions(),
        },
        "hardware": run.hardware,
        "spec": spec.model_dump(mode="json"),
        "files": {"report": REPORT_FILE},
    }
