"""Decoder export with a KV cache: every listed family, validated against PyTorch at prefill and decode."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_decoders import DECODERS

from quantkit.export import export_onnx, symbolic_axes
from quantkit.export.decoder import DECODER_FAMILIES, cache_layout, validate_decoder
from quantkit.models import load_model
from quantkit.spec import ExportSpec


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_every_family_exports_with_past_and_matches_pytorch(family, decoder_dirs, tmp_path):
    assert family in DECODER_FAMILIES
    loaded = load_model(str(decoder_dirs[family]))
    assert loaded.task == "text-generation"
    exported = export_onnx(loaded, tmp_path, ExportSpec())
    layers = cache_layout(loaded.model).layers
    assert exported.input_names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert exported.input_names[3:] == [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    assert exported.output_names == ["logits"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    axes = symbolic_axes(exported.path)
    assert axes["input_ids"] == ["batch_size", "sequence_length"]
    assert axes["attention_mask"] == ["batch_size", "total_sequence_length"]
    past = axes["past_key_values.0.key"]
    assert past[0] == "batch_size" and past[2] == "past_sequence_length" and all(isinstance(d, int) for d in
                                                                                   (past[1], past[3]))
    # export_onnx validated prefill (5 and 33 tokens, a left-padded row) and a decode step; a third length here
    assert exported.max_abs_diff is not None and exported.max_abs_diff < 1e-4
    assert validate_decoder(exported.path, loaded, [17], atol=1e-4) < 1e-4


def test_validation_fails_on_a_graph_that_does_not_match(llama_loaded, llama_fp32, tmp_path):
    import onnx

    from quantkit.errors import ExportValidationError

    model = onnx.load(str(llama_fp32.path))
    weight = next(i for i in model.graph.initializer if len(i.dims) == 2 and "MatMul" in i.name)
    arr = onnx.numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(onnx.numpy_helper.from_array(arr, weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(ExportValidationError, match="logits"):
        validate_decoder(broken, llama_loaded, [5], atol=1e-4)


def test_tied_embeddings_stay_tied_in_torch_and_untied_tables_in_onnx(llama_loaded, llama_fp32):
    """Llama here ties lm_head to the embedding table: the graph holds the table for the Gather and its transpose
    for the head, with equal values."""
    import onnx
    from onnx import numpy_helper

    from quantkit.backends.weight_only import weight_groups

    model = onnx.load(str(llama_fp32.path))
    groups = weight_groups(model, [])
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    table = inits[nodes[groups.embedding].input[0]]
    head = inits[nodes[groups.lm_head].input[1]]
    np.testing.assert_array_equal(table.T, head)
