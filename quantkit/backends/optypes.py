"""The ONNX operator types each backend can quantize, per approach: the one place that lists them.

Kept free of heavy imports so spec validation (``quantization.op_types``) can use it. The
onnxruntime lists mirror ``onnxruntime.quantization.registry`` (IntegerOpsRegistry for dynamic,
QDQRegistry / QLinearOpsRegistry for static qdq / qoperator); a unit test checks they still match
the installed onnxruntime.
"""

from __future__ import annotations

__all__ = ["QUANTIZABLE_OP_TYPES", "quantizable_op_types"]

_ORT_DYNAMIC = frozenset({"Attention", "Conv", "EmbedLayerNormalization", "Gather", "LSTM", "MatMul", "Transpose"})
_ORT_QDQ = frozenset({
    "AveragePool", "BatchNormalization", "Clip", "Conv", "ConvTranspose", "CumSum", "Flatten", "Gather",
    "GatherElements", "Gemm", "InstanceNormalization", "LayerNormalization", "MatMul", "MaxPool", "Pad", "Relu",
    "Reshape", "Resize", "Slice", "Split", "Squeeze", "TopK", "Transpose", "Unsqueeze", "Where",
})
_ORT_QOPERATOR = frozenset({
    "Add", "ArgMax", "AveragePool", "Clip", "Concat", "Conv", "EmbedLayerNormalization", "Flatten", "Gather",
    "Gemm", "GlobalAveragePool", "LeakyRelu", "MatMul", "MaxPool", "Mul", "Pad", "Relu", "Reshape", "Resize",
    "Sigmoid", "Softmax", "Split", "Squeeze", "Transpose", "Unsqueeze", "Where",
})
#: Linear layers (MatMul/Gemm) and, with Gather, the embedding tables.
_INC = frozenset({"MatMul", "Gemm", "Gather"})

#: backend → (approach, static format or None) → operator types it can quantize.
QUANTIZABLE_OP_TYPES: dict[str, dict[tuple[str, str | None], frozenset[str]]] = {
    "onnxruntime": {
        ("dynamic", None): _ORT_DYNAMIC,
        ("static", "qdq"): _ORT_QDQ,
        ("static", "qoperator"): _ORT_QOPERATOR,
    },
    "neural-compressor": {
        ("dynamic", None): _INC,
        ("static", "qdq"): _INC,
        ("qat", "qdq"): _INC,
    },
}


def quantizable_op_types(backend: str, approach: str, format: str | None = None) -> frozenset[str] | None:
    """The operator types ``backend`` quantizes with ``approach`` (static: ``format``, default qdq).

    None when the backend is not listed here (a plugin backend: it validates its own op types).
    """
    table = QUANTIZABLE_OP_TYPES.get(backend)
    if table is None:
        return None
    key = (approach, None) if approach == "dynamic" else (approach, format or "qdq")
    return table.get(key)
