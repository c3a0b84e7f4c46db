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
