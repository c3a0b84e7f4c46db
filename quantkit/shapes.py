"""Dynamic shapes, first class: the quantized model across a batch × sequence grid.

For every (batch, sequence) of ``evaluation.shapes`` the same evaluation texts are
tokenized at that sequence length and run through FP32 and int8 at that batch size:
int8 predictions must agree with FP32 (agreement, max logit difference), and each model's
predictions must not depend on the batch it is run in (*batch invariance*: every example
scored alone vs. inside a batch). FP32 and int8 are then timed side by side at each shape: interleaved
rounds and per-round ratios as everywhere, at least :data:`~quantkit.latency.MIN_DECISION_ROUNDS` of them, but
in sessions kept in this process (:class:`~quantkit.latency.SessionTimer`, at most :data:`GRID_REPEATS` runs a
round) rather than a fresh process per round: a grid of six shapes in seconds, not minutes. The headline
ratio (``evaluation.latency``) keeps its fresh processes.
The graph inputs' symbolic axes are recorded, so a model whose axes were pinned shows up.

A note on batch invariance: ONNX Runtime's dynamic quantization computes one activation
scale per tensor, i.e. over the whole batch, so a borderline example can change its
prediction with its batch mates (onnxruntime#10111). Static quantization uses fixed scales
and is batch invariant. The report says which one a model is, measured.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .data import encode, load_rows
from .errors import EvaluationError
from .evaluation import OnnxRunner
from .tasks.base import Predictions
from .export import symbolic_axes
from .latency import MIN_DECISION_ROUNDS, SessionTimer, Timer, side_by_side
from .spec import DatasetSpec, LatencySpec, ShapeGridSpec

logger = logging.getLogger(__name__)

__all__ = ["check_shapes", "batch_invariance", "dynamic_axes_report", "GRID_REPEATS"]

#: Timed runs per round and model at each grid shape (``evaluation.latency.repeats`` when smaller).
GRID_REPEATS = 10


def dynamic_axes_report(path: str | Path) -> dict[str, Any]:
    """Each input's dims (str: symbolic, int: fixed) and whether batch and sequence are symbolic."""
    axes = symbolic_axes(path)
    ok = all(len(d) >= 2 and isinstance(d[0], str) and isinstance(d[1], str) for d in axes.values())
    return {"inputs": axes, "batch_and_sequence_symbolic": ok}


def _compare(task: Any, alone: Predictions, batched: Predictions) -> dict[str, float]:
    """``identical_predictions`` is the task's agreement (class/tag/answer match; embeddings: mean cosine)."""
    return {
        "identical_predictions": float(task.agreement(alone.values, batched.values)),
        "max_abs_diff": float(np.max(np.abs(alone.raw - batched.raw))) if alone.raw is not None else 0.0,
    }


def batch_invariance(runner: OnnxRunner, data: Any, batch_size: int, task: Any) -> dict[str, float]:
    """Predictions and primary outputs of every example run alone vs inside batches of ``batch_size``."""
    alone = runner.run(data, 1, task, raw=True)
    return {"batch_size": batch_size, **_compare(task, alone, runner.run(data, batch_size, task, raw=True))}


def check_shapes(
    fp32_path: Path,
    int8_path: Path,
    *,
    dataset: DatasetSpec,
    tokenizer: Any,
    model_config: Any,
    grid: ShapeGridSpec,
    latency: LatencySpec,
    task: Any,
    key: str = "data.evaluation",
    timer: Timer | None = None,
) -> dict[str, Any]:
    """Agreement, batch invariance and latency of int8 vs FP32 over ``grid``; a report section.

    Raises :class:`EvaluationError` when a sequence length exceeds the model's positions, or
    when agreement falls below ``grid.min_agreement`` at some shape.
    """
    max_pos = int(getattr(model_config, "max_position_embeddings", 0) or 0)
    too_long = [s for s in grid.sequence_lengths if max_pos and s > max_pos]
    if too_long:
        raise EvaluationError(
            f"evaluation.shapes.sequence_lengths: {too_long} exceed the model's max_position_embeddings {max_pos}"
        )
    rows = load_rows(dataset, key, task.columns(dataset))
    rows = rows.select(range(min(grid.examples, len(rows))))
    threads = latency.threads
    fp32, int8 = OnnxRunner(fp32_path, threads), OnnxRunner(int8_path, threads)
    vocab = int(getattr(model_config, "vocab_size", 30522))
    sessions = {str(fp32_path): fp32.session, str(int8_path): int8.session}  # timed in the sessions already open
    cells: list[dict[str, Any]] = []
    invariance: dict[str, dict[str, Any]] = {"fp32": {}, "int8": {}}
    for seq in grid.sequence_lengths:
        data = encode(rows, tokenizer, dataset, task, key=key, max_length=seq, padding="max_length", labelled=False)
        ref_alone = fp32.run(data, 1, task, raw=True)
        q_alone = int8.run(data, 1, task, raw=True)
        for batch in grid.batch_sizes:
            ref = ref_alone if batch == 1 else fp32.run(data, batch, task, raw=True)
            q = q_alone if batch == 1 else int8.run(data, batch, task, raw=True)
            cell: dict[str, Any] = {
                "batch_size": batch,
                "sequence_length": seq,
                "examples": len(rows),
                "agreement": float(task.agreement(ref.values, q.values)),
                "max_abs_diff": float(np.max(np.abs(ref.raw - q.raw))) if ref.raw is not None else 0.0,
            }
            for name, alone, batched in (("fp32", ref_alone, ref), ("int8", q_alone, q)):
                if batch > 1:
                    inv = _compare(task, alone, batched)
                    cell[f"{name}_batch_invariance"] = inv
                    prev = invariance[name]
                    if not prev or inv["identical_predictions"] < prev["identical_predictions"] or (
                        inv["identical_predictions"] == prev["identical_predictions"]
                        and inv["max_abs_diff"] > prev["max_abs_diff"]
                    ):
                        invariance[name] = {**inv, "batch_size": batch, "sequence_length": seq}
            if grid.latency:
                lat = latency.model_copy(update={
                    "batch_size": batch, "sequence_length": seq, "rounds": max(latency.rounds, MIN_DECISION_ROUNDS),
                    "max_rounds": max(latency.round_budget, MIN_DECISION_ROUNDS)})
                cell_timer = timer or SessionTimer(batch_size=batch, sequence_length=seq, threads=threads,
                                                   warmup=min(latency.warmup, 2), repeats=min(latency.repeats, GRID_REPEATS),
                                                   vocab_size=vocab, sessions=sessions)
                timed = side_by_side({"fp32": fp32_path, "int8": int8_path}, lat, baseline="fp32", vocab_size=vocab,
                                     timer=cell_timer)
                cell["fp32_p50_ms"] = timed.rounds.median_ms("fp32")
                cell["int8_p50_ms"] = timed.rounds.median_ms("int8")
                cell["latency_ratio"] = timed.ratios["int8"].median  # median of per-round ratios
                cell["latency_ratio_interval"] = timed.ratios["int8"].to_dict()
                if timed.warnings:
                    cell["timing_warning"] = timed.warnings[0]
            cells.append(cell)
            logger.info("shape b%d x s%d: agreement %.4f, max diff %.3g%s", batch, seq, cell["agreement"],
                        cell["max_abs_diff"],
                        f", int8/fp32 p50 {cell['latency_ratio']:.2f}" if "latency_ratio" in cell else "")
    section = {
        "grid": grid.model_dump(mode="json"),
        "cells": cells,
        "min_agreement": min(c["agreement"] for c in cells),
        "batch_invariance": {k: v for k, v in invariance.items() if v},
        "dynamic_axes": dynamic_axes_report(int8_path),
    }
    if grid.min_agreement is not None and section["min_agreement"] < grid.min_agreement:
        worst = min(cells, key=lambda c: c["agreement"])
        raise EvaluationError(
            f"evaluation.shapes.min_agreement: int8 agrees with FP32 on {worst['agreement']:.4f} of "
            f"{worst['examples']} examples at batch {worst['batch_size']} x sequence {worst['sequence_length']}, "
            f"below {grid.min_agreement}"
        )
    return section
