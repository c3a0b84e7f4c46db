from __future__ import annotations

from pathlib import Path

import pytest
from tiny_decoders import DECODERS, make_decoder, text


@pytest.fixture(scope="session")
def decoder_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random causal LM of every listed family."""
    root = tmp_path_factory.mktemp("tiny-decoders")
    return {family: make_decoder(family, root / family) for family in DECODERS}


@pytest.fixture(scope="session")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def llama_loaded(decoder_dirs):
    from quantkit.models import load_model

    return load_model(str(decoder_dirs["llama"]))


@pytest.fixture(scope="session")
def llama_fp32(llama_loaded, tmp_path_factory: pytest.TempPathFactory):
    from quantkit.export import export_onnx
    from quantkit.spec import ExportSpec

    return export_onnx(llama_loaded, tmp_path_factory.mktemp("llama-onnx"), ExportSpec())
