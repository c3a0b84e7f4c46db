"""Graph optimization before quantization, dynamic axes through quantization, batch invariance
and the shape grid — on the tiny BERT."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest

from quantkit.backends import get_backend
from quantkit.data import load_text_dataset
from quantkit.errors import EvaluationError, ExportError, ExportValidationError
from quantkit.export import symbolic_axes
from quantkit.fusion import compare_models, optimize_graph, ort_model_type, resolve_level
from quantkit.graph import op_counts
from quantkit.latency import MIN_DECISION_ROUNDS
from quantkit.shapes import batch_invariance, check_shapes, dynamic_axes_report
from quantkit.evaluation import OnnxRunner
from quantkit.spec import DatasetSpec, LatencySpec, QuantizationConfig, ShapeGridSpec
from quantkit.specio import parse_spec
from quantkit.tasks import task_for

#: Fused vs unfused FP32 logits: same math, different kernels and summation order.
FUSED_ATOL = 1e-4


@pytest.fixture(scope="module")
def fused(tiny_fp32, tiny_loaded, tmp_path_factory):
    return optimize_graph(tiny_fp32, "transformer", tmp_path_factory.mktemp("fused"), model_type="bert",
                          model_config=tiny_loaded.config, atol=FUSED_ATOL)


@pytest.fixture(scope="module")
def data(tiny_loaded, tiny_data_dir):
    return load_text_dataset(DatasetSpec(path=str(tiny_data_dir / "validation.jsonl")), tiny_loaded.tokenizer,
                             task_for("text-classification", tiny_loaded.config), key="data.evaluation",
                             max_length=32, padding="max_length")


def test_transformer_fusion_structure_and_numerics(fused, tiny_fp32, data):
    model, section = fused
    ops = op_counts(model.path)
    assert ops.get("Attention") == 2  # one per layer of the 2-layer model
    assert ops.get("SkipLayerNormalization") == 4 and ops.get("BiasGelu") == 2
    assert ops.get("EmbedLayerNormalization") == 1
    assert ops.get("Softmax", 0) == 0 and ops.get("Transpose", 0) == 0  # attention internals are gone
    assert section["fused"]["Attention"] == 2 and section["nodes_after"] < section["nodes_before"]
    assert section["max_abs_diff"] <= FUSED_ATOL
    # on real tokenized data, with padding, too
    a = OnnxRunner(tiny_fp32.path, 1).predict(data, 8)
    b = OnnxRunner(model.path, 1).predict(data, 8)
    np.testing.assert_allclose(b, a, atol=FUSED_ATOL, rtol=0)
    assert symbolic_axes(model.path)["input_ids"] == ["batch_size", "sequence_length"]


def test_noskip_takes_skip_layer_norm_apart_and_onnxruntime_keeps_it_apart(fused, tiny_fp32, tiny_loaded, data,
                                                                          tmp_path):
    """transformer-noskip: the transformer level's fusions except SkipLayerNormalization, which becomes
    Add(input, skip) -> Add(bias) -> LayerNormalization; same numbers as the fused graph; and ONNX Runtime's
    session optimizer (ORT_ENABLE_ALL, what ORTModel and pipeline() load with) does not fuse it back."""
    model, section = optimize_graph(tiny_fp32, "transformer-noskip", tmp_path / "noskip", model_type="bert",
                                    model_config=tiny_loaded.config, atol=FUSED_ATOL)
    fused_ops = op_counts(fused[0].path)
    ops = op_counts(model.path)
    assert ops.get("SkipLayerNormalization", 0) == 0
    assert ops.get("Attention") == fused_ops["Attention"] == 2 and ops.get("BiasGelu") == 2
    assert ops["LayerNormalization"] == fused_ops.get("LayerNormalization", 0) + fused_ops["SkipLayerNormalization"]
    assert ops["Add"] == fused_ops.get("Add", 0) + 2 * fused_ops["SkipLayerNormalization"]  # skip + bias each
    assert "SkipLayerNormalization" not in section["fused"] and section["max_abs_diff"] <= FUSED_ATOL
    np.testing.assert_allclose(OnnxRunner(model.path, 1).predict(data, 8), OnnxRunner(fused[0].path, 1).predict(data, 8),
                               atol=FUSED_ATOL, rtol=0)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "session.onnx")
    ort.InferenceSession(str(model.path), so, providers=["CPUExecutionProvider"])
    assert op_counts(tmp_path / "session.onnx").get("SkipLayerNormalization", 0) == 0
    # and once quantized (what ships): MatMulInteger -> DynamicQuantizeMatMul fusions do not bring it back
    int8 = get_backend("onnxruntime").quantize(model, QuantizationConfig(approach="dynamic", op_types=["MatMul"]),
                                               tmp_path / "q" / "model.onnx", workdir=tmp_path / "qw",
                                               loaded=tiny_loaded).path
    so.optimized_model_filepath = str(tmp_path / "session-int8.onnx")
    ort.InferenceSession(str(int8), so, providers=["CPUExecutionProvider"])
    after = op_counts(tmp_path / "session-int8.onnx")
    assert after.get("SkipLayerNormalization", 0) == 0 and after["LayerNormalization"] == ops["LayerNormalization"]
    assert after.get("QAttention") == 2


def test_unfuse_refuses_a_skip_layer_norm_whose_statistics_are_used():
    from onnx import helper

    from quantkit.fusion import unfuse_skip_layer_norm

    graph = helper.make_graph([helper.make_node("SkipLayerNormalization", ["x", "s", "g", "b"], ["y", "mean", ""],
                                                domain="com.microsoft", name="sln")], "g", [], [])
    with pytest.raises(ExportError, match="sln returns its mean"):
        unfuse_skip_layer_norm(graph)
    graph = helper.make_graph([helper.make_node("SkipLayerNormalization", ["x", "s", "g", "", "bias"],
                                                ["y", "", "", "sum"], domain="com.microsoft", name="sln")], "g", [], [])
    assert unfuse_skip_layer_norm(graph) == 1
    assert [(n.op_type, list(n.input), list(n.output)) for n in graph.node] == [
        ("Add", ["x", "s"], ["sln/skip_sum"]), ("Add", ["sln/skip_sum", "bias"], ["sum"]),
        ("LayerNormalization", ["sum", "g"], ["y"])]


@pytest.mark.parametrize("level", ["basic", "extended"])
def test_ort_levels_match_the_unfused_model(tiny_fp32, tiny_loaded, tmp_path, level):
    model, section = optimize_graph(tiny_fp32, level, tmp_path, model_type="bert",
                                    model_config=tiny_loaded.config, atol=FUSED_ATOL)
    assert section["level"] == level and section["max_abs_diff"] <= FUSED_ATOL
    ops = op_counts(model.path)
    if level == "extended":
        assert {"SkipLayerNormalization", "Gelu", "BiasGelu", "FusedMatMul"} & set(ops)  # contrib-op fusions
    assert sum(ops.values()) <= sum(op_counts(tiny_fp32.path).values())


def test_none_is_the_identity(tiny_fp32, tiny_loaded, tmp_path):
    model, section = optimize_graph(tiny_fp32, "none", tmp_path, model_type="bert",
                                    model_config=tiny_loaded.config, atol=FUSED_ATOL)
    assert model is tiny_fp32 and section["level"] == "none" and not any(tmp_path.iterdir())


def test_drift_beyond_atol_is_refused(tiny_fp32, tiny_loaded, tmp_path):
    with pytest.raises(ExportValidationError, match="optimize_atol"):
        optimize_graph(tiny_fp32, "transformer", tmp_path, model_type="bert", model_config=tiny_loaded.config,
                       atol=1e-12)


def test_unsupported_model_type_for_transformer(tiny_fp32, tiny_loaded, tmp_path):
    with pytest.raises(ExportError, match="no fusions for model type 'gpt2-unknown'"):
        optimize_graph(tiny_fp32, "transformer", tmp_path, model_type="gpt2-unknown",
                       model_config=tiny_loaded.config, atol=1e-3)


def test_auto_resolution():
    assert ort_model_type("bert") == "bert" and ort_model_type("roberta") == "bert"
    assert ort_model_type("xlm_roberta") == "bert" and ort_model_type("nonexistent") is None
    assert resolve_level("auto", approach="dynamic", backend="onnxruntime", model_type="bert") == "transformer-noskip"
    assert resolve_level("auto", approach="static", backend="onnxruntime", model_type="bert") == "none"
    assert resolve_level("auto", approach="static", backend="neural-compressor", model_type="bert") == "none"
    assert resolve_level("auto", approach="dynamic", backend="onnxruntime", model_type="nonexistent") == "none"
    assert resolve_level("extended", approach="static", backend="onnxruntime", model_type="bert") == "extended"


def test_optimize_on_a_pytorch_backend_is_a_spec_error():
    from quantkit.errors import SpecError

    with pytest.raises(SpecError, match="export.optimize"):
        parse_spec({"spec_version": 1, "export": {"optimize": "transformer"},
                    "quantization": {"backend": "neural-compressor", "approach": "static"},
                    "data": {"calibration": {"path": "x.jsonl"}, "evaluation": {"path": "x.jsonl"}}})


def test_dynamic_int8_on_the_fused_graph_uses_fused_int8_kernels(fused, tiny_fp32, data, tmp_path):
    model, _ = fused
    q = get_backend("onnxruntime").quantize(model, QuantizationConfig(op_types=["MatMul"]), tmp_path / "q.onnx",
                                            workdir=tmp_path)
    ops = op_counts(q.path)
    assert ops.get("QAttention") == 2  # the fused Attention's QKV projection is int8
    assert ops.get("Attention", 0) == 0
    assert ops.get("MatMulInteger", 0) + ops.get("DynamicQuantizeMatMul", 0) >= 2 * 2 + 2  # FFN per layer, pooler, ..
    ref = OnnxRunner(tiny_fp32.path, 1).predict(data, 8)
    got = OnnxRunner(q.path, 1).predict(data, 8)
    np.testing.assert_allclose(got, ref, atol=0.05, rtol=0)
    # ORT's own session fusions turn the integer ops into fused kernels at load time
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(str(q.path), so, providers=["CPUExecutionProvider"])
    loaded_ops = op_counts(tmp_path / "loaded.onnx")
    assert loaded_ops.get("DynamicQuantizeMatMul", 0) + loaded_ops.get("MatMulIntegerToFloat", 0) >= 4


@pytest.mark.parametrize("approach", ["dynamic", "static"])
def test_dynamic_axes_survive_quantization(fused, tiny_fp32, data, tmp_path, approach):
    source = fused[0] if approach == "dynamic" else tiny_fp32
    q = get_backend("onnxruntime").quantize(source, QuantizationConfig(approach=approach), tmp_path / "q.onnx",
                                            calibration=data if approach == "static" else None, workdir=tmp_path)
    report = dynamic_axes_report(q.path)
    assert report["batch_and_sequence_symbolic"] is True
    for dims in report["inputs"].values():
        assert all(isinstance(d, str) for d in dims[:2])
    sess = ort.InferenceSession(str(q.path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for batch, seq in ((1, 7), (5, 32), (3, 64)):
        feeds = {n: np.ones((batch, seq), dtype=np.int64) for n in names}
        assert sess.run(None, feeds)[0].shape == (batch, 2)


def test_batch_invariance_is_exact_for_fp32_and_static(tiny_fp32, data, tmp_path):
    q = get_backend("onnxruntime").quantize(tiny_fp32, QuantizationConfig(approach="static"), tmp_path / "q.onnx",
                                            calibration=data, workdir=tmp_path)
    for path in (tiny_fp32.path, q.path):
        inv = batch_invariance(OnnxRunner(path, 1), data, 8, task_for("text-classification"))
        assert inv["identical_predictions"] == 1.0
        assert inv["max_abs_diff"] <= 1e-5  # only summation order may differ


def test_batch_invariance_of_dynamic_is_measured(tiny_fp32, data, tmp_path):
    q = get_backend("onnxruntime").quantize(tiny_fp32, QuantizationConfig(), tmp_path / "q.onnx", workdir=tmp_path)
    runner = OnnxRunner(q.path, 1)
    inv = batch_invariance(runner, data, 8, task_for("text-classification"))
    alone, batched = runner.predict(data, 1), runner.predict(data, 8)
    assert inv["identical_predictions"] == pytest.approx(float(np.mean(alone.argmax(1) == batched.argmax(1))))
    assert inv["max_abs_diff"] == pytest.approx(float(np.abs(alone - batched).max()))
    assert inv["max_abs_diff"] > 0  # per-tensor dynamic scales depend on the batch: not bit-invariant


def test_shape_grid_report(tiny_fp32, tiny_loaded, tiny_data_dir, tmp_path, data):
    q = get_backend("onnxruntime").quantize(tiny_fp32, QuantizationConfig(approach="static"), tmp_path / "q.onnx",
                                            calibration=data, workdir=tmp_path)
    grid = ShapeGridSpec(batch_sizes=[4, 1], sequence_lengths=[16, 64], examples=12, latency=True)
    section = check_shapes(
        tiny_fp32.path, q.path, dataset=DatasetSpec(path=str(tiny_data_dir / "validation.jsonl")),
        tokenizer=tiny_loaded.tokenizer, model_config=tiny_loaded.config, grid=grid,
        latency=LatencySpec(warmup=1, repeats=3, threads=1, rounds=1),
        task=task_for("text-classification", tiny_loaded.config),
    )
    cells = {(c["batch_size"], c["sequence_length"]): c for c in section["cells"]}
    assert set(cells) == {(1, 16), (4, 16), (1, 64), (4, 64)}
    for c in cells.values():
        assert 0 <= c["agreement"] <= 1 and c["examples"] == 12 and c["max_abs_diff"] >= 0
        interval = c["latency_ratio_interval"]  # median of per-round ratios, in-process sessions
        assert interval["low"] <= c["latency_ratio"] == interval["median"] <= interval["high"]
        # `rounds: 1` asked, but a grid cell times the rounds a ratio needs (in-process rounds are cheap)
        assert interval["rounds"] >= MIN_DECISION_ROUNDS
        assert c["fp32_p50_ms"] > 0 and c["int8_p50_ms"] > 0
        assert "timing_warning" not in c or c["timing_warning"].startswith("timings unreliable")
    assert cells[(4, 64)]["int8_batch_invariance"]["identical_predictions"] == 1.0  # static: fixed scales
    assert section["batch_invariance"]["fp32"]["max_abs_diff"] <= 1e-5
    assert section["dynamic_axes"]["batch_and_sequence_symbolic"] is True
    assert section["min_agreement"] == min(c["agreement"] for c in cells.values())
    with pytest.raises(EvaluationError, match="max_position_embeddings 128"):
        check_shapes(tiny_fp32.path, q.path, dataset=DatasetSpec(path=str(tiny_data_dir / "validation.jsonl")),
                     tokenizer=tiny_loaded.tokenizer, model_config=tiny_loaded.config,
                     grid=ShapeGridSpec(sequence_lengths=[256]), latency=LatencySpec(),
                     task=task_for("text-classification", tiny_loaded.config))
    # a model that disagrees with FP32: the classifier's weights negated
    model = onnx.load(str(tiny_fp32.path))
    gemm = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    init = next(i for i in model.graph.initializer if i.name == gemm.input[1])
    w = onnx.numpy_helper.to_array(init)
    init.CopyFrom(onnx.numpy_helper.from_array(-w, init.name))
    onnx.save(model, str(tmp_path / "flipped.onnx"))
    with pytest.raises(EvaluationError, match="min_agreement: int8 agrees with FP32 on"):
        check_shapes(tiny_fp32.path, tmp_path / "flipped.onnx",
                     dataset=DatasetSpec(path=str(tiny_data_dir / "validation.jsonl")),
                     tokenizer=tiny_loaded.tokenizer, model_config=tiny_loaded.config,
                     grid=ShapeGridSpec(batch_sizes=[2], sequence_lengths=[16], examples=8, latency=False,
                                        min_agreement=0.99),
                     latency=LatencySpec(), task=task_for("text-classification", tiny_loaded.config))


def test_compare_models_of_identical_graphs_is_zero(tiny_fp32):
    assert compare_models(tiny_fp32.path, tiny_fp32.path, vocab_size=50, shapes=[(2, 8), (1, 3)]) == 0.0
