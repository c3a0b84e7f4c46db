"""Shared fixtures: isolated HF caches, a tiny random BERT with its own WordPiece
tokenizer, a small labeled dataset, and the reference assets in ../shared."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE_MODEL = SHARED / "models" / "minilm-spam"
SPAM_DATA = SHARED / "data" / "spamassassin"

WORDS = (
    "free money offer click now winner prize cash urgent limited deal buy cheap viagra loan credit "
    "meeting project report schedule team lunch review code patch release build test thanks regards "
    "hello please attached update question tomorrow friday list mail server linux kernel python"
).split()
SPAM_WORDS = set(WORDS[:16])


@pytest.fixture(scope="session", autouse=True)
def _isolated_hf(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the tests off the user's caches and off the network."""
    home = tmp_path_factory.mktemp("hf-home")
    os.environ["HF_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_CACHE"] = str(home / "datasets")
    os.environ["HF_MODULES_CACHE"] = str(home / "modules")
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ.pop("HF_TOKEN", None)
    # The CPU probe (quantkit.probe) has its own tests; elsewhere the hardware table decides, as before.
    os.environ["QUANTKIT_HARDWARE_PROBE"] = "off"
    os.environ["QUANTKIT_CACHE"] = str(home / "quantkit-cache")


def _sentences(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(4, 24))
        label = int(sum(w in SPAM_WORDS for w in words) > len(words) / 2)
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-32 random BertForSequenceClassification saved as safetensors."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]]
    vocab += list("abcdefghijklmnopqrstuvwxyz")
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True, model_max_length=128)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
        id2label={0: "ham", 1: "spam"},
        label2id={"ham": 0, "spam": 1},
        architectures=["BertForSequenceClassification"],
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.jsonl (96 rows) and validation.jsonl (48 rows) of synthetic ham/spam text."""
    path = tmp_path_factory.mktemp("tiny-data")
    for name, n, seed in (("train", 96, 1), ("validation", 48, 2)):
        with open(path / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in _sentences(n, seed):
                f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Path):
    from quantkit.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_fp32(tiny_loaded, tmp_path_factory: pytest.TempPathFactory):
    """The tiny model exported once per session."""
    from quantkit.export import export_onnx
    from quantkit.spec import ExportSpec

    return export_onnx(tiny_loaded, tmp_path_factory.mktemp("tiny-onnx"), ExportSpec())


def write_spec(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def tiny_spec_text(tiny_model_dir: Path, tiny_data_dir: Path) -> str:
    """A fast static spec on the tiny model (tests edit it as needed)."""
    return f"""
spec_version: 1
model:
  name_or_path: {tiny_model_dir}
quantization:
  approach: static
  per_channel: true
  op_types: [MatMul, Gather]
  calibration: {{method: minmax, num_samples: 32, batch_size: 8}}
data:
  calibration: {{path: {tiny_data_dir / 'train.jsonl'}}}
  evaluation: {{path: {tiny_data_dir / 'validation.jsonl'}}}
  max_length: 32
evaluation:
  metric: accuracy
  latency: {{batch_size: 2, sequence_length: 16, warmup: 1, repeats: 3, rounds: 2}}
"""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests need ../shared; fail loudly (never skip silently) when it is missing."""
    if any("integration" in item.keywords for item in items) and not REFERENCE_MODEL.is_dir():
        raise pytest.UsageError(f"integration tests need the reference model at {REFERENCE_MODEL}")
