"""Export a transformers model to ONNX and check it against PyTorch.

:func:`export_onnx` picks an exporter from the registry (:data:`EXPORTERS`: ``quantkit``, quantkit's own
TorchScript exporter, and ``optimum``, optimum-onnx's where it is installed) by ``export.exporter``,
then pins the axes the spec fixes and validates the graph against PyTorch at two input shapes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from ..models import LoadedModel
from ..spec import ExportSpec
from .base import (EXPORTER_CHOICES, EXPORTERS, Exporter, exportable_tasks, optimum_onnx_available,
                   resolve_exporter)
from .validate import (INPUT_AXES, ExportedModel, fix_axes, onnx_io, sample_inputs, symbolic_axes,
                       validate_outputs, validation_shapes)

logger = logging.getLogger(__name__)

__all__ = ["ExportedModel", "export_onnx", "validate_outputs", "validation_shapes", "onnx_io", "symbolic_axes",
           "fix_axes", "sample_inputs", "INPUT_AXES", "Exporter", "EXPORTERS", "EXPORTER_CHOICES",
           "exportable_tasks", "optimum_onnx_available", "resolve_exporter"]

# Older private names, still imported by a few callers.
_sample_inputs = sample_inputs
_fix_axes = fix_axes


def export_onnx(loaded: LoadedModel, output_dir: str | Path, spec: ExportSpec) -> ExportedModel:
    """Export ``loaded`` to ``output_dir/model.onnx`` with symbolic batch/sequence axes, then validate it.

    The exporter is ``spec.exporter`` (``auto``: see :func:`resolve_exporter`); the result records it.
    """
    name = resolve_exporter(spec.exporter, loaded.model_type, loaded.task)
    exporter = EXPORTERS.get(name)()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="quantkit-export-", dir=output_dir) as tmp:
        produced = exporter.export(loaded, Path(tmp), spec.opset)
        path = output_dir / "model.onnx"
        shutil.move(str(produced), path)
        data_file = produced.parent / (produced.name + "_data")
        if data_file.exists():
            shutil.move(str(data_file), output_dir / data_file.name)
    fix_axes(path, spec)
    inputs, outputs = onnx_io(path)
    exported = ExportedModel(path=path, task=loaded.task, opset=spec.opset, input_names=inputs,
                             output_names=outputs, exporter=name)
    if spec.validate_outputs:
        max_pos = int(getattr(loaded.config, "max_position_embeddings", 512))
        if "past_key_values.0.key" in inputs:  # a decoder: prefill, then a decode step with the returned cache
            from .decoder import validate_decoder

            lengths = [n for n in (5, 33) if n < max_pos] or [max(max_pos - 2, 2)]
            exported.max_abs_diff = validate_decoder(path, loaded, lengths, atol=spec.atol)
        else:
            exported.max_abs_diff = validate_outputs(path, loaded, validation_shapes(spec, max_pos), atol=spec.atol)
    return exported
