"""quantkit.pipeline: preparing a Job (spec → pre-flight → output folder → resolved Run), the stage clock, and the
stages that need no export (data). The whole run is exercised end to end in test_pipeline_cli.py."""

from __future__ import annotations

import time

import pytest
import yaml
from conftest import DROP, tiny_spec, write_spec

from quantkit.errors import OutputExistsError, SpecError
from quantkit.pipeline import Job, load_data, prepare, progress_factory
from quantkit.resolve import resolve_run


def test_progress_factory() -> None:
    def mine(total: int, desc: str) -> None:
        return None

    assert progress_factory(False) is None
    assert progress_factory(mine) is mine
    bar = progress_factory(True)(3, "x")
    bar.update(3)
    bar.close()
    assert bar.n == 3


def test_job_laps_time_each_stage(spec_model, tiny_loaded, tmp_path) -> None:
    job = Job(run=resolve_run(spec_model(), tiny_loaded), target=tmp_path / "out", overwrite=False)
    job.mark()
    time.sleep(0.02)
    job.lap("a_s")
    job.lap("b_s")
    assert job.timings["a_s"] >= 0.02 and 0 <= job.timings["b_s"] < job.timings["a_s"]
    assert job.spec is job.run.spec and job.probe is None and job.timer is None


def test_load_data_reads_calibration_only_when_the_run_calibrates(spec_model, tiny_loaded) -> None:
    evaluation, calibration = load_data(resolve_run(spec_model(), tiny_loaded))
    assert len(evaluation) > 0 and calibration is not None and len(calibration) > 0
    assert evaluation.max_length == 32
    _, none = load_data(resolve_run(spec_model(**{"quantization.approach": "dynamic"}), tiny_loaded))
    assert none is None
    inc = spec_model(**{"quantization": {"backend": "neural-compressor", "approach": "dynamic"}})
    _, forward = load_data(resolve_run(inc, tiny_loaded))
    assert forward is not None and len(forward) > 0


def test_prepare_claims_the_folder_and_resolves(tiny_loaded, tiny_model_dir, tiny_data_dir, tmp_path) -> None:
    raw = tiny_spec(tiny_model_dir, tiny_data_dir, **{"evaluation.metric": DROP})
    path = write_spec(tmp_path / "s.yaml", yaml.safe_dump(raw))
    job = prepare(tiny_loaded, path, tmp_path / "out", overwrite=False, progress=False, check=False)
    assert job.target == (tmp_path / "out").resolve()
    assert job.run.spec.evaluation.metric == "accuracy" and job.progress is None and job.spec.tuning is None
    tuned = prepare(tiny_loaded, path, tmp_path / "t", overwrite=False, progress=False, check=False, tune=True)
    assert tuned.spec.tuning is not None and tuned.spec.tuning.strategy == "fastest"  # `tune` without a section
    with pytest.raises(SpecError, match="output.dir: required"):
        prepare(tiny_loaded, path, None, overwrite=False, progress=False, check=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "model.onnx").write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        prepare(tiny_loaded, path, tmp_path / "full", overwrite=False, progress=False, check=False)


class _Timer:
    """Times a model by its label: FP32 100 ms, every int8 candidate 60 ms (the probe keeps its default)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, label: str, path) -> float:
        self.calls.append(label)
        return 100.0 if label == "fp32" else 60.0


@pytest.mark.parametrize("quantization", [
    {"backend": "onnxruntime", "approach": "dynamic"},
    {"backend": "onnxruntime", "approach": "static", "format": "qdq"},
    {"backend": "onnxruntime", "approach": "static", "format": "qoperator"},
    {"backend": "neural-compressor", "approach": "dynamic"},
    {"backend": "neural-compressor", "approach": "static"},
], ids=lambda q: f"{q['backend']}-{q['approach']}-{q.get('format', '')}".rstrip("-"))
def test_every_route_runs_with_auto_optimize_and_the_hardware_probe(quantization, tiny_model_dir, spec_text,
                                                                     tmp_path, monkeypatch) -> None:
    """export.optimize and hardware_probe left to auto: each backend × approach quantizes (the probe, where it runs,
    builds its candidates with the run's calibration data) and reports what the probe did."""
    from quantkit import Quantizer

    monkeypatch.setenv("QUANTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("QUANTKIT_HARDWARE_PROBE", raising=False)
    text = spec_text(quantization={**quantization, "op_types": ["MatMul"]},
                     **{"evaluation.latency": {"batch_size": 2, "sequence_length": 16, "rounds": 3}})
    assert "optimize" not in text and "hardware_probe" not in text
    timer = _Timer()
    result = Quantizer.from_pretrained(tiny_model_dir).quantize(write_spec(tmp_path / "s.yaml", text), tmp_path / "o",
                                                                 progress=False, check=False, timer=timer)
    report = result.report
    assert report["quantization"]["graph"]["quantized_weights"] > 0
    probed = quantization == {"backend": "onnxruntime", "approach": "dynamic"}
    assert ("probe" in report) == probed
    if probed:  # a tie everywhere: the table's default stays, measured
        assert report["probe"]["status"] == "measured" and report["probe"]["chosen"] == "transformer-noskip"
        assert {"transformer-noskip", "transformer", "none"} <= set(timer.calls)
    assert report["result"]["latency_ratio"]["median"] == pytest.approx(0.6)
    # the probe's rounds of the shipped model count toward the headline: one new round then, three otherwise
    assert timer.calls.count("int8") == (1 if probed else 3), timer.calls
    chance = report["evaluation"]["chance_level"]  # the tiny model is random: its FP32 accuracy may well be at chance
    assert 0.5 <= chance < 1 and bool(report.get("warnings")) == (report["fp32"]["value"] <= chance + 0.01)


def test_a_fp32_score_at_chance_level_is_a_loud_warning(spec_model, tiny_loaded) -> None:
    from quantkit.card import model_card_text
    from quantkit.pipeline import chance_warning

    run = resolve_run(spec_model(), tiny_loaded)
    evaluation, _ = load_data(run)
    labels = list(evaluation.labels)
    majority = max(labels.count(v) for v in set(labels)) / len(labels)
    chance, warning = chance_warning(run, 0.02, evaluation)
    assert chance == pytest.approx(majority)
    assert warning is not None and "no better than chance" in warning and "accuracy 0.0200" in warning
    assert chance_warning(run, 0.99, evaluation) == (pytest.approx(majority), None)
    report = {"model": {"task": "text-classification", "name_or_path": "x"}, "warnings": [warning]}
    assert f"> **Warning** — {warning}" in model_card_text(report, "org/m")
