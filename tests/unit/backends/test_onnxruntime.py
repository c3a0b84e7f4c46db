"""The onnxruntime backend on the tiny BERT: graph structure and numerics."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from quantkit.backends import BACKENDS, get_backend
from quantkit.backends.onnxruntime import BatchReader
from quantkit.data import load_text_dataset
from quantkit.errors import QuantizationError, RegistryError
from quantkit.graph import graph_summary, op_counts
from quantkit.spec import DatasetSpec, QuantizationConfig
from quantkit.tasks import task_for


@pytest.fixture(scope="module")
def tiny_data(tiny_loaded, tiny_data_dir):
    def load(name: str):
        return load_text_dataset(
            DatasetSpec(path=str(tiny_data_dir / f"{name}.jsonl")),
            tiny_loaded.tokenizer,
            task_for("text-classification", tiny_loaded.config),
            key=f"data.{name}",
            max_length=32,
            padding="max_length",
        )

    return {"train": load("train"), "validation": load("validation")}


def _logits(path, data):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return np.concatenate([sess.run(None, b)[0] for b in data.batches(16, names)])


def _quantize(tiny_fp32, tmp_path, data=None, **cfg):
    config = QuantizationConfig(**cfg)
    return get_backend("onnxruntime").quantize(
        tiny_fp32, config, tmp_path / "q.onnx", calibration=data, workdir=tmp_path
    )


def _matmuls(fp32_path) -> int:
    """MatMul nodes plus the pooler/classifier Gemms (pre-processing turns those into MatMul + Add)."""
    ops = op_counts(fp32_path)
    return ops.get("MatMul", 0) + ops.get("Gemm", 0)


def test_dynamic_replaces_every_matmul_with_matmulinteger(tiny_fp32, tiny_data, tmp_path):
    q = _quantize(tiny_fp32, tmp_path, approach="dynamic", op_types=["MatMul"])
    ops = q.summary["ops"]
    assert ops.get("MatMulInteger") == _matmuls(tiny_fp32.path)
    assert ops.get("MatMul", 0) == 0
    assert ops.get("DynamicQuantizeLinear", 0) >= 1
    assert q.summary["initializer_types"].get("INT8", 0) >= 2 * 6  # 6 weight MatMuls per layer, 2 layers
    ref, got = _logits(tiny_fp32.path, tiny_data["validation"]), _logits(q.path, tiny_data["validation"])
    np.testing.assert_allclose(got, ref, atol=0.05, rtol=0)


def test_dynamic_weights_only_keeps_attention_products_in_fp32(tiny_fp32, tmp_path):
    q = _quantize(tiny_fp32, tmp_path, approach="dynamic", op_types=["MatMul"], weights_only_matmul=True)
    ops = q.summary["ops"]
    # per layer: Q, K, V, output, two FFN weight MatMuls quantized, plus pooler and classifier;
    # QK^T and AV stay float
    assert ops["MatMulInteger"] == 2 * 6 + 2
    assert ops["MatMul"] == 2 * 2


def test_static_qdq_has_int8_weights_and_qdq_pairs(tiny_fp32, tiny_data, tmp_path):
    q = _quantize(
        tiny_fp32, tmp_path, tiny_data["train"], approach="static", format="qdq", op_types=["MatMul", "Gather"],
        calibration={"num_samples": 32, "batch_size": 8},
    )
    ops = q.summary["ops"]
    assert ops["QuantizeLinear"] >= _matmuls(tiny_fp32.path)
    assert ops["DequantizeLinear"] > ops["QuantizeLinear"]  # weights have a DequantizeLinear only
    assert q.summary["initializer_types"]["INT8"] >= 2 * 6 + 1  # weights + embedding table
    assert q.calibration_s > 0
    ref, got = _logits(tiny_fp32.path, tiny_data["validation"]), _logits(q.path, tiny_data["validation"])
    np.testing.assert_allclose(got, ref, atol=0.05, rtol=0)


def test_static_qoperator_uses_qlinear_ops(tiny_fp32, tiny_data, tmp_path):
    q = _quantize(
        tiny_fp32, tmp_path, tiny_data["train"], approach="static", format="qoperator",
        calibration={"num_samples": 16, "batch_size": 8},
    )
    ops = q.summary["ops"]
    assert ops.get("QLinearMatMul", 0) >= 2 * 6
    assert ops.get("QuantizeLinear", 0) >= 1 and ops.get("DequantizeLinear", 0) >= 1


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_streams_and_quantizes(tiny_fp32, tiny_data, tmp_path, method):
    q = _quantize(
        tiny_fp32, tmp_path, tiny_data["train"], approach="static",
        calibration={"method": method, "num_samples": 40, "batch_size": 4, "num_bins": 256},
    )
    assert q.summary["ops"]["QuantizeLinear"] >= 1
    got = _logits(q.path, tiny_data["validation"])
    assert np.isfinite(got).all()


def test_excluded_nodes_stay_float(tiny_fp32, tmp_path):
    import onnx

    names = [n.name for n in onnx.load(str(tiny_fp32.path)).graph.node if n.op_type == "MatMul"]
    q = _quantize(tiny_fp32, tmp_path, approach="dynamic", op_types=["MatMul"], nodes_to_exclude=names[:3])
    assert q.summary["ops"]["MatMul"] == 3
    assert q.summary["ops"]["MatMulInteger"] == _matmuls(tiny_fp32.path) - 3


def test_per_channel_weights_have_one_scale_per_column(tiny_fp32, tmp_path):
    import onnx
    from onnx import numpy_helper

    q = _quantize(tiny_fp32, tmp_path, approach="dynamic", op_types=["MatMul"], per_channel=True)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(q.path)).graph.initializer}
    scales = [v for k, v in inits.items() if k.endswith("_scale") and v.ndim == 1 and v.size > 1]
    assert scales, "per-channel quantization should produce vector scales"


def test_static_without_calibration_is_refused(tiny_fp32, tmp_path):
    with pytest.raises(QuantizationError, match="static quantization needs data.calibration"):
        _quantize(tiny_fp32, tmp_path, approach="static")


def test_nothing_to_quantize_is_an_error(tiny_fp32, tmp_path):
    with pytest.raises(QuantizationError, match="quantized nothing"):
        _quantize(tiny_fp32, tmp_path, approach="dynamic", op_types=["Conv"])


def test_unknown_backend_lists_known_ones():
    with pytest.raises(RegistryError, match=r"unknown backend 'tensorrt'; known: .*onnxruntime"):
        BACKENDS.get("tensorrt")


def test_batch_reader_ranges(tiny_data):
    data = tiny_data["train"].select(20)
    reader = BatchReader(data, 8, ["input_ids", "attention_mask", "token_type_ids"])
    assert len(reader) == 3
    reader.set_range(1, 3)
    sizes = []
    while (b := reader.get_next()) is not None:
        sizes.append(b["input_ids"].shape[0])
    assert sizes == [8, 4]
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["input_ids"], data.inputs["input_ids"][8:16])


def test_graph_summary_counts_quantized_weights(tiny_fp32):
    summary = graph_summary(tiny_fp32.path)
    assert summary["quantized_weights"] == 0
    assert summary["initializer_types"]["FLOAT"] > 10
    assert summary["size_bytes"] == tiny_fp32.path.stat().st_size


def test_quantization_leaves_no_stray_files_in_the_working_directory(tiny_fp32, tiny_data, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    _quantize(tiny_fp32, tmp_path / "w", approach="dynamic")
    _quantize(tiny_fp32, tmp_path / "s", tiny_data["train"], approach="static",
              calibration={"num_samples": 16, "batch_size": 8})
    assert list(cwd.iterdir()) == []
