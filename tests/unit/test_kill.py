"""SIGKILL at named points of `quantkit quantize` (QUANTKIT_FAULT_AT, quantkit/faults.py) leaves no output
folder and no lock held; a clean rerun then succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_spec

from quantkit.faults import FAULT_ENV

POINTS = ["export", "calibration", "quantize", "evaluation", "artifacts", "rename"]


def _quantize(spec: Path, out: Path, fault: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "quantkit.cli", "quantize", "--config", str(spec), "--output",
                           str(out), "--no-progress", "--no-check"], env=env, capture_output=True, text=True,
                          timeout=300)


def test_sigkill_at_each_point_leaves_nothing_and_rerun_succeeds(tmp_path: Path, spec_text: Callable[..., str]) -> None:
    spec = write_spec(tmp_path / "spec.yaml", spec_text())
    out = tmp_path / "out"
    for point in POINTS:
        proc = _quantize(spec, out, point)
        assert proc.returncode == -signal.SIGKILL, f"{point}: {proc.returncode}\n{proc.stderr[-2000:]}"
        assert not out.exists(), f"killed at {point}: a partial output folder was left"
    proc = _quantize(spec, out, None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.onnx").is_file() and (out / "quantkit_report.json").is_file()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-") or p.name.startswith(".out.old-")]
    assert leftovers == []  # the rerun cleaned what the killed runs left


def test_sigkill_while_replacing_keeps_the_previous_folder(tmp_path: Path, spec_text: Callable[..., str]) -> None:
    spec = write_spec(tmp_path / "spec.yaml", spec_text())
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_text("previous")
    env_overwrite = _quantize_overwrite(spec, out, "rename")
    assert env_overwrite.returncode == -signal.SIGKILL
    assert (out / "model.onnx").read_text() == "previous"


def _quantize_overwrite(spec: Path, out: Path, fault: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), FAULT_ENV: fault}
    return subprocess.run([sys.executable, "-m", "quantkit.cli", "quantize", "--config", str(spec), "--output",
                           str(out), "--no-progress", "--no-check", "--overwrite"], env=env, capture_output=True,
                          text=True, timeout=300)
