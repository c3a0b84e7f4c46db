"""What a task is: the one place that knows what a model's inputs and outputs mean.

A :class:`Task` owns, for one kind of model (sequence classifier, sentence encoder, tagger,
extractive reader):

- the ONNX graph's outputs and their symbolic axes (inputs are the tokenizer's ``[batch, sequence]`` ids);
- which data columns it reads and how rows become model inputs (:meth:`Task.encode`);
- how raw outputs become predictions (:meth:`Task.predict_batch`, :meth:`Task.collect`);
- its metrics (the first is the default; the spec's ``evaluation.metric`` picks one) and its label-free
  agreement with FP32 (:meth:`Task.agreement`), used by ``metric: agreement``, the shape grid and the search;
- how :mod:`quantkit.runtime` serves an artifact (:meth:`Task.serve_examples`, :meth:`Task.serve_encode`,
  :meth:`Task.serve_outputs`: what the task's ``transformers.pipeline`` returns, without optimum-onnx);
- the ``ORTModelFor*`` class, the ``pipeline()`` task and the model-card metadata (both ways of loading);
- whether quantization-aware training is possible, and its loss.

Nothing else in quantkit branches on the task name: it asks the task.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..data import TextDataset
from ..errors import DataError, EvaluationError

logger = logging.getLogger(__name__)

__all__ = ["Task", "MetricInfo", "Columns", "RowProblem", "ServeBatch", "softmax"]


@dataclass(frozen=True)
class MetricInfo:
    """A metric a task computes: whether it needs labels, and what it means."""

    description: str
    needs_labels: bool = True


@dataclass(frozen=True)
class Columns:
    """The data columns a task reads from one dataset entry, resolved from the spec and the task's defaults."""

    text: tuple[str, ...]
    label: str | None


@dataclass(frozen=True)
class RowProblem:
    """A data-contract problem found on sample rows (pre-flight turns it into a check problem)."""

    key_path: str
    message: str
    hint: str = ""
    severity: str = "error"


@dataclass
class Predictions:
    """A model's predictions on a dataset: what the metric reads, plus the raw primary output for diffs."""

    values: Any
    raw: np.ndarray | None = field(default=None, repr=False)


@dataclass
class ServeBatch:
    """Examples tokenized for inference (:mod:`quantkit.runtime`): the feeds, padded to the longest row, and
    what post-processing needs (``meta``: per-row offsets, windows' examples, ...; ``examples``: the inputs)."""

    feeds: dict[str, np.ndarray]
    examples: list[Any]
    meta: dict[str, Any] = field(default_factory=dict)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (float64 internally, float32 out)."""
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return (z / z.sum(axis=axis, keepdims=True)).astype(np.float32)


class Task:
    """Base class of the task registry (see :data:`quantkit.tasks.TASKS`).

    Subclasses set the class attributes and implement :meth:`encode`, :meth:`predict_batch`,
    :meth:`compute` and :meth:`agreement`. A task object is bound to one model (its config, and for
    sentence encoders its pooling), built by :func:`quantkit.tasks.task_for`.
    """

    #: Canonical name (optimum's task name).
    name: ClassVar[str]
    #: Other names users write for it.
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Suffixes of ``config.architectures`` entries that identify a checkpoint of this task.
    architecture_suffixes: ClassVar[tuple[str, ...]] = ()
    #: Substrings that rule an architecture out even when a suffix matches (``GPT2LMHeadModel`` is no encoder).
    architecture_excludes: ClassVar[tuple[str, ...]] = ()
    #: transformers Auto class that loads the PyTorch model.
    auto_model: ClassVar[str]
    #: The ``transformers.models.auto.modeling_auto`` mapping (model_type → class name) behind ``auto_model``.
    auto_model_mapping: ClassVar[str]
    #: optimum.onnxruntime class that loads the artifact.
    ort_model: ClassVar[str]
    #: ``transformers.pipeline`` task name, and the Hub's pipeline tag.
    pipeline_task: ClassVar[str]
    pipeline_tag: ClassVar[str]
    #: model-index ``task.type`` for the model card.
    card_task_type: ClassVar[str]
    #: ONNX graph outputs, primary first, with their symbolic axes.
    output_names: ClassVar[tuple[str, ...]]
    output_axes: ClassVar[dict[str, dict[int, str]]]
    #: Metrics by name; the first labelled one is the default with labels, ``agreement`` without.
    metrics: ClassVar[dict[str, MetricInfo]]
    #: Default data columns (spec keys ``text_columns`` / ``label_column`` override them).
    default_text_columns: ClassVar[tuple[str, ...]]
    default_label_column: ClassVar[str | None]
    #: How many text columns the task reads (min, max).
    text_column_count: ClassVar[tuple[int, int]] = (1, 1)
    #: Predictions are one per encoded row, in order, so evaluation can stop early on a chunk.
    chunkable: ClassVar[bool] = False
    #: The task's Auto class puts a task head on the encoder (a checkpoint without that head gets a random one).
    adds_head: ClassVar[bool] = True
    #: Quantization-aware training is supported (the task defines :meth:`training_loss`).
    supports_qat: ClassVar[bool] = False
    #: What a text column holds: "text" (a string per row) or "words" (a list of words per row).
    text_column_kind: ClassVar[str] = "text"
    #: References are class ids or names of the model's ``id2label`` (checked against ``num_labels``).
    class_labels: ClassVar[bool] = False
    #: The data is one document that ``encode`` cuts into rows (windows), not one example per row.
    one_document: ClassVar[bool] = False

    def __init__(self, model_config: Any = None, options: Any = None, model_dir: Path | None = None) -> None:
        self.model_config = model_config
        self.options = options
        self.model_dir = model_dir

    # ------------------------------------------------------------------ description
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @classmethod
    def default_metric(cls, labelled: bool = True) -> str:
        if labelled:
            for name, info in cls.metrics.items():
                if info.needs_labels:
                    return name
        return "agreement"

    def describe(self) -> dict[str, Any]:
        """The task section of the report."""
        return {"name": self.name, "outputs": list(self.output_names), "ort_model": self.ort_model,
                "pipeline": self.pipeline_task}

    def check_metric(self, metric: str, average: str = "binary") -> str | None:
        """Why ``metric`` does not fit this task and model, or None."""
        if metric not in self.metrics:
            return f"{metric!r} is not a {self.name} metric; expected one of {', '.join(self.metrics)}"
        return None

    # ------------------------------------------------------------------ data
    def columns(self, ds: Any) -> Columns:
        """The text and label columns of dataset entry ``ds`` (a DatasetSpec): the spec's, else the task's."""
        text = tuple(ds.text_columns) if ds.text_columns else self.default_text_columns
        label = self.default_label_column if ds.label_column == "auto" else ds.label_column
        return Columns(text, label)

    def check_rows(self, rows: dict[str, list[Any]], columns: Columns, key: str) -> list[RowProblem]:
        """Data-contract problems on sample rows (columns already checked to exist)."""
        return []

    def encode(self, rows: Any, tokenizer: Any, columns: Columns, *, key: str, max_length: int, padding: str,
               labelled: bool = True) -> TextDataset:
        raise NotImplementedError

    def limit(self, data: TextDataset, limit: int) -> TextDataset:
        """``data`` cut to the spec's ``limit``; most tasks count rows, which :func:`quantkit.data.load_rows` already
        limited (a task whose rows are made by ``encode``, such as text windows, cuts here)."""
        return data

    @staticmethod
    def _tokenize(tokenizer: Any, *texts: Any, max_length: int, **kwargs: Any) -> dict[str, np.ndarray]:
        limit = getattr(tokenizer, "model_max_length", None)
        if limit is not None and limit < 10**6 and max_length > limit:
            raise DataError(f"data.max_length: {max_length} exceeds the tokenizer's model_max_length {limit}")
        enc = tokenizer(*texts, truncation=kwargs.pop("truncation", True), max_length=max_length,
                        padding="max_length", return_tensors="np", **kwargs)
        return dict(enc)

    @staticmethod
    def _texts(rows: Any, column: str) -> list[str]:
        return [str(t) if t is not None else "" for t in rows[column]]

    def _tokenize_chunks(self, tokenizer: Any, texts: Sequence[list[str]], max_length: int,
                         chunk: int = 1024) -> dict[str, np.ndarray]:
        """Tokenize parallel text lists (one, or two for pairs) in chunks into padded int64 model inputs."""
        pieces: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(texts[0]), chunk):
            enc = self._tokenize(tokenizer, *(t[start: start + chunk] for t in texts), max_length=max_length)
            for name in self.model_inputs(tokenizer):
                if name in enc:
                    pieces.setdefault(name, []).append(np.asarray(enc[name]).astype(np.int64))
        return {k: np.concatenate(v) for k, v in pieces.items()}

    @staticmethod
    def _dataset(key: str, enc: dict[str, Any], names: Sequence[str], labels: Any, tokenizer: Any, padding: str,
                 meta: dict[str, Any] | None = None, examples: Any = None) -> TextDataset:
        inputs = {n: np.asarray(enc[n]).astype(np.int64) for n in names if n in enc}
        return TextDataset(name=key, inputs=inputs, labels=labels, padding=padding,
                           padding_side=getattr(tokenizer, "padding_side", "right"), meta=meta or {},
                           examples=examples)

    @staticmethod
    def model_inputs(tokenizer: Any) -> list[str]:
        names = list(getattr(tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"])
        return [n for n in names if n in ("input_ids", "attention_mask", "token_type_ids")]

    # ------------------------------------------------------------------ predictions
    def predict_batch(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray], data: TextDataset,
                      start: int) -> Any:
        """Predictions of the rows ``start:start+len(batch)`` from the graph's outputs on that batch."""
        raise NotImplementedError

    def collect(self, parts: list[Any], data: TextDataset) -> Any:
        """Per-batch predictions → the dataset's predictions (default: concatenated arrays)."""
        return np.concatenate(parts) if parts else np.empty(0)

    def raw_output(self, outputs: dict[str, np.ndarray], max_length: int) -> np.ndarray:
        """The primary output of one batch, padded to ``max_length`` along a sequence axis (for diffs)."""
        out = outputs[self.output_names[0]]
        axes = self.output_axes.get(self.output_names[0], {})
        if 1 in axes and "sequence" in axes[1] and out.shape[1] < max_length:
            pad = [(0, 0)] * out.ndim
            pad[1] = (0, max_length - out.shape[1])
            out = np.pad(out, pad)
        return out

    # ------------------------------------------------------------------ metrics
    def compute(self, metric: str, predictions: Any, data: TextDataset, *, average: str = "binary",
                reference: Any = None) -> float:
        """Metric ``metric`` of ``predictions`` on ``data``; ``reference`` = FP32 predictions (label-free metrics)."""
        info = self.metrics.get(metric)
        if info is None:
            raise EvaluationError(self.check_metric(metric) or metric)
        if not info.needs_labels:
            return self.agreement(predictions if reference is None else reference, predictions)
        return self._compute(metric, predictions, data, average)

    def _compute(self, metric: str, predictions: Any, data: TextDataset, average: str) -> float:
        """A labelled metric (the task reads its references from ``data``, see :meth:`_references`)."""
        raise NotImplementedError

    @staticmethod
    def _references(data: TextDataset, metric: str, what: Any) -> Any:
        if what is None:
            raise EvaluationError(f"metric {metric!r} needs references (label_column) but {data.name} has none")
        return what

    def chance_score(self, metric: str, data: TextDataset, average: str = "binary") -> float | None:
        """The metric a model that learned nothing scores on ``data`` (the best constant prediction), or None when
        the task cannot say. A FP32 score at or below it means the model does not do this task on this data."""
        return None

    def agreement(self, reference: Any, predictions: Any) -> float:
        """Label-free agreement of ``predictions`` with ``reference`` (FP32): 1.0 = identical behaviour."""
        raise NotImplementedError

    def decode_steps(self, latency: Any) -> int:
        """New tokens to time one by one after the prefill (``evaluation.latency.new_tokens``); 0: the task does not
        generate, only its forward pass is timed."""
        return 0

    def extra_scores(self, predictions: Any, reference: Any, data: TextDataset) -> dict[str, Any]:
        """Every score the report shows beside the headline metric (``reference``: FP32's predictions); none by
        default."""
        return {}

    def hits(self, metric: str, predictions: Any, references: Any) -> np.ndarray | None:
        """Per-example 0/1 hits when ``metric`` is their mean (lets the search stop scoring early), else None."""
        return None

    # ------------------------------------------------------------------ training
    def training_targets(self, data: TextDataset) -> np.ndarray:
        raise DataError(f"{self.name}: quantization-aware training is not supported for this task")

    def training_loss(self, outputs: Any, targets: Any) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ serving (quantkit.runtime)
    def serve_examples(self, inputs: Any, kwargs: dict[str, Any]) -> tuple[list[Any], bool]:
        """A call's inputs as a list of examples, and whether one example (not a list) was given."""
        if kwargs:
            raise TypeError(f"{self.name}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
        if inputs is None:
            raise TypeError(f"{self.name}: nothing to run (pass a text or a list of texts)")
        if isinstance(inputs, list):
            return list(inputs), False
        return [inputs], True

    def serve_encode(self, tokenizer: Any, examples: list[Any], *, max_length: int) -> ServeBatch:
        """Tokenize ``examples`` for inference (truncated to ``max_length``, padded to the longest)."""
        texts = [self._serve_text(e) for e in examples]
        enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        return ServeBatch(self._feeds(enc, tokenizer), examples)

    @staticmethod
    def _serve_text(example: Any) -> str:
        if not isinstance(example, str):
            raise TypeError(f"expected a text (str), got {type(example).__name__}")
        return example

    def _feeds(self, enc: Any, tokenizer: Any) -> dict[str, np.ndarray]:
        return {n: np.asarray(enc[n]).astype(np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")
                if n in enc}

    def serve_outputs(self, outputs: dict[str, np.ndarray], batch: ServeBatch, tokenizer: Any,
                      **options: Any) -> list[Any]:
        """One result per example of ``batch``, in the shape the task's ``transformers.pipeline`` returns."""
        raise NotImplementedError

    def serve_collect(self, results: list[Any], single: bool) -> Any:
        """The call's return value from the per-example results."""
        return results[0] if single else results

    # ------------------------------------------------------------------ artifacts
    def extra_files(self) -> dict[str, Path]:
        """Files of the source model folder the artifact keeps (e.g. a sentence-transformers pooling config)."""
        return {}

    def usage(self, repo_id: str) -> list[str]:
        """Python lines that load the artifact with optimum and run it with ``pipeline()``."""
        return [
            f"from optimum.onnxruntime import {self.ort_model}",
            "from transformers import AutoTokenizer, pipeline",
            "",
            f'model = {self.ort_model}.from_pretrained("{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            f'pipe = pipeline("{self.pipeline_task}", model=model, tokenizer=tokenizer)',
            f"print(pipe({self.usage_example()!r}))",
        ]

    def runtime_usage(self, repo_id: str) -> list[str]:
        """Python lines that load the artifact with :func:`quantkit.runtime.load` and run it."""
        return [
            "from quantkit.runtime import load",
            "",
            f'pipe = load("{repo_id}")',
            f"print(pipe({self.usage_example()!r}))",
        ]

    def usage_example(self) -> Any:
        return "Quantized models run fast on CPUs."

    def torch_outputs(self, out: Any) -> tuple[Any, ...]:
        """The graph outputs, in order, from a transformers model's forward output."""
        if isinstance(out, (tuple, list)):
            return tuple(out[: len(self.output_names)])
        return tuple(out[n] for n in self.output_names)
