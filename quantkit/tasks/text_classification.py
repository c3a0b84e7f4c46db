"""text-classification: sequence classifiers and regressors, single texts or text pairs (NLI, cross-encoder
rerankers). Outputs ``logits [batch, num_labels]``; predictions are class ids (argmax) or, for a regressor
(``num_labels: 1``), the score."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import TextDataset
from ..errors import DataError
from ..metrics import METRICS, compute_metric, correlation, to_predictions
from .base import Columns, MetricInfo, RowProblem, ServeBatch, Task, softmax

__all__ = ["TextClassification", "class_labels"]


def class_labels(values: list[Any], label2id: dict[str, int] | None, num_labels: int | None, key: str) -> np.ndarray:
    """Label values → class ids (names via ``label2id``, case-insensitive) or float targets for a regressor."""
    if num_labels == 1:  # regression
        try:
            return np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{key}.label_column: regression labels must be numbers") from None
    if any(v is None for v in values):
        raise DataError(f"{key}.label_column: {sum(v is None for v in values)} row(s) have no label")
    if values and all(isinstance(v, str) for v in values):
        mapping = {str(k).lower(): int(v) for k, v in (label2id or {}).items()}
        unknown = sorted({v for v in values if v.lower() not in mapping})
        if unknown:
            raise DataError(
                f"{key}.label_column: labels {unknown[:5]} are not in the model's label2id "
                f"({', '.join(sorted(mapping)) or 'empty'})"
            )
        return np.asarray([mapping[v.lower()] for v in values], dtype=np.int64)
    if any(isinstance(v, str) for v in values):
        raise DataError(f"{key}.label_column: labels mix names and numbers; use one kind")
    try:
        arr = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{key}.label_column: expected integer or string class labels") from None
    if num_labels is not None and len(arr) and (arr.min() < 0 or arr.max() >= num_labels):
        raise DataError(
            f"{key}.label_column: label values span {int(arr.min())}..{int(arr.max())} "
            f"but the model has {num_labels} labels (0..{num_labels - 1})"
        )
    return arr


class TextClassification(Task):
    name = "text-classification"
    aliases = ("sequence-classification", "sentiment-analysis", "text-pair-classification", "cross-encoder")
    architecture_suffixes = ("ForSequenceClassification",)
    auto_model = "AutoModelForSequenceClassification"
    auto_model_mapping = "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"
    ort_model = "ORTModelForSequenceClassification"
    pipeline_task = "text-classification"
    pipeline_tag = "text-classification"
    card_task_type = "text-classification"
    output_names = ("logits",)
    output_axes = {"logits": {0: "batch_size"}}
    metrics = {
        "accuracy": MetricInfo("fraction of examples whose predicted class is the label"),
        "f1": MetricInfo("F1 of the predicted classes (evaluation.average for several classes)"),
        "precision": MetricInfo("precision of the predicted classes"),
        "recall": MetricInfo("recall of the predicted classes"),
        "matthews_correlation": MetricInfo("Matthews correlation of predicted and true classes"),
        "pearson": MetricInfo("Pearson correlation of a regressor's scores with the labels"),
        "spearman": MetricInfo("Spearman correlation of a regressor's scores with the labels"),
        "agreement": MetricInfo("fraction of predictions equal to FP32's (a regressor: Pearson r with FP32's "
                                "scores)", needs_labels=False),
    }
    default_text_columns = ("text",)
    default_label_column = "label"
    text_column_count = (1, 2)
    chunkable = True
    supports_qat = True
    class_labels = True

    @property
    def regression(self) -> bool:
        return int(getattr(self.model_config, "num_labels", 2) or 2) == 1

    @classmethod
    def default_metric(cls, labelled: bool = True) -> str:
        return "accuracy" if labelled else "agreement"

    def check_metric(self, metric: str, average: str = "binary") -> str | None:
        problem = super().check_metric(metric, average)
        if problem or metric == "agreement":
            return problem
        defn = METRICS.get(metric)
        num_labels = int(getattr(self.model_config, "num_labels", 2) or 2)
        if num_labels == 1 and not defn.regression:
            return (f"{metric!r} scores class predictions, but the model is a regressor (num_labels 1); expected "
                    "pearson or spearman")
        if num_labels > 1 and defn.regression:
            return (f"{metric!r} scores regression, but the model classifies into {num_labels} classes; expected "
                    "accuracy, f1, precision, recall, matthews_correlation or agreement")
        if defn.averaged and average == "binary" and num_labels > 2:
            return (f"'binary' {metric} needs 2 classes but the model has {num_labels}; expected macro, micro or "
                    "weighted average")
        return None

    def encode(self, rows: Any, tokenizer: Any, columns: Columns, *, key: str, max_length: int, padding: str,
               labelled: bool = True) -> TextDataset:
        enc = self._tokenize_chunks(tokenizer, [self._texts(rows, c) for c in columns.text], max_length)
        labels = None
        if labelled and columns.label is not None:
            cfg = self.model_config
            labels = class_labels(list(rows[columns.label]), getattr(cfg, "label2id", None),
                                  getattr(cfg, "num_labels", None), key)
        return self._dataset(key, enc, list(enc), labels, tokenizer, padding)

    def predict_batch(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray], data: TextDataset,
                      start: int) -> np.ndarray:
        return to_predictions(outputs["logits"], self.regression)

    def _compute(self, metric: str, predictions: Any, data: TextDataset, average: str) -> float:
        labels = self._references(data, metric, data.labels)
        return compute_metric(metric, np.asarray(predictions), np.asarray(labels), average=average)

    def chance_score(self, metric: str, data: TextDataset, average: str = "binary") -> float | None:
        """The best score of always predicting one class (the majority class, for accuracy)."""
        info = self.metrics.get(metric)
        if self.regression or info is None or not info.needs_labels or data.labels is None:
            return None
        labels = np.asarray(data.labels)
        if labels.size == 0:
            return None
        return max(self._compute(metric, np.full_like(labels, value), data, average) for value in np.unique(labels))

    def agreement(self, reference: Any, predictions: Any) -> float:
        ref, got = np.asarray(reference), np.asarray(predictions)
        if self.regression:
            if np.allclose(ref, got):
                return 1.0
            return correlation("pearson", got, ref)
        return float(np.mean(ref == got)) if len(ref) else 1.0

    def hits(self, metric: str, predictions: Any, references: Any) -> np.ndarray | None:
        if metric in ("accuracy", "agreement") and not self.regression:
            return np.asarray(predictions) == np.asarray(references)
        return None

    def training_targets(self, data: TextDataset) -> np.ndarray:
        if data.labels is None:
            raise DataError(f"{data.name}: quantization-aware training needs labels (label_column)")
        return np.asarray(data.labels)

    def training_loss(self, outputs: Any, targets: Any) -> Any:
        import torch

        logits = outputs[0].float()
        if self.regression:
            return torch.nn.functional.mse_loss(logits.squeeze(-1), targets.float())
        return torch.nn.functional.cross_entropy(logits, targets)

    def check_rows(self, rows: dict[str, list[Any]], columns: Columns, key: str) -> list[RowProblem]:
        return []

    def usage_example(self) -> Any:
        return "Congratulations, you won a free cruise! Click here."

    # ------------------------------------------------------------------ serving
    def serve_encode(self, tokenizer: Any, examples: list[Any], *, max_length: int) -> ServeBatch:
        """A text, a ``(text, text_pair)`` tuple or a ``{"text", "text_pair"}`` dict per example."""
        pairs = [self._pair(e) for e in examples]
        with_pair = [b is not None for _, b in pairs]
        if any(with_pair) and not all(with_pair):
            raise TypeError("text-classification: a batch mixes single texts and text pairs; run them separately")
        first = [a for a, _ in pairs]
        if all(with_pair) and pairs:
            enc = tokenizer(first, [b for _, b in pairs], truncation=True, max_length=max_length, padding=True,
                            return_tensors="np")
        else:
            enc = tokenizer(first, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        return ServeBatch(self._feeds(enc, tokenizer), examples)

    @staticmethod
    def _pair(example: Any) -> tuple[str, str | None]:
        if isinstance(example, str):
            return example, None
        if isinstance(example, dict) and "text" in example:
            return str(example["text"]), (None if example.get("text_pair") is None else str(example["text_pair"]))
        if isinstance(example, tuple) and len(example) == 2:
            return str(example[0]), str(example[1])
        raise TypeError(f"text-classification: expected a text, a (text, text_pair) tuple or a dict with text / "
                        f"text_pair, got {type(example).__name__}")

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Label scores as ``pipeline("text-classification")`` computes them: softmax for classifiers, sigmoid
        for multi-label or one-logit models, the raw value for ``problem_type: regression``."""
        cfg = self.model_config
        problem = getattr(cfg, "problem_type", None)
        logits = np.asarray(logits, dtype=np.float32)
        if problem == "regression":
            return logits
        if problem == "multi_label_classification" or logits.shape[-1] == 1:
            return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
        return softmax(logits)

    def serve_outputs(self, outputs: dict[str, np.ndarray], batch: ServeBatch, tokenizer: Any,
                      top_k: int | None = 1, **options: Any) -> list[Any]:
        """``{"label", "score"}`` per example (``top_k=1``), else its labels best first (``None``: all)."""
        if options:
            raise TypeError(f"text-classification: unexpected option(s) {', '.join(sorted(options))}")
        id2label = {int(k): str(v) for k, v in (getattr(self.model_config, "id2label", None) or {}).items()}
        results = []
        for row in self.scores(outputs["logits"]):
            ranked = [{"label": id2label.get(i, f"LABEL_{i}"), "score": float(row[i])}
                      for i in np.argsort(-row, kind="stable")]
            results.append(ranked[0] if top_k == 1 else ranked[: top_k if top_k is not None else len(ranked)])
        return results
