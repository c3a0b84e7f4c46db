"""Intel Neural Compressor 3.x backend: PT2E quantization of the PyTorch model, exported to ONNX QDQ.

- static: ``neural_compressor.torch.export.export`` (symbolic batch/sequence) → ``prepare`` with
  ``INT8StaticQuantConfig`` (X86InductorQuantizer via torchao) → calibration forward passes →
  ``convert``.
- dynamic: the same export → ``quantize`` with ``DynamicQuantConfig`` (one forward pass is
  required: without it INC silently leaves scale 1.0 on every weight).
- qat: torchao ``prepare_qat_pt2e`` → fine-tuning (:mod:`quantkit.qat`) → ``convert_pt2e``.

Then ``torch.onnx.export(dynamo=True)`` with the same dynamic shapes, and :mod:`quantkit.qdq`
folds the weight QuantizeLinear into int8 initializers (the raw export stores FP32 weights and is
larger than FP32); with ``Gather`` in ``op_types`` the embedding tables are stored int8 too. The
ONNX model is checked against the converted PyTorch model at two shapes.

SmoothQuant and INC's IPEX static path need intel-extension-for-pytorch, dead for torch 2.13:
the spec rejects them before any work starts.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportValidationError, QuantizationError
from ..families import usable_positions
from ..logs import quiet
from ..qat import dynamic_shapes, example_inputs, input_names, train_qat
from ..qdq import fold_constant_weight_qdq, fold_dq_transpose, quantize_gather_weights, strip_metadata
from . import BACKENDS, Backend, QuantizeRequest
from .optypes import quantizable_op_types

logger = logging.getLogger(__name__)

__all__ = ["NeuralCompressorBackend", "dynamic_quant_translation_table", "export_quantized"]


def dynamic_quant_translation_table() -> dict[Any, Any]:
    """ONNX lowerings for PT2E dynamic quantization ops that torch.onnx does not translate.

    ``choose_qparams.tensor`` maps onto ``DynamicQuantizeLinear`` (uint8, range including 0,
    round half to even: torch's uint8 [0, 255] choice); the tensor-scale quantize/dequantize
    overloads onto QuantizeLinear/DequantizeLinear with scalar scale and zero point.
    """
    import torch
    from onnxscript import ir
    from onnxscript import opset20 as op

    def choose_qparams_tensor(input, quant_min: int, quant_max: int, eps: float, dtype: int):  # noqa: A002
        _, scale, zp = op.DynamicQuantizeLinear(input)
        one = op.Constant(value_ints=[1])
        return (op.Reshape(op.Cast(scale, to=ir.DataType.DOUBLE), one),
                op.Reshape(op.Cast(zp, to=ir.DataType.INT64), one))

    def _scalar(x):
        return op.Reshape(x, op.Constant(value_ints=ir.AttrInt64s("value_ints", [])))

    def quantize_per_tensor_tensor(input, scale, zero_point, quant_min: int, quant_max: int, dtype: int):  # noqa: A002
        return op.QuantizeLinear(input, _scalar(op.CastLike(scale, input)), _scalar(op.Cast(zero_point, to=dtype)))

    def dequantize_per_tensor_tensor(input, scale, zero_point, quant_min: int, quant_max: int, dtype: int,  # noqa: A002
                                     out_dtype: int = -1):
        return op.DequantizeLinear(input, _scalar(op.Cast(scale, to=ir.DataType.FLOAT)),
                                   _scalar(op.Cast(zero_point, to=dtype)))

    qd = torch.ops.quantized_decomposed
    return {qd.choose_qparams.tensor: choose_qparams_tensor,
            qd.quantize_per_tensor.tensor: quantize_per_tensor_tensor,
            qd.dequantize_per_tensor.tensor: dequantize_per_tensor_tensor}


def _primary(out: Any, task: Any = None) -> Any:
    if task is not None:
        return task.torch_outputs(out)[0]
    return out[0] if isinstance(out, (tuple, list)) else getattr(out, "logits", out)


def export_quantized(
    model: Any, example: tuple[Any, ...], names: list[str], dyn: dict[str, Any], path: Path, *, dynamic_ops: bool,
    output_names: list[str] | None = None,
) -> dict[str, Any]:
    """ONNX-export a converted PT2E model, fold its weights to int8, and save it to ``path``."""
    import onnx
    import torch

    options: dict[str, Any] = {}
    if dynamic_ops:
        options["custom_translation_table"] = dynamic_quant_translation_table()
    try:
        program = torch.onnx.export(model, example, input_names=names, output_names=output_names or ["logits"],
                                    dynamic_shapes=dyn, dynamo=True, verbose=False, **options)
    except Exception as exc:  # noqa: BLE001 - the exporter raises anything
        raise QuantizationError(f"torch.onnx.export of the quantized graph failed: {exc}") from exc
    raw = path.with_name("raw.onnx")
    program.save(str(raw))
    proto = onnx.load(str(raw))
    proto, stats = fold_constant_weight_qdq(proto)
    # aten.linear lowers to Transpose(W) -> MatMul; storing W pre-transposed lets ONNX Runtime fuse
    # DequantizeLinear -> MatMul into its int8 kernels
    proto, transposed = fold_dq_transpose(proto)
    stats.update(transposed)
    strip_metadata(proto)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    raw.unlink()
    logger.info("folded quantized weights: %s", stats)
    return stats


def validate_quantized(model: Any, path: Path, names: list[str], vocab: int, max_positions: int,
                       task: Any = None) -> float:
    """Max |ONNX − PyTorch| of the converted model's primary output at two shapes; raises when out of bounds."""
    import onnxruntime as ort
    import torch

    # Graph optimizations off: the QDQ graph then runs as written (dequantize, float MatMul), so this
    # checks the export itself, not the int8 kernels (whose u8s8 arithmetic saturates on AVX2 without
    # VNNI and would hide a real export error in noise).
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch, seq in ((2, min(16, max_positions)), (3, min(37, max_positions))):
        feeds = {"input_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64),
                 "attention_mask": np.ones((batch, seq), dtype=np.int64),
                 "token_type_ids": np.zeros((batch, seq), dtype=np.int64)}
        feeds["attention_mask"][1:, seq - 3:] = 0
        feeds = {n: feeds[n] for n in names}
        got = session.run(None, feeds)[0]
        with torch.inference_mode():
            ref = _primary(model(*(torch.from_numpy(feeds[n]) for n in names)), task).float().numpy()
        diff = float(np.max(np.abs(got - ref)))
        # Activation QuantizeLinear divides by the scale where PyTorch multiplies by its inverse: values on
        # a rounding boundary land one step apart, and a deep model amplifies that (MiniLM-L6: ~7% of the
        # logit scale). A broken export (wrong axis, scale or op) is off by far more than 10%.
        bound = 1e-3 + 0.10 * float(np.max(np.abs(ref)))
        worst = max(worst, diff)
        if not np.isfinite(diff) or diff > bound:
            raise ExportValidationError(
                f"quantized ONNX vs converted PyTorch at shape {(batch, seq)}: max abs diff {diff:.3g} > {bound:.3g}",
                max_abs_diff=diff, atol=bound,
            )
    return worst


@BACKENDS.register("neural-compressor")
class NeuralCompressorBackend(Backend):
    """Intel Neural Compressor 3.x (PyTorch PT2E) and torchao QAT, exported to ONNX QDQ."""

    name = "neural-compressor"
    approaches = frozenset({"static", "dynamic", "qat"})
    needs_torch = True
    reads_calibration_always = True  # PT2E dynamic needs a forward pass too (evaluation data when none)
    optimizes_graph = False  # quantizes in PyTorch: ONNX graph optimization levels do not apply
    runs_on_workers = False  # the PyTorch model is not shipped to workers
    takes_hardware_defaults = False  # the x86 scheme is fixed (int8 weights, uint8 activations)

    @classmethod
    def _config_issues(cls, config: Any) -> list[tuple[str, str]]:
        """Intel Neural Compressor's x86 PT2E scheme: QDQ, int8 weights with uint8 activations, minmax/KL."""
        if config.format == "qoperator":
            return [("quantization.format", "neural-compressor exports QDQ graphs only (use qdq or drop `format`)")]
        if config.weight_type != "int8" or config.activation_type != "uint8":
            return [("quantization.weight_type",
                     "neural-compressor's x86 scheme is int8 weights with uint8 activations")]
        if config.calibration.method == "percentile":
            return [("quantization.calibration", "neural-compressor calibrates with minmax or entropy (KL); "
                     "percentile is onnxruntime-only")]
        if unknown := sorted(set(config.op_types) - (quantizable_op_types(cls.name, config.approach, "qdq") or set())):
            return [("quantization.op_types", f"neural-compressor quantizes Linear layers (MatMul/Gemm) and, with "
                     f"Gather, the embedding tables; {unknown} cannot be chosen")]
        if config.reduce_range:
            return [("quantization.reduce_range", "not supported by neural-compressor's x86 scheme")]
        return []

    def _quantize(self, request: QuantizeRequest) -> float | None:
        with quiet():
            return self._quantize_quietly(request)

    def _quantize_quietly(self, request: QuantizeRequest) -> float | None:
        import copy

        import torch

        from ..tasks import task_for

        config, loaded = request.config, request.loaded
        task = task_for(loaded.task, loaded.config)
        data = request.calibration
        if data is None:  # dynamic: any example batch will do for the one required forward pass
            raise QuantizationError("neural-compressor needs data.calibration (examples for export and calibration)")
        names = input_names(data, loaded.model)
        max_positions = usable_positions(loaded.config) or 512
        dyn = dynamic_shapes(names, max_positions)
        example = example_inputs(data, names=names)
        model = copy.deepcopy(loaded.model).eval()
        start = time.perf_counter()
        if config.approach == "qat":
            from ..spec import QATSpec

            result = train_qat(model, data, request.qat or QATSpec(), max_positions=max_positions,
                               state_dir=request.state_dir, progress=request.progress, task=task)
            converted = result.model
            every = max(1, -(-len(result.losses) // 1000))  # the curve keeps at most 1000 points
            self.details["training"] = {
                "steps": result.steps,
                "resumed_from": result.resumed_from,
                "stopped_early": result.stopped_early,
                "seconds": round(result.seconds, 2),
                "first_loss": result.losses[0] if result.losses else None,
                "last_loss": result.losses[-1] if result.losses else None,
                "holdout_accuracy": result.holdout_accuracy,
                "losses": [round(x, 5) for x in result.losses[::every]],  # training loss at steps 1, 1+every, ...
                "loss_every": every,
            }
        else:
            from neural_compressor.torch.export import export
            from neural_compressor.torch.quantization import (
                DynamicQuantConfig,
                INT8StaticQuantConfig,
                convert,
                prepare,
                quantize,
            )

            graph = export(model, example_inputs=example, dynamic_shapes=dyn)
            granularity = "per_channel" if config.per_channel else "per_tensor"
            if config.approach == "static":
                qconfig = INT8StaticQuantConfig(
                    w_granularity=granularity,
                    w_sym=config.symmetric_weights,
                    act_sym=config.activation_symmetric,
                    act_algo="kl" if config.calibration.method == "entropy" else "minmax",
                )
                prepared = prepare(graph, qconfig, example_inputs=example)
                cal = data.select(min(config.calibration.num_samples, len(data)))
                bar = request.progress(len(cal), "calibrating (neural-compressor)") if request.progress else None
                with torch.inference_mode():
                    for b in cal.batches(config.calibration.batch_size, names):
                        prepared(*(torch.from_numpy(b[n]) for n in names))
                        if bar is not None:
                            bar.update(len(b[names[0]]))
                if bar is not None:
                    bar.close()
                converted = convert(prepared)
            else:
                qconfig = DynamicQuantConfig(w_granularity=granularity, w_sym=config.symmetric_weights)
                converted = quantize(graph, qconfig, run_fn=lambda m: m(*example), example_inputs=example)
        seconds = time.perf_counter() - start
        export_quantized(converted, example, names, dyn, request.output_path,
                         dynamic_ops=config.approach == "dynamic", output_names=list(task.output_names))
        vocab = int(getattr(loaded.config, "vocab_size", 1000))
        diff = validate_quantized(converted, request.output_path, names, vocab, max_positions, task)
        logger.info("quantized ONNX matches the converted PyTorch model (max abs diff %.3g)", diff)
        if "Gather" in config.op_types:  # after the check: PyTorch keeps FP32 embeddings
            import onnx

            proto, stats = quantize_gather_weights(onnx.load(str(request.output_path)))
            onnx.save(proto, str(request.output_path))
            logger.info("embedding tables stored int8: %s", stats)
        self.details["export_max_abs_diff"] = diff
        return seconds
