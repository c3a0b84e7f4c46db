"""``task_options``: the settings only some tasks read (pooling, entity matching, QA windows)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TaskOptionsSpec"]


class TaskOptionsSpec(BaseModel):
    """Task-specific settings (spec key ``task_options``); each field names the task that reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

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
