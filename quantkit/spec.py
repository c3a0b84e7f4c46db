"""The quantkit spec schema: pydantic v2 models of the YAML file (model, export, quantization, data,
evaluation, output, QAT, tuning, hub) and the rules that need nothing but the spec itself.

Reading a file and rendering errors live in :mod:`quantkit.specio` (:func:`~quantkit.specio.load_spec`);
rules that need a registry (a backend's approaches and op types, a task's metrics) live in
:mod:`quantkit.resolve`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .spec_weights import WeightOnlySpec


__all__ = [
    "SPEC_VERSION",
    "ModelSpec",
    "ExportSpec",
    "CalibrationSpec",
    "QuantizationConfig",
    "DatasetSpec",
    "DataSpec",
    "LatencySpec",
    "EvaluationSpec",
    "OutputSpec",
    "QATSpec",
    "EarlyStoppingSpec",
    "ToleranceSpec",
    "FallbackSpec",
    "TuningSpec",
    "HubSpec",
    "TaskOptionsSpec",
    "ExecutorSpec",
    "ShardExecutorSpec",
    "EXECUTOR_TYPES",
    "QuantizationSpec",
    "KeyedError",
    "WeightOnlySpec",
    "validate_repo_id",
    "looks_like_repo_id",
    "looks_local",
    "searchable_fields",
    "DATA_FILE_FORMATS",
    "METRICS_HIGHER_IS_BETTER",
]

SPEC_VERSION = 1

#: Graph optimization levels (export.optimize).
OptimizeLevel = Literal["auto", "none", "basic", "extended", "transformer-noskip", "transformer"]

#: Hardware targets (hardware:); see quantkit.hardware.
HardwareTarget = Literal["auto", "avx2", "avx512", "avx512_vnni", "avx_vnni", "amx", "arm64"]

DATA_FILE_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text",
                     ".raw": "text"}

#: Metric name → whether a higher value is better. All shipped metrics are.
METRICS_HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "matthews_correlation": True,
    "pearson": True,
    "spearman": True,
    "agreement": True,
    "exact_match": True,
    "cosine": True,
    "perplexity": False,
    "kl_divergence": False,
    "top1_agreement": True,
}
MetricName = Literal[
    "accuracy", "f1", "precision", "recall", "matthews_correlation", "pearson", "spearman", "agreement",
    "exact_match", "cosine", "perplexity", "kl_divergence", "top1_agreement",
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def looks_local(value: str) -> bool:
    """Whether a data path is written as a local file (a relative/absolute path or a known file suffix)."""
    return (
        value.startswith((".", "/", "~"))
        or Path(value).suffix.lower() in DATA_FILE_FORMATS
        or "\\" in value
    )


# --------------------------------------------------------------------------- executors
#: Executor names the spec accepts (the registry in :mod:`quantkit.executors` holds the same ones).
EXECUTOR_TYPES = ("local", "ray")
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class _ExecutorBase(_Spec):
    type: Literal["local", "ray"] = Field(
        "local",
        description="Where the work runs. local: in this process, one piece after another (the default); ray: as "
        "Ray tasks on a Ray cluster (needs the `quantkit[ray]` extra).",
    )
    address: str | None = Field(
        None,
        description="ray: the cluster to use. null: RAY_ADDRESS when set, else a cluster started on this machine "
        "with `ray start`, else a local Ray instance for this run; `auto`: a running cluster (error if none); "
        "`local`: always a new local instance; `ray://host:10001`: Ray Client; `host:6379`: the head's GCS.",
    )

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is None or value in ("auto", "local") or _ADDRESS.match(value):
            return value
        raise ValueError(f"{value!r} is not a Ray address; expected auto, local, ray://host:port or host:port")


class ExecutorSpec(_ExecutorBase):
    """``tuning.executor``: where the search's trials are quantized and scored."""

    parallel_trials: int = Field(
        1, ge=1, le=256,
        description="Candidates decided at once: each batch gets the same pruning hint and its results are told in "
        "space order, so the trials and the chosen config do not depend on the executor (the local executor runs a "
        "batch one trial after another). 1 = today's one-at-a-time search.",
    )
    cpus_per_trial: float = Field(
        1.0, gt=0, le=1024,
        description="ray: CPUs reserved for each trial's quantization and scoring on a worker (ONNX Runtime uses "
        "that many threads there). Latency is never measured on a worker: the driver times every candidate after "
        "the batch's accuracy work has finished.",
    )


class ShardExecutorSpec(_ExecutorBase):
    """``evaluation.executor``: where the shards of a sharded evaluation (``evaluation.shards``) run."""

    cpus_per_shard: float = Field(
        1.0, gt=0, le=1024,
        description="ray: CPUs reserved for each shard (ONNX Runtime uses that many threads there).",
    )


# --------------------------------------------------------------------------- task options
class TaskOptionsSpec(_Spec):
    """Task-specific settings (spec key ``task_options``); each field names the task that reads it."""

    pooling: Literal["auto", "mean", "cls", "max", "mean_sqrt_len", "lasttoken"] = Field(
        "auto",
        description="feature-extraction: how token embeddings become the sentence embedding; auto reads the "
        "sentence-transformers folder (1_Pooling/config.json), mean when there is none.",
    )
    normalize: Literal["auto", "true", "false"] = Field(
        "auto", description="feature-extraction: L2-normalise embeddings; auto: when modules.json lists Normalize."
    )
    entity_mode: Literal["strict", "conlleval"] = Field(
        "strict",
        description="token-classification: entity matching. strict: seqeval mode='strict' with IOB2 (an I- tag "
        "without its B- starts no entity); conlleval: seqeval's default (it does).",
    )
    doc_stride: int | None = Field(
        None, ge=1, description="question-answering: tokens of overlap between the windows of a long context "
        "(at most half of data.max_length); default: 128, or a quarter of data.max_length when that is smaller.",
    )
    max_answer_length: int = Field(30, ge=1, description="question-answering: longest answer span, in tokens.")
    n_best: int = Field(20, ge=1, description="question-answering: start/end candidates per window.")
    version_2_with_negative: bool = Field(
        False, description="question-answering: SQuAD v2, questions may have no answer (empty prediction)."
    )
    null_score_diff_threshold: float = Field(
        0.0, description="question-answering, v2: answer nothing when the no-answer score beats the best span by more."
    )
    stride: int | None = Field(
        None, ge=1, description="text-generation: tokens between the starts of perplexity windows (each window scores "
        "the tokens no earlier one did); default: data.max_length (no overlap). Smaller: more context per scored token, "
        "more compute.",
    )
    kl_top_k: int = Field(
        64, ge=1, le=4096, description="text-generation: FP32's most likely next tokens over which kl_divergence is "
        "computed exactly (all others are one bucket: a lower bound of the full KL).",
    )


# --------------------------------------------------------------------------- model
class ModelSpec(_Spec):
    name_or_path: str | None = Field(
        None,
        description="Hugging Face Hub model id or local folder. May be given with `--model` instead.",
    )
    task: str | None = Field(
        None,
        description="Task: text-classification, token-classification, feature-extraction (alias "
        "sentence-similarity) or question-answering (aliases accepted). Inferred from the model's "
        "architecture when omitted.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to load.")
    trust_remote_code: bool = Field(
        False, description="Allow executing code shipped with the model. Off unless you trust the repo."
    )
    new_head: bool = Field(
        False,
        description="Allow a model.task whose head the checkpoint does not hold (a classifier head on a tagger, say): "
        "it is initialised at random, which only makes sense to train it (approach: qat). Off: such a spec is refused.",
    )


# --------------------------------------------------------------------------- export
class ExportSpec(_Spec):
    exporter: Literal["auto", "quantkit", "optimum"] = Field("auto", description="What writes the FP32 ONNX graph. "
        "quantkit: quantkit's own exporter (TorchScript, eager attention; inputs from the tokenizer, outputs from the "
        "task), on every stack; optimum: optimum-onnx's, only where it is installed (`quantkit[optimum]`); auto: "
        "quantkit when it supports the model type and task, else optimum where installed.")
    opset: int = Field(18, ge=13, le=21, description="ONNX opset to export with.")
    dynamic_axes: list[Literal["batch", "sequence"]] = Field(
        default_factory=lambda: ["batch", "sequence"],
        description="Input axes left symbolic in the ONNX graph. Axes not listed are fixed to "
        "`static_batch_size` / `static_sequence_length`.",
    )
    static_batch_size: int = Field(1, ge=1, description="Batch size when `batch` is not a dynamic axis.")
    static_sequence_length: int = Field(
        128, ge=1, description="Sequence length when `sequence` is not a dynamic axis."
    )
    validate_outputs: bool = Field(True, description="Check ONNX outputs against PyTorch after export.")
    atol: float = Field(1e-4, gt=0, description="Max absolute difference allowed by the export check.")
    optimize: OptimizeLevel = Field(
        "auto",
        description="Graph optimization before quantization. none; basic/extended: ONNX Runtime's graph optimizer "
        "at that level (constant folding, then contrib-op fusions such as Gelu and SkipLayerNormalization); "
        "transformer: ONNX Runtime's transformer optimizer (fused Attention, EmbedLayerNormalization, "
        "SkipLayerNormalization, BiasGelu) for BERT-family models; transformer-noskip: the same without "
        "SkipLayerNormalization (residual Add + LayerNormalization kept: faster on ONNX Runtime 1.31's CPU "
        "kernels); auto: transformer-noskip for dynamic quantization of a supported model type with the "
        "onnxruntime backend (the hardware probe times it against transformer and none), none otherwise. "
        "Checked against the unfused FP32 model (`optimize_atol`).",
    )
    optimize_atol: float = Field(
        1e-3, gt=0, description="Max absolute logit difference allowed between the optimized and unfused FP32 model."
    )

    @field_validator("dynamic_axes")
    @classmethod
    def _unique_axes(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("axes must not repeat")
        return v


# --------------------------------------------------------------------------- quantization
class CalibrationSpec(_Spec):
    method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="How activation ranges are computed from calibration data."
    )
    num_samples: int = Field(128, ge=1, description="Calibration examples to run through the model.")
    batch_size: int = Field(8, ge=1, description="Examples per calibration batch.")
    percentile: float = Field(
        99.999, gt=50, le=100, description="Percentile kept by `method: percentile`."
    )
    num_bins: int = Field(
        2048, ge=128, le=16384, description="Histogram bins for entropy/percentile calibration."
    )
    moving_average: bool = Field(
        False, description="MinMax only: smooth ranges with a moving average over batches."
    )


class QuantizationConfig(_Spec):
    backend: str = Field("onnxruntime", description="Quantization backend (see `quantkit backends`).")
    approach: Literal["dynamic", "static", "qat", "weight_only"] = Field(
        "dynamic",
        description="dynamic: activations quantized at run time; static: ranges from calibration; "
        "qat: quantization-aware training (backend neural-compressor, settings in the `qat` section); "
        "weight_only: int4/int8 weight blocks, float activations (causal LMs; settings in `weight_only`).",
    )
    weight_only: WeightOnlySpec | None = Field(
        None, description="approach: weight_only: bits, block size, algorithm, embeddings and lm_head precision "
        "(defaults when omitted).",
    )
    format: Literal["qdq", "qoperator"] | None = Field(
        None,
        description="Static only (default qdq). qdq: QuantizeLinear/DequantizeLinear pairs; qoperator: QLinear* "
        "ops. Dynamic quantization always yields integer operators (MatMulInteger).",
    )
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Data type of quantized weights.")
    activation_type: Literal["int8", "uint8"] = Field(
        "uint8", description="Data type of quantized activations (dynamic: always uint8)."
    )
    symmetric_weights: bool = Field(True, description="Symmetric (zero-point 0) weight quantization.")
    symmetric_activations: bool | None = Field(
        None, description="Static only (default false): symmetric activation ranges."
    )
    per_channel: bool = Field(True, description="One scale per output channel of each weight.")
    reduce_range: bool = Field(
        False,
        description="Quantize weights to 7 bits; avoids u8s8 saturation on CPUs without VNNI.",
    )
    op_types: list[str] = Field(
        default_factory=lambda: ["MatMul", "Gather"],
        min_length=1,
        description="ONNX operator types to quantize. The default, as in every recipe: the linear layers (MatMul) "
        "and the embedding tables (Gather), which hold much of an encoder's bytes (the reference model: 0.25x "
        "FP32's size with Gather, 0.65x without).",
    )
    weights_only_matmul: bool = Field(
        False,
        description="Only quantize MatMuls whose second input is a constant weight "
        "(leaves activation x activation attention products in FP32).",
    )
    nodes_to_exclude: list[str] = Field(
        default_factory=list, description="ONNX node names kept in FP32."
    )
    calibration: CalibrationSpec = Field(
        default_factory=CalibrationSpec, description="Static only: calibration settings."
    )
    smooth_quant: bool = Field(
        False, description="SmoothQuant (not available: needs intel-extension-for-pytorch; see the error text)."
    )

    @model_validator(mode="after")
    def _check_unavailable(self) -> "QuantizationConfig":
        if self.smooth_quant:
            raise ValueError(
                "smooth_quant: SmoothQuant is unavailable: Intel Neural Compressor 3.x runs it only through "
                "intel-extension-for-pytorch (IPEX), which has no build for torch 2.13, and its ONNX "
                "implementation was removed in 3.8"
            )
        return self

    @model_validator(mode="after")
    def _check_approach(self) -> "QuantizationConfig":
        if self.approach == "dynamic":
            if self.format is not None:
                raise ValueError(
                    "format: only for approach: static; dynamic quantization always produces integer "
                    "operators (MatMulInteger)"
                )
            if self.activation_type != "uint8":
                raise ValueError(
                    "activation_type: dynamic quantization computes uint8 activations at run time; "
                    "int8 activations need approach: static"
                )
            if self.symmetric_activations is not None:
                raise ValueError("symmetric_activations: only for approach: static (ranges come from calibration)")
        if self.weight_only is not None and self.approach != "weight_only":
            raise ValueError("weight_only: only used with approach: weight_only")
        if len(set(self.op_types)) != len(self.op_types):
            raise ValueError("op_types: operator types must not repeat")
        return self

    @property
    def weights(self) -> WeightOnlySpec:
        """The weight-only settings (their defaults when the section is omitted)."""
        return self.weight_only or WeightOnlySpec()

    @property
    def quant_format(self) -> str:
        """The effective static format (qdq unless qoperator was asked for)."""
        return self.format or "qdq"

    @property
    def activation_symmetric(self) -> bool:
        return bool(self.symmetric_activations)


# --------------------------------------------------------------------------- data
class DatasetSpec(_Spec):
    path: str = Field(
        description="A local .json/.jsonl/.csv/.parquet file, or a .txt/.raw text (text-generation: one document), "
        "relative to the spec file; or a Hub dataset id."
    )
    name: str | None = Field(None, description="Hub dataset configuration (e.g. `sst2` of `glue`).")
    split: str = Field("train", description="Split to read (local files have a single `train` split).")
    revision: str | None = Field(None, description="Hub dataset revision.")
    text_columns: list[str] | None = Field(
        None,
        min_length=1,
        max_length=2,
        description="Input column(s); the task's default when omitted. text-classification: one text column, or "
        "two for pairs (default text); token-classification: the column of word lists (default tokens); "
        "feature-extraction: one text column, or two for scored sentence pairs (default text); "
        "question-answering: question and context (default [question, context]).",
    )
    label_column: str | None = Field(
        "auto",
        description="Reference column; null when there are none; auto: the task's default: label "
        "(text-classification: class ids or names, or numbers for a regressor), ner_tags (token-classification: "
        "a list of IOB2 tag names or ids per row), none (feature-extraction: set it to a pair-similarity score "
        "column), answers (question-answering: SQuAD {text, answer_start}).",
    )
    limit: int | None = Field(None, ge=1, description="Use at most this many rows (text-generation: windows).")
    shuffle: bool = Field(False, description="Shuffle (seeded) before applying `limit`.")
    seed: int = Field(0, description="Seed for `shuffle`.")

    @field_validator("text_columns", mode="before")
    @classmethod
    def _one_column(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @property
    def is_local(self) -> bool:
        return looks_local(self.path)

    @property
    def file_format(self) -> str | None:
        return DATA_FILE_FORMATS.get(Path(self.path).suffix.lower())


class DataSpec(_Spec):
    calibration: DatasetSpec | None = Field(
        None, description="Data for static calibration (use training data, not evaluation data)."
    )
    evaluation: DatasetSpec = Field(description="Data the FP32 and quantized models are scored on.")
    max_length: int = Field(128, ge=1, le=8192, description="Tokens per example after truncation.")
    padding: Literal["max_length", "longest"] = Field(
        "max_length", description="Pad every batch to max_length, or to its longest example."
    )


# --------------------------------------------------------------------------- evaluation
class LatencySpec(_Spec):
    batch_size: int = Field(8, ge=1, description="Batch size of the latency measurement.")
    sequence_length: int | None = Field(
        None, ge=1, description="Sequence length of the latency measurement (default: data.max_length)."
    )
    warmup: int = Field(5, ge=0, description="Untimed runs before measuring.")
    repeats: int = Field(30, ge=3, description="Timed runs per round.")
    rounds: int = Field(
        2, ge=1, le=10,
        description="Rounds first timed, each in a fresh process, models interleaved round by round; ratios "
        "are medians of per-round ratios, with an interval.",
    )
    max_rounds: int | None = Field(
        None, ge=1, le=30,
        description="Rounds at most: more are added while the interval is too wide to decide, then a 'timings "
        "unreliable' warning (default: 7, or `rounds` when `rounds` is set).",
    )

    @property
    def round_budget(self) -> int:
        """Rounds at most: ``max_rounds``; unset, 7 (adaptive) or exactly ``rounds`` when the user set it."""
        if self.max_rounds is not None:
            return max(self.max_rounds, self.rounds)
        return self.rounds if "rounds" in self.model_fields_set else max(7, self.rounds)
    threads: int | None = Field(
        None, ge=1, description="ONNX Runtime intra-op threads (default: physical cores)."
    )
    new_tokens: int | None = Field(
        None, ge=1, le=4096, description="text-generation: also time generation, side by side as the prefill is: "
        "after a prefill of sequence_length tokens, `warmup` untimed then `new_tokens` timed steps of one new token "
        "each (decode tokens/s); default 32 for text-generation, off for other tasks.",
    )


class ShapeGridSpec(_Spec):
    batch_sizes: list[int] = Field(
        default_factory=lambda: [1, 8], min_length=1, description="Batch sizes of the grid."
    )
    sequence_lengths: list[int] = Field(
        default_factory=lambda: [32, 128], min_length=1,
        description="Sequence lengths of the grid (each at most the model's max_position_embeddings).",
    )
    examples: int = Field(
        64, ge=1, description="Evaluation examples re-tokenized at each sequence length for the FP32 agreement check."
    )
    latency: bool = Field(True, description="Also time FP32 and int8 side by side at every grid shape (interleaved "
                          "rounds, 5 or more, in sessions kept in this process: indicative beside the headline "
                          "ratio, which times each round in fresh processes).")
    min_agreement: float | None = Field(
        None, ge=0, le=1,
        description="Fail the run when int8 predictions agree with FP32 on less than this fraction at any shape.",
    )

    @field_validator("batch_sizes", "sequence_lengths")
    @classmethod
    def _positive_unique(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v):
            raise ValueError("values must be >= 1")
        if len(set(v)) != len(v):
            raise ValueError("values must not repeat")
        return sorted(v)


class EvaluationSpec(_Spec):
    metric: MetricName | None = Field(
        None,
        description="Metric on the evaluation data; the task's default when omitted (accuracy, entity f1, "
        "spearman, squad f1; agreement / cosine without labels). text-classification: accuracy, f1, precision, "
        "recall, matthews_correlation, pearson/spearman (regressors); token-classification: f1, precision, recall "
        "(entity level), accuracy (word tags); feature-extraction: spearman, pearson (pair cosine vs score), "
        "cosine (to FP32); question-answering: f1, exact_match. `agreement` (every task) = match with the FP32 "
        "model's outputs, needs no labels.",
    )
    average: Literal["binary", "macro", "micro", "weighted"] = Field(
        "binary", description="Averaging for f1/precision/recall with more than two classes."
    )
    batch_size: int = Field(32, ge=1, description="Examples per evaluation batch.")
    latency: LatencySpec = Field(default_factory=LatencySpec)
    shapes: ShapeGridSpec | None = Field(
        None,
        description="A batch x sequence grid over which the quantized model is checked against FP32 (prediction "
        "agreement, max logit difference, batch invariance) and timed; off when null.",
    )
    shards: int | None = Field(None, ge=1, le=4096, description="Split the evaluation set into this many shards "
                               "(whole batches), each scored by one worker of `executor`; same metric as unsharded.")
    executor: ShardExecutorSpec = Field(default_factory=ShardExecutorSpec, description="Where the shards run.")

    @property
    def higher_is_better(self) -> bool:
        return METRICS_HIGHER_IS_BETTER[self.metric] if self.metric else True


# --------------------------------------------------------------------------- output
class OutputSpec(_Spec):
    dir: str | None = Field(None, description="Artifact folder (relative to the spec file). `--output` overrides.")
    overwrite: bool = Field(False, description="Replace an existing artifact folder.")
    keep_fp32: bool = Field(
        False, description="Also save the FP32 ONNX model as fp32/model.onnx (the baseline `quantkit benchmark` uses)."
    )


# --------------------------------------------------------------------------- QAT
class EarlyStoppingSpec(_Spec):
    patience: int = Field(3, ge=1, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest improvement of the held-out metric that counts.")
    eval_every: int = Field(50, ge=1, description="Steps between held-out evaluations.")


class QATSpec(_Spec):
    steps: int | None = Field(None, ge=1, description="Optimizer steps (exclusive with `epochs`).")
    epochs: float | None = Field(None, gt=0, description="Passes over the training data (exclusive with `steps`).")
    learning_rate: float = Field(2e-5, gt=0, le=1)
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps, then linear decay to 0.")
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(16, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping (null: none).")
    freeze: list[str] = Field(
        default_factory=list,
        description="Parameters kept frozen: glob patterns on parameter names (e.g. 'bert.embeddings.*').",
    )
    holdout: float = Field(
        0.1, ge=0, lt=0.5,
        description="Fraction of the training data held out for early stopping (never the evaluation data).",
    )
    early_stopping: EarlyStoppingSpec | None = Field(default_factory=EarlyStoppingSpec)
    checkpoint_every: int = Field(50, ge=1, description="Steps between resumable checkpoints.")
    num_workers: int = Field(1, ge=0, description="DataLoader worker processes.")
    bf16: bool = Field(False, description="bf16 autocast (only on CPUs with AVX512-BF16/AMX; off by default).")
    seed: int = Field(0)

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> "QATSpec":
        if self.steps is not None and self.epochs is not None:
            raise ValueError("steps: give `steps` or `epochs`, not both")
        return self

    def total_steps(self, num_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        per_epoch = max(1, -(-num_examples // self.batch_size))
        return max(1, round((self.epochs or 1.0) * per_epoch))


# --------------------------------------------------------------------------- tuning
#: Quantization fields a tuning space may vary (``calibration.*`` for the nested ones).
def searchable_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {
        name: f.annotation for name, f in QuantizationConfig.model_fields.items()
        if name not in ("calibration", "weight_only")
    }
    fields.update({f"calibration.{name}": f.annotation for name, f in CalibrationSpec.model_fields.items()})
    fields.update({f"weight_only.{name}": f.annotation for name, f in WeightOnlySpec.model_fields.items()})
    fields["export.optimize"] = OptimizeLevel
    return fields


class ToleranceSpec(_Spec):
    type: Literal["relative", "absolute"] = Field(
        "relative", description="relative: a fraction of the FP32 metric; absolute: metric units."
    )
    value: float = Field(0.01, ge=0, description="Largest accepted metric loss (0.01 = 1% when relative).")


class FallbackSpec(_Spec):
    max_nodes: int = Field(12, ge=1, description="Most nodes the fallback strategy may return to FP32.")
    samples: int = Field(32, ge=1, description="Examples used to rank node sensitivity.")
    candidates: int = Field(2, ge=1, description="Best failing candidates `fastest` hands to fallback.")


class TuningSpec(_Spec):
    strategy: Literal["basic", "fastest", "fallback"] = Field(
        "fastest",
        description="basic: stop at the first candidate within tolerance; fastest: search the whole budget and "
        "keep the best by `objective`; fallback: return sensitive nodes to FP32 until within tolerance.",
    )
    objective: Literal["latency", "size", "accuracy"] = Field(
        "latency", description="What `fastest` minimises (accuracy: maximises) among candidates within tolerance."
    )
    tolerance: ToleranceSpec = Field(default_factory=ToleranceSpec)
    space: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Quantization fields to search, each with its candidate values, e.g. "
        "{approach: [dynamic, static], calibration.method: [minmax, percentile]}. The `quantization` section is "
        "the first candidate.",
    )
    max_trials: int = Field(20, ge=1, description="Most candidates to quantize and evaluate.")
    timeout: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds.")
    seed: int = Field(0, description="Seed for the order of equally ranked candidates.")
    prune: bool = Field(
        True, description="Skip a candidate early once it cannot win (slower than the best, or accuracy out of reach)."
    )
    latency: LatencySpec | None = Field(None, description="Latency measurement for trials (default: evaluation.latency).")
    fallback: FallbackSpec = Field(default_factory=FallbackSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec, description="Where trials run (`quantkit tune "
                                   "--executor`); trial keys do not depend on it: a run resumes on either.")

    @field_validator("space")
    @classmethod
    def _check_space(cls, space: dict[str, list[Any]]) -> dict[str, list[Any]]:
        from pydantic import TypeAdapter

        allowed = searchable_fields()
        for key, values in space.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, list(allowed), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise KeyedError(f"tuning.space.{key}", f"not a searchable quantization field; {hint}"
                                  f"(searchable: {', '.join(allowed)})")
            if not values:
                raise KeyedError(f"tuning.space.{key}", "needs at least one value")
            adapter = TypeAdapter(allowed[key])
            for i, value in enumerate(values):
                try:
                    adapter.validate_python(value)
                except ValidationError as exc:
                    error = exc.errors(include_url=False)[0]
                    raise KeyedError(f"tuning.space.{key}.{i}", error["msg"], detail=error) from None
        return space


# --------------------------------------------------------------------------- hub
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")


def validate_repo_id(value: str) -> str:
    """Return ``value`` if it is a Hub model repo id ``owner/name``; raise ValueError saying why not.

    Follows the Hub's rules: letters, digits, ``-``, ``_`` and ``.``, starting and ending with a letter
    or digit, no ``--`` or ``..``, a name of at most 96 characters.
    """
    if not isinstance(value, str) or not _REPO_ID.match(value) or "--" in value or ".." in value:
        raise ValueError(
            f"{value!r} is not a Hub repo id; expected owner/name (letters, digits, '-', '_', '.'; "
            "no '--' or '..'), e.g. my-org/minilm-spam-int8"
        )
    if len(value.split("/")[1]) > 96:
        raise ValueError(f"{value!r} is not a Hub repo id; the name part is longer than 96 characters")
    return value


def looks_like_repo_id(value: str) -> bool:
    """True for ``owner/name`` strings that are not written as local paths."""
    if value.startswith((".", "/", "~")) or "\\" in value:
        return False
    try:
        validate_repo_id(value)
    except ValueError:
        return False
    return True


class HubSpec(_Spec):
    repo_id: str = Field(description="Hugging Face Hub model repo to push to, `owner/name`.")
    private: bool = Field(False, description="Create the repo private (an existing repo keeps its visibility).")
    revision: str | None = Field(
        None, min_length=1, description="Branch to push to (created from main when missing); default main."
    )
    push: bool = Field(False, description="Push the artifact folder after a successful quantize/tune.")
    commit_message: str | None = Field(
        None, min_length=1, description="Commit message (default: one naming the approach and the metric)."
    )
    create_pr: bool = Field(False, description="Open a pull request instead of committing to the branch.")
    include_fp32: bool = Field(
        False, description="Also push the FP32 baseline (fp32/, from output.keep_fp32); serving never reads it."
    )

    @field_validator("repo_id")
    @classmethod
    def _check_repo_id(cls, v: str) -> str:
        return validate_repo_id(v)


# --------------------------------------------------------------------------- whole file
class QuantizationSpec(_Spec):
    spec_version: Literal[1] = Field(description="Version of this spec format; currently 1.")
    model: ModelSpec = Field(default_factory=ModelSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    data: DataSpec
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    qat: QATSpec | None = Field(None, description="Quantization-aware training (quantization.approach: qat).")
    task_options: TaskOptionsSpec = Field(
        default_factory=TaskOptionsSpec,
        description="Task-specific settings: pooling (feature-extraction), entity matching (token-classification), "
        "windows and answer search (question-answering).",
    )
    tuning: TuningSpec | None = Field(
        None, description="Accuracy-tolerance search; when present, `quantize` tunes."
    )
    hardware: HardwareTarget = Field(
        "auto",
        description="CPU the model is quantized for: auto (this machine) or a target. It sets the quantization "
        "fields the spec leaves unset (weight/activation types, reduce_range, per_channel, format); see "
        "`quantkit env`.",
    )
    hardware_probe: Literal["auto", "off"] = Field(
        "auto",
        description="auto: CPU-dependent defaults left unset (export.optimize: auto) are timed on this CPU on the "
        "exported graph and the separably faster one kept (cached); off: the hardware table decides.",
    )
    hub: HubSpec | None = Field(
        None, description="Hugging Face Hub repo for `quantkit push`; with `push: true`, pushed after a successful run."
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> "QuantizationSpec":
        if self.quantization.approach == "qat" and self.data.calibration is None:
            raise KeyedError("data.calibration", "required by approach: qat (the training data)")
        if self.qat is not None and self.quantization.approach != "qat":
            raise KeyedError("qat", "only used with quantization.approach: qat")
        q = self.quantization
        if q.approach == "weight_only" and q.weights.needs_calibration and self.data.calibration is None:
            raise KeyedError("data.calibration", f"required by weight_only.algorithm: {q.weights.algorithm} "
                             "(calibration text, e.g. a .txt file)")
        static_searched = self.tuning is not None and "static" in self.tuning.space.get("approach", [])
        if (self.quantization.approach == "static" or static_searched) and self.data.calibration is None:
            raise KeyedError(
                "data.calibration",
                "required when quantization.approach is static or tuning.space tries it "
                "(a dataset to compute activation ranges)",
            )
        stride = self.task_options.doc_stride
        if stride is not None and stride * 2 > self.data.max_length:
            raise KeyedError("task_options.doc_stride",
                              f"{stride} must be at most half of data.max_length "
                              f"{self.data.max_length} (windows overlap by that many tokens)")
        if self.task_options.stride is not None and self.task_options.stride > self.data.max_length:
            raise KeyedError("task_options.stride", f"{self.task_options.stride} is larger than data.max_length "
                             f"{self.data.max_length} (windows would leave tokens unscored)")
        if self.evaluation.shapes is not None and "sequence" not in self.export.dynamic_axes:
            if self.evaluation.shapes.sequence_lengths != [self.data.max_length]:
                raise KeyedError("evaluation.shapes.sequence_lengths",
                                  "the sequence axis is fixed (export.dynamic_axes): only data.max_length works")
        if self.evaluation.shapes is not None and "batch" not in self.export.dynamic_axes:
            if self.evaluation.shapes.batch_sizes != [self.export.static_batch_size]:
                raise KeyedError("evaluation.shapes.batch_sizes",
                                  "the batch axis is fixed (export.dynamic_axes): only export.static_batch_size works")
        lat = self.evaluation.latency
        if lat.sequence_length is not None and lat.sequence_length > self.data.max_length:
            raise KeyedError(
                "evaluation.latency.sequence_length",
                f"{lat.sequence_length} exceeds data.max_length {self.data.max_length}",
            )
        if "sequence" not in self.export.dynamic_axes and self.data.padding != "max_length":
            raise KeyedError(
                "data.padding",
                "must be max_length when the sequence axis is not dynamic (export.dynamic_axes)",
            )
        if "sequence" not in self.export.dynamic_axes and self.data.max_length != self.export.static_sequence_length:
            raise KeyedError(
                "export.static_sequence_length",
                f"must equal data.max_length ({self.data.max_length}) when the sequence axis is fixed",
            )
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class KeyedError(ValueError):
    """A cross-field error that knows its key path (pydantic would report it at the root).

    ``detail`` is the pydantic error dict of a nested value check, which :mod:`quantkit.specio` renders.
    """

    def __init__(self, path: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.detail = detail
