"""feature-extraction: sentence-embedding models (search, RAG, deduplication, clustering).

The ONNX graph returns ``last_hidden_state [batch, sequence, hidden]``, exactly what optimum's
``ORTModelForFeatureExtraction`` and ``pipeline("feature-extraction")`` expect; the sentence embedding is
pooled from it outside the graph, the way the model's sentence-transformers folder says
(``modules.json``, ``1_Pooling/config.json``: mean / CLS / max / mean-sqrt-len / last-token pooling, then
``Normalize`` when listed), overridable with ``task_options.pooling`` / ``task_options.normalize``. Pooling
stays out of the graph on purpose: it costs microseconds, keeps the graph loadable by every
feature-extraction consumer, and the artifact keeps the sentence-transformers pooling files so a
sentence-transformers user pools it the same way.

Data: one text column (unlabelled: scored by cosine to the FP32 embeddings) or two (sentence pairs, e.g.
STS-B) with a similarity score column: Spearman / Pearson of the pair's cosine similarity with the score.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..data import TextDataset
from ..errors import DataError, EvaluationError
from ..metrics import correlation, cosine_rows
from .base import Columns, MetricInfo, RowProblem, ServeBatch, Task

logger = logging.getLogger(__name__)

__all__ = ["FeatureExtraction", "pool", "read_pooling"]

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len", "lasttoken")
#: sentence-transformers files the artifact keeps (when the source folder has them).
_ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
             "1_Pooling/config.json")


def read_pooling(model_dir: Path | None) -> tuple[str, bool, str]:
    """(pooling mode, normalize, where it came from) from a sentence-transformers folder; mean + no
    normalisation (transformers' own feature-extraction convention is no pooling) when absent."""
    if model_dir is None or not (Path(model_dir) / "modules.json").is_file():
        return "mean", False, "default (no modules.json)"
    folder = Path(model_dir)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        types = [str(m.get("type", "")) for m in modules]
        pooling_dir = next((m.get("path", "") for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
        normalize = any(t.endswith(".Normalize") for t in types)
        mode = "mean"
        if pooling_dir is not None and (folder / pooling_dir / "config.json").is_file():
            cfg = json.loads((folder / pooling_dir / "config.json").read_text(encoding="utf-8"))
            for flag, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                               ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
                               ("pooling_mode_lasttoken", "lasttoken"), ("pooling_mode_mean_tokens", "mean")):
                if cfg.get(flag):
                    mode = name
                    break
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{folder / 'modules.json'}: cannot read the sentence-transformers pooling: {exc}") from None
    return mode, normalize, f"{folder.name}/modules.json"


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str, normalize: bool) -> np.ndarray:
    """Sentence embeddings ``[batch, hidden]`` from token embeddings, as sentence-transformers computes them."""
    h = hidden.astype(np.float32)
    m = mask[:, : h.shape[1]].astype(np.float32)[..., None]
    if mode == "cls":
        out = h[:, 0]
    elif mode == "max":
        out = np.where(m > 0, h, -1e9).max(axis=1)
    elif mode == "lasttoken":
        last = np.maximum(m[..., 0].sum(axis=1).astype(np.int64) - 1, 0)
        out = h[np.arange(len(h)), last]
    else:
        summed = (h * m).sum(axis=1)
        count = np.maximum(m.sum(axis=1), 1e-9)
        out = summed / (np.sqrt(count) if mode == "mean_sqrt_len" else count)
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


class FeatureExtraction(Task):
    name = "feature-extraction"
    aliases = ("sentence-similarity", "sentence-embeddings", "embeddings")
    architecture_suffixes = ("Model",)
    architecture_excludes = ("For", "Head")  # not "LM": XLMRobertaModel is an encoder
    auto_model = "AutoModel"
    adds_head = False  # the encoder's hidden states, pooled: every checkpoint of the family has them
    auto_model_mapping = "MODEL_MAPPING_NAMES"
    ort_model = "ORTModelForFeatureExtraction"
    pipeline_task = "feature-extraction"
    pipeline_tag = "sentence-similarity"
    card_task_type = "sentence-similarity"
    output_names = ("last_hidden_state",)
    output_axes = {"last_hidden_state": {0: "batch_size", 1: "sequence_length"}}
    metrics = {
        "spearman": MetricInfo("Spearman correlation of the pairs' cosine similarity with the gold scores"),
        "pearson": MetricInfo("Pearson correlation of the pairs' cosine similarity with the gold scores"),
        "cosine": MetricInfo("mean cosine similarity of each embedding with FP32's", needs_labels=False),
        "agreement": MetricInfo("mean cosine similarity of each embedding with FP32's", needs_labels=False),
    }
    default_text_columns = ("text",)
    default_label_column = None
    text_column_count = (1, 2)

    def __init__(self, model_config: Any = None, options: Any = None, model_dir: Path | None = None) -> None:
        super().__init__(model_config, options, model_dir)
        mode, normalize, source = read_pooling(model_dir)
        asked_mode = getattr(options, "pooling", "auto")
        asked_norm = getattr(options, "normalize", "auto")
        self.pooling = mode if asked_mode in (None, "auto") else asked_mode
        self.normalize = normalize if asked_norm in (None, "auto") else asked_norm == "true"
        self.pooling_source = source if asked_mode in (None, "auto") else "task_options.pooling"

    @classmethod
    def default_metric(cls, labelled: bool = True) -> str:
        return "spearman" if labelled else "cosine"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pooling": self.pooling, "normalize": self.normalize,
                "pooling_source": self.pooling_source}

    def check_rows(self, rows: dict[str, list[Any]], columns: Columns, key: str) -> list[RowProblem]:
        if columns.label is None or columns.label not in rows:
            return []
        if len(columns.text) != 2:
            return [RowProblem(f"{key}.text_columns", f"a similarity score ({columns.label!r}) needs two text columns "
                               "(sentence pairs)", "set text_columns: [sentence1, sentence2], or label_column: null")]
        bad = [v for v in rows[columns.label] if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            return [RowProblem(f"{key}.label_column", f"column {columns.label!r} holds {bad[0]!r}; expected numeric "
                               "similarity scores")]
        return []

    def encode(self, rows: Any, tokenizer: Any, columns: Columns, *, key: str, max_length: int, padding: str,
               labelled: bool = True) -> TextDataset:
        texts = [t for c in columns.text for t in self._texts(rows, c)]  # pairs: all first sentences, then seconds
        enc = self._tokenize_chunks(tokenizer, [texts], max_length)
        labels = None
        if labelled and columns.label is not None:
            if len(columns.text) != 2:
                raise DataError(f"{key}.text_columns: similarity scores need two text columns (sentence pairs)")
            try:
                labels = np.asarray(rows[columns.label], dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{key}.label_column: similarity scores must be numbers") from None
            if not np.all(np.isfinite(labels)):
                raise DataError(f"{key}.label_column: {int(np.sum(~np.isfinite(labels)))} score(s) are missing or "
                                "not finite")
        return self._dataset(key, enc, list(enc), None, tokenizer, padding,
                             examples={"pairs": len(rows) if len(columns.text) == 2 else 0, "scores": labels})

    def predict_batch(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray], data: TextDataset,
                      start: int) -> np.ndarray:
        hidden = outputs["last_hidden_state"]
        mask = feeds.get("attention_mask")
        if mask is None:
            mask = np.ones(hidden.shape[:2], dtype=np.int64)
        return pool(hidden, mask, self.pooling, self.normalize)

    def _compute(self, metric: str, predictions: Any, data: TextDataset, average: str) -> float:
        examples = data.examples or {}
        scores, n = examples.get("scores"), int(examples.get("pairs") or 0)
        if scores is None or not n:
            raise EvaluationError(f"metric {metric!r} needs sentence pairs with similarity scores in {data.name}")
        emb = np.asarray(predictions)
        return correlation(metric, cosine_rows(emb[:n], emb[n: 2 * n]), scores)

    def agreement(self, reference: Any, predictions: Any) -> float:
        return float(np.mean(cosine_rows(np.asarray(reference), np.asarray(predictions))))

    def serve_outputs(self, outputs: dict[str, np.ndarray], batch: ServeBatch, tokenizer: Any,
                      **options: Any) -> list[Any]:
        """One sentence embedding per text, pooled (and normalised) as :attr:`pooling` / :attr:`normalize` say."""
        if options:
            raise TypeError(f"feature-extraction: unexpected option(s) {', '.join(sorted(options))}")
        return list(self.predict_batch(outputs, batch.feeds, None, 0))  # type: ignore[arg-type]

    def serve_collect(self, results: list[Any], single: bool) -> Any:
        """``[hidden]`` for one text, ``[n, hidden]`` for a list."""
        if single:
            return results[0]
        return np.stack(results) if results else np.empty((0, 0), dtype=np.float32)

    def extra_files(self) -> dict[str, Path]:
        if self.model_dir is None:
            return {}
        return {name: Path(self.model_dir) / name for name in _ST_FILES if (Path(self.model_dir) / name).is_file()}

    def runtime_usage(self, repo_id: str) -> list[str]:
        how = f"{self.pooling} pooling" + (", L2-normalised" if self.normalize else "")
        return super().runtime_usage(repo_id)[:-1] + [
            f'embedding = pipe("{self.usage_example()}")  # [hidden]: {how}; a list of texts gives [n, hidden]']

    def usage(self, repo_id: str) -> list[str]:
        pooled = {"mean": "(out * mask).sum(1) / mask.sum(1)", "cls": "out[:, 0]"}.get(self.pooling)
        lines = super().usage(repo_id)[:-1]
        lines += [
            f'batch = tokenizer(["{self.usage_example()}"], return_tensors="pt", padding=True)',
            "out = model(**batch).last_hidden_state",
        ]
        if pooled:
            lines += ["mask = batch['attention_mask'].unsqueeze(-1).float()", f"embedding = {pooled}"]
            if self.normalize:
                lines.append("embedding = torch.nn.functional.normalize(embedding, dim=-1)")
        return (["import torch"] if pooled and self.normalize else []) + lines
