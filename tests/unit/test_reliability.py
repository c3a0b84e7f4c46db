"""Issue 16: damaged weights, locked/full/killed output folders, corrupted trial databases, hostile text data
and malformed Hub answers all end in a QuantkitError naming what is at fault, never a crash or a loss."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_spec
from typer.testing import CliRunner

from quantkit.artifacts import atomic_directory, clean_stale, lock_path, output_lock, write_artifacts
from quantkit.checks import run_checks
from quantkit.checks.weights import safetensors_problem, torch_zip_problem
from quantkit.cli import app
from quantkit.errors import DiskFullError, OutputLockedError, TrialStoreError
from quantkit.search.store import Trial, TrialStore, check_trial_db, reset_trial_store, trial_db_path

runner = CliRunner()


# --------------------------------------------------------------------------- weights
@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def _check_spec(tmp_path: Path, model: Path, data: Path) -> Path:
    return write_spec(tmp_path / "spec.yaml", f"""
spec_version: 1
model: {{name_or_path: {model}}}
data: {{evaluation: {{path: {data}}}, max_length: 32}}
""")


def test_whole_weights_pass(model_copy: Path) -> None:
    assert safetensors_problem(model_copy / "model.safetensors") is None


@pytest.mark.parametrize("cut", [4, 100, -1, -1000])
def test_truncated_safetensors_is_an_error_naming_the_file(model_copy: Path, tiny_data_dir: Path, tmp_path: Path,
                                                           cut: int) -> None:
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:cut])
    report = run_checks(_check_spec(tmp_path, model_copy, tiny_data_dir / "validation.jsonl"), probe=False,
                        only=["files.weights"])
    [problem] = report.errors
    assert problem.key_path == "model.name_or_path"
    assert str(weights) in problem.message and "damaged" in problem.message


def test_safetensors_header_lies(tmp_path: Path) -> None:
    f = tmp_path / "x.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    f.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    assert "truncated" in safetensors_problem(f)
    f.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 20)
    assert "corrupted" in safetensors_problem(f)
    f.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    assert "does not fit" in safetensors_problem(f)
    f.write_bytes((5).to_bytes(8, "little") + b"[1,2]")
    assert "not a JSON object" in safetensors_problem(f)


def test_truncated_torch_zip(tmp_path: Path) -> None:
    import torch

    f = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(1000)}, f)
    assert torch_zip_problem(f) is None
    f.write_bytes(f.read_bytes()[:2000])
    assert "not a complete zip" in torch_zip_problem(f)


# --------------------------------------------------------------------------- artifact folder
class _Saver:
    def save_pretrained(self, folder: Path) -> None:
        (Path(folder) / "config.json").write_text("{}")


def _write(target: Path, model: Path, **kw) -> Path:
    return write_artifacts(target, model_path=model, model_config=_Saver(), tokenizer=_Saver(), report={},
                           spec_yaml="", **kw)


def test_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x" * 100)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("quantkit.artifacts._json_dump", full)
    with pytest.raises(DiskFullError, match="no space left"):
        _write(tmp_path / "out", model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert DiskFullError.exit_code == 1


def test_full_disk_maps_to_cli_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from quantkit import cli

    monkeypatch.setitem(cli._state, "debug", False)  # an earlier --debug run would re-raise the error as is
    with pytest.raises(typer.Exit) as info:
        cli._fail(DiskFullError("writing artifacts for out failed: no space left on the device"))
    assert info.value.exit_code == 1


def _hold(target: str, ready, release) -> None:  # in a child process
    with output_lock(target):
        ready.set()
        release.wait(30)


def test_second_run_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "out"
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(str(target), ready, release))
    child.start()
    try:
        assert ready.wait(30)
        with pytest.raises(OutputLockedError, match=rf"{target}.*in use.*process {child.pid}") as info:
            with output_lock(target):
                pass
        assert info.value.holder_pid == child.pid
    finally:
        release.set()
        child.join(30)
    with output_lock(target) as path:  # released when its holder ends
        assert path == lock_path(target)


def test_killed_run_leftovers_are_cleaned_and_a_cut_swap_is_undone(tmp_path: Path) -> None:
    target = tmp_path / "out"
    (tmp_path / ".out.tmp-abc").mkdir()
    old = tmp_path / ".out.old-1234"
    old.mkdir()
    (old / "model.onnx").write_text("previous")
    clean_stale(target)
    assert (target / "model.onnx").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_leaves_nothing_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "out", False) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- trial database
def _store_with_trials(path: Path, n: int) -> None:
    with TrialStore(path) as store:
        for i in range(n):
            store.put("run", Trial(idx=i, origin="space", config_hash=f"h{i}", config={"i": i}, status="ok",
                                   metric=0.9))
        store.put_baseline("run", {"metric": 0.9})


def test_corrupted_trial_db_is_a_clear_error_and_reset_keeps_a_backup(tmp_path: Path) -> None:
    db = trial_db_path(tmp_path / "out")
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TrialStoreError, match=rf"{db}.*cannot be read") as info:
        TrialStore(db)
    assert "--reset-trials" in info.value.hint
    assert db.read_bytes().startswith(b"this is not sqlite")  # kept as it was: nothing silently lost
    assert check_trial_db(db) is not None
    backup = reset_trial_store(db)
    assert backup is not None and backup.read_bytes().startswith(b"this is not sqlite")
    with TrialStore(db) as store:
        assert store.trials("run") == []


def test_reset_salvages_readable_rows(tmp_path: Path) -> None:
    db = tmp_path / "trials.db"
    _store_with_trials(db, 5)
    with sqlite3.connect(db) as con:  # make it fail the integrity check: drop a page of an index
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    backup = reset_trial_store(db)
    assert backup is not None and backup.exists()
    with TrialStore(db) as store:
        assert [t.idx for t in store.trials("run")] == [0, 1, 2, 3, 4]
        assert store.get_baseline("run") == {"metric": 0.9}


def test_preflight_reports_a_corrupted_trial_db(tmp_path: Path, spec_text: Callable[..., str]) -> None:
    spec = write_spec(tmp_path / "spec.yaml", spec_text(tuning={}))
    db = trial_db_path(tmp_path / "out")
    db.parent.mkdir(parents=True)
    db.write_bytes(b"\0garbage" * 512)
    report = run_checks(spec, output_dir=tmp_path / "out", probe=False, only=["files.trials"])
    [problem] = report.errors
    assert problem.key_path == "tuning" and str(db) in problem.message and "--reset-trials" in problem.hint


# --------------------------------------------------------------------------- hostile text data
def _rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _data_spec(tmp_path: Path, model: Path, evaluation: Path, calibration: Path | None = None, extra: str = "") -> Path:
    cal = f"calibration: {{path: {calibration}}}, " if calibration else ""
    approach = "static" if calibration else "dynamic"
    quant = "{approach: static, calibration: {batch_size: 8, num_samples: 8}}" if calibration else "{}"
    return write_spec(tmp_path / "spec.yaml", f"""
spec_version: 1
model: {{name_or_path: {model}}}
quantization: {quant}
data: {{{cal}evaluation: {{path: {evaluation}}}, max_length: 32}}
{extra}
""")


def _problems(report, key_prefix: str) -> list:
    return [p for p in report.problems if p.key_path.startswith(key_prefix)]


def test_empty_null_and_huge_texts(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = [{"text": "free money", "label": 1}, {"text": "", "label": 0}, {"text": None, "label": 0},
            {"text": "x" * 1_000_000, "label": 1}] * 3
    ev = _rows(tmp_path / "ev.jsonl", rows)
    report = run_checks(_data_spec(tmp_path, tiny_model_dir, ev, ev), probe=False)
    msgs = " | ".join(str(p) for p in _problems(report, "data.evaluation.text_columns.0"))
    assert "have an empty 'text'" in msgs and "over 100000 characters" in msgs and "no 'text' value" in msgs
    all_empty = _rows(tmp_path / "empty.jsonl", [{"text": "", "label": 0}, {"text": None, "label": 1}] * 6)
    report = run_checks(_data_spec(tmp_path, tiny_model_dir, all_empty), probe=False)
    assert any("every 'text' value" in p.message for p in report.errors if p.key_path ==
               "data.evaluation.text_columns.0")


def test_invalid_utf8_csv_is_refused_with_key_path(tmp_path: Path, tiny_model_dir: Path) -> None:
    csv = tmp_path / "ev.csv"
    csv.write_bytes(b"text,label\nfree money,1\ncaf\xe9 \xff\xfe,0\n")
    report = run_checks(_data_spec(tmp_path, tiny_model_dir, csv), probe=False)
    assert any(p.key_path == "data.evaluation.path" and "ev.csv" in p.message for p in report.errors), report.problems


def test_mixed_label_types_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    ev = _rows(tmp_path / "ev.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": "spam"},
                                      {"text": "c", "label": 0.5}] * 4)
    report = run_checks(_data_spec(tmp_path, tiny_model_dir, ev), probe=False)
    assert any(p.key_path.startswith("data.evaluation") for p in report.errors), report.problems


def test_few_calibration_rows_and_one_row_evaluation(tmp_path: Path, tiny_model_dir: Path) -> None:
    cal = _rows(tmp_path / "cal.jsonl", [{"text": "free money", "label": 1}] * 3)
    one = _rows(tmp_path / "one.jsonl", [{"text": "free money", "label": 1}])
    report = run_checks(_data_spec(tmp_path, tiny_model_dir, one, cal), probe=False)
    assert any("calibration row(s)" in p.message for p in _problems(report, "quantization.calibration.batch_size"))
    assert any("only 1 row" in p.message for p in _problems(report, "data.evaluation.path"))
    report = run_checks(_data_spec(tmp_path, tiny_model_dir, one, cal, "evaluation: {metric: matthews_correlation}"),
                        probe=False)
    assert any("undefined on fewer than 2 rows" in p.message for p in report.errors
               if p.key_path == "data.evaluation.path")


# --------------------------------------------------------------------------- malformed Hub answers
def test_unexpected_answer_error_names_the_endpoint() -> None:
    from quantkit.hub import _unexpected_answer

    err = _unexpected_answer(TypeError("'int' object is not subscriptable"), repo_id="o/n", action="creating",
                             token="hf_secret")
    assert "POST /api/repos/create" in str(err) and "o/n" in str(err) and "hf_secret" not in str(err)
