"""Atomic artifact folders: never half-written, never silently replaced."""

from __future__ import annotations

import pytest

from quantkit.artifacts import REPORT_FILE, atomic_directory, check_output_dir, write_artifacts
from quantkit.errors import ArtifactError, OutputExistsError


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_success_renames_into_place(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target, overwrite=False) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        (tmp / "a.txt").write_text("x")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "x"
    assert _siblings(target) == ["out"]


def test_exception_mid_write_leaves_no_folder(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(target, overwrite=False) as tmp:
            (tmp / "model.onnx").write_bytes(b"\0" * 1024)
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_refused_without_overwrite(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="already exists") as info:
        check_output_dir(target, overwrite=False)
    assert info.value.exit_code == 2 and "--overwrite" in info.value.hint
    assert isinstance(info.value, FileExistsError)


def test_failed_overwrite_keeps_the_old_folder(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert _siblings(target) == ["out"]


def test_overwrite_replaces_whole_folder(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert _siblings(target) == ["out"]


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(ArtifactError, match="not a folder"):
        check_output_dir(tmp_path / "out", overwrite=True)


def test_write_artifacts_failure_in_tokenizer_save_leaves_nothing(tiny_loaded, tiny_fp32, tmp_path, monkeypatch):
    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tiny_loaded.tokenizer, "save_pretrained", broken_save)
    target = tmp_path / "out"
    with pytest.raises(ArtifactError, match="disk full"):
        write_artifacts(
            target, model_path=tiny_fp32.path, model_config=tiny_loaded.config, tokenizer=tiny_loaded.tokenizer,
            report={"x": 1}, spec_yaml="spec_version: 1\n",
        )
    assert list(tmp_path.iterdir()) == []


def test_write_artifacts_layout(tiny_loaded, tiny_fp32, tmp_path):
    target = write_artifacts(
        tmp_path / "out", model_path=tiny_fp32.path, model_config=tiny_loaded.config,
        tokenizer=tiny_loaded.tokenizer, report={"x": 1}, spec_yaml="spec_version: 1\n", ort_config={"opset": 18},
    )
    names = {p.name for p in target.iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json", "ort_config.json", REPORT_FILE, "quantkit_spec.yaml"} <= names
