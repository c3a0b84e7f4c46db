"""End to end on the tiny model: Quantizer API, artifact folder in Optimum/pipeline, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from conftest import DROP, write_spec
from typer.testing import CliRunner

from quantkit import QuantizationResult, Quantizer, __version__
from quantkit.cli import app
from quantkit.graph import op_counts


@pytest.fixture(scope="module")
def tiny_result(tiny_model_dir, spec_text, tmp_path_factory) -> QuantizationResult:
    root = tmp_path_factory.mktemp("pipeline")
    # no model (from_pretrained gives it), per_channel and calibration.method left to their defaults
    spec = write_spec(root / "spec.yaml", spec_text(
        output={"dir": "artifacts"},
        **{"model": DROP, "quantization.per_channel": DROP,
           "quantization.calibration": {"num_samples": 32, "batch_size": 8}, "evaluation.metric": "agreement"}))
    return Quantizer.from_pretrained(tiny_model_dir).quantize(spec, progress=False)


def test_result_and_folder(tiny_result):
    out = tiny_result.output_dir
    assert out.name == "artifacts"  # output.dir resolved against the spec's folder
    names = {p.name for p in out.iterdir()}
    # the tokenizer as its save_pretrained writes it (transformers 5: tokenizer.json, no vocab.txt)
    assert {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "ort_config.json",
            "quantkit_report.json", "quantkit_spec.yaml"} <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    ops = op_counts(out / "model.onnx")
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert tiny_result.fp32.value == 1.0  # agreement of FP32 with itself
    assert 0.8 <= tiny_result.quantized.value <= 1.0
    assert tiny_result.size_ratio < 1.0
    assert tiny_result.latency_ratio is not None and tiny_result.latency_ratio > 0


def test_report_contents(tiny_result):
    report = json.loads((tiny_result.output_dir / "quantkit_report.json").read_text())
    assert report["model"]["task"] == "text-classification"
    assert report["quantization"]["config"]["approach"] == "static"
    assert report["quantization"]["graph"]["quantized_weights"] > 0
    assert report["fp32"]["metric"] == "agreement" and report["quantized"]["value"] == tiny_result.quantized.value
    assert report["quantized"]["latency"]["p50_ms"] > 0
    assert report["environment"]["packages"]["onnxruntime"] == ort.__version__
    assert report["environment"]["cpu"]["logical_cores"] >= 1
    assert {"data_s", "export_s", "quantize_s", "evaluate_s", "total_s"} <= set(report["timings"])
    ort_config = json.loads((tiny_result.output_dir / "ort_config.json").read_text())
    assert ort_config["quantization"]["is_static"] is True
    assert ort_config["quantization"]["per_channel"] is True


def test_folder_runs_in_the_quantkit_runtime(tiny_result):
    """Without optimum-onnx: quantkit.runtime loads the static QDQ folder; labels follow the graph's logits."""
    from quantkit.runtime import load

    out = tiny_result.output_dir
    clf = load(str(out), threads=1)
    texts = ["free money offer click now", "meeting tomorrow about the project report"]
    enc = clf.tokenizer(texts, padding=True, return_tensors="np")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (direct,) = sess.run(None, {k: v.astype(np.int64) for k, v in enc.items()})
    np.testing.assert_allclose(clf.run(dict(enc))["logits"], direct, atol=1e-6, rtol=0)
    preds = clf(texts)
    assert [p["label"] for p in preds] == [clf.config.id2label[int(i)] for i in direct.argmax(-1)]
    probs = np.exp(direct) / np.exp(direct).sum(-1, keepdims=True)
    np.testing.assert_allclose([p["score"] for p in preds], probs.max(-1), atol=1e-5)


@pytest.mark.optimum
def test_folder_loads_in_optimum_and_pipeline(tiny_result, tiny_data_dir):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    out = tiny_result.output_dir
    model = ORTModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = ["free money offer click now", "meeting tomorrow about the project report"]
    enc = tokenizer(texts, padding=True, return_tensors="np")
    logits = model(**{k: v for k, v in enc.items()}).logits
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (direct,) = sess.run(None, {k: v.astype(np.int64) for k, v in enc.items()})
    np.testing.assert_allclose(np.asarray(logits), direct, atol=1e-6, rtol=0)
    clf = pipeline("text-classification", model=model, tokenizer=tokenizer)
    preds = clf(texts)
    assert [p["label"] for p in preds] == [model.config.id2label[int(i)] for i in direct.argmax(-1)]


runner = CliRunner()


def test_cli_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_cli_schema_is_json():
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["properties"]["spec_version"]["const"] == 1


def test_cli_bad_spec_exit_2_with_key_path(tmp_path):
    spec = write_spec(tmp_path / "int8.yaml", """
spec_version: 1
quantization:
  approach: static
  calibration: {method: entopy}
data:
  evaluation: {path: val.jsonl}
""")
    result = runner.invoke(app, ["quantize", "--config", str(spec), "--model", "x"])
    assert result.exit_code == 2
    assert "int8.yaml: quantization.calibration.method: 'entopy' is not one of minmax, entropy, percentile" in result.output
    assert "Traceback" not in result.output


def test_cli_missing_model_exit_2(tmp_path, tiny_data_dir):
    spec = write_spec(tmp_path / "s.yaml", f"spec_version: 1\ndata:\n  evaluation: {{path: {tiny_data_dir / 'validation.jsonl'}}}\n")
    result = runner.invoke(app, ["quantize", "--config", str(spec), "--model", str(tmp_path / "no-model"),
                                 "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "cannot load model" in result.output and "no-model" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_cli_missing_data_exit_2(tmp_path, tiny_model_dir):
    spec = write_spec(tmp_path / "s.yaml", "spec_version: 1\ndata:\n  evaluation: {path: missing.jsonl}\n")
    result = runner.invoke(app, ["quantize", "--config", str(spec), "--model", str(tiny_model_dir),
                                 "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "data.evaluation.path: file not found" in result.output
    assert not (tmp_path / "o").exists()


def test_cli_existing_output_exit_2(tmp_path, tiny_model_dir, spec_text):
    spec = write_spec(tmp_path / "s.yaml", spec_text())
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep").write_text("x")
    result = runner.invoke(app, ["quantize", "--config", str(spec), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--overwrite" in result.output
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["keep"]


def test_cli_runtime_failure_exit_1(tmp_path, tiny_model_dir, tiny_data_dir):
    spec = write_spec(tmp_path / "s.yaml", f"""
spec_version: 1
quantization: {{op_types: [Conv]}}
data:
  evaluation: {{path: {tiny_data_dir / 'validation.jsonl'}}}
  max_length: 16
""")
    result = runner.invoke(app, ["quantize", "--config", str(spec), "--model", str(tiny_model_dir),
                                 "--output", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "quantized nothing" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_cli_quantize_success_prints_table(tmp_path, tiny_model_dir, spec_text):
    spec = write_spec(tmp_path / "s.yaml", spec_text(**{"quantization.approach": "dynamic",
                                                         "quantization.calibration": DROP}))
    result = runner.invoke(app, ["quantize", "--config", str(spec), "--model", str(tiny_model_dir),
                                 "--output", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "size MB" in result.output and "p50 latency" in result.output
    assert "MatMulInteger" in op_counts(tmp_path / "o" / "model.onnx")
    assert "quantkit: [" not in result.output and "round 1" not in result.output  # --no-progress: quiet


def test_cli_quantize_says_each_stage_and_round_without_a_terminal_and_why_rounds_were_added(
        tmp_path, tiny_model_dir, spec_text):
    """Not a TTY (CliRunner): still one line per stage and timing round on stderr; -v says why each round past
    `rounds` was added (the ratio so far and the rule it has not met)."""
    spec = write_spec(tmp_path / "s.yaml", spec_text(**{
        "quantization.approach": "dynamic", "quantization.calibration": DROP,
        "evaluation.latency": {"batch_size": 2, "sequence_length": 16, "warmup": 1, "repeats": 3, "rounds": 2,
                               "max_rounds": 5}}))
    result = runner.invoke(app, ["-v", "quantize", "--config", str(spec), "--model", str(tiny_model_dir),
                                 "--output", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    out = result.output
    stages = ["loading data", "exporting to ONNX", "quantizing (onnxruntime, dynamic)", "evaluating FP32",
              "evaluating int8", "timing FP32 and int8 side by side", "writing the artifact folder"]
    positions = [out.find(f"] {stage}") for stage in stages]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), out
    assert "quantkit: timing fp32 vs int8 at 2x16: round 1 (at most 5)" in out
    assert "round 3 added: int8 / fp32" in out and "a decision needs >= 5 rounds" in out


def test_public_api_is_listed_and_a_result_prints_short(tiny_result):
    """dir(quantkit) lists the lazily imported API; printing a result does not dump every prediction."""
    import quantkit

    assert {"Quantizer", "QuantizationResult", "load_spec", "parse_spec", "with_overrides", "run_checks"} <= set(
        dir(quantkit))
    text = repr(tiny_result.quantized)
    assert "predictions" not in text and "metric=" in text and len(repr(tiny_result)) < 2000
    assert len(tiny_result.quantized.predictions) > 0  # still there, just not printed


def test_a_failed_preflight_does_not_advise_skipping_it():
    from quantkit.errors import PreflightError

    assert "--no-check" not in PreflightError([]).hint


def test_unreliable_timings_are_one_warning_after_the_table(tiny_result, monkeypatch, capsys):
    """Every measurement that could not be trusted (the headline comparison, grid cells) in one warning, once."""
    import copy

    from rich.console import Console

    from quantkit import cli

    result = copy.copy(tiny_result)
    result.report = copy.deepcopy(tiny_result.report)
    result.report["timing"]["warnings"] = ["timings unreliable: int8 / fp32 latency 0.97x (0.80-1.20): the rounds "
                                           "disagree"]
    result.report["shapes"] = {"cells": [{"batch_size": 1, "sequence_length": 32,
                                          "timing_warning": "timings unreliable: the CPU was busy"}]}
    monkeypatch.setattr(cli, "out", Console(file=__import__("io").StringIO(), width=200))
    monkeypatch.setattr(cli, "err", Console(stderr=True, width=200))
    cli._render(result)
    text = capsys.readouterr().err
    assert text.count("warning:") == 1 and "timings unreliable (2):" in text
    assert "  - int8 / fp32 latency 0.97x" in text and "  - b1×s32: timings unreliable: the CPU was busy" in text


def test_help_shows_flags_as_flags():
    """quantkit's own on/off options take no value, so --help shows no `<bool>` beside them (typer's --help
    itself is typer's)."""
    names = [None, *sorted(c.name or c.callback.__name__ for c in app.registered_commands)]
    for name in names:
        shown = runner.invoke(app, ([name] if name else []) + ["--help"], env={"COLUMNS": "160"}, terminal_width=160)
        assert shown.exit_code == 0, shown.output
        flags = [line for line in shown.output.splitlines() if "<bool>" in line and "--help" not in line]
        assert flags == [], f"quantkit {name or ''} --help: {flags}"


def test_card_shows_one_speed_ratio_and_an_install_line_that_works(tiny_result):
    from quantkit.card import model_card_text

    card = model_card_text(tiny_result.report, "org/tiny-int8")
    median = tiny_result.report["result"]["latency_ratio"]["median"]
    (row,) = [line for line in card.splitlines() if line.startswith("| p50 latency")]
    assert row.endswith(f"| {median:.2f}x |") and f"**{median:.2f}x**" in card  # the table and Timing agree
    assert "`pip install quantkit`" not in card and "bash scripts/setup.sh" in card


# --------------------------------------------------------------------------- on/off flags given a value
@pytest.mark.parametrize(("argv", "expected"), [
    (["push", "out", "--repo-id", "a/b", "--private", "true"], ["push", "out", "--repo-id", "a/b", "--private"]),
    (["push", "out", "--private", "false", "--include-fp32=yes"], ["push", "out", "--include-fp32"]),
    (["quantize", "--config", "x.yaml", "--progress", "no"], ["quantize", "--config", "x.yaml", "--no-progress"]),
    (["-v", "quantize", "--no-progress", "TRUE"], ["-v", "quantize", "--no-progress"]),
    (["quantize", "--config", "true"], ["quantize", "--config", "true"]),  # a value option keeps its value
    (["quantize", "--overwrite", "--", "true"], ["quantize", "--overwrite", "--", "true"]),
])
def test_on_off_flags_accept_a_boolean_word(argv, expected):
    """`--private true` used to fail with "Got unexpected extra argument(s) (true)"."""
    from quantkit.cli import flag_values

    assert flag_values(argv) == expected


def test_main_runs_a_flag_written_with_a_value(monkeypatch, capsys):
    import json
    import sys

    from quantkit.cli import main

    monkeypatch.setattr(sys, "argv", ["quantkit", "env", "--json", "true"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None)
    assert "cpu" in json.loads(capsys.readouterr().out)
