"""Weight-only quantization of decoder graphs: node counts and bit widths per configuration, the algorithms,
exclusions, and the spec's refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from pydantic import ValidationError

from quantkit.backends import get_backend
from quantkit.backends.weight_only import weight_groups
from quantkit.spec import QuantizationConfig, WeightOnlySpec
from quantkit.specio import parse_spec


def _config(**weights) -> QuantizationConfig:
    return QuantizationConfig(approach="weight_only", weight_only=weights)


def _nodes(path) -> dict[str, list]:
    model = onnx.load(str(path))
    out: dict[str, list] = {}
    for n in model.graph.node:
        out.setdefault(n.op_type, []).append(n)
    return out


_DEFAULTS = {"bits": 4}  # the contrib ops' schema defaults (GatherBlockQuantized omits bits=4)


def _attr(node, name):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), _DEFAULTS.get(name))


LINEAR_PER_LAYER = 7  # q, k, v, o, gate, up, down


@pytest.mark.parametrize("bits,lm_head,embeddings", [(4, "int8", "int8"), (8, "int8", "int4"), (4, "int4", "fp32"),
                                                     (4, "fp32", "int8")])
def test_each_configuration_gives_the_expected_quantized_nodes(bits, lm_head, embeddings, llama_fp32, tmp_path):
    fp32_groups = weight_groups(onnx.load(str(llama_fp32.path)), [])
    assert len(fp32_groups.body) == 2 * LINEAR_PER_LAYER and fp32_groups.lm_head and fp32_groups.embedding
    out = get_backend("onnxruntime").quantize(llama_fp32, _config(bits=bits, block_size=32, lm_head=lm_head,
                                                                  embeddings=embeddings), tmp_path / "q.onnx")
    nodes = _nodes(out.path)
    nbits = nodes.get("MatMulNBits", [])
    assert len(nbits) == 2 * LINEAR_PER_LAYER + (lm_head != "fp32")
    head = [n for n in nbits if n.name.startswith(fp32_groups.lm_head)]
    body = [n for n in nbits if n not in head]
    assert {_attr(n, "bits") for n in body} == {bits}
    assert {_attr(n, "block_size") for n in body} == {32}
    assert {_attr(n, "accuracy_level") for n in body} == {4}
    if lm_head != "fp32":
        assert _attr(head[0], "bits") == (8 if lm_head == "int8" else 4)
    else:
        assert fp32_groups.lm_head in {n.name for n in nodes["MatMul"]}
    gathers = nodes.get("GatherBlockQuantized", [])
    assert len(gathers) == (embeddings != "fp32")
    if gathers:
        assert _attr(gathers[0], "bits") == (8 if embeddings == "int8" else 4)
    # weights only: no activation quantization anywhere
    assert not {"DynamicQuantizeLinear", "QuantizeLinear", "MatMulInteger"} & set(nodes)
    assert out.details["weight_only"]["linear_layers"] == 2 * LINEAR_PER_LAYER


def test_outputs_stay_close_to_fp32_and_int8_closer_than_int4(llama_fp32, tmp_path):
    import onnxruntime as ort

    from quantkit.feeds import complete_feeds

    errors = {}
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 60, size=(1, 24), dtype=np.int64)
    ref_s = ort.InferenceSession(str(llama_fp32.path), providers=["CPUExecutionProvider"])
    feeds = complete_feeds(ref_s.get_inputs(), {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    ref = ref_s.run(["logits"], feeds)[0]
    for bits in (4, 8):
        q = get_backend("onnxruntime").quantize(llama_fp32, _config(bits=bits, lm_head="int8"), tmp_path / f"{bits}.onnx")
        got = ort.InferenceSession(str(q.path), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
        errors[bits] = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert errors[8] < errors[4] < 0.5
    assert errors[8] < 0.05


@pytest.mark.parametrize("algorithm", ["hqq", "k_quant", "gptq"])
def test_other_algorithms_quantize_every_linear_layer(algorithm, llama_fp32, llama_loaded, text_file, tmp_path):
    from quantkit.data import load_text_dataset
    from quantkit.spec import DatasetSpec
    from quantkit.tasks import task_for

    calibration = None
    if algorithm == "gptq":
        task = task_for("text-generation", llama_loaded.config)
        calibration = load_text_dataset(DatasetSpec(path=str(text_file)), llama_loaded.tokenizer, task,
                                        key="data.calibration", max_length=32, padding="max_length")
    out = get_backend("onnxruntime").quantize(llama_fp32, _config(algorithm=algorithm, calibration_windows=4),
                                              tmp_path / "q.onnx", calibration=calibration)
    nbits = _nodes(out.path)["MatMulNBits"]
    assert len(nbits) == 2 * LINEAR_PER_LAYER + 1
    assert {_attr(n, "bits") for n in nbits} >= {4}
    assert (out.calibration_s > 0) == (algorithm == "gptq")


def test_exclude_patterns_keep_those_layers_in_fp32(llama_fp32, tmp_path):
    out = get_backend("onnxruntime").quantize(llama_fp32, _config(exclude=["*layers.0/*", "*down_proj*"]),
                                              tmp_path / "q.onnx")
    nodes = _nodes(out.path)
    kept = [n.name for n in nodes["MatMul"] if "proj" in n.name]
    assert sorted(kept) == sorted(set(kept))
    assert all("layers.0/" in n or "down_proj" in n for n in kept) and len(kept) == LINEAR_PER_LAYER + 1
    assert len(nodes["MatMulNBits"]) == LINEAR_PER_LAYER - 1 + 1  # layer 1 minus down_proj, plus the head
    assert len(out.details["weight_only"]["excluded"]) == LINEAR_PER_LAYER + 1


@pytest.mark.parametrize("weights,message", [
    ({"block_size": 48}, "not a power of two"),
    ({"block_size": 8}, "greater than or equal to 16"),
    ({"algorithm": "hqq", "bits": 8}, "quantizes to 4 bits"),
    ({"bits": 3}, "bits"),
    ({"exclude": ["a", "a"]}, "must not repeat"),
])
def test_bad_weight_only_settings_are_refused(weights, message):
    with pytest.raises(ValidationError, match=message):
        WeightOnlySpec(**weights)


def test_gptq_without_calibration_text_and_weight_only_on_another_approach_are_refused(text_file):
    base = {"spec_version": 1, "model": {"name_or_path": "x"}, "data": {"evaluation": {"path": str(text_file)}}}
    from quantkit.errors import SpecError

    with pytest.raises(SpecError, match="data.calibration.*gptq"):
        parse_spec({**base, "quantization": {"approach": "weight_only", "weight_only": {"algorithm": "gptq"}}})
    with pytest.raises(SpecError, match="only used with approach: weight_only"):
        parse_spec({**base, "quantization": {"approach": "dynamic", "weight_only": {"bits": 4}}})
