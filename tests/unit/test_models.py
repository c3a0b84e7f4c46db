"""quantkit.models: loading a checkpoint for a task, and refusing a task whose head the checkpoint does not hold
(a head initialised at random would be quantized, scored at chance and published as a success)."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from conftest import tiny_spec, write_spec
from typer.testing import CliRunner

from quantkit.cli import app
from quantkit.errors import SpecError
from quantkit.models import head_mismatch, load_model


def test_head_mismatch_rule(tiny_loaded) -> None:
    config = tiny_loaded.config  # a BertForSequenceClassification
    assert head_mismatch(config, "text-classification") is None
    assert head_mismatch(config, "feature-extraction") is None  # embeddings read the encoder: no head needed
    why = head_mismatch(config, "token-classification")
    assert why is not None and "BertForSequenceClassification (text-classification)" in why
    assert "token-classification head is not in the weights" in why


def test_load_model_refuses_a_missing_head_unless_asked(tiny_model_dir, caplog) -> None:
    with pytest.raises(SpecError, match=r"model\.task: 'token-classification', but the checkpoint is a "
                                        r"BertForSequenceClassification .*model\.new_head: true"):
        load_model(str(tiny_model_dir), task="token-classification")
    loaded = load_model(str(tiny_model_dir), task="token-classification", new_head=True)
    assert loaded.task == "token-classification" and type(loaded.model).__name__ == "BertForTokenClassification"
    assert "model.new_head" in caplog.text
    assert load_model(str(tiny_model_dir), task="feature-extraction").task == "feature-extraction"


def test_quantize_refuses_a_spec_for_another_tasks_head(tiny_task_models, tiny_data_dir, tmp_path) -> None:
    """The spam-classifier spec pointed at a tagger: exit 2 in seconds (check and quantize), nothing written."""
    tagger = tiny_task_models["token-classification"]
    raw = tiny_spec(tagger, tiny_data_dir, **{"model.task": "text-classification",
                                              "quantization": {"approach": "dynamic", "op_types": ["MatMul"]}})
    path = write_spec(tmp_path / "spam.yaml", yaml.safe_dump(raw))
    runner = CliRunner()
    checked = runner.invoke(app, ["check", "--config", str(path), "--json"])
    problems = {p["key_path"]: p for p in json.loads(checked.output)["problems"] if p["severity"] == "error"}
    assert checked.exit_code == 2 and "head is not in the weights" in problems["model.task"]["message"]
    started = time.perf_counter()
    ran = runner.invoke(app, ["quantize", "--config", str(path), "--output", str(tmp_path / "out"), "--no-check"])
    assert ran.exit_code == 2 and "head is not in the weights" in ran.output
    assert time.perf_counter() - started < 60 and not (tmp_path / "out").exists()
