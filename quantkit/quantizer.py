"""The public API: :class:`Quantizer` wires spec → model → export → quantize →
evaluate → artifacts, and returns a :class:`QuantizationResult`."""

from __future__ import annotations

import logging
import platform
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .artifacts import REPORT_FILE, check_output_dir, package_versions, write_artifacts
from .backends import ProgressFactory, QuantizedModel, get_backend
from .data import TextDataset, load_text_dataset
from .errors import SpecError, SpecIssue
from .evaluation import ModelEvaluation, evaluate_model
from .export import ExportedModel, export_onnx
from .hardware import cpu_info
from .models import LoadedModel, load_model
from .spec import QuantizationSpec, load_spec

logger = logging.getLogger(__name__)

__all__ = ["Quantizer", "QuantizationResult"]

#: Tasks quantkit can evaluate end to end (export works for more).
EVALUATED_TASKS = ("text-classification",)


def _tqdm_progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ex", leave=False, dynamic_ncols=True)


@dataclass
class QuantizationResult:
    """What :meth:`Quantizer.quantize` produced: the artifact folder and the numbers in it."""

    output_dir: Path
    fp32: ModelEvaluation
    quantized: ModelEvaluation
    report: dict[str, Any] = field(repr=False)

    @property
    def metric(self) -> str:
        return self.fp32.metric

    @property
    def model_path(self) -> Path:
        return self.output_dir / "model.onnx"

    @property
    def relative_drop(self) -> float:
        """(FP32 − quantized) / |FP32| for higher-is-better metrics; negative means it improved."""
        base = self.fp32.value
        return (base - self.quantized.value) / abs(base) if base else 0.0

    @property
    def latency_ratio(self) -> float | None:
        if self.fp32.runtime is None or self.quantized.runtime is None:
            return None
        return self.quantized.runtime.p50_ms / self.fp32.runtime.p50_ms

    @property
    def size_ratio(self) -> float:
        return self.quantized.size_bytes / self.fp32.size_bytes

    def summary_rows(self) -> list[tuple[str, str, str, str]]:
        """(row, FP32, quantized, ratio) — the table the CLI prints."""
        rows = [
            (self.metric, f"{self.fp32.value:.4f}", f"{self.quantized.value:.4f}", f"{-self.relative_drop:+.2%}"),
        ]
        if self.fp32.runtime and self.quantized.runtime:
            f, q = self.fp32.runtime, self.quantized.runtime
            shape = f"b{f.batch_size}×s{f.sequence_length}, {f.threads} thr"
            rows.append((f"p50 latency ms ({shape})", f"{f.p50_ms:.2f}", f"{q.p50_ms:.2f}", f"{q.p50_ms / f.p50_ms:.2f}x"))
            rows.append(("p90 latency ms", f"{f.p90_ms:.2f}", f"{q.p90_ms:.2f}", f"{q.p90_ms / f.p90_ms:.2f}x"))
            rows.append(("peak RSS MB", f"{f.peak_rss_mb:.0f}", f"{q.peak_rss_mb:.0f}", f"{q.peak_rss_mb / f.peak_rss_mb:.2f}x"))
        rows.append(
            ("size MB", f"{self.fp32.size_bytes / 2**20:.1f}", f"{self.quantized.size_bytes / 2**20:.1f}", f"{self.size_ratio:.2f}x")
        )
        return rows


class Quantizer:
    """Quantize a Hugging Face model with a quantkit spec.

    >>> q = Quantizer.from_pretrained("../shared/models/minilm-spam")   # doctest: +SKIP
    >>> result = q.quantize("recipes/minilm-spam-dynamic.yaml", output_dir="out/dyn")  # doctest: +SKIP
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        task: str | None = None,
        *,
        revision: str | None = None,
        trust_remote_code: bool = False,
        **load_options: Any,
    ) -> "Quantizer":
        """Load a Hub model id or local folder with the transformers Auto classes."""
        loaded = load_model(
            str(name_or_path), task=task, revision=revision, trust_remote_code=trust_remote_code, **load_options
        )
        return cls(loaded)

    @classmethod
    def from_spec(cls, spec: QuantizationSpec) -> "Quantizer":
        """Load the model named in ``spec.model``."""
        m = spec.model
        if not m.name_or_path:
            raise SpecError([SpecIssue(None, "model.name_or_path", "required: set it in the spec or pass --model")])
        return cls.from_pretrained(m.name_or_path, m.task, revision=m.revision, trust_remote_code=m.trust_remote_code)

    # ------------------------------------------------------------------ public
    def quantize(
        self,
        spec: QuantizationSpec | str | Path,
        output_dir: str | Path | None = None,
        *,
        overwrite: bool | None = None,
        progress: bool | ProgressFactory = True,
    ) -> QuantizationResult:
        """Export, quantize, evaluate FP32 and quantized models, and write the artifact folder."""
        if not isinstance(spec, QuantizationSpec):
            spec = load_spec(spec)
        if spec.model.name_or_path and spec.model.name_or_path != self.loaded.name_or_path:
            logger.info("using the loaded model %s (spec names %s)", self.loaded.name_or_path, spec.model.name_or_path)
        target = output_dir if output_dir is not None else spec.output.dir
        if target is None:
            raise SpecError([SpecIssue(None, "output.dir", "required: set it in the spec or pass --output")])
        overwrite = spec.output.overwrite if overwrite is None else overwrite
        target = check_output_dir(target, overwrite)
        if self.loaded.task not in EVALUATED_TASKS:
            raise SpecError(
                [SpecIssue(None, "model.task", f"{self.loaded.task!r} cannot be evaluated yet; "
                           f"quantkit evaluates {', '.join(EVALUATED_TASKS)} models")]
            )
        factory: ProgressFactory | None
        if progress is True:
            factory = _tqdm_progress
        elif progress is False:
            factory = None
        else:
            factory = progress
        return self._run(spec, target, overwrite, factory)

    # ------------------------------------------------------------------ private
    def _load_data(self, spec: QuantizationSpec) -> tuple[TextDataset, TextDataset | None]:
        common = dict(max_length=spec.data.max_length, padding=spec.data.padding, model_config=self.loaded.config)
        evaluation = load_text_dataset(spec.data.evaluation, self.loaded.tokenizer, key="data.evaluation", **common)
        calibration = None
        if spec.quantization.approach == "static" and spec.data.calibration is not None:
            calibration = load_text_dataset(
                spec.data.calibration, self.loaded.tokenizer, key="data.calibration", **common
            )
        return evaluation, calibration

    def _run(
        self, spec: QuantizationSpec, target: Path, overwrite: bool, progress: ProgressFactory | None
    ) -> QuantizationResult:
        timings: dict[str, float] = {}
        started = time.perf_counter()

        def lap(name: str, since: float) -> float:
            now = time.perf_counter()
            timings[name] = round(now - since, 3)
            return now

        t = time.perf_counter()
        evaluation, calibration = self._load_data(spec)
        t = lap("data_s", t)
        backend = get_backend(spec.quantization.backend)
        with tempfile.TemporaryDirectory(prefix="quantkit-") as tmp:
            work = Path(tmp)
            fp32 = export_onnx(self.loaded, work / "fp32", spec.export)
            t = lap("export_s", t)
            quantized = backend.quantize(
                fp32, spec.quantization, work / "quantized" / "model.onnx",
                calibration=calibration, workdir=work, progress=progress,
            )
            t = lap("quantize_s", t)
            vocab = int(getattr(self.loaded.config, "vocab_size", 30522))
            fp32_eval = evaluate_model(
                fp32.path, evaluation, spec.evaluation, label="fp32", vocab_size=vocab, progress=progress
            )
            q_eval = evaluate_model(
                quantized.path, evaluation, spec.evaluation, label="int8", vocab_size=vocab,
                reference_predictions=fp32_eval.predictions, progress=progress,
            )
            t = lap("evaluate_s", t)
            timings["total_s"] = round(time.perf_counter() - started, 3)
            report = self._report(spec, fp32, quantized, fp32_eval, q_eval, evaluation, timings)
            out = write_artifacts(
                target,
                model_path=quantized.path,
                model_config=self.loaded.config,
                tokenizer=self.loaded.tokenizer,
                report=report,
                spec_yaml=spec.to_yaml(),
                ort_config=backend.ort_config(spec.quantization, spec.export.opset),
                overwrite=overwrite,
            )
        return QuantizationResult(output_dir=out, fp32=fp32_eval, quantized=q_eval, report=report)

    def _report(
        self,
        spec: QuantizationSpec,
        fp32: ExportedModel,
        quantized: QuantizedModel,
        fp32_eval: ModelEvaluation,
        q_eval: ModelEvaluation,
        evaluation: TextDataset,
        timings: dict[str, float],
    ) -> dict[str, Any]:
        result = {
            "relative_drop": (fp32_eval.value - q_eval.value) / abs(fp32_eval.value) if fp32_eval.value else 0.0,
            "size_ratio": q_eval.size_bytes / fp32_eval.size_bytes,
        }
        if fp32_eval.runtime and q_eval.runtime:
            result["latency_ratio_p50"] = q_eval.runtime.p50_ms / fp32_eval.runtime.p50_ms
        return {
            "quantkit_report_version": 1,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {
                "name_or_path": self.loaded.name_or_path,
                "revision": self.loaded.revision,
                "task": self.loaded.task,
                "model_type": self.loaded.model_type,
                "parameters": self.loaded.num_parameters,
            },
            "export": {"opset": fp32.opset, "max_abs_diff": fp32.max_abs_diff, "inputs": fp32.input_names},
            "quantization": {
                "backend": quantized.backend,
                "config": quantized.config.model_dump(mode="json"),
                "graph": quantized.summary,
                "calibration_s": round(quantized.calibration_s, 3),
            },
            "evaluation": {
                "dataset": spec.data.evaluation.path,
                "split": spec.data.evaluation.split,
                "examples": len(evaluation),
                "max_length": spec.data.max_length,
                "metric": spec.evaluation.metric,
                "higher_is_better": spec.evaluation.higher_is_better,
            },
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
            "spec": spec.model_dump(mode="json"),
            "files": {"report": REPORT_FILE},
        }
