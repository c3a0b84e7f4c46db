"""What every exporter shares: the exported model, its inputs/axes, pinned axes, and the check against PyTorch."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ExportError, ExportValidationError
from ..models import LoadedModel
from ..spec import ExportSpec

logger = logging.getLogger(__name__)

__all__ = ["ExportedModel", "validate_outputs", "validation_shapes", "onnx_io", "symbolic_axes", "fix_axes",
           "sample_inputs", "INPUT_AXES"]

#: Symbolic names of the tokenizer inputs' axes (optimum-onnx's names, kept so graphs look the same).
INPUT_AXES = {0: "batch_size", 1: "sequence_length"}
#: Spec axis name → input dimension.
_AXIS_NAMES = {"batch": 0, "sequence": 1}


@dataclass
class ExportedModel:
    """An FP32 ONNX model on disk."""

    path: Path
    task: str
    opset: int
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None
    #: The exporter that wrote it (``quantkit`` or ``optimum``; see :data:`quantkit.export.EXPORTERS`).
    exporter: str = "quantkit"


def onnx_io(path: str | Path) -> tuple[list[str], list[str]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits], [o.name for o in model.graph.output]


def symbolic_axes(path: str | Path) -> dict[str, list[str | int]]:
    """Each graph input's dims: a string for a symbolic dim, an int for a fixed one."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, list[str | int]] = {}
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        out[inp.name] = [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in dims]
    return out


def fix_axes(path: Path, spec: ExportSpec) -> None:
    """Pin the input axes that are not listed in ``spec.dynamic_axes``."""
    import onnx

    fixed = {
        axis: value
        for axis, value in (("batch", spec.static_batch_size), ("sequence", spec.static_sequence_length))
        if axis not in spec.dynamic_axes
    }
    if not fixed:
        return
    model = onnx.load(str(path))
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        for axis, value in fixed.items():
            idx = _AXIS_NAMES[axis]
            if idx < len(dims):
                dims[idx].Clear()
                dims[idx].dim_value = value
    onnx.save(model, str(path))


def sample_inputs(
    input_names: list[str], batch: int, seq: int, vocab_size: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for name in input_names:
        if name == "input_ids":
            feeds[name] = rng.integers(0, vocab_size, size=(batch, seq), dtype=np.int64)
        elif name == "attention_mask":
            mask = np.ones((batch, seq), dtype=np.int64)
            for row in range(1, batch):  # varied padding, first row full
                mask[row, seq - rng.integers(1, max(seq // 2, 2)) :] = 0
            feeds[name] = mask
        elif name == "token_type_ids":
            feeds[name] = np.zeros((batch, seq), dtype=np.int64)
        elif name == "position_ids":
            feeds[name] = np.tile(np.arange(seq, dtype=np.int64), (batch, 1))
        else:
            raise ExportError(f"cannot build sample values for ONNX input {name!r}")
    return feeds


def validation_shapes(spec: ExportSpec, max_positions: int) -> list[tuple[int, int]]:
    """Two distinct (batch, sequence) shapes compatible with the export's fixed axes."""
    seq_cap = max(min(max_positions, 512), 2)
    shapes = [(2, min(16, seq_cap)), (3, min(37, seq_cap))]
    if "batch" not in spec.dynamic_axes:
        shapes = [(spec.static_batch_size, s) for _, s in shapes]
    if "sequence" not in spec.dynamic_axes:
        shapes = [(b, spec.static_sequence_length) for b, _ in shapes]
    return list(dict.fromkeys(shapes))


def validate_outputs(
    onnx_path: str | Path,
    loaded: LoadedModel,
    shapes: list[tuple[int, int]],
    *,
    atol: float,
    seed: int = 0,
) -> float:
    """Run ONNX Runtime and PyTorch on random inputs of each shape; return the max abs diff (of per-token
    outputs, at the positions the attention mask keeps: what padded positions hold is not part of the contract).

    Raises :class:`ExportValidationError` naming the output, shape and difference
    when it exceeds ``atol`` (the approach of optimum's ``validate_model_outputs``).
    """
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(seed)
    vocab = int(getattr(loaded.config, "vocab_size", 1000))
    worst = 0.0
    for batch, seq in shapes:
        feeds = sample_inputs(input_names, batch, seq, vocab, rng)
        onnx_out = session.run(None, feeds)
        with torch.inference_mode():
            ref = loaded.model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        for name, got in zip(output_names, onnx_out):
            expected = ref[name] if name in ref else ref[0]
            expected = expected.detach().float().numpy()
            if expected.shape != got.shape:
                raise ExportValidationError(
                    f"output {name!r} at input shape {(batch, seq)}: ONNX shape {got.shape} != PyTorch {expected.shape}",
                    max_abs_diff=float("inf"),
                    atol=atol,
                )
            delta = np.abs(expected - got)
            mask = feeds.get("attention_mask")
            if mask is not None and delta.ndim >= 2 and delta.shape[:2] == mask.shape:
                delta = delta[mask.astype(bool)]  # per-token outputs: padded positions mean nothing
            diff = float(np.max(delta)) if delta.size else 0.0
            worst = max(worst, diff)
            if not np.isfinite(diff) or diff > atol:
                raise ExportValidationError(
                    f"output {name!r} at input shape {(batch, seq)}: max abs diff {diff:.3g} > atol {atol:g}",
                    max_abs_diff=diff,
                    atol=atol,
                    hint="raise export.atol if the difference is expected, or try another export.opset",
                )
    logger.info("ONNX export matches PyTorch: max abs diff %.3g (atol %g) at shapes %s", worst, atol, shapes)
    return worst
