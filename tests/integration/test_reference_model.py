"""End to end on the reference model (../shared/models/minilm-spam) and its real validation data.

Acceptance of the foundation: FP32 ONNX matches PyTorch's accuracy, dynamic and static int8
each keep accuracy >= 0.945, the quantized file is <= 0.30 of FP32, the graphs are really
quantized, and the folder runs in quantkit.runtime (and, on the optimum stack, in Optimum's ORTModel and
pipeline(); there both exporters also give the same fused int8 graph). Speed ratios are measured by bench/.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REFERENCE_MODEL, REPO, SPAM_DATA
from typer.testing import CliRunner

from quantkit.cli import app
from quantkit.graph import graph_summary

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def torch_accuracy() -> float:
    """PyTorch FP32 accuracy on validation.jsonl at max_length 128."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = [json.loads(line) for line in open(SPAM_DATA / "validation.jsonl", encoding="utf-8")]
    tok = AutoTokenizer.from_pretrained(REFERENCE_MODEL)
    model = AutoModelForSequenceClassification.from_pretrained(REFERENCE_MODEL).eval()
    preds = []
    with torch.inference_mode():
        for i in range(0, len(rows), 64):
            enc = tok([r["text"] for r in rows[i : i + 64]], truncation=True, max_length=128,
                      padding="max_length", return_tensors="pt")
            preds.append(model(**enc).logits.argmax(-1).numpy())
    return float(np.mean(np.concatenate(preds) == np.array([r["label"] for r in rows])))


SPAM_AND_HAM = ["WIN a FREE prize now!!! click here to claim your cash", "Hi team, the meeting moved to 3pm."]


def _run(recipe: str, out) -> dict:
    result = runner.invoke(app, ["quantize", "--model", str(REFERENCE_MODEL), "--config",
                                 str(REPO / "recipes" / recipe), "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "quantkit_report.json").read_text())


@pytest.fixture(scope="module")
def reference_artifacts(tmp_path_factory):
    """``recipe -> (folder, report)``, each recipe quantized once per module (on first use)."""
    made: dict[str, tuple] = {}

    def get(recipe: str):
        if recipe not in made:
            out = tmp_path_factory.mktemp(recipe.removesuffix(".yaml")) / "out"
            made[recipe] = (out, _run(recipe, out))
        return made[recipe]

    return get


@pytest.mark.parametrize("recipe", ["minilm-spam-dynamic.yaml", "minilm-spam-static.yaml"])
def test_reference_recipe(recipe, reference_artifacts, torch_accuracy):
    out, report = reference_artifacts(recipe)
    assert report["export"]["exporter"] == "quantkit"  # export.exporter auto, on either stack
    assert report["evaluation"]["examples"] == 591
    assert abs(report["fp32"]["value"] - torch_accuracy) <= 0.002
    assert report["quantized"]["value"] >= 0.945
    assert report["result"]["size_ratio"] <= 0.30
    graph = graph_summary(out / "model.onnx")
    if "dynamic" in recipe:
        # fused first (export.optimize: auto): Q/K/V projections inside QAttention, 3 more MatMuls per layer
        assert graph["ops"]["QAttention"] == 6 and graph["ops"]["MatMulInteger"] >= 18
        assert graph["ops"].get("MatMul", 0) == 0 and graph["ops"].get("Attention", 0) == 0
        optimization = report["quantization"]["optimization"]
        assert optimization["level"] == "transformer-noskip" and optimization["fused"]["Attention"] == 6
        # residual Add + LayerNormalization kept apart (ONNX Runtime's SkipLayerNormalization kernel is slower)
        assert graph["ops"].get("SkipLayerNormalization", 0) == 0 and graph["ops"]["LayerNormalization"] == 13
        assert optimization["max_abs_diff"] <= 1e-3
        assert report["hardware"]["target"] == report["hardware"]["detected_target"]
        assert set(report["hardware"]["defaults"]) >= {"weight_type", "reduce_range"}
        shapes = report["shapes"]
        assert {(c["batch_size"], c["sequence_length"]) for c in shapes["cells"]} == {
            (b, s) for b in (1, 8) for s in (32, 128, 256)}
        assert shapes["dynamic_axes"]["batch_and_sequence_symbolic"] is True
        assert shapes["min_agreement"] >= 0.95  # int8 vs FP32 predictions at every shape
        assert shapes["batch_invariance"]["fp32"]["identical_predictions"] == 1.0
        assert shapes["batch_invariance"]["int8"]["identical_predictions"] >= 0.95
        assert (out / "fp32" / "model.onnx").is_file()  # output.keep_fp32: the benchmark baseline
    else:
        assert graph["ops"]["QuantizeLinear"] >= 36 and graph["ops"]["DequantizeLinear"] >= 36
        assert graph["initializer_types"]["INT8"] >= 37  # weights + embedding table
    assert report["quantized"]["latency"]["p50_ms"] > 0 and report["fp32"]["latency"]["p50_ms"] > 0

    from quantkit.runtime import load

    preds = load(str(out))(SPAM_AND_HAM)
    assert [p["label"] for p in preds] == ["spam", "ham"] and all(p["score"] > 0.5 for p in preds)


@pytest.mark.optimum
def test_reference_artifact_loads_in_optimum(reference_artifacts):
    """The dynamic artifact in Optimum's ORTModel + pipeline(), and quantkit.runtime gives the same logits."""
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    from quantkit.runtime import load

    out, _ = reference_artifacts("minilm-spam-dynamic.yaml")
    model = ORTModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    clf = pipeline("text-classification", model=model, tokenizer=tokenizer)
    preds = clf(SPAM_AND_HAM)
    assert [p["label"] for p in preds] == ["spam", "ham"]
    enc = dict(tokenizer(SPAM_AND_HAM, padding=True, return_tensors="np"))
    np.testing.assert_allclose(load(str(out)).run(enc)["logits"], np.asarray(model(**enc).logits), atol=1e-5)


@pytest.mark.optimum
def test_reference_exporters_fuse_and_quantize_alike(tmp_path):
    """quantkit's exporter and optimum-onnx's, side by side on the reference model: both match PyTorch,
    fuse into the same ops and quantize to QAttention 6 / MatMulInteger >= 18 (dynamic int8)."""
    from quantkit.backends import get_backend
    from quantkit.export import export_onnx
    from quantkit.fusion import optimize_graph
    from quantkit.graph import op_counts
    from quantkit.models import load_model
    from quantkit.spec import ExportSpec, QuantizationConfig

    loaded = load_model(str(REFERENCE_MODEL))
    results = {}
    for exporter in ("quantkit", "optimum"):
        work = tmp_path / exporter
        fp32 = export_onnx(loaded, work / "fp32", ExportSpec(exporter=exporter))
        assert fp32.exporter == exporter and fp32.max_abs_diff < 1e-4
        assert fp32.input_names == ["input_ids", "attention_mask", "token_type_ids"]
        fused, section = optimize_graph(fp32, "transformer", work / "fused", model_type=loaded.model_type,
                                        model_config=loaded.config, atol=1e-3)
        quantized = get_backend("onnxruntime").quantize(fused, QuantizationConfig(reduce_range=True),
                                                        work / "q" / "model.onnx", workdir=work)
        results[exporter] = (section["fused"], op_counts(quantized.path))
    (fused_q, ops_q), (fused_o, ops_o) = results["quantkit"], results["optimum"]
    assert fused_q == fused_o and fused_q["Attention"] == 6
    assert ops_q["QAttention"] == ops_o["QAttention"] == 6
    assert ops_q["MatMulInteger"] == ops_o["MatMulInteger"] >= 18


@pytest.mark.slow
def test_reference_tune_within_tolerance(tmp_path):
    """recipes/minilm-spam-tune.yaml: the chosen model is within 1% relative, in <= 20 trials."""
    out = tmp_path / "tuned"
    result = runner.invoke(app, ["tune", "--model", str(REFERENCE_MODEL), "--config",
                                 str(REPO / "recipes" / "minilm-spam-tune.yaml"), "--output", str(out),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "quantkit_report.json").read_text())
    tuning = report["tuning"]
    assert tuning["within_tolerance"] and len(tuning["trials"]) <= 20
    assert report["quantized"]["value"] >= 0.99 * report["fp32"]["value"]
    chosen = tuning["trials"][tuning["chosen_trial"]]
    assert chosen["passed"] and chosen["metric"] == pytest.approx(report["quantized"]["value"], abs=1e-9)
    assert (out / "tuning.png").is_file() and (out / "trials.db").is_file()
    assert report["result"]["size_ratio"] <= 0.30


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["minilm-spam-inc-static.yaml", "minilm-spam-qat.yaml"])
def test_reference_neural_compressor(recipe, tmp_path):
    """Intel Neural Compressor PTQ and QAT: ONNX folder the runtime loads, int8 weights, <= 0.35 of FP32."""
    out = tmp_path / "out"
    report = _run(recipe, out)
    assert report["quantized"]["value"] >= 0.945
    assert report["result"]["size_ratio"] <= 0.35
    graph = graph_summary(out / "model.onnx")
    assert graph["initializer_types"]["INT8"] >= 37 and graph["ops"]["DequantizeLinear"] >= 37
    if "qat" in recipe:
        training = report["quantization"]["training"]
        assert training["steps"] > 0 and 0 < training["last_loss"] < 10

    from quantkit.runtime import load

    assert load(str(out))(SPAM_AND_HAM[0])["label"] == "spam"
