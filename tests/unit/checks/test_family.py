"""Family facts beyond the matrix: the pre-flight check ``model.family`` (refused routes in seconds, a warning for
model types outside the matrix), family defaults (unset fields only; the spec and the search override them),
usable positions, and the issue's reproduction: a DistilBERT, MPNet or ModernBERT next to a BERT tokenizer
(which emits ``token_type_ids``) through Intel Neural Compressor's export."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from tiny_families import build_family_model

from quantkit import families
from quantkit.families import FAMILIES, FamilyDefault, Refusal, family_of, resolve_family, usable_positions
from quantkit.spec import QuantizationConfig


def _spec(tmp_path: Path, model: Path, quantization: dict, **extra) -> Path:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"free money {i}", "label": i % 2}) + "\n" for i in range(8)))
    spec = {"spec_version": 1, "model": {"name_or_path": str(model)}, "quantization": quantization,
            "data": {"evaluation": {"path": str(data)}, "calibration": {"path": str(data)}}, **extra}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def tiny_distilbert(tmp_path_factory):
    return build_family_model("distilbert", "text-classification", tmp_path_factory.mktemp("distilbert") / "m")


def test_refused_route_is_an_error_at_preflight_and_a_warning_in_the_search(tiny_distilbert, tmp_path, monkeypatch):
    from quantkit.checks import run_checks

    family = dataclasses.replace(FAMILIES["distilbert"], refused={
        ("neural-compressor", "static", "*"): Refusal("torch.export cannot trace it", "use backend: onnxruntime")})
    monkeypatch.setitem(families.FAMILIES, "distilbert", family)
    report = run_checks(_spec(tmp_path, tiny_distilbert, {"backend": "neural-compressor", "approach": "static"}),
                        probe=False, only=["model.config", "model.task", "model.family"])
    [problem] = report.find("quantization.backend")
    assert problem.severity == "error" and problem.check == "model.family"
    assert "DistilBERT (distilbert): neural-compressor static cannot quantize a text-classification model: torch.export " \
           "cannot trace it" in problem.message and problem.hint == "use backend: onnxruntime"
    tuning = {"space": {"backend": ["onnxruntime", "neural-compressor"], "approach": ["dynamic", "static"]},
              "max_trials": 2}
    report = run_checks(_spec(tmp_path, tiny_distilbert, {"approach": "dynamic"}, tuning=tuning), probe=False,
                        only=["model.config", "model.task", "model.family"])
    assert [p.severity for p in report.find("tuning.space")] == ["warning"] and report.ok


def test_tested_families_pass_the_check_and_unknown_ones_warn_for_pytorch_routes(tiny_distilbert, tmp_path,
                                                                              monkeypatch):
    from quantkit.checks import run_checks

    spec = _spec(tmp_path, tiny_distilbert, {"backend": "neural-compressor", "approach": "static"})
    assert run_checks(spec, probe=False, only=["model.config", "model.task", "model.family"]).problems == []
    monkeypatch.setattr("quantkit.checks.family.family_of", lambda model_type: None)  # as if untested
    [problem] = run_checks(spec, probe=False, only=["model.config", "model.task", "model.family"]).problems
    assert problem.severity == "warning" and "'distilbert' is not among the encoder families" in problem.message
    assert "backend: onnxruntime" in problem.hint
    ort = _spec(tmp_path, tiny_distilbert, {"approach": "dynamic"})
    assert run_checks(ort, probe=False, only=["model.config", "model.task", "model.family"]).problems == []


def test_family_defaults_fill_unset_fields_only(monkeypatch):
    family = dataclasses.replace(FAMILIES["mpnet"], defaults={
        "weights_only_matmul": FamilyDefault(True, "measured", applies_to=(("onnxruntime", "dynamic"),))})
    monkeypatch.setitem(families.FAMILIES, "mpnet", family)
    config, chosen = resolve_family(QuantizationConfig(approach="dynamic"), "mpnet")
    assert chosen == {"weights_only_matmul": True} and config.weights_only_matmul
    assert "weights_only_matmul" in config.model_fields_set  # the search's candidates inherit it as set
    kept, chosen = resolve_family(QuantizationConfig(approach="dynamic", weights_only_matmul=False), "mpnet")
    assert chosen == {} and kept.weights_only_matmul is False  # the spec wins
    static, chosen = resolve_family(QuantizationConfig(approach="static"), "mpnet")
    assert chosen == {} and not static.weights_only_matmul  # only where it applies
    assert resolve_family(QuantizationConfig(approach="dynamic"), "gpt2")[1] == {}


def test_usable_positions_know_the_padding_offset():
    assert usable_positions(SimpleNamespace(model_type="mpnet", max_position_embeddings=514, pad_token_id=1)) == 512
    assert usable_positions(SimpleNamespace(model_type="xlm-roberta", max_position_embeddings=514, pad_token_id=1)) == 512
    assert usable_positions(SimpleNamespace(model_type="bert", max_position_embeddings=512, pad_token_id=0)) == 512
    assert family_of("xlm_roberta") is FAMILIES["xlm-roberta"] and family_of(None) is None


@pytest.mark.parametrize("model_type", ["distilbert", "mpnet", "modernbert"])
def test_pt2e_export_with_a_bert_tokenizer(model_type, tmp_path):
    """The issue's failure: a BERT tokenizer's token_type_ids went to forward's third parameter (head_mask,
    position_ids, sliding_window_mask) and torch.export refused the dynamic shapes. They are dropped now."""
    import torch
    from neural_compressor.torch.export import export
    from transformers import AutoModelForSequenceClassification, BertTokenizerFast

    from quantkit.data import load_text_dataset
    from quantkit.qat import dynamic_shapes, example_inputs, input_names
    from quantkit.spec import DatasetSpec
    from quantkit.tasks import task_for

    path = build_family_model(model_type, "text-classification", tmp_path / "m")
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "free", "money", "now"]) + "\n")
    tokenizer = BertTokenizerFast(str(vocab))  # positional: vocab_file (4.57) or vocab (5.x)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": "free money now " * (i + 1), "label": i % 2}) + "\n" for i in range(4)))
    data = load_text_dataset(DatasetSpec(path=str(rows)), tokenizer, task_for("text-classification", model.config),
                             key="data.calibration", max_length=16, padding="max_length")
    assert "token_type_ids" in data.inputs
    names = input_names(data, model)
    assert names == ["input_ids", "attention_mask"]
    graph = export(model, example_inputs=example_inputs(data, names=names), dynamic_shapes=dynamic_shapes(names, 64))
    batch = {n: torch.from_numpy(data.batch(0, 3, names)[n]) for n in names}
    with torch.inference_mode():
        torch.testing.assert_close(graph(*batch.values())[0] if isinstance(graph(*batch.values()), tuple)
                                   else graph(*batch.values()).logits, model(**batch).logits)
