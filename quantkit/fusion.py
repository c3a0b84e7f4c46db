"""Graph optimization before quantization (``export.optimize``).

``transformer`` runs ONNX Runtime's transformer optimizer, which rewrites a BERT-family
encoder into fused contrib ops (``Attention``, ``EmbedLayerNormalization``,
``SkipLayerNormalization``, ``BiasGelu``), so the quantizer then produces ``QAttention``
and ``DynamicQuantizeMatMul`` and int8 runs through fused kernels. ``transformer-noskip``
runs the same optimizer, then takes each ``SkipLayerNormalization`` apart again into
``Add`` → bias ``Add`` → ``LayerNormalization`` (:func:`unfuse_skip_layer_norm`). ONNX Runtime 1.31's CPU
``SkipLayerNormalization`` kernel took ~1 ms per call at 8 × 128 × 384 on a Xeon (AMX),
against ~0.3 ms for the ``Add`` + ``LayerNormalization`` it replaces; once the int8 GEMMs are
fast, that was a quarter of the model's time (``bench/hardware_table.py --profile``), so
``auto`` resolves to ``transformer-noskip`` and the hardware probe
(:mod:`quantkit.probe`) times it against ``transformer`` and ``none`` on the CPU at hand. ``basic``/``extended``
save the graph ONNX Runtime's own session optimizer produces at that level. Every
optimized graph is checked against the unfused FP32 model on random inputs at two shapes
(max absolute output difference ≤ ``export.optimize_atol``), like the export check.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .backends import backend_class
from .errors import ExportError, ExportValidationError
from .export import ExportedModel, onnx_io, sample_inputs
from .families import family_of
from .graph import op_counts

logger = logging.getLogger(__name__)

__all__ = ["LEVELS", "TRANSFORMER_LEVELS", "AUTO_DYNAMIC_LEVEL", "PROBED_LEVELS", "unfuse_skip_layer_norm",
           "FUSED_OPS", "ORT_FAMILIES", "ort_model_type", "resolve_level", "optimize_graph", "compare_models"]

LEVELS = ("none", "basic", "extended", "transformer-noskip", "transformer")
#: The levels that run ONNX Runtime's transformer optimizer (need a supported model type).
TRANSFORMER_LEVELS = ("transformer-noskip", "transformer")
#: ``resolve_level("auto")`` for ONNX Runtime dynamic int8 of a supported encoder (see the module doc).
AUTO_DYNAMIC_LEVEL = "transformer-noskip"
#: The levels ``hardware_probe: auto`` times for that case (the default first).
PROBED_LEVELS = (AUTO_DYNAMIC_LEVEL, "transformer", "none")

#: Contrib ops that show a fusion happened (reported and counted).
FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "FusedMatMul",
    "LayerNormalization",
)


#: transformers ``model_type`` → ONNX Runtime transformer-optimizer family, for the encoder families whose
#: fusions quantkit's int8 path can use (the encoder rows of optimum-onnx's ``ORTConfigManager`` table,
#: kept here so fusion needs no optimum-onnx).
ORT_FAMILIES = {
    "albert": "bert",
    "bert": "bert",
    "big_bird": "bert",
    "camembert": "bert",
    "deberta": "bert",
    "deberta-v2": "bert",
    "distilbert": "bert",
    "electra": "bert",
    "modernbert": "bert",
    "mpnet": "bert",
    "nystromformer": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "dinov2": "vit",
    "vit": "vit",
}


def ort_model_type(model_type: str | None) -> str | None:
    """The ONNX Runtime transformer-optimizer family of a transformers ``model_type`` (None: unsupported)."""
    if not model_type:
        return None
    return ORT_FAMILIES.get(model_type.replace("_", "-")) or ORT_FAMILIES.get(model_type)


def resolve_level(level: str, *, approach: str, backend: str, model_type: str | None) -> str:
    """What ``auto`` means for this candidate: transformer fusion without SkipLayerNormalization
    (:data:`AUTO_DYNAMIC_LEVEL`) for ONNX Runtime dynamic quantization of a supported encoder,
    nothing otherwise (static QDQ of fused graphs measured slower than unfused, and PyTorch
    backends never see the ONNX graph)."""
    if level != "auto":
        return level
    if backend_class(backend).optimizes_graph and approach == "dynamic" and ort_model_type(model_type) is not None:
        return AUTO_DYNAMIC_LEVEL
    return "none"


def _heads_and_hidden(config: Any) -> tuple[int, int]:
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or 0
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or 0
    return int(heads), int(hidden)


def compare_models(
    reference: Path, candidate: Path, *, vocab_size: int, shapes: list[tuple[int, int]], seed: int = 0
) -> float:
    """Max absolute difference of the first output of two ONNX models on the same random inputs."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    a = ort.InferenceSession(str(reference), so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(candidate), so, providers=["CPUExecutionProvider"])
    names_a = [i.name for i in a.get_inputs()]
    names_b = {i.name for i in b.get_inputs()}
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch, seq in shapes:
        feeds = sample_inputs(names_a, batch, seq, vocab_size, rng)
        out_a = a.run(None, feeds)[0]
        out_b = b.run(None, {k: v for k, v in feeds.items() if k in names_b})[0]
        if out_a.shape != out_b.shape:
            raise ExportValidationError(
                f"optimized model output shape {out_b.shape} != unfused {out_a.shape} at input shape {(batch, seq)}",
                max_abs_diff=float("inf"),
                atol=0.0,
            )
        worst = max(worst, float(np.max(np.abs(out_a.astype(np.float64) - out_b))))
    return worst


def _ort_level(src: Path, dst: Path, level: str) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    so.optimized_model_filepath = str(dst)
    so.log_severity_level = 3
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])


def unfuse_skip_layer_norm(graph: Any) -> int:
    """Rewrite every ``SkipLayerNormalization`` of ``graph`` (an ONNX ``GraphProto``, in place) as
    ``Add(input, skip)`` → ``Add(·, bias)`` → ``LayerNormalization``; the number rewritten.

    The bias ``Add`` comes last on purpose: ONNX Runtime's session optimizer (``SkipLayerNormFusion``)
    fuses an ``Add`` of two 3-D tensors feeding a ``LayerNormalization`` back into the slow kernel, and
    does not match an ``Add`` with a 1-D constant there, so the artifact keeps the faster ops wherever
    it is loaded. ``input_skip_bias_sum`` (output 3), when used, is the sum before normalization."""
    from onnx import helper

    nodes = []
    count = 0
    for node in graph.node:
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft":
            nodes.append(node)
            continue
        count += 1
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        ins = list(node.input) + [""] * (5 - len(node.input))
        outs = list(node.output) + [""] * (4 - len(node.output))
        if outs[1] or outs[2]:
            raise ExportError(f"export.optimize: {node.name} returns its mean/inverse std dev: cannot unfuse it",
                              hint="use export.optimize: transformer")
        stem = node.name or f"SkipLayerNorm_{count}"
        total = f"{stem}/skip_sum" if (ins[4] or not outs[3]) else outs[3]
        nodes.append(helper.make_node("Add", [ins[0], ins[1]], [total], name=f"{stem}/Add_skip"))
        if ins[4]:
            biased = outs[3] or f"{stem}/skip_bias_sum"
            nodes.append(helper.make_node("Add", [total, ins[4]], [biased], name=f"{stem}/Add_bias"))
            total = biased
        norm_inputs = [total, ins[2]] + ([ins[3]] if ins[3] else [])
        nodes.append(helper.make_node("LayerNormalization", norm_inputs, [outs[0]], name=f"{stem}/LayerNorm",
                                      axis=-1, epsilon=eps))
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def _transformer(src: Path, dst: Path, level: str, model_type: str, config: Any, fuse_embeddings: bool) -> None:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    family = ort_model_type(model_type)
    if family is None:
        raise ExportError(
            f"export.optimize: {level}: ONNX Runtime's transformer optimizer has no fusions for model type "
            f"{model_type!r}",
            hint="use export.optimize: extended (or auto)",
        )
    heads, hidden = _heads_and_hidden(config)
    options = FusionOptions(family)
    # EmbedLayerNormalization swallows the embedding Gathers: keep them when they are to be quantized.
    options.enable_embed_layer_norm = fuse_embeddings
    optimized = optimize_model(str(src), model_type=family, num_heads=heads, hidden_size=hidden,
                               optimization_options=options)
    if level == "transformer-noskip":  # fused first (the attention and bias fusions expect it), then taken apart
        unfuse_skip_layer_norm(optimized.model.graph)
    optimized.save_model_to_file(str(dst))


def optimize_graph(
    fp32: ExportedModel,
    level: str,
    output_dir: Path,
    *,
    model_type: str | None,
    model_config: Any,
    atol: float,
    validate: bool = True,
    fuse_embeddings: bool = True,
) -> tuple[ExportedModel, dict[str, Any]]:
    """Optimize ``fp32`` at ``level`` into ``output_dir/model.onnx``; return it with a report section.

    ``level`` must be resolved (not ``auto``). ``none`` returns ``fp32`` unchanged.
    ``fuse_embeddings=False`` keeps the embedding ``Gather`` nodes (to quantize them). Raises
    :class:`ExportValidationError` when the optimized model drifts from the unfused one by
    more than ``atol``.
    """
    if level == "auto":
        raise ValueError("resolve export.optimize auto with resolve_level() first")
    if level not in LEVELS:
        raise ValueError(f"export.optimize must be one of {LEVELS}, got {level!r}")
    before = op_counts(fp32.path)
    if level == "none":
        return fp32, {"level": "none", "ops_before": len(before), "fused": {}}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dst = output_dir / "model.onnx"
    try:
        if level in TRANSFORMER_LEVELS:
            _transformer(fp32.path, dst, level, model_type or "", model_config, fuse_embeddings)
        else:
            _ort_level(fp32.path, dst, level)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - both optimizers raise anything
        shutil.rmtree(output_dir, ignore_errors=True)
        raise ExportError(f"export.optimize: {level} graph optimization failed: {exc}") from exc
    after = op_counts(dst)
    fused = {op: n for op, n in after.items() if op in FUSED_OPS and n > before.get(op, 0)}
    section: dict[str, Any] = {
        "level": level,
        "nodes_before": sum(before.values()),
        "nodes_after": sum(after.values()),
        "fused": fused,
    }
    if level in TRANSFORMER_LEVELS and not ({"Attention", "MultiHeadAttention"} & set(fused)):
        family = family_of(model_type)
        if family is not None and not family.fuses_attention:  # known: relative or rotary position terms
            logger.info("%s attention is not fused by ONNX Runtime's optimizer (%s positions); fused: %s",
                        family.name, family.positions, ", ".join(sorted(fused)) or "nothing")
        else:
            logger.warning("the transformer optimizer fused no attention in %s: int8 attention stays unfused",
                           fp32.path)
    if validate:
        vocab = int(getattr(model_config, "vocab_size", 1000))
        max_pos = int(getattr(model_config, "max_position_embeddings", 512) or 512)
        shapes = [(2, min(16, max_pos)), (3, min(37, max_pos))]
        diff = compare_models(fp32.path, dst, vocab_size=vocab, shapes=shapes)
        section["max_abs_diff"] = diff
        section["atol"] = atol
        if not np.isfinite(diff) or diff > atol:
            raise ExportValidationError(
                f"export.optimize: {level}: the optimized FP32 model differs from the unfused one by {diff:.3g} "
                f"(> export.optimize_atol {atol:g}) at shapes {shapes}",
                max_abs_diff=diff,
                atol=atol,
                hint="use export.optimize: none or extended, or raise export.optimize_atol if this is expected",
            )
        logger.info("%s optimization: %s fused; matches the unfused model within %.3g", level, fused, diff)
    inputs, outputs = onnx_io(dst)
    return replace(fp32, path=dst, input_names=inputs, output_names=outputs), section

