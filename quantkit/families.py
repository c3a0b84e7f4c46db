"""Encoder families: what quantkit knows and has tested about each one, as data.

One :class:`Family` per transformers ``model_type`` quantkit's test suite covers. Its fields are facts
that change what quantkit does or says:

- ``token_type_ids``: whether the model takes segment ids. A tokenizer may emit them for a model that does
  not (a BERT tokenizer beside a DistilBERT): quantkit drops them (``quantkit.qat.input_names``);
- ``position_offset``: position ids start after the padding id (RoBERTa, XLM-R, MPNet), so
  ``max_position_embeddings`` 514 covers 512 tokens;
- ``fused_ops``: what ONNX Runtime's transformer optimizer fuses in the family's graph (``export.optimize:
  transformer``; ``auto`` runs it before dynamic int8, then takes SkipLayerNormalization apart again,
  see :mod:`quantkit.fusion`), measured on the tiny models of the test suite;
  ``Attention`` missing means attention stays unfused MatMuls (relative or rotary position terms);
- ``export_tasks``: the registry tasks optimum-onnx exports for the family;
- ``defaults``: quantization fields quantkit sets for the family when the spec leaves them unset, each
  with the measurement behind it (the spec, and the search's space, override them);
- ``refused``: (backend, approach, task) cells that cannot work, with the reason and what works instead;
  the pre-flight check ``model.family`` refuses them in seconds, before any export or calibration.

The support matrix the tests run (``tests/unit/test_families.py``) asserts every cell the support
table (rendered by :func:`support_table`, kept in sync by ``scripts/families_table.py``) claims.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "Family",
    "FamilyDefault",
    "Refusal",
    "FAMILIES",
    "CELLS",
    "QUANTIZE_CELLS",
    "MATRIX_TASKS",
    "family_of",
    "usable_positions",
    "refusal",
    "family_defaults",
    "resolve_family",
    "cell_status",
    "support_table",
]


@dataclass(frozen=True)
class FamilyDefault:
    """A quantization field's value for a family, when the spec leaves the field unset, and why."""

    value: Any
    why: str
    #: Only for these (backend, approach); None: every candidate that has the field.
    applies_to: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class Refusal:
    """A (backend, approach, task) cell that cannot work for a family: why, and what to use instead."""

    reason: str
    instead: str


@dataclass(frozen=True)
class Family:
    """What quantkit knows about one encoder family (one transformers ``model_type``)."""

    model_type: str
    name: str
    #: A public checkpoint of the family (named in docs/families.md).
    example: str
    tokenizer: str
    token_type_ids: bool
    positions: str
    position_offset: bool = False
    #: Ops ONNX Runtime's transformer optimizer fuses in the family's graph (measured on the tiny models).
    fused_ops: tuple[str, ...] = ()
    export_tasks: tuple[str, ...] = ("text-classification", "token-classification", "feature-extraction",
                                     "question-answering")
    defaults: Mapping[str, FamilyDefault] = field(default_factory=dict)
    #: (backend, approach, task) → Refusal; ``*`` matches any value.
    refused: Mapping[tuple[str, str, str], Refusal] = field(default_factory=dict)
    notes: str = ""

    @property
    def fuses_attention(self) -> bool:
        return "Attention" in self.fused_ops


_BERT_FUSED = ("Attention", "BiasGelu", "SkipLayerNormalization")
#: With absolute positions from 0 (no padding offset), embeddings + LayerNorm fuse too (unless Gather is quantized).
_EMBED = ("EmbedLayerNormalization",)

FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("bert", "BERT", "google-bert/bert-base-uncased", "WordPiece", True, "absolute",
           fused_ops=(*_BERT_FUSED, *_EMBED)),
    Family("distilbert", "DistilBERT", "distilbert/distilbert-base-uncased", "WordPiece", False, "absolute",
           fused_ops=(*_BERT_FUSED, *_EMBED),
           notes="no segment ids: a BERT tokenizer's token_type_ids are dropped before export"),
    Family("roberta", "RoBERTa", "FacebookAI/roberta-base", "byte-level BPE", False,
           "absolute, after the padding id", position_offset=True, fused_ops=_BERT_FUSED),
    Family("xlm-roberta", "XLM-RoBERTa", "FacebookAI/xlm-roberta-base", "Unigram (SentencePiece)", False,
           "absolute, after the padding id", position_offset=True, fused_ops=_BERT_FUSED,
           notes="250k-token embedding: int8 Gather (op_types: [MatMul, Gather]) saves most of the size"),
    Family("electra", "ELECTRA", "google/electra-base-discriminator", "WordPiece", True, "absolute",
           fused_ops=(*_BERT_FUSED, *_EMBED, "Gelu"),
           notes="onnxruntime#11286 reports 5-15% accuracy loss with dynamic int8 on fine-tuned ELECTRA (a tiny "
                 "random model cannot show it: check yours with a tolerance search)"),
    Family("deberta-v2", "DeBERTa-v2/v3", "microsoft/deberta-v3-base", "Unigram (SentencePiece)", False,
           "relative (disentangled c2p/p2c)", fused_ops=("BiasGelu", "Gelu", "SkipLayerNormalization"),
           notes="attention stays unfused (disentangled relative attention); token_type_ids are ignored "
                 "when type_vocab_size is 0 (v3)"),
    Family("mpnet", "MPNet", "sentence-transformers/all-mpnet-base-v2", "WordPiece", False,
           "absolute after the padding id, plus relative buckets", position_offset=True,
           fused_ops=("BiasGelu", "SkipLayerNormalization"),
           notes="attention stays unfused (relative position bias)"),
    Family("albert", "ALBERT", "albert/albert-base-v2", "Unigram (SentencePiece)", True, "absolute",
           fused_ops=("Attention", "FastGelu", "SkipLayerNormalization"),
           notes="one layer's weights shared by every layer: the optimizer fuses the first use only"),
    Family("modernbert", "ModernBERT", "answerdotai/ModernBERT-base", "byte-level BPE", False,
           "rotary, local/global attention", fused_ops=("Gelu", "SkipLayerNormalization"),
           notes="attention stays unfused (rotary); optimum-onnx 0.1.0 (export.exporter: optimum) has no "
           "question-answering export, quantkit's exporter has"),
)}

#: Columns of the support matrix: the export, the fusion ``auto`` runs, then one per quantization route.
CELLS = ("export", "fusion", "ort-dynamic", "ort-static", "inc-static", "inc-dynamic", "qat")
#: The quantization routes and the config each matrix cell quantizes with.
QUANTIZE_CELLS: dict[str, dict[str, Any]] = {
    "ort-dynamic": {"backend": "onnxruntime", "approach": "dynamic", "op_types": ["MatMul", "Gather"]},
    "ort-static": {"backend": "onnxruntime", "approach": "static", "format": "qdq", "op_types": ["MatMul"]},
    "inc-static": {"backend": "neural-compressor", "approach": "static", "op_types": ["MatMul", "Gather"]},
    "inc-dynamic": {"backend": "neural-compressor", "approach": "dynamic", "op_types": ["MatMul"]},
    "qat": {"backend": "neural-compressor", "approach": "qat", "op_types": ["MatMul"]},
}
#: The cells the test suite runs per task: every route for text classification (the task every route and
#: QAT support), export and ONNX Runtime dynamic (the default route) for the other tasks.
MATRIX_TASKS: dict[str, tuple[str, ...]] = {
    "text-classification": CELLS,
    "token-classification": ("export", "ort-dynamic"),
    "feature-extraction": ("export", "ort-dynamic"),
    "question-answering": ("export", "ort-dynamic"),
}
_HEADERS = {"export": "export", "fusion": "fusion (`transformer`; `auto` unfuses SkipLayerNorm)", "ort-dynamic": "ORT dynamic",
            "ort-static": "ORT static QDQ", "inc-static": "INC static", "inc-dynamic": "INC dynamic", "qat": "QAT"}


def family_of(model_type: str | None) -> Family | None:
    """The family of a transformers ``model_type`` (``xlm_roberta`` and ``xlm-roberta`` alike), or None."""
    if not model_type:
        return None
    return FAMILIES.get(model_type.replace("_", "-"))


def usable_positions(config: Any) -> int | None:
    """Longest sequence the model's position embeddings cover (514 → 512 for RoBERTa-like families)."""
    v = getattr(config, "max_position_embeddings", None)
    if not isinstance(v, int) or v <= 0:
        return None
    family = family_of(getattr(config, "model_type", None))
    if family is not None and family.position_offset:
        pad = getattr(config, "pad_token_id", 1)
        return v - (pad if isinstance(pad, int) else 1) - 1
    return v


def refusal(model_type: str | None, backend: str, approach: str, task: str) -> Refusal | None:
    """Why ``backend``/``approach`` cannot quantize a ``task`` model of this family (None: it can, or unknown)."""
    family = family_of(model_type)
    if family is None:
        return None
    for (b, a, t), why in family.refused.items():
        if b in ("*", backend) and a in ("*", approach) and t in ("*", task):
            return why
    return None


def family_defaults(model_type: str | None, backend: str, approach: str) -> dict[str, FamilyDefault]:
    """The family's quantization defaults that apply to this backend and approach."""
    family = family_of(model_type)
    if family is None:
        return {}
    return {k: d for k, d in family.defaults.items() if d.applies_to is None or (backend, approach) in d.applies_to}


def resolve_family(config: Any, model_type: str | None) -> tuple[Any, dict[str, Any]]:
    """Fill the fields of ``config`` (a QuantizationConfig) the spec left unset with the family's defaults.

    Returns the new config and ``{field: value}`` of what was chosen; fields the user set (or the search's
    space sets for a candidate) are kept.
    """
    chosen = {k: d.value for k, d in family_defaults(model_type, config.backend, config.approach).items()
              if k not in config.model_fields_set and getattr(config, k) != d.value}
    if not chosen:
        return config, {}
    data = config.model_dump(mode="json", exclude_unset=True)
    data.update(chosen)
    data.setdefault("backend", config.backend)
    data.setdefault("approach", config.approach)
    family = family_of(model_type)
    logger.info("%s defaults: %s", family.name if family else model_type,
                ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return type(config).model_validate(data), chosen


def cell_status(model_type: str, task: str, cell: str) -> str:
    """``yes`` (tested and works), ``no: <why>`` (refused, at pre-flight), or ``untested``."""
    family = FAMILIES[model_type]
    if cell not in MATRIX_TASKS.get(task, ()):
        return "untested"
    if task not in family.export_tasks:
        return f"no: optimum-onnx has no {task} export for {model_type}"
    if cell in QUANTIZE_CELLS:
        q = QUANTIZE_CELLS[cell]
        why = refusal(model_type, q["backend"], q["approach"], task)
        if why is not None:
            return f"no: {why.reason}"
    return "yes"


def _mark(status: str) -> str:
    return "✓" if status == "yes" else ("—" if status == "untested" else "✗")


def _fusion(family: Family) -> str:
    short = {"Attention": "Attention", "EmbedLayerNormalization": "EmbedLayerNorm", "SkipLayerNormalization": "SkipLayerNorm", "BiasGelu": "BiasGelu",
             "FastGelu": "FastGelu", "Gelu": "Gelu"}
    ops = ", ".join(short.get(o, o) for o in family.fused_ops)
    return ops if family.fuses_attention else f"{ops} (attention unfused)"


def support_table() -> str:
    """The support table of docs/families.md (Markdown), rendered from :data:`FAMILIES` and :data:`MATRIX_TASKS`."""
    other = [t for t in MATRIX_TASKS if t != "text-classification"]
    head = ["family (`model_type`)", "tokenizer", "positions", *(_HEADERS[c] for c in CELLS),
            *(f"{t}: export + ORT dynamic" for t in other)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mt, family in FAMILIES.items():
        row = [f"{family.name} (`{mt}`)", family.tokenizer, family.positions]
        for cell in CELLS:
            status = cell_status(mt, "text-classification", cell)
            row.append(_fusion(family) if cell == "fusion" and status == "yes" else _mark(status))
        for task in other:
            marks = {_mark(cell_status(mt, task, c)) for c in MATRIX_TASKS[task]}
            row.append("✓" if marks == {"✓"} else "✗ (no export)" if task not in family.export_tasks else "✗")
        lines.append("| " + " | ".join(row) + " |")
    notes = [f"- **{f.name}**: {f.notes}" for f in FAMILIES.values() if f.notes]
    defaults = [f"- **{f.name}** `{k}: {d.value}`: {d.why}" for f in FAMILIES.values() for k, d in f.defaults.items()]
    out = "\n".join(lines) + "\n"
    if defaults:
        out += "\nFamily defaults (applied when the spec leaves the field unset; the spec and `tuning.space` " \
               "override them):\n\n" + "\n".join(defaults) + "\n"
    if notes:
        out += "\nNotes:\n\n" + "\n".join(notes) + "\n"
    return out
