"""ONNX export: symbolic axes, validation against PyTorch, typed failures."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from quantkit.errors import ExportValidationError
from quantkit.export import export_onnx, symbolic_axes, validate_outputs, validation_shapes
from quantkit.spec import ExportSpec


def test_export_has_symbolic_batch_and_sequence(tiny_fp32):
    axes = symbolic_axes(tiny_fp32.path)
    assert set(axes) == {"input_ids", "attention_mask", "token_type_ids"}
    for dims in axes.values():
        assert len(dims) == 2
        assert all(isinstance(d, str) and d for d in dims), dims
    assert tiny_fp32.output_names == ["logits"]
    assert tiny_fp32.max_abs_diff is not None and tiny_fp32.max_abs_diff < 1e-4


def test_exported_model_runs_at_several_shapes(tiny_fp32, tiny_loaded):
    sess = ort.InferenceSession(str(tiny_fp32.path), providers=["CPUExecutionProvider"])
    for batch, seq in [(1, 5), (4, 64), (7, 128)]:
        feeds = {i.name: np.ones((batch, seq), dtype=np.int64) for i in sess.get_inputs()}
        (logits,) = sess.run(None, feeds)
        assert logits.shape == (batch, 2)


def test_validation_uses_two_distinct_shapes():
    shapes = validation_shapes(ExportSpec(), 512)
    assert len(shapes) == 2 and shapes[0] != shapes[1]
    assert len({b for b, _ in shapes}) == 2 and len({s for _, s in shapes}) == 2


def test_validation_fails_with_max_diff_when_onnx_is_wrong(tiny_fp32, tiny_loaded, tmp_path):
    model = onnx.load(str(tiny_fp32.path))
    for init in model.graph.initializer:
        if init.name.endswith("classifier.bias"):
            bias = numpy_helper.to_array(init) + 0.5
            init.CopyFrom(numpy_helper.from_array(bias.astype(np.float32), init.name))
            break
    else:  # pragma: no cover - the exporter names it so
        pytest.fail("classifier.bias initializer not found")
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(ExportValidationError, match=r"max abs diff 0\.5 > atol 0\.0001") as info:
        validate_outputs(broken, tiny_loaded, [(2, 8), (3, 11)], atol=1e-4)
    assert info.value.max_abs_diff == pytest.approx(0.5, abs=1e-4)
    assert info.value.atol == 1e-4
    assert isinstance(info.value, RuntimeError)


def test_fixed_axes_are_pinned(tiny_loaded, tmp_path):
    spec = ExportSpec(dynamic_axes=["batch"], static_sequence_length=24)
    exported = export_onnx(tiny_loaded, tmp_path, spec)
    for dims in symbolic_axes(exported.path).values():
        assert isinstance(dims[0], str) and dims[1] == 24
    assert exported.max_abs_diff is not None and exported.max_abs_diff < 1e-4
