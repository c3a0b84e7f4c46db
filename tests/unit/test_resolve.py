"""quantkit.resolve: the rules that need a registry (checked once, for the spec loader, the run and the pre-flight),
what a spec will do (calibration, routes), the backends' facts, and the frozen Run."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import DROP, tiny_spec

from quantkit.backends import backend_class
from quantkit.errors import SpecError
from quantkit.resolve import (
    Run,
    bind_task,
    calibration_used,
    config_issues,
    label_free_metrics,
    label_issue,
    resolve_run,
    search_backends,
    search_routes,
    spec_rule_issues,
    static_used,
)
from quantkit.spec import QuantizationConfig
from quantkit.specio import parse_spec


# --------------------------------------------------------------------------- the backends' facts
def test_backend_facts() -> None:
    ort, inc = backend_class("onnxruntime"), backend_class("neural-compressor")
    assert (ort.needs_torch, ort.optimizes_graph, ort.runs_on_workers, ort.takes_hardware_defaults) == (
        False, True, True, True)
    assert (inc.needs_torch, inc.optimizes_graph, inc.runs_on_workers, inc.takes_hardware_defaults) == (
        True, False, False, False)
    assert (ort.reads_calibration_always, inc.reads_calibration_always) == (False, True)
    calibration, evaluation = object(), object()
    assert ort.data_to_quantize_with(calibration, evaluation) is calibration
    assert ort.data_to_quantize_with(None, evaluation) is None
    assert inc.data_to_quantize_with(None, evaluation) is evaluation  # PT2E needs forward passes
    assert "qat" not in ort.approaches and "qat" in inc.approaches


@pytest.mark.parametrize("config, key, fragment", [
    ({"backend": "tensorrt"}, "quantization.backend", "'tensorrt' is not one of neural-compressor, onnxruntime"),
    ({"approach": "qat"}, "quantization.approach", "set backend: neural-compressor"),
    ({"op_types": ["Softmax"]}, "quantization.op_types", "'Softmax' cannot be quantized by onnxruntime (dynamic)"),
    ({"backend": "neural-compressor", "approach": "static", "format": "qoperator"}, "quantization.format",
     "QDQ graphs only"),
    ({"backend": "neural-compressor", "weight_type": "uint8"}, "quantization.weight_type", "x86 scheme"),
    ({"backend": "neural-compressor", "op_types": ["Conv"]}, "quantization.op_types", "['Conv'] cannot be chosen"),
    ({"backend": "neural-compressor", "reduce_range": True}, "quantization.reduce_range", "not supported"),
])
def test_config_issues_name_the_key(config, key, fragment) -> None:
    issues = config_issues(QuantizationConfig(**config))
    assert len(issues) == 1 and issues[0][0] == key and fragment in issues[0][1]


def test_a_config_every_backend_can_run_has_no_issues() -> None:
    assert config_issues(QuantizationConfig()) == []
    assert config_issues(QuantizationConfig(approach="static", format="qoperator", op_types=["Softmax"])) == []
    assert config_issues(QuantizationConfig(backend="neural-compressor", approach="qat")) == []


# --------------------------------------------------------------------------- spec rules
def test_graph_optimization_needs_a_backend_that_quantizes_the_graph(spec_model) -> None:
    spec = spec_model(**{"quantization.backend": "neural-compressor", "export.optimize": "transformer"})
    assert [k for k, _ in spec_rule_issues(spec)] == ["export.optimize"]
    assert spec_rule_issues(spec_model(**{"export.optimize": "transformer"})) == []
    searched = spec_model(tuning={"space": {"backend": ["onnxruntime", "neural-compressor"],
                                      "export.optimize": ["none", "transformer"]}})
    (issue,) = spec_rule_issues(searched)
    assert issue[0] == "tuning.space.export.optimize" and "neural-compressor" in issue[1]


def test_task_rules_on_a_named_task(spec_model) -> None:
    assert [k for k, _ in spec_rule_issues(spec_model(**{"model.task": "summarization"}))] == ["model.task"]
    wrong_metric = spec_model(**{"model.task": "question-answering", "evaluation.metric": "spearman"})
    assert [k for k, _ in spec_rule_issues(wrong_metric)] == ["evaluation.metric"]
    three = spec_model(**{"model.task": "token-classification", "evaluation.metric": "f1",
                    "data.evaluation.text_columns": ["a", "b"]})
    assert [k for k, _ in spec_rule_issues(three)] == ["data.evaluation.text_columns"]
    qat = spec_model(**{"model.task": "feature-extraction", "evaluation.metric": "spearman",
                  "quantization": {"backend": "neural-compressor", "approach": "qat"}})
    assert [k for k, _ in spec_rule_issues(qat)] == ["quantization.approach"]


def test_the_label_rule_is_one_rule(spec_model) -> None:
    assert label_free_metrics() == {"agreement", "cosine", "perplexity", "kl_divergence", "top1_agreement"}  # a text scores itself
    assert label_issue("accuracy", needs_labels=True, labelled=True) is None
    assert label_issue("agreement", needs_labels=False, labelled=False) is None
    key, message = label_issue("f1", needs_labels=True, labelled=False)
    assert key == "data.evaluation.label_column" and "'f1' needs labels" in message
    unlabelled = spec_model(**{"data.evaluation.label_column": None})
    assert [k for k, _ in spec_rule_issues(unlabelled)] == ["data.evaluation.label_column"]
    assert spec_rule_issues(spec_model(**{"data.evaluation.label_column": None, "evaluation.metric": "agreement"})) == []


def test_the_loader_runs_the_rules(spec_model, tiny_model_dir, tiny_data_dir) -> None:
    raw = tiny_spec(tiny_model_dir, tiny_data_dir, **{"quantization.backend": "neural-compressor",
                                                       "export.optimize": "basic"})
    with pytest.raises(SpecError, match=r"s\.yaml: export\.optimize: 'basic' optimizes the ONNX graph"):
        parse_spec(raw, file="s.yaml")


# --------------------------------------------------------------------------- what a spec does
def test_calibration_is_read_when_a_run_calibrates(spec_model) -> None:
    dynamic = {"quantization.approach": "dynamic"}
    assert static_used(spec_model()) and calibration_used(spec_model())
    assert not static_used(spec_model(**dynamic)) and not calibration_used(spec_model(**dynamic))
    inc_dynamic = spec_model(**dynamic, **{"quantization.backend": "neural-compressor"})
    assert not static_used(inc_dynamic) and calibration_used(inc_dynamic)  # PT2E needs forward passes
    assert not calibration_used(spec_model(**{"quantization.approach": "dynamic", "data.calibration": DROP}))
    searched = spec_model(**dynamic, tuning={"space": {"approach": ["dynamic", "static"]}})
    assert static_used(searched) and calibration_used(searched)


def test_search_routes_and_backends(spec_model) -> None:
    spec = spec_model(**{"quantization.approach": "dynamic"},
                tuning={"space": {"backend": ["onnxruntime", "neural-compressor"], "approach": ["dynamic", "static"]}})
    assert search_routes(spec) == [("onnxruntime", "dynamic", False), ("onnxruntime", "static", True),
                                   ("neural-compressor", "dynamic", True), ("neural-compressor", "static", True)]
    assert search_backends(spec) == {"onnxruntime", "neural-compressor"}
    assert search_routes(spec_model()) == [("onnxruntime", "static", False)]


# --------------------------------------------------------------------------- the run
def test_resolve_run_binds_the_task_and_fills_the_defaults(spec_model, tiny_loaded) -> None:
    spec = spec_model(**{"evaluation.metric": DROP, "hardware": "avx2"})
    run = resolve_run(spec, tiny_loaded)
    assert isinstance(run, Run) and run.task.name == "text-classification"
    assert run.spec.evaluation.metric == "accuracy"  # the task's default for labelled data
    assert run.spec.model.task == "text-classification"
    assert run.hardware["target"] == "avx2" and run.hardware["chosen"]  # avx2 defaults filled (reduce_range, ...)
    assert run.spec.quantization.reduce_range == run.hardware["chosen"].get("reduce_range", False)
    assert run.family == {"name": "BERT", "chosen": {}}
    assert run.vocab_size == tiny_loaded.config.vocab_size
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.spec = spec  # type: ignore[misc]


def test_bind_task_refuses_a_metric_that_needs_labels_without_them(spec_model, tiny_loaded) -> None:
    spec = spec_model(**{"evaluation.metric": DROP, "data.evaluation.label_column": None})
    bound, task = bind_task(spec, tiny_loaded)
    assert bound.evaluation.metric == "agreement" and task.name == "text-classification"
    with pytest.raises(SpecError, match="data.evaluation.label_column: metric 'f1' needs labels"):
        bind_task(spec_model(**{"evaluation.metric": "f1", "data.evaluation.label_column": None}), tiny_loaded)
