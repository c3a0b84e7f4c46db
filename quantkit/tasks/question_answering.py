"""question-answering: extractive readers (SQuAD v1 / v2).

Rows hold ``question``, ``context`` and ``answers: {text: [...], answer_start: [...]}`` (SQuAD format; an
empty ``text`` list is an unanswerable SQuAD v2 question). Long contexts are split into overlapping
windows (``task_options.doc_stride`` tokens of overlap), each window a row of the ONNX batch; the graph
returns ``start_logits`` and ``end_logits [batch, sequence]``. An example's answer is the best-scoring span
(start + end logit) over its windows among the ``n_best`` starts and ends of each window, inside the
context, end ≥ start, at most ``max_answer_length`` tokens; with ``version_2_with_negative`` the answer
is empty when the no-answer score (CLS) beats it by more than ``null_score_diff_threshold``. Scored
with SQuAD exact match and F1 (official normalisation), as fractions in [0, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import TextDataset
from ..errors import DataError
from ..metrics import normalize_answer, squad_scores
from .base import Columns, MetricInfo, RowProblem, ServeBatch, Task, softmax

__all__ = ["QuestionAnswering", "best_spans"]


def best_spans(start: np.ndarray, end: np.ndarray, offsets: np.ndarray, *, n_best: int,
               max_answer_length: int) -> tuple[list[tuple[float, int, int]], float]:
    """Candidate answers of one window: ``[(score, char_start, char_end)]`` best first, and the no-answer
    score ``start[0] + end[0]``. ``offsets[i] = (-1, -1)`` marks tokens outside the context."""
    in_context = offsets[:, 0] >= 0
    k = min(n_best, len(start))
    starts = np.argsort(start)[::-1][:k]
    ends = np.argsort(end)[::-1][:k]
    found = []
    for s in starts:
        if not in_context[s]:
            continue
        for e in ends:
            if e < s or e - s + 1 > max_answer_length or not in_context[e]:
                continue
            found.append((float(start[s] + end[e]), int(offsets[s, 0]), int(offsets[e, 1])))
    found.sort(key=lambda c: -c[0])
    return found[:n_best], float(start[0] + end[0])


class QuestionAnswering(Task):
    name = "question-answering"
    aliases = ("extractive-qa", "qa")
    architecture_suffixes = ("ForQuestionAnswering",)
    auto_model = "AutoModelForQuestionAnswering"
    auto_model_mapping = "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"
    ort_model = "ORTModelForQuestionAnswering"
    pipeline_task = "question-answering"
    pipeline_tag = "question-answering"
    card_task_type = "question-answering"
    output_names = ("start_logits", "end_logits")
    output_axes = {"start_logits": {0: "batch_size", 1: "sequence_length"},
                   "end_logits": {0: "batch_size", 1: "sequence_length"}}
    metrics = {
        "f1": MetricInfo("SQuAD token F1 of the answer span (max over gold answers)"),
        "exact_match": MetricInfo("SQuAD exact match of the normalised answer (max over gold answers)"),
        "agreement": MetricInfo("fraction of questions answered with the same (normalised) text as FP32",
                                needs_labels=False),
    }
    default_text_columns = ("question", "context")
    default_label_column = "answers"
    text_column_count = (2, 2)

    def _opt(self, name: str, default: Any) -> Any:
        return getattr(self.options, name, default) if self.options is not None else default

    def check_rows(self, rows: dict[str, list[Any]], columns: Columns, key: str) -> list[RowProblem]:
        if columns.label is None or columns.label not in rows:
            return []
        for i, a in enumerate(rows[columns.label]):
            if not isinstance(a, dict) or not isinstance(a.get("text"), (list, tuple)):
                return [RowProblem(f"{key}.label_column", f"row {i}: {a!r:.80} is not a SQuAD answers record",
                                   "expected {text: [str, ...], answer_start: [int, ...]}")]
        return []

    def encode(self, rows: Any, tokenizer: Any, columns: Columns, *, key: str, max_length: int, padding: str,
               labelled: bool = True) -> TextDataset:
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(f"{key}: question-answering needs a fast tokenizer (offset mapping)")
        questions = [q.lstrip() for q in self._texts(rows, columns.text[0])]
        contexts = self._texts(rows, columns.text[1])
        enc, example, offsets = self._windows(tokenizer, questions, contexts, max_length, "max_length")
        answers = None
        if labelled and columns.label is not None:
            answers = []
            for i, a in enumerate(rows[columns.label]):
                if not isinstance(a, dict) or not isinstance(a.get("text"), (list, tuple)):
                    raise DataError(f"{key}.label_column: row {i} is not a SQuAD answers record "
                                    "{text: [...], answer_start: [...]}")
                answers.append([str(t) for t in a["text"]])
        return self._dataset(key, dict(enc), self.model_inputs(tokenizer), None, tokenizer, padding,
                             meta={"example": example, "offsets": offsets},
                             examples={"contexts": contexts, "answers": answers, "count": len(contexts)})

    def _windows(self, tokenizer: Any, questions: list[str], contexts: list[str], max_length: int,
                 padding: Any) -> tuple[Any, np.ndarray, np.ndarray]:
        """Question + context windows (``doc_stride`` overlap): the encoding, each window's example, and its
        token offsets with ``(-1, -1)`` outside the context."""
        stride = self._opt("doc_stride", None)
        stride = min(128, max(max_length // 4, 1)) if stride is None else int(stride)
        if stride * 2 > max_length:
            raise DataError(f"task_options.doc_stride: {stride} must be at most half of data.max_length {max_length}")
        question_first = getattr(tokenizer, "padding_side", "right") == "right"
        first, second = (questions, contexts) if question_first else (contexts, questions)
        enc = tokenizer(first, second, truncation="only_second" if question_first else "only_first",
                        max_length=max_length, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, padding=padding, return_tensors="np")
        context_id = 1 if question_first else 0
        example = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).copy()
        for i in range(len(example)):
            outside = np.asarray([s != context_id for s in enc.sequence_ids(i)])
            offsets[i][outside] = -1
        return enc, example, offsets

    def predict_batch(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray], data: TextDataset,
                      start: int) -> list[tuple[int, list[tuple[float, int, int]], float]]:
        s_all, e_all = outputs["start_logits"], outputs["end_logits"]
        n_best, max_len = int(self._opt("n_best", 20)), int(self._opt("max_answer_length", 30))
        out = []
        for r in range(s_all.shape[0]):
            row = start + r
            width = s_all.shape[1]
            offsets = data.meta["offsets"][row][:width]
            spans, null = best_spans(s_all[r], e_all[r], offsets, n_best=n_best, max_answer_length=max_len)
            out.append((int(data.meta["example"][row]), spans, null))
        return out

    def collect(self, parts: list[Any], data: TextDataset) -> list[str]:
        examples = data.examples or {}
        contexts = examples.get("contexts") or []
        best: dict[int, tuple[float, int, int]] = {}
        null: dict[int, float] = {}
        for part in parts:
            for ex, spans, null_score in part:
                null[ex] = min(null.get(ex, np.inf), null_score)
                if spans and (ex not in best or spans[0][0] > best[ex][0]):
                    best[ex] = spans[0]
        v2 = bool(self._opt("version_2_with_negative", False))
        threshold = float(self._opt("null_score_diff_threshold", 0.0))
        answers = []
        for ex in range(len(contexts)):
            if ex not in best or (v2 and null.get(ex, -np.inf) - best[ex][0] > threshold):
                answers.append("")
            else:
                _, a, b = best[ex]
                answers.append(contexts[ex][a:b])
        return answers

    def raw_output(self, outputs: dict[str, np.ndarray], max_length: int) -> np.ndarray:
        def pad(a: np.ndarray) -> np.ndarray:
            return np.pad(a, [(0, 0), (0, max_length - a.shape[1])]) if a.shape[1] < max_length else a

        return np.concatenate([pad(outputs["start_logits"]), pad(outputs["end_logits"])], axis=-1)

    def _compute(self, metric: str, predictions: Any, data: TextDataset, average: str) -> float:
        golds = self._references(data, metric, (data.examples or {}).get("answers"))
        return squad_scores(predictions, golds)[metric]

    def agreement(self, reference: Any, predictions: Any) -> float:
        if not len(reference):
            return 1.0
        return float(np.mean([normalize_answer(a) == normalize_answer(b) for a, b in zip(reference, predictions)]))

    # ------------------------------------------------------------------ serving
    def serve_examples(self, inputs: Any, kwargs: dict[str, Any]) -> tuple[list[Any], bool]:
        """``question=`` and ``context=`` (texts, or lists of the same length), or ``{"question", "context"}``
        dicts (one, or a list)."""
        question, context = kwargs.pop("question", None), kwargs.pop("context", None)
        if kwargs:
            raise TypeError(f"question-answering: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
        if question is not None or context is not None:
            if inputs is not None or question is None or context is None:
                raise TypeError("question-answering: pass question= and context= together (or dicts, not both)")
            if isinstance(question, str) and isinstance(context, str):
                return [{"question": question, "context": context}], True
            if isinstance(question, str) or isinstance(context, str) or len(question) != len(context):
                raise TypeError("question-answering: question= and context= must both be texts or lists of the "
                                "same length")
            return [{"question": q, "context": c} for q, c in zip(question, context)], False
        examples, single = super().serve_examples(inputs, {})
        for e in examples:
            if not isinstance(e, dict) or "question" not in e or "context" not in e:
                raise TypeError("question-answering: expected question= and context=, or dicts with question and "
                                "context")
        return examples, single

    def serve_encode(self, tokenizer: Any, examples: list[Any], *, max_length: int) -> ServeBatch:
        if not getattr(tokenizer, "is_fast", False):
            raise DataError("question-answering needs a fast tokenizer (offset mapping)")
        questions = [str(e["question"]).lstrip() for e in examples]
        contexts = [str(e["context"]) for e in examples]
        enc, example, offsets = self._windows(tokenizer, questions, contexts, max_length, True)
        context_id = 1 if getattr(tokenizer, "padding_side", "right") == "right" else 0
        words = offsets.copy()  # each context token's whole word, in characters (answers align to words)
        for i in range(len(example)):
            for j, w in enumerate(enc.word_ids(i)):
                if w is not None and offsets[i, j, 0] >= 0:
                    span = enc.word_to_chars(i, w, sequence_index=context_id)
                    if span is not None:
                        words[i, j] = (span[0], span[1])
        return ServeBatch(self._feeds(enc, tokenizer), examples,
                          {"example": example, "offsets": offsets, "words": words})

    def serve_outputs(self, outputs: dict[str, np.ndarray], batch: ServeBatch, tokenizer: Any,
                      align_to_words: bool = True, **options: Any) -> list[Any]:
        """``{"answer", "score", "start", "end"}`` per question, as transformers' QA pipeline computes it: in each
        window, softmax of start and end over the context and CLS, span score = p(start) × p(end) (end ≥ start,
        at most ``max_answer_length`` tokens); the 12 best spans of each window (1 with ``align_to_words=False``)
        widened to whole words; the scores of one answer text found in several spans or windows add up; the best
        text wins. With ``version_2_with_negative`` the answer is empty when the no-answer score (CLS) beats it."""
        if options:
            raise TypeError(f"question-answering: unexpected option(s) {', '.join(sorted(options))}")
        chars = batch.meta["words"] if align_to_words else batch.meta["offsets"]
        per_window = 12 if align_to_words else 1
        max_len = int(self._opt("max_answer_length", 30))
        v2 = bool(self._opt("version_2_with_negative", False))
        cls_id = getattr(tokenizer, "cls_token_id", None)
        found: dict[int, dict[str, list[Any]]] = {}  # example → answer text → [score, start, end]
        null: dict[int, float] = {}
        for w, ex in enumerate(int(x) for x in batch.meta["example"]):
            offsets, ids = batch.meta["offsets"][w], batch.feeds["input_ids"][w]
            cls = int(np.argmax(ids == cls_id)) if cls_id is not None and (ids == cls_id).any() else 0
            in_context = offsets[:, 0] >= 0
            allowed = in_context.copy()
            allowed[cls] = True
            start = softmax(np.where(allowed, outputs["start_logits"][w], -1e4))
            end = softmax(np.where(allowed, outputs["end_logits"][w], -1e4))
            null[ex] = min(null.get(ex, np.inf), float(start[cls] * end[cls]))
            start, end = np.where(in_context, start, 0.0), np.where(in_context, end, 0.0)
            spans = np.tril(np.triu(np.outer(start, end)), max_len - 1)
            context = str(batch.examples[ex]["context"])
            answers = found.setdefault(ex, {})
            for flat in np.argsort(-spans, axis=None, kind="stable")[:per_window]:
                i, j = np.unravel_index(int(flat), spans.shape)
                if spans[i, j] <= 0:
                    break
                a, b = int(chars[w][i, 0]), int(chars[w][j, 1])
                entry = answers.setdefault(context[a:b], [0.0, a, b])
                entry[0] += float(spans[i, j])
        results = []
        for k in range(len(batch.examples)):
            text, (score, a, b) = max(found.get(k, {}).items(), key=lambda kv: kv[1][0], default=("", (0.0, 0, 0)))
            if not found.get(k) or (v2 and null.get(k, 0.0) > score):
                results.append({"answer": "", "score": float(null.get(k, 0.0)), "start": 0, "end": 0})
            else:
                results.append({"answer": text, "score": score, "start": a, "end": b})
        return results

    def usage(self, repo_id: str) -> list[str]:
        lines = super().usage(repo_id)[:-1]
        return lines + ['print(pipe(question="What do quantized models do?", '
                        'context="Quantized models run fast on CPUs."))']
