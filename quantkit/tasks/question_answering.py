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
from .base import Columns, MetricInfo, RowProblem, Task

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
        stride = self._opt("doc_stride", None)
        stride = min(128, max(max_length // 4, 1)) if stride is None else int(stride)
        if stride * 2 > max_length:
            raise DataError(f"task_options.doc_stride: {stride} must be at most half of data.max_length {max_length}")
        questions = [q.lstrip() for q in self._texts(rows, columns.text[0])]
        contexts = self._texts(rows, columns.text[1])
        question_first = getattr(tokenizer, "padding_side", "right") == "right"
        first, second = (questions, contexts) if question_first else (contexts, questions)
        enc = tokenizer(first, second, truncation="only_second" if question_first else "only_first",
                        max_length=max_length, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, padding="max_length", return_tensors="np")
        context_id = 1 if question_first else 0
        example = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).copy()
        for i in range(len(example)):
            seq = enc.sequence_ids(i)
            outside = np.asarray([s != context_id for s in seq])
            offsets[i][outside] = -1
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

    def usage(self, repo_id: str) -> list[str]:
        lines = super().usage(repo_id)[:-1]
        return lines + ['print(pipe(question="What do quantized models do?", '
                        'context="Quantized models run fast on CPUs."))']
