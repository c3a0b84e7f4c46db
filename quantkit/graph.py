"""Read-only facts about an ONNX graph: operator counts, weight types, sizes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["op_counts", "initializer_types", "graph_summary", "model_size_bytes"]


def _load(path_or_model: Any) -> Any:
    import onnx

    if isinstance(path_or_model, (str, Path)):
        return onnx.load(str(path_or_model), load_external_data=False)
    return path_or_model


def op_counts(path_or_model: Any) -> dict[str, int]:
    """Number of nodes of each operator type (top-level graph)."""
    graph = _load(path_or_model).graph
    return dict(sorted(Counter(n.op_type for n in graph.node).items()))


def initializer_types(path_or_model: Any) -> dict[str, int]:
    """Number of initializers of each element type (``INT8``, ``FLOAT``, ...)."""
    import onnx

    graph = _load(path_or_model).graph
    return dict(sorted(Counter(onnx.TensorProto.DataType.Name(t.data_type) for t in graph.initializer).items()))


def model_size_bytes(path: str | Path) -> int:
    """Size of the model file plus any external-data files next to it."""
    path = Path(path)
    total = path.stat().st_size
    for extra in path.parent.glob(path.name + "*data"):
        if extra != path:
            total += extra.stat().st_size
    return total


def graph_summary(path: str | Path) -> dict[str, Any]:
    """Operator counts, initializer types and the number of quantized weights (for reports)."""
    model = _load(path)
    ops = op_counts(model)
    inits = initializer_types(model)
    return {
        "ops": ops,
        "initializer_types": inits,
        "quantized_weights": sum(inits.get(t, 0) for t in ("INT8", "UINT8", "INT4", "UINT4", "INT16", "UINT16")),
        "size_bytes": model_size_bytes(path),
    }
