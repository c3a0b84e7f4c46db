"""Causal language models (``text-generation``): perplexity on a text, and agreement with FP32's next-token
distribution.

Evaluation data is one text (a ``.txt``/``.raw`` file read as one document, or the rows of a text column joined
by newlines), tokenized once and cut into windows of ``data.max_length`` tokens whose starts are
``task_options.stride`` tokens apart (default: ``data.max_length``, no overlap). A row is one window; each window
scores the tokens no earlier window scored (the first token of the text has no context and is never scored), as
the transformers perplexity guide does. The graph runs each window as a prefill with an empty KV cache.

Predictions (:class:`TokenScores`) hold, per scored position, the negative log-likelihood of the true next token,
the argmax, and the log-probabilities of the FP32 model's ``task_options.kl_top_k`` most likely tokens (the FP32
run records which those are in ``data.meta``; every later run on the same data reads them). Metrics:

- ``perplexity``: exp of the mean NLL (lower is better);
- ``kl_divergence``: mean KL(FP32 || model) over the FP32 top-k tokens plus one bucket for all others: a lower
  bound of the exact KL (merging outcomes never increases KL), exact when k is the vocabulary;
- ``top1_agreement``: how often the model's most likely next token is FP32's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import TextDataset
from ..errors import DataError, EvaluationError
from .base import Columns, MetricInfo, RowProblem, ServeBatch, Task

logger = logging.getLogger(__name__)

__all__ = ["TextGeneration", "TokenScores", "windows", "log_softmax"]

#: data.meta key of the FP32 top-k token ids per window position (written by the first, FP32, run).
REFERENCE_KEY = "kl_reference_ids"
#: task_options.kl_top_k default.
DEFAULT_TOP_K = 64
#: evaluation.latency.new_tokens default: decode steps timed per round.
DEFAULT_NEW_TOKENS = 32


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis (float32 in, float32 out, computed stably)."""
    x = np.asarray(logits, dtype=np.float32)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)


def windows(ids: np.ndarray, length: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut token ids into windows: (input_ids [n, length], attention_mask [n, length], score_from [n]).

    Window ``w`` starts at ``w * stride``; it scores positions ``score_from[w]`` .. end (the tokens no earlier
    window scored; position 0 of the text is never scored). The last window is right-padded (mask 0). A window
    that would score nothing is not made.
    """
    n = len(ids)
    if stride < 1 or stride > length:
        raise DataError(f"task_options.stride: {stride} must be between 1 and data.max_length ({length})")
    rows, masks, starts = [], [], []
    scored_until = 1  # the next text position that needs a score
    begin = 0
    while scored_until < n:
        end = min(begin + length, n)
        piece = ids[begin:end]
        row = np.zeros(length, dtype=np.int64)
        row[: len(piece)] = piece
        mask = np.zeros(length, dtype=np.int64)
        mask[: len(piece)] = 1
        rows.append(row)
        masks.append(mask)
        starts.append(max(scored_until - begin, 1))
        scored_until = end
        if end == n:
            break
        begin += stride
    return np.stack(rows), np.stack(masks), np.asarray(starts, dtype=np.int64)


@dataclass
class TokenScores:
    """Per scored token position of a text: NLL of the true next token, argmax, and log-probs at FP32's top-k."""

    nll: np.ndarray  # [tokens] float64
    top1: np.ndarray  # [tokens] int64
    ref_ids: np.ndarray  # [tokens, k] int32: FP32's top-k token ids at each position
    ref_logp: np.ndarray  # [tokens, k] float32: this model's log-probs of those tokens

    def __len__(self) -> int:
        return len(self.nll)

    def __repr__(self) -> str:
        return f"TokenScores({len(self)} tokens, perplexity {self.perplexity:.4f})"

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.nll.mean())) if len(self.nll) else float("nan")

    @classmethod
    def concat(cls, parts: list["TokenScores"]) -> "TokenScores":
        if not parts:
            return cls(np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 1), np.int32), np.zeros((0, 1), np.float32))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("nll", "top1", "ref_ids", "ref_logp")))


def kl_top_k(reference: TokenScores, predictions: TokenScores) -> float:
    """Mean KL(reference || predictions) over the reference's top-k tokens plus one bucket for the rest."""
    if reference.ref_ids.shape != predictions.ref_ids.shape or not np.array_equal(reference.ref_ids,
                                                                                  predictions.ref_ids):
        raise EvaluationError("kl_divergence: the two runs scored different reference tokens; evaluate FP32 first "
                              "on the same data")
    p = np.exp(reference.ref_logp.astype(np.float64))
    q = np.exp(predictions.ref_logp.astype(np.float64))
    head = (p * (reference.ref_logp.astype(np.float64) - predictions.ref_logp.astype(np.float64))).sum(axis=1)
    p_tail = np.clip(1.0 - p.sum(axis=1), 0.0, 1.0)
    q_tail = np.clip(1.0 - q.sum(axis=1), 1e-12, 1.0)
    tail = np.where(p_tail > 1e-12, p_tail * (np.log(np.maximum(p_tail, 1e-300)) - np.log(q_tail)), 0.0)
    return float(np.maximum(head + tail, 0.0).mean()) if len(p) else 0.0


class TextGeneration(Task):
    """Decoder language models with a KV cache; see the module docstring."""

    name = "text-generation"
    aliases = ("causal-lm", "text-generation-with-past", "causal-language-modeling")
    architecture_suffixes = ("ForCausalLM", "LMHeadModel")
    auto_model = "AutoModelForCausalLM"
    auto_model_mapping = "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"
    ort_model = "ORTModelForCausalLM"
    pipeline_task = "text-generation"
    pipeline_tag = "text-generation"
    card_task_type = "text-generation"
    output_names = ("logits",)
    output_axes = {"logits": {0: "batch_size", 1: "sequence_length"}}
    metrics = {
        "perplexity": MetricInfo("exp of the mean negative log-likelihood of each next token of the text (lower is "
                                 "better)", needs_labels=False),
        "kl_divergence": MetricInfo("mean KL(FP32 || model) of the next-token distribution over FP32's top-k tokens "
                                    "and one bucket for the rest (lower is better)", needs_labels=False),
        "top1_agreement": MetricInfo("share of positions whose most likely next token is FP32's", needs_labels=False),
    }
    default_text_columns = ("text",)
    default_label_column = None
    one_document = True
    #: The graph takes and returns a KV cache (``past_key_values.N.key/value`` → ``present.N.key/value``).
    kv_cache = True

    @classmethod
    def default_metric(cls, labelled: bool = True) -> str:
        return "perplexity"

    @property
    def stride(self) -> int | None:
        return getattr(self.options, "stride", None)

    @property
    def top_k(self) -> int:
        return int(getattr(self.options, "kl_top_k", None) or DEFAULT_TOP_K)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kl_top_k": self.top_k}

    def check_metric(self, metric: str, average: str = "binary") -> str | None:
        if metric not in self.metrics:
            return (f"{metric!r} is not a {self.name} metric; expected one of {', '.join(self.metrics)} "
                    "(a causal LM is scored on a text, not on labels)")
        return None

    # ------------------------------------------------------------------ data
    def columns(self, ds: Any) -> Columns:
        text = tuple(ds.text_columns) if ds.text_columns else self.default_text_columns
        return Columns(text[:1], None)

    def check_rows(self, rows: dict[str, list[Any]], columns: Columns, key: str) -> list[RowProblem]:
        texts = [t for t in rows.get(columns.text[0], []) if t]
        if not texts:
            return [RowProblem(f"{key}.path", "the text is empty", "point it at a text file with some prose")]
        sample = "".join(str(t) for t in texts)[:20000]
        bad = sum(1 for c in sample if c == "\x00" or (ord(c) < 32 and c not in "\n\r\t\f")) + sample.count("\ufffd")
        if bad > max(10, len(sample) // 100):
            return [RowProblem(f"{key}.path", f"does not look like text: {bad} control or undecodable characters "
                               f"in its first {len(sample)}", "use a UTF-8 text file")]
        return []

    def text_of(self, rows: Any, columns: Columns) -> str:
        """The one text the rows hold (a document per row, joined by newlines)."""
        return "\n".join(self._texts(rows, columns.text[0]))

    def encode(self, rows: Any, tokenizer: Any, columns: Columns, *, key: str, max_length: int, padding: str,
               labelled: bool = True) -> TextDataset:
        text = self.text_of(rows, columns)
        if not text.strip():
            raise DataError(f"{key}.path: the text is empty; text-generation needs prose to score")
        problems = self.check_rows({columns.text[0]: [text[:20000]]}, columns, key)
        if problems:
            raise DataError(f"{problems[0].key_path}: {problems[0].message}")
        limit = self._positions()
        if limit is not None and max_length > limit:
            raise DataError(f"data.max_length: {max_length} is longer than the model's {limit} positions "
                            "(max_position_embeddings)")
        import transformers

        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # "sequence longer than model_max_length": windows follow
        try:
            ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
        finally:
            transformers.logging.set_verbosity(verbosity)
        if len(ids) < max_length:
            raise DataError(f"{key}.path: the text has {len(ids)} tokens, shorter than one window of data.max_length "
                            f"{max_length} tokens; use a longer text or a smaller data.max_length")
        stride = self.stride or max_length
        if stride > max_length:
            raise DataError(f"task_options.stride: {stride} is larger than data.max_length {max_length}")
        input_ids, mask, score_from = windows(ids, max_length, stride)
        positions = np.tile(np.arange(max_length, dtype=np.int64), (len(input_ids), 1))
        scored = int(sum(int(m.sum()) - s for m, s in zip(mask, score_from)))
        examples = {"count": len(input_ids), "tokens": int(len(ids)), "scored_tokens": scored, "stride": stride,
                    "window": max_length}
        logger.info("%s: %d tokens in %d windows of %d (stride %d), %d scored", key, len(ids), len(input_ids),
                    max_length, stride, scored)
        return TextDataset(name=key, inputs={"input_ids": input_ids, "attention_mask": mask,
                                             "position_ids": positions},
                           labels=None, padding="max_length", padding_side="right",
                           meta={"score_from": score_from}, examples=examples)

    def limit(self, data: TextDataset, limit: int) -> TextDataset:
        """The first ``limit`` windows (``data.evaluation.limit`` counts windows for this task)."""
        if len(data) <= limit:
            return data
        out = data.select(limit)
        scored = int(sum(int(m.sum()) - int(s) for m, s in zip(out.inputs["attention_mask"], out.meta["score_from"])))
        out.examples = {**(data.examples or {}), "count": limit, "scored_tokens": scored,
                        "tokens": int(min(data.examples["tokens"], (limit - 1) * data.examples["stride"]
                                          + data.max_length))}
        return out

    def _positions(self) -> int | None:
        value = getattr(self.model_config, "max_position_embeddings", None) or getattr(self.model_config,
                                                                                       "n_positions", None)
        return int(value) if value else None

    # ------------------------------------------------------------------ predictions
    def predict_batch(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray], data: TextDataset,
                      start: int) -> TokenScores:
        logits = outputs["logits"]
        ids, mask = feeds["input_ids"], feeds["attention_mask"]
        reference = data.meta.get(REFERENCE_KEY)
        parts = []
        for i in range(len(ids)):
            row = start + i
            n = int(mask[i].sum())
            first = int(data.meta["score_from"][row])
            positions = np.arange(first - 1, n - 1)  # position p predicts token p + 1
            logp = log_softmax(logits[i, positions])
            target = ids[i, positions + 1]
            nll = -logp[np.arange(len(positions)), target].astype(np.float64)
            top1 = logp.argmax(axis=1).astype(np.int64)
            if reference is None:
                k = min(self.top_k, logp.shape[1])
                ref_ids = np.argpartition(-logp, k - 1, axis=1)[:, :k].astype(np.int32)
            else:
                ref_ids = reference[row][positions]
            ref_logp = np.take_along_axis(logp, ref_ids.astype(np.int64), axis=1).astype(np.float32)
            parts.append(TokenScores(nll, top1, ref_ids, ref_logp))
        return TokenScores.concat(parts)

    def collect(self, parts: list[Any], data: TextDataset) -> TokenScores:
        scores = TokenScores.concat(parts)
        if REFERENCE_KEY not in data.meta:  # the first run on this data (FP32): later runs score its top-k
            table = np.zeros((len(data), data.max_length, scores.ref_ids.shape[1]), dtype=np.int32)
            offset = 0
            for row in range(len(data)):
                n = int(data.inputs["attention_mask"][row].sum())
                first = int(data.meta["score_from"][row])
                count = n - first
                table[row, first - 1: n - 1] = scores.ref_ids[offset: offset + count]
                offset += count
            data.meta[REFERENCE_KEY] = table
        return scores

    def raw_output(self, outputs: dict[str, np.ndarray], max_length: int) -> np.ndarray:
        return outputs["logits"][:, :, :0]  # no per-token diff of 49k-wide logits is kept

    # ------------------------------------------------------------------ metrics
    def compute(self, metric: str, predictions: Any, data: TextDataset, *, average: str = "binary",
                reference: Any = None) -> float:
        if metric not in self.metrics:
            raise EvaluationError(self.check_metric(metric) or metric)
        if metric == "perplexity":
            return predictions.perplexity
        reference = predictions if reference is None else reference
        if metric == "kl_divergence":
            return kl_top_k(reference, predictions)
        return self.agreement(reference, predictions)

    def agreement(self, reference: Any, predictions: Any) -> float:
        if len(reference.top1) != len(predictions.top1):
            raise EvaluationError("top1_agreement: the two runs scored different numbers of tokens")
        return float(np.mean(reference.top1 == predictions.top1)) if len(reference.top1) else 1.0

    def extra_scores(self, predictions: Any, reference: Any, data: TextDataset) -> dict[str, Any]:
        """Every metric of the task, and the token counts (the report shows them beside the headline metric)."""
        ex = data.examples or {}
        return {"perplexity": predictions.perplexity, "kl_divergence": kl_top_k(reference, predictions),
                "top1_agreement": self.agreement(reference, predictions), "scored_tokens": len(predictions),
                "tokens": ex.get("tokens"), "windows": len(data), "window": ex.get("window"),
                "stride": ex.get("stride")}

    def decode_steps(self, latency: Any) -> int:
        return int(latency.new_tokens or DEFAULT_NEW_TOKENS)

    # ------------------------------------------------------------------ serving
    def serve_encode(self, tokenizer: Any, examples: list[Any], *, max_length: int) -> ServeBatch:
        raise TypeError("text-generation artifacts generate: use quantkit.runtime.load(folder).generate(...) or "
                        "call the loaded pipeline with a prompt")

    def usage_example(self) -> Any:
        return "Quantized language models run fast on CPUs because"

    def usage(self, repo_id: str) -> list[str]:
        return [
            f"from optimum.onnxruntime import {self.ort_model}",
            "from transformers import AutoTokenizer",
            "",
            f'model = {self.ort_model}.from_pretrained("{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            f"inputs = tokenizer({self.usage_example()!r}, return_tensors=\"pt\")",
            "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0]))",
        ]

    def runtime_usage(self, repo_id: str) -> list[str]:
        return [
            "from quantkit.runtime import load",
            "",
            f'lm = load("{repo_id}")',
            f"print(lm.generate({self.usage_example()!r}, max_new_tokens=32))",
        ]

    def torch_outputs(self, out: Any) -> tuple[Any, ...]:
        return (out.logits,)
