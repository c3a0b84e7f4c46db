"""ONNX QDQ passes on hand-built graphs: folding is exact and really stores int8."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.qdq import fold_constant_weight_qdq, fold_dq_transpose, quantize_gather_weights, quantize_linear_np


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _linear_graph(per_channel: bool) -> onnx.ModelProto:
    """x @ Transpose(DQ(Clip(Q(W)))): the shape torch.onnx gives a PT2E-quantized nn.Linear."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 4)).astype(np.float32)  # (out, in) like nn.Linear
    scale = (np.abs(w).max(axis=1) / 127).astype(np.float32) if per_channel else np.float32(np.abs(w).max() / 127)
    zp = np.zeros_like(scale, dtype=np.int8)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.asarray(scale), "s"),
             numpy_helper.from_array(np.asarray(zp), "z"),
             numpy_helper.from_array(np.array(-128, np.int8), "lo"), numpy_helper.from_array(np.array(127, np.int8), "hi")]
    axis = [helper.make_attribute("axis", 0)] if per_channel else []
    q = helper.make_node("QuantizeLinear", ["W", "s", "z"], ["Wq"])
    q.attribute.extend(axis)
    dq = helper.make_node("DequantizeLinear", ["Wc", "s", "z"], ["Wd"])
    dq.attribute.extend(axis)
    nodes = [q, helper.make_node("Clip", ["Wq", "lo", "hi"], ["Wc"]), dq,
             helper.make_node("Transpose", ["Wd"], ["Wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "Wt"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("per_channel", [False, True])
def test_fold_weight_quantize_is_exact_and_int8(per_channel):
    model = _linear_graph(per_channel)
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    before = _run(model, {"x": x})
    folded, stats = fold_constant_weight_qdq(model)
    assert stats["quantize_linear_folded"] == 1 and stats["clip_folded"] == 1
    ops = [n.op_type for n in folded.graph.node]
    assert "QuantizeLinear" not in ops and "Clip" not in ops
    inits = {i.name: i for i in folded.graph.initializer}
    assert "W" not in inits  # the FP32 weight is gone
    assert [i.data_type for i in inits.values()].count(TensorProto.INT8) >= 1
    np.testing.assert_array_equal(_run(folded, {"x": x}), before)
    transposed, tstats = fold_dq_transpose(folded)
    assert tstats["transpose_folded"] == 1 and "Transpose" not in [n.op_type for n in transposed.graph.node]
    np.testing.assert_array_equal(_run(transposed, {"x": x}), before)


def test_quantize_linear_np_rounds_half_to_even_and_saturates():
    got = quantize_linear_np(np.array([0.5, 1.5, 2.5, 1000.0, -1000.0], np.float32), np.float32(1.0),
                             np.int8(0), out_dtype=np.int8)
    assert got.tolist() == [0, 2, 2, 127, -128]


def test_gather_tables_become_int8_rows():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 8)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Gather", ["E", "ids"], ["y"], axis=0)], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
                              [numpy_helper.from_array(table, "E")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    ids = np.array([0, 7, 49], np.int64)
    quantized, stats = quantize_gather_weights(model)
    assert stats["gather_tables_quantized"] == 1
    got = _run(quantized, {"ids": ids})
    np.testing.assert_allclose(got, table[ids], atol=np.abs(table).max() / 127, rtol=0)
    assert {i.data_type for i in quantized.graph.initializer} == {TensorProto.INT8, TensorProto.FLOAT}
