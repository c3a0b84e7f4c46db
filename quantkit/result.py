"""What a quantize/tune run returns: :class:`QuantizationResult` (the artifact folder, FP32 and quantized
evaluations, the report), and loading one back from a folder or a Hub repo."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import REPORT_FILE
from .errors import ArtifactNotFoundError
from .evaluation import ModelEvaluation
from .hub import push_artifact, resolve_artifact
from .latency import RuntimeStats

__all__ = ["QuantizationResult"]


@dataclass
class QuantizationResult:
    """What :meth:`Quantizer.quantize` produced: the artifact folder and the numbers in it."""

    output_dir: Path
    fp32: ModelEvaluation
    quantized: ModelEvaluation
    report: dict[str, Any] = field(repr=False)
    #: What the spec's ``hub: {push: true}`` (or :meth:`push_to_hub`) pushed, if anything.
    push: Any | None = field(default=None, repr=False)

    @property
    def tuning(self) -> dict[str, Any] | None:
        """The search summary (trials, chosen config, why) when the spec had a ``tuning`` section."""
        return self.report.get("tuning")

    @property
    def metric(self) -> str:
        return self.fp32.metric

    @property
    def model_path(self) -> Path:
        return self.output_dir / "model.onnx"

    @property
    def relative_drop(self) -> float:
        """How much worse the quantized model scores, relative to FP32: (FP32 − quantized) / |FP32| for
        higher-is-better metrics, (quantized − FP32) / |FP32| for lower-is-better ones (perplexity); negative means
        it improved."""
        base = self.fp32.value
        if not base:
            return 0.0
        higher = (self.report.get("evaluation") or {}).get("higher_is_better", True)
        return ((base - self.quantized.value) if higher else (self.quantized.value - base)) / abs(base)

    @property
    def latency_ratio(self) -> float | None:
        """int8 / FP32 latency: the median of per-round ratios (timed interleaved) when the report has it."""
        measured = (self.report.get("result") or {}).get("latency_ratio")
        if isinstance(measured, dict) and measured.get("median") is not None:
            return float(measured["median"])
        if self.fp32.runtime is None or self.quantized.runtime is None:
            return None
        return self.quantized.runtime.p50_ms / self.fp32.runtime.p50_ms

    @property
    def size_ratio(self) -> float:
        return self.quantized.size_bytes / self.fp32.size_bytes

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
        base_model: str | None = None,
        token: str | None = None,
        include_fp32: bool = False,
    ) -> Any:
        """Push the artifact folder to the Hub repo ``repo_id`` with a model card generated from the report.

        Only changed files are committed (no commit when nothing changed); the folder is not modified.
        ``token`` defaults to ``HF_TOKEN`` / the stored login. Returns a :class:`quantkit.hub.PushResult`.
        """
        self.push = push_artifact(
            self.output_dir, repo_id, private=private, revision=revision, commit_message=commit_message,
            create_pr=create_pr, base_model=base_model, token=token, include_fp32=include_fp32,
        )
        return self.push

    @classmethod
    def from_pretrained(
        cls, path_or_repo_id: str | Path, *, revision: str | None = None, token: str | None = None
    ) -> "QuantizationResult":
        """Load a quantized artifact (a local folder, or a Hub repo id pushed by quantkit) from its report.

        The numbers come from ``quantkit_report.json``; per-example predictions are not stored, so
        ``fp32.predictions`` / ``quantized.predictions`` are empty.
        """
        import numpy as np

        folder = resolve_artifact(path_or_repo_id, revision, token=token)
        if not (folder / REPORT_FILE).is_file():
            raise ArtifactNotFoundError(f"{path_or_repo_id} has no {REPORT_FILE}: not written by quantkit")
        report = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
        known = set(RuntimeStats.__dataclass_fields__)

        def evaluation(key: str, path: Path) -> ModelEvaluation:
            d = report[key]
            latency = d.get("latency")
            runtime = RuntimeStats(**{k: v for k, v in latency.items() if k in known}) if latency else None
            return ModelEvaluation(label=d.get("label", key), path=path, metric=d["metric"], value=d["value"],
                                   size_bytes=d["size_bytes"], runtime=runtime, eval_s=d.get("eval_s", 0.0),
                                   predictions=np.empty(0))

        base = Path(str(report.get("model", {}).get("name_or_path", "")))
        return cls(output_dir=folder, fp32=evaluation("fp32", base),
                   quantized=evaluation("quantized", folder / "model.onnx"), report=report)

    def summary_rows(self) -> list[tuple[str, str, str, str]]:
        """(row, FP32, quantized, ratio) — the table the CLI prints."""
        change = (self.quantized.value - self.fp32.value) / abs(self.fp32.value) if self.fp32.value else 0.0
        rows = [(self.metric, f"{self.fp32.value:.4f}", f"{self.quantized.value:.4f}", f"{change:+.2%}")]
        scores = (self.report.get("result") or {}).get("scores") or {}
        for name in ("kl_divergence", "top1_agreement"):
            if name != self.metric and name in scores.get("quantized", {}):
                rows.append((f"{name} vs FP32", f"{scores['fp32'][name]:.4f}", f"{scores['quantized'][name]:.4f}", ""))
        if self.fp32.runtime and self.quantized.runtime:
            f, q = self.fp32.runtime, self.quantized.runtime
            shape = f"b{f.batch_size}×s{f.sequence_length}, {f.threads} thr"
            measured = (self.report.get("result") or {}).get("latency_ratio")
            ratio = (f"{measured['median']:.2f}x ({measured['low']:.2f}-{measured['high']:.2f})"
                     if isinstance(measured, dict) else f"{q.p50_ms / f.p50_ms:.2f}x")
            rows.append((f"p50 latency ms ({shape})", f"{f.p50_ms:.2f}", f"{q.p50_ms:.2f}", ratio))
            rows.append(("p90 latency ms", f"{f.p90_ms:.2f}", f"{q.p90_ms:.2f}", f"{q.p90_ms / f.p90_ms:.2f}x"))
            rows.append(("peak RSS MB", f"{f.peak_rss_mb:.0f}", f"{q.peak_rss_mb:.0f}", f"{q.peak_rss_mb / f.peak_rss_mb:.2f}x"))
        result = self.report.get("result") or {}
        tps, ratio = result.get("decode_tokens_per_s"), result.get("decode_latency_ratio")
        if tps and ratio and "fp32" in tps and "int8" in tps:
            steps = ((self.report.get("timing") or {}).get("decode") or {}).get("median_round", {})
            after = next((f" after {v['sequence_length']}" for v in steps.values()), "")
            rows.append((f"decode tokens/s (b{self.fp32.runtime.batch_size if self.fp32.runtime else 1}{after})",
                         f"{tps['fp32']:.1f}", f"{tps['int8']:.1f}",
                         f"{ratio['median']:.2f}x ({ratio['low']:.2f}-{ratio['high']:.2f}) time/token"))
        rows.append(
            ("size MB", f"{self.fp32.size_bytes / 2**20:.1f}", f"{self.quantized.size_bytes / 2**20:.1f}", f"{self.size_ratio:.2f}x")
        )
        return rows
