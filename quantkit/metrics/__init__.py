"""Metrics: the shipped ``evaluate`` scripts for classification (offline), and the metrics of the other
tasks in plain numpy: entity-level scores with seqeval's semantics, SQuAD exact match and F1 with the
official answer normalisation, and cosine similarity."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import Registry

__all__ = [
    "METRICS", "MetricDef", "compute_metric", "to_predictions", "entities", "entity_scores", "token_accuracy",
    "normalize_answer", "squad_exact", "squad_f1", "squad_scores", "cosine_rows", "correlation",
]

METRICS_DIR = Path(__file__).parent


@dataclass(frozen=True)
class MetricDef:
    """How to compute a spec metric with one of the shipped evaluate scripts."""

    script: str
    config_name: str | None = None
    higher_is_better: bool = True
    needs_labels: bool = True
    regression: bool = False
    averaged: bool = False


METRICS: Registry[MetricDef] = Registry("metric")
for _name, _def in {
    "accuracy": MetricDef("accuracy"),
    "agreement": MetricDef("accuracy", needs_labels=False),
    "f1": MetricDef("classification", "f1", averaged=True),
    "precision": MetricDef("classification", "precision", averaged=True),
    "recall": MetricDef("classification", "recall", averaged=True),
    "matthews_correlation": MetricDef("classification", "matthews_correlation"),
    "pearson": MetricDef("correlation", "pearson", regression=True),
    "spearman": MetricDef("correlation", "spearman", regression=True),
}.items():
    METRICS.register(_name)(_def)

_loaded_metrics: dict[tuple[str, str | None], Any] = {}


def _load_metric(defn: MetricDef) -> Any:
    import evaluate

    key = (defn.script, defn.config_name)
    if key not in _loaded_metrics:
        path = METRICS_DIR / defn.script
        kwargs = {"config_name": defn.config_name} if defn.config_name else {}
        _loaded_metrics[key] = evaluate.load(str(path), **kwargs)
    return _loaded_metrics[key]


def compute_metric(name: str, predictions: np.ndarray, references: np.ndarray, *, average: str = "binary") -> float:
    """Compute metric ``name`` with its shipped evaluate script."""
    defn = METRICS.get(name)
    metric = _load_metric(defn)
    kwargs: dict[str, Any] = {}
    if defn.averaged:
        kwargs["average"] = average
    out = metric.compute(predictions=predictions.tolist(), references=references.tolist(), **kwargs)
    key = defn.config_name or defn.script
    return float(out[key])


def to_predictions(logits: np.ndarray, regression: bool) -> np.ndarray:
    """Class ids (argmax) for classification, the squeezed score for regression."""
    if regression or logits.shape[-1] == 1:
        return logits.reshape(len(logits), -1)[:, 0].astype(np.float64)
    return logits.argmax(axis=-1).astype(np.int64)




# --------------------------------------------------------------------------- entities (token classification)
def _split(tag: str) -> tuple[str, str]:
    if tag in ("O", "", None):
        return "O", ""
    if len(tag) > 1 and tag[1] in "-_" and tag[0] in "BIES":
        return tag[0], tag[2:]
    return "I", tag  # a bare type counts as inside (seqeval does the same)


def entities(tags: Sequence[str], *, strict: bool = True) -> list[tuple[str, int, int]]:
    """Entities ``(type, start, end)`` (end inclusive) of one IOB2 tag sequence.

    ``strict=True`` follows seqeval's ``mode="strict", scheme=IOB2``: an entity is a ``B-X`` followed by
    ``I-X``s; an ``I`` that does not continue an entity of its type starts nothing. ``strict=False``
    follows seqeval's default (conlleval) rules: an ``I-X`` after ``O`` or after another type starts an entity.
    """
    found: list[tuple[str, int, int]] = []
    current: list[Any] | None = None  # [type, start, end]
    for i, tag in enumerate(tags):
        prefix, kind = _split(tag)
        if prefix == "O":
            if current is not None:
                found.append(tuple(current))  # type: ignore[arg-type]
            current = None
            continue
        continues = current is not None and current[0] == kind and prefix in ("I", "E")
        if continues:
            current[2] = i  # type: ignore[index]
            if prefix == "E":
                found.append(tuple(current))  # type: ignore[arg-type]
                current = None
            continue
        if current is not None:
            found.append(tuple(current))  # type: ignore[arg-type]
            current = None
        if prefix in ("B", "S") or not strict:
            current = [kind, i, i]
            if prefix in ("S", "E"):
                found.append(tuple(current))  # type: ignore[arg-type]
                current = None
    if current is not None:
        found.append(tuple(current))  # type: ignore[arg-type]
    return found


def entity_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]], *,
                  strict: bool = True) -> dict[str, float]:
    """Micro-averaged entity precision, recall and F1 over all sequences (an entity counts when its type
    and span match exactly), plus the per-type F1."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} reference sequences but {len(predictions)} predicted")
    true: set[tuple[int, str, int, int]] = set()
    pred: set[tuple[int, str, int, int]] = set()
    for n, (ref, hyp) in enumerate(zip(references, predictions)):
        if len(ref) != len(hyp):
            raise ValueError(f"sequence {n}: {len(ref)} reference tags but {len(hyp)} predicted")
        true |= {(n, *e) for e in entities(ref, strict=strict)}
        pred |= {(n, *e) for e in entities(hyp, strict=strict)}
    correct = len(true & pred)
    precision = correct / len(pred) if pred else 0.0
    recall = correct / len(true) if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_type: dict[str, float] = {}
    for kind in sorted({e[1] for e in true | pred}):
        t = {e for e in true if e[1] == kind}
        p = {e for e in pred if e[1] == kind}
        c = len(t & p)
        per_type[kind] = 2 * c / (len(t) + len(p)) if t or p else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "per_type_f1": per_type,  # type: ignore[dict-item]
            "true_entities": len(true), "predicted_entities": len(pred)}


def token_accuracy(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> float:
    """Fraction of words whose tag is right (seqeval's ``accuracy_score``: ``O`` words count too)."""
    total = sum(len(r) for r in references)
    hits = sum(a == b for r, p in zip(references, predictions) for a, b in zip(r, p))
    return hits / total if total else 0.0


# --------------------------------------------------------------------------- SQuAD (question answering)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:  # no-answer: right only when both are empty
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """SQuAD exact match and F1 (in [0, 1]; the official script reports x100), each the max over the gold
    answers of an example; an example without gold answers expects the empty (no) answer (SQuAD v2)."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} examples")
    em = f1 = 0.0
    for pred, answers in zip(predictions, golds):
        answers = [a for a in answers if normalize_answer(a)] or [""]
        em += max(squad_exact(pred, a) for a in answers)
        f1 += max(squad_f1(pred, a) for a in answers)
    n = max(len(predictions), 1)
    return {"exact_match": em / n, "f1": f1 / n}


# --------------------------------------------------------------------------- embeddings
def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = np.sum(a * b, axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


def correlation(kind: str, predictions: np.ndarray, references: np.ndarray) -> float:
    """Pearson or Spearman correlation (scipy)."""
    from scipy.stats import pearsonr, spearmanr

    fn = pearsonr if kind == "pearson" else spearmanr
    return float(fn(np.asarray(references, dtype=np.float64), np.asarray(predictions, dtype=np.float64))[0])
