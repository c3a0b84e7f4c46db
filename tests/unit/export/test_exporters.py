"""The exporter registry: quantkit's own TorchScript exporter for every task and encoder family, optimum-onnx's
behind the same interface (marker ``optimum``), ``export.exporter`` resolution, and errors without optimum-onnx."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from quantkit.errors import OptionalDependencyError, RegistryError
from quantkit.export import EXPORTERS, export_onnx, optimum_onnx_available, resolve_exporter, sample_inputs
from quantkit.export import base as export_base
from quantkit.export.torchscript import ENCODER_FAMILIES, QuantkitExporter, graph_inputs
from quantkit.models import LoadedModel, load_model
from quantkit.spec import ExportSpec
from quantkit.tasks import get_task

ALL = ["feature-extraction", "question-answering", "text-classification", "token-classification"]


class _Tok:
    def __init__(self, names=("input_ids", "token_type_ids", "attention_mask")):
        self.model_input_names = list(names)


def test_registry_and_spec_field():
    assert EXPORTERS.names() == ["optimum", "quantkit"]
    with pytest.raises(RegistryError, match="unknown exporter 'torchscript'; known: optimum, quantkit"):
        EXPORTERS.get("torchscript")
    assert ExportSpec().exporter == "auto"
    with pytest.raises(ValidationError, match="exporter"):
        ExportSpec(exporter="torchscript")


def test_quantkit_exporter_supports_encoder_families():
    for family in ("bert", "distilbert", "roberta", "xlm-roberta", "xlm_roberta", "deberta-v2", "electra", "mpnet",
                   "albert", "modernbert"):
        assert QuantkitExporter.supported_tasks(family) == ALL, family
    assert QuantkitExporter.supported_tasks("funnel") == []  # not an encoder family quantkit exports
    # gpt2 is a decoder: its one task is text-generation, on the stack whose transformers the decoder trace supports
    from quantkit.export.decoder import decoder_tracing_supported

    assert QuantkitExporter.supported_tasks("gpt2") == (["text-generation"] if decoder_tracing_supported() else [])
    assert "bert" in ENCODER_FAMILIES and len(ENCODER_FAMILIES) >= 15


def test_auto_resolves_to_quantkit_for_supported_models():
    assert resolve_exporter("auto", "bert", "text-classification") == "quantkit"
    assert resolve_exporter("auto", "xlm-roberta", "question-answering") == "quantkit"
    assert resolve_exporter("optimum", "bert", "text-classification") == "optimum"  # asked for: honoured
    # a model quantkit's exporter does not cover: optimum-onnx's when installed and it can, else quantkit's
    # (whose export then fails with its own message)
    expected = "optimum" if optimum_onnx_available() else "quantkit"
    assert resolve_exporter("auto", "gpt2", "text-classification") == expected


def test_graph_inputs_follow_forward_and_tokenizer():
    from transformers import BertForSequenceClassification, DebertaV2Config, DebertaV2Model, DistilBertModel

    assert graph_inputs(BertForSequenceClassification, _Tok(), _cfg(type_vocab_size=2)) == [
        "input_ids", "attention_mask", "token_type_ids"]  # forward's order, not the tokenizer's
    assert graph_inputs(BertForSequenceClassification, _Tok(("input_ids", "attention_mask")), _cfg()) == [
        "input_ids", "attention_mask"]  # the tokenizer makes no token types
    assert graph_inputs(DistilBertModel, _Tok(), _cfg()) == ["input_ids", "attention_mask"]  # forward takes none
    assert graph_inputs(DebertaV2Model, _Tok(), DebertaV2Config(type_vocab_size=0)) == [
        "input_ids", "attention_mask"]  # no token-type embeddings: an unused input is left out


def _cfg(**kw):
    from types import SimpleNamespace

    return SimpleNamespace(**kw)


def _tiny(family: str, task: str):
    import torch
    import transformers
    from transformers import AutoConfig

    kwargs = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                  max_position_embeddings=64, num_labels=2)
    if family == "distilbert":
        kwargs = dict(vocab_size=99, dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64)
    config = AutoConfig.for_model(family, **kwargs)
    if family == "albert":
        config.embedding_size = 16
    torch.manual_seed(0)
    model = getattr(transformers, get_task(task).auto_model).from_config(config).eval()
    return LoadedModel(model=model, tokenizer=_Tok(), task=task, name_or_path=f"tiny-{family}")


@pytest.mark.parametrize("family,inputs", [
    ("distilbert", ["input_ids", "attention_mask"]),
    ("roberta", ["input_ids", "attention_mask", "token_type_ids"]),
    ("deberta-v2", ["input_ids", "attention_mask"]),
    ("electra", ["input_ids", "attention_mask", "token_type_ids"]),
    ("mpnet", ["input_ids", "attention_mask"]),
    ("albert", ["input_ids", "attention_mask", "token_type_ids"]),
])
def test_families_export_and_validate(family, inputs, tmp_path):
    """Each family's classifier exports with the task's outputs and symbolic axes, validated vs PyTorch."""
    loaded = _tiny(family, "text-classification")
    before = loaded.model.config._attn_implementation
    exported = export_onnx(loaded, tmp_path, ExportSpec(exporter="quantkit"))
    assert exported.exporter == "quantkit" and exported.input_names == inputs
    assert exported.output_names == ["logits"] and exported.max_abs_diff < 1e-5
    assert loaded.model.config._attn_implementation == before  # eager only for the trace
    sess = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    assert [d.shape for d in sess.get_inputs()] == [["batch_size", "sequence_length"]] * len(inputs)
    assert sess.get_outputs()[0].shape == ["batch_size", 2]


@pytest.mark.parametrize("task", ALL)
def test_every_task_exports_the_task_outputs(task, tmp_path):
    loaded = _tiny("bert", task)
    exported = export_onnx(loaded, tmp_path, ExportSpec(exporter="quantkit"))
    assert exported.output_names == list(get_task(task).output_names)
    sess = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    for out in sess.get_outputs():
        axes = get_task(task).output_axes[out.name]
        assert [out.shape[i] for i in sorted(axes)] == [axes[i] for i in sorted(axes)]


def test_optimum_exporter_missing_is_a_clear_error(tiny_loaded, tmp_path, monkeypatch):
    monkeypatch.setattr(export_base, "optimum_onnx_available", lambda: False)
    with pytest.raises(OptionalDependencyError, match="optimum-onnx") as info:
        export_onnx(tiny_loaded, tmp_path, ExportSpec(exporter="optimum"))
    assert info.value.exit_code == 2 and "quantkit[optimum]" in info.value.hint
    assert isinstance(info.value, ImportError)
    assert export_base.exportable_tasks("bert") == ALL  # quantkit's exporter alone covers bert
    assert export_base.exportable_tasks("funnel") == []


def test_check_flags_optimum_exporter_without_optimum(tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch):
    from conftest import write_spec

    from quantkit.checks import run_checks
    from quantkit.specio import load_spec

    monkeypatch.setattr(export_base, "optimum_onnx_available", lambda: False)
    path = write_spec(tmp_path / "spec.yaml", f"""
spec_version: 1
model: {{name_or_path: {tiny_model_dir}}}
export: {{exporter: optimum}}
data:
  evaluation: {{path: {tiny_data_dir / 'validation.jsonl'}}}
  max_length: 32
output: {{dir: {tmp_path / 'out'}}}
""")
    problems = {p.key_path: p for p in run_checks(load_spec(path), only=["model.task"]).problems}
    assert "export.exporter" in problems and "optimum-onnx is not installed" in problems["export.exporter"].message
    assert "setup.sh --stack optimum" in problems["export.exporter"].hint


# --------------------------------------------------------------------------- the optimum stack
@pytest.mark.optimum
@pytest.mark.parametrize("task", ALL)
def test_exporters_agree_on_every_task(task, tiny_model_dir, tiny_task_models, tmp_path):
    """quantkit's and optimum-onnx's exports of the same tiny model: same inputs, outputs and axes, same
    outputs on the same feeds (atol 1e-5)."""
    folder = tiny_model_dir if task == "text-classification" else tiny_task_models[task]
    loaded = load_model(str(folder))
    exported = {name: export_onnx(loaded, tmp_path / name, ExportSpec(exporter=name))
                for name in ("quantkit", "optimum")}
    q, o = exported["quantkit"], exported["optimum"]
    assert (q.exporter, o.exporter) == ("quantkit", "optimum")
    assert q.input_names == o.input_names and q.output_names == o.output_names
    sq = ort.InferenceSession(str(q.path), providers=["CPUExecutionProvider"])
    so = ort.InferenceSession(str(o.path), providers=["CPUExecutionProvider"])
    assert [i.shape for i in sq.get_inputs()] == [i.shape for i in so.get_inputs()]
    assert [x.shape for x in sq.get_outputs()] == [x.shape for x in so.get_outputs()]
    feeds = sample_inputs(q.input_names, 3, 21, loaded.config.vocab_size, np.random.default_rng(1))
    for a, b in zip(sq.run(None, feeds), so.run(None, feeds)):
        np.testing.assert_allclose(a, b, atol=1e-5)
