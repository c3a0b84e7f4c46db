"""token-classification: taggers (NER, POS). Rows are words with word-level tags (IOB2 names or ids);
sub-tokens are aligned so the first sub-token of each word carries its tag, and a word's predicted tag
is the argmax at its first sub-token. Outputs ``logits [batch, sequence, num_labels]``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import TextDataset
from ..errors import DataError
from ..metrics import entity_scores, token_accuracy
from .base import Columns, MetricInfo, RowProblem, ServeBatch, Task, softmax

__all__ = ["TokenClassification", "WordList", "group_entities", "word_tokenizer"]

_IGNORE = -100


def word_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer that can take pre-split words: byte-level BPE tokenizers (RoBERTa, GPT-2 style) refuse
    ``is_split_into_words`` unless ``add_prefix_space`` is on, and taggers of those families are trained with it
    on (transformers' run_ner.py), so each word is encoded as it is mid-sentence. Others are returned as they are;
    the original is never changed (a copy is made)."""
    if getattr(tokenizer, "add_prefix_space", None) is not False or not getattr(tokenizer, "is_fast", False):
        return tokenizer
    import copy
    import json

    from tokenizers import pre_tokenizers

    tok = copy.deepcopy(tokenizer)
    state = json.loads(tok.backend_tokenizer.pre_tokenizer.__getstate__())
    if state.get("add_prefix_space") is False:
        state["add_prefix_space"] = True
        kind = state.pop("type")
        tok.backend_tokenizer.pre_tokenizer = getattr(pre_tokenizers, kind)(**state)
    tok.add_prefix_space = True
    return tok


class WordList(tuple):
    """One pre-split example (``runtime(words=[...])``): tagged word by word, not grouped into spans."""


def _bio(tag: str) -> tuple[str, str]:
    if tag.startswith("B-"):
        return "B", tag[2:]
    if tag.startswith("I-"):
        return "I", tag[2:]
    return "I", tag  # not IOB: a continuation, as transformers reads it


def group_entities(tokens: list[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """``aggregation_strategy="simple"`` of ``pipeline("token-classification")``: adjacent tokens of the same
    type join unless the next one is a ``B-``; the group's score is the mean; ``O`` groups are dropped."""
    groups, current = [], []

    def close() -> None:
        if current:
            tag = current[0]["entity"].split("-", 1)[-1]
            groups.append({"entity_group": tag, "score": float(np.mean([t["score"] for t in current])),
                           "word": tokenizer.convert_tokens_to_string([t["word"] for t in current]),
                           "start": current[0]["start"], "end": current[-1]["end"]})

    for tok in tokens:
        if current:
            bi, tag = _bio(tok["entity"])
            if not (tag == _bio(current[-1]["entity"])[1] and bi != "B"):
                close()
                current = []
        current.append(tok)
    close()
    return [g for g in groups if g["entity_group"] != "O"]


class TokenClassification(Task):
    name = "token-classification"
    aliases = ("ner", "named-entity-recognition", "pos")
    architecture_suffixes = ("ForTokenClassification",)
    auto_model = "AutoModelForTokenClassification"
    auto_model_mapping = "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"
    ort_model = "ORTModelForTokenClassification"
    pipeline_task = "token-classification"
    pipeline_tag = "token-classification"
    card_task_type = "token-classification"
    output_names = ("logits",)
    output_axes = {"logits": {0: "batch_size", 1: "sequence_length"}}
    metrics = {
        "f1": MetricInfo("entity-level F1 (IOB2; exact type and span; task_options.entity_mode)"),
        "precision": MetricInfo("entity-level precision"),
        "recall": MetricInfo("entity-level recall"),
        "accuracy": MetricInfo("word-level tag accuracy (O words included, as seqeval)"),
        "agreement": MetricInfo("fraction of words tagged as FP32 tags them", needs_labels=False),
    }
    default_text_columns = ("tokens",)
    default_label_column = "ner_tags"
    supports_qat = True
    text_column_kind = "words"

    @property
    def id2label(self) -> dict[int, str]:
        raw = getattr(self.model_config, "id2label", None) or {}
        return {int(k): str(v) for k, v in raw.items()}

    @property
    def strict(self) -> bool:
        return getattr(self.options, "entity_mode", "strict") == "strict"

    def _tag_names(self, tags: list[Any], key: str, row: int) -> list[str]:
        id2label = self.id2label
        label2id = {v.lower(): k for k, v in id2label.items()}
        out = []
        for t in tags:
            if isinstance(t, str):
                if t.lower() not in label2id:
                    raise DataError(f"{key}.label_column: row {row}: tag {t!r} is not in the model's id2label "
                                    f"({', '.join(id2label.values())})")
                out.append(id2label[label2id[t.lower()]])
            elif isinstance(t, (int, np.integer)) and not isinstance(t, bool) and int(t) in id2label:
                out.append(id2label[int(t)])
            else:
                raise DataError(f"{key}.label_column: row {row}: tag {t!r} is neither a tag name nor an id in "
                                f"0..{len(id2label) - 1}")
        return out

    def check_rows(self, rows: dict[str, list[Any]], columns: Columns, key: str) -> list[RowProblem]:
        problems: list[RowProblem] = []
        words = rows.get(columns.text[0], [])
        for i, w in enumerate(words):
            if not isinstance(w, (list, tuple)) or not all(isinstance(x, str) for x in w):
                problems.append(RowProblem(f"{key}.text_columns.0", f"row {i} of column {columns.text[0]!r} is "
                                           f"{type(w).__name__}, expected a list of words (strings)",
                                           "token-classification data has one list of words per row"))
                return problems
        if columns.label is not None and columns.label in rows:
            for i, (w, t) in enumerate(zip(words, rows[columns.label])):
                if not isinstance(t, (list, tuple)) or len(t) != len(w):
                    problems.append(RowProblem(f"{key}.label_column", f"row {i}: {len(w)} words but "
                                               f"{len(t) if isinstance(t, (list, tuple)) else type(t).__name__} tags",
                                               "one tag per word"))
                    return problems
                try:
                    self._tag_names(list(t), key, i)
                except DataError as exc:
                    problems.append(RowProblem(f"{key}.label_column", str(exc).split(": ", 1)[-1]))
                    return problems
        return problems

    def encode(self, rows: Any, tokenizer: Any, columns: Columns, *, key: str, max_length: int, padding: str,
               labelled: bool = True) -> TextDataset:
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(f"{key}: token-classification needs a fast tokenizer (word ids for alignment)")
        words = [[str(w) for w in (ws or [])] for ws in rows[columns.text[0]]]
        tokenizer = word_tokenizer(tokenizer)
        enc = self._tokenize(tokenizer, words, max_length=max_length, is_split_into_words=True)
        first = np.full(enc["input_ids"].shape, -1, dtype=np.int64)  # word index at its first sub-token
        for i in range(len(words)):
            previous = None
            for j, w in enumerate(enc.word_ids(i) if hasattr(enc, "word_ids") else []):
                if w is not None and w != previous:
                    first[i, j] = w
                previous = w
        labels = None
        if labelled and columns.label is not None:
            labels = [self._tag_names(list(t or []), key, i) for i, t in enumerate(rows[columns.label])]
            for i, (w, t) in enumerate(zip(words, labels)):
                if len(w) != len(t):
                    raise DataError(f"{key}.label_column: row {i}: {len(w)} words but {len(t)} tags")
        word_counts = np.asarray([len(w) for w in words], dtype=np.int64)
        return self._dataset(key, enc, self.model_inputs(tokenizer), labels, tokenizer, padding,
                             meta={"first_subtoken_word": first, "words": word_counts})

    @staticmethod
    def _tokenize(tokenizer: Any, *texts: Any, max_length: int, **kwargs: Any) -> Any:
        limit = getattr(tokenizer, "model_max_length", None)
        if limit is not None and limit < 10**6 and max_length > limit:
            raise DataError(f"data.max_length: {max_length} exceeds the tokenizer's model_max_length {limit}")
        return tokenizer(*texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="np",
                         **kwargs)

    def predict_batch(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray], data: TextDataset,
                      start: int) -> list[list[str]]:
        ids = outputs["logits"].argmax(-1)
        id2label = self.id2label
        first = data.meta["first_subtoken_word"]
        counts = data.meta["words"]
        out = []
        for r in range(ids.shape[0]):
            row = start + r
            tags = ["O"] * int(counts[row])  # words cut off by truncation are predicted O
            cols = np.nonzero(first[row, : ids.shape[1]] >= 0)[0]
            for c in cols:
                tags[int(first[row, c])] = id2label.get(int(ids[r, c]), "O")
            out.append(tags)
        return out

    def collect(self, parts: list[Any], data: TextDataset) -> list[list[str]]:
        return [tags for part in parts for tags in part]

    def _compute(self, metric: str, predictions: Any, data: TextDataset, average: str) -> float:
        labels = self._references(data, metric, data.labels)
        if metric == "accuracy":
            return token_accuracy(labels, predictions)
        return float(entity_scores(labels, predictions, strict=self.strict)[metric])

    def agreement(self, reference: Any, predictions: Any) -> float:
        return token_accuracy(reference, predictions)

    def training_targets(self, data: TextDataset) -> np.ndarray:
        if data.labels is None:
            raise DataError(f"{data.name}: quantization-aware training needs tags (label_column)")
        label2id = {v: k for k, v in self.id2label.items()}
        first = data.meta["first_subtoken_word"]
        targets = np.full(first.shape, _IGNORE, dtype=np.int64)
        for i, tags in enumerate(data.labels):
            cols = np.nonzero(first[i] >= 0)[0]
            targets[i, cols] = [label2id[tags[int(first[i, c])]] for c in cols]
        return targets

    def training_loss(self, outputs: Any, targets: Any) -> Any:
        import torch

        logits = outputs[0].float()
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=_IGNORE)

    def runtime_usage(self, repo_id: str) -> list[str]:
        return super().runtime_usage(repo_id) + ["# entity spans (simple aggregation); pipe(words=[...]) tags words"]

    def usage(self, repo_id: str) -> list[str]:
        lines = super().usage(repo_id)
        return [line.replace(f'pipeline("{self.pipeline_task}", ', f'pipeline("{self.pipeline_task}", '
                             'aggregation_strategy="simple", ') for line in lines]

    def usage_example(self) -> Any:
        return "Ada Lovelace visited London with Charles Babbage."

    # ------------------------------------------------------------------ serving
    def serve_examples(self, inputs: Any, kwargs: dict[str, Any]) -> tuple[list[Any], bool]:
        """Texts (entity spans back), or ``words=`` one list of words / a list of them (a tag per word back)."""
        words = kwargs.pop("words", None)
        if words is None:
            return super().serve_examples(inputs, kwargs)
        if inputs is not None or kwargs:
            raise TypeError("token-classification: pass texts or words=, not both")
        if words and all(isinstance(w, str) for w in words):
            return [WordList(words)], True
        return [WordList(str(x) for x in w) for w in words], False

    def serve_encode(self, tokenizer: Any, examples: list[Any], *, max_length: int) -> ServeBatch:
        if not getattr(tokenizer, "is_fast", False):
            raise DataError("token-classification needs a fast tokenizer (offsets and word ids)")
        split = [isinstance(e, WordList) for e in examples]
        if any(split) and not all(split):
            raise TypeError("token-classification: a batch mixes texts and word lists")
        common = dict(truncation=True, max_length=max_length, padding=True, return_tensors="np")
        if examples and all(split):
            enc = tokenizer([list(e) for e in examples], is_split_into_words=True, **common)
            first = np.full(enc["input_ids"].shape, -1, dtype=np.int64)
            for i in range(len(examples)):
                previous = None
                for j, w in enumerate(enc.word_ids(i)):
                    if w is not None and w != previous:
                        first[i, j] = w
                    previous = w
            return ServeBatch(self._feeds(enc, tokenizer), examples, {"first_subtoken_word": first})
        texts = [self._serve_text(e) for e in examples]
        enc = tokenizer(texts, return_offsets_mapping=True, return_special_tokens_mask=True, **common)
        meta = {"offsets": np.asarray(enc["offset_mapping"]), "special": np.asarray(enc["special_tokens_mask"])}
        return ServeBatch(self._feeds(enc, tokenizer), examples, meta)

    def serve_outputs(self, outputs: dict[str, np.ndarray], batch: ServeBatch, tokenizer: Any,
                      **options: Any) -> list[Any]:
        """Texts: entity spans ``{"entity_group", "score", "word", "start", "end"}`` (simple aggregation);
        word lists: ``{"word", "entity", "score"}`` per word (its first sub-token's tag; truncated words: O, 0)."""
        if options:
            raise TypeError(f"token-classification: unexpected option(s) {', '.join(sorted(options))}")
        probs = softmax(outputs["logits"])
        id2label = self.id2label
        mask = batch.feeds.get("attention_mask", np.ones(probs.shape[:2], dtype=np.int64))
        results: list[Any] = []
        for r, example in enumerate(batch.examples):
            best, score = probs[r].argmax(-1), probs[r].max(-1)
            if isinstance(example, WordList):
                tags = [{"word": w, "entity": "O", "score": 0.0} for w in example]
                for c in np.nonzero(batch.meta["first_subtoken_word"][r] >= 0)[0]:
                    w = int(batch.meta["first_subtoken_word"][r, c])
                    tags[w].update(entity=id2label.get(int(best[c]), "O"), score=float(score[c]))
                results.append(tags)
                continue
            ids = batch.feeds["input_ids"][r]
            tokens = []
            for j in range(len(ids)):
                if not mask[r, j] or batch.meta["special"][r, j]:
                    continue
                start, end = (int(x) for x in batch.meta["offsets"][r, j])
                word = tokenizer.convert_ids_to_tokens(int(ids[j]))
                if int(ids[j]) == getattr(tokenizer, "unk_token_id", None):
                    word = example[start:end]
                tokens.append({"entity": id2label.get(int(best[j]), "O"), "score": float(score[j]), "index": j,
                               "word": word, "start": start, "end": end})
            results.append(group_entities(tokens, tokenizer))
        return results
