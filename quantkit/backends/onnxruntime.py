"""ONNX Runtime quantization: dynamic (integer ops) and static (QDQ or QOperator).

Static calibration is run by quantkit itself with ONNX Runtime's calibrators, so
that it streams (a few batches at a time, whatever the method), reports progress,
honours every calibration option, and only collects the float tensors feeding the
operator types being quantized (never attention masks or shape tensors). The
ranges are handed to ``quantize_static`` through its calibration cache.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..data import TextDataset
from ..faults import fault_point
from ..export import onnx_io
from ..spec import CalibrationSpec, QuantizationConfig
from . import BACKENDS, Backend, ProgressFactory, QuantizeRequest

logger = logging.getLogger(__name__)

__all__ = ["OnnxRuntimeBackend", "BatchReader", "calibrate", "preprocess"]

_QUANT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
#: Batches collected before a calibrator folds them into its running statistics.
_CHUNK_BATCHES = 8


class BatchReader(CalibrationDataReader):
    """Feeds :class:`TextDataset` batches to ONNX Runtime; supports ranged (strided) reads."""

    def __init__(
        self,
        data: TextDataset,
        batch_size: int,
        input_names: list[str],
        progress: Any | None = None,
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.input_names = input_names
        self.progress = progress
        self._n = data.num_batches(batch_size)
        self._start, self._stop, self._pos = 0, self._n, 0

    def __len__(self) -> int:
        return self._n

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._stop = start_index, min(end_index, self._n)
        self._pos = self._start

    def rewind(self) -> None:
        self._pos = self._start

    def get_next(self) -> dict[str, Any] | None:
        if self._pos >= self._stop:
            return None
        lo = self._pos * self.batch_size
        batch = self.data.batch(lo, lo + self.batch_size, self.input_names)
        self._pos += 1
        if self.progress is not None:
            self.progress.update(len(next(iter(batch.values()))))
        return batch


def preprocess(src: Path, dst: Path) -> Path:
    """ONNX Runtime's quantization pre-processing (symbolic shape inference + graph cleanup).

    Falls back to fewer steps when a step fails (e.g. symbolic inference on an exotic
    graph) and returns the path actually to quantize.
    """
    # Symbolic shape inference is skipped: it fails on optimum's BERT-family exports ("Incomplete
    # symbolic shape inference") and, failing, leaves a <uuid>.data file in the working directory.
    # The steps run inside the destination's folder so that no stray file can land anywhere else.
    attempts = [
        {"skip_symbolic_shape": True},
        {"skip_symbolic_shape": True, "skip_optimization": True},
    ]
    for kwargs in attempts:
        try:
            with contextlib.chdir(dst.parent):
                quant_pre_process(str(src), str(dst), **kwargs)
            return dst
        except Exception as exc:  # noqa: BLE001 - pre-processing is best effort
            logger.info("quantization pre-processing %s failed (%s); retrying with less", kwargs, exc)
    logger.warning("quantizing without pre-processing")
    return src


def effective_op_types(model_path: Path, op_types: list[str]) -> list[str]:
    """``op_types`` plus ``Attention`` when the graph has fused attention and MatMul is quantized:
    a fused ``Attention`` node holds the Q/K/V projection MatMul (it becomes ``QAttention``)."""
    import onnx

    ops = list(op_types)
    if "MatMul" in ops and "Attention" not in ops:
        graph = onnx.load(str(model_path), load_external_data=False).graph
        if any(n.op_type == "Attention" for n in graph.node):
            ops.append("Attention")
    return ops


def chunk_batches(n_batches: int) -> int:
    """Largest divisor of ``n_batches`` not above the chunk size (ORT's strided reads need one)."""
    return max(d for d in range(1, min(_CHUNK_BATCHES, n_batches) + 1) if n_batches % d == 0)


def calibrate(
    model_path: Path,
    data: TextDataset,
    config: QuantizationConfig,
    workdir: Path,
    progress: ProgressFactory | None = None,
) -> Any:
    """Compute activation ranges (ONNX Runtime ``TensorsData``) streaming over ``data``."""
    cal: CalibrationSpec = config.calibration
    data = data.select(min(cal.num_samples, len(data)))
    input_names, _ = onnx_io(model_path)
    options: dict[str, Any] = {"symmetric": config.activation_symmetric}
    if cal.method == "minmax":
        # Not ``max_intermediate_outputs``: in ORT 1.31 MinMaxCalibrater drops (clears without
        # computing) the batches collected when that limit is hit. The ranged reads below bound
        # memory instead: each collect_data call folds its few batches into the running range.
        options.update(moving_average=cal.moving_average)
    else:
        options.update(num_bins=cal.num_bins)
        if cal.method == "percentile":
            options["percentile"] = cal.percentile
    bar = progress(len(data), f"calibrating ({cal.method})") if progress else None
    try:
        with tempfile.TemporaryDirectory(prefix="calib-", dir=workdir) as tmp:
            calibrator = create_calibrator(
                model_path,
                effective_op_types(model_path, config.op_types),
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=_METHODS[cal.method],
                extra_options=options,
            )
            reader = BatchReader(data, cal.batch_size, input_names, bar)
            stride = chunk_batches(len(reader))
            for start in range(0, len(reader), stride):
                reader.set_range(start, start + stride)
                calibrator.collect_data(reader)
                fault_point("calibration")
            with contextlib.redirect_stdout(io.StringIO()):  # ORT prints histogram settings
                ranges = calibrator.compute_data()
            del calibrator
    finally:
        if bar is not None:
            bar.close()
    return ranges


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(Backend):
    """``onnxruntime.quantization``: IntegerOps dynamic, QDQ or QOperator static."""

    name = "onnxruntime"
    approaches = frozenset({"dynamic", "static", "weight_only"})

    def _quantize(self, request: QuantizeRequest) -> float | None:
        config, output_path, workdir = request.config, request.output_path, request.workdir
        if config.approach == "weight_only":
            from .weight_only import quantize_weight_only

            calibration_s, details = quantize_weight_only(Path(request.fp32.path), output_path, config.weights,
                                                          request.calibration)
            self.details.update(details)
            return calibration_s
        calibration, progress, model = request.calibration, request.progress, request.fp32
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="ort-quant-", dir=workdir) as tmp:
            source = preprocess(Path(model.path), Path(tmp) / "preprocessed.onnx")
            extra: dict[str, Any] = {
                "WeightSymmetric": config.symmetric_weights,
                "MatMulConstBOnly": config.weights_only_matmul,
                # Fused contrib ops (Attention, SkipLayerNormalization, ...) have no ONNX shape
                # inference, so their outputs' types are unknown to the quantizer: they are float.
                "DefaultTensorType": 1,
            }
            common = dict(
                op_types_to_quantize=effective_op_types(source, config.op_types),
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                weight_type=_QUANT_TYPES[config.weight_type],
                nodes_to_exclude=list(config.nodes_to_exclude),
            )
            if config.approach == "dynamic":
                quantize_dynamic(str(source), str(output_path), extra_options=extra, **common)
                return None
            assert calibration is not None  # checked by Backend.quantize
            start = time.perf_counter()
            ranges = calibrate(source, calibration, config, Path(tmp), progress)
            calibration_s = time.perf_counter() - start
            cache = Path(tmp) / "calibration.json"
            save_tensors_data(ranges, cache)
            extra["ActivationSymmetric"] = config.activation_symmetric
            quantize_static(
                str(source),
                str(output_path),
                calibration_data_reader=None,
                quant_format=QuantFormat.QDQ if config.quant_format == "qdq" else QuantFormat.QOperator,
                activation_type=_QUANT_TYPES[config.activation_type],
                calibrate_method=_METHODS[config.calibration.method],
                calibration_cache_path=str(cache),
                extra_options=extra,
                **common,
            )
            return calibration_s

    def ort_config(self, config: QuantizationConfig, opset: int) -> dict[str, Any] | None:
        """``ort_config.json``: the config in the layout of optimum-onnx's ``ORTConfig.to_dict()`` (what
        ``ORTModel`` reads beside the model), written without importing optimum-onnx. None for weight-only
        quantization, which ``ORTConfig`` cannot describe."""
        if config.approach == "weight_only":
            return None
        static = config.approach == "static"
        fmt = QuantFormat.QDQ if static and config.quant_format == "qdq" else QuantFormat.QOperator
        return {
            "opset": opset,
            "use_external_data_format": False,
            "one_external_file": True,
            "optimization": {},
            "quantization": {
                "is_static": static,
                "format": fmt.name,
                "mode": "QLinearOps" if static else "IntegerOps",
                "activations_dtype": _QUANT_TYPES[config.activation_type].name,
                "activations_symmetric": bool(config.activation_symmetric),
                "weights_dtype": _QUANT_TYPES[config.weight_type].name,
                "weights_symmetric": config.symmetric_weights,
                "per_channel": config.per_channel,
                "reduce_range": config.reduce_range,
                "nodes_to_quantize": [],
                "nodes_to_exclude": list(config.nodes_to_exclude),
                "operators_to_quantize": list(config.op_types),
                "qdq_add_pair_to_weight": False,
                "qdq_dedicated_pair": False,
                "qdq_op_type_per_channel_support_to_axis": {"MatMul": 1},
            },
        }
