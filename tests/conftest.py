"""Shared fixtures: isolated HF caches, a tiny random BERT with its own WordPiece
tokenizer, a small labeled dataset, and the reference assets in ../shared."""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

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
    tokenizer = BertTokenizerFast(str(path / "vocab.txt"),  # positional: vocab_file (4.57) or vocab (5.x)
                                  do_lower_case=True, model_max_length=128)
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


DROP = object()  # an override value that deletes the key instead of setting it


def override(base: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A deep copy of ``base`` with dotted-key ``overrides`` applied: ``"quantization.approach": "dynamic"`` sets one
    leaf (making the sections on the way), ``"tuning": {...}`` sets a whole section, ``DROP`` deletes the key."""
    raw = copy.deepcopy(dict(base))
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is DROP:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return raw


def tiny_spec(model: Path, data: Path, /, **overrides: Any) -> dict[str, Any]:
    """The common fast static spec on the tiny model and data, as a mapping (dotted-key ``overrides``, see
    :func:`override`)."""
    base = {
        "spec_version": 1,
        "model": {"name_or_path": str(model)},
        "quantization": {"approach": "static", "per_channel": True, "op_types": ["MatMul", "Gather"],
                         "calibration": {"method": "minmax", "num_samples": 32, "batch_size": 8}},
        "data": {"calibration": {"path": str(data / "train.jsonl")},
                 "evaluation": {"path": str(data / "validation.jsonl")}, "max_length": 32},
        "evaluation": {"metric": "accuracy",
                       "latency": {"batch_size": 2, "sequence_length": 16, "warmup": 1, "repeats": 3, "rounds": 2}},
    }
    return override(base, overrides)


@pytest.fixture(scope="session")
def spec_text(tiny_model_dir: Path, tiny_data_dir: Path) -> Callable[..., str]:
    """``spec_text(**overrides)``: the YAML text of :func:`tiny_spec` on the session's tiny model and data.

    Overrides are dotted keys, so nested ones go through ``**{...}``; ``DROP`` deletes a key::

        spec_text()                                                     # the common static spec
        spec_text(tuning={}, output={"dir": "out"})                     # add / replace whole sections
        spec_text(**{"quantization.approach": "dynamic", "quantization.calibration": DROP, "model": DROP})
    """
    def build(**overrides: Any) -> str:
        return yaml.safe_dump(tiny_spec(tiny_model_dir, tiny_data_dir, **overrides), sort_keys=False)

    return build


@pytest.fixture(scope="session")
def spec_model(tiny_model_dir: Path, tiny_data_dir: Path) -> Callable[..., Any]:
    """``spec_model(**overrides)``: :func:`tiny_spec` validated by the schema alone (a ``QuantizationSpec``; the
    registry rules of :mod:`quantkit.resolve` are left to the test)."""
    from quantkit.spec import QuantizationSpec

    def build(**overrides: Any) -> QuantizationSpec:
        return QuantizationSpec.model_validate(tiny_spec(tiny_model_dir, tiny_data_dir, **overrides))

    return build


@pytest.hookimpl(trylast=True)  # after -m deselection: only what will run counts
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests need ../shared, ``optimum`` tests need optimum-onnx: fail loudly (never skip
    silently) when a selected test lacks them. The default run deselects ``optimum`` by marker (addopts)."""
    if any("integration" in item.keywords for item in items) and not REFERENCE_MODEL.is_dir():
        raise pytest.UsageError(f"integration tests need the reference model at {REFERENCE_MODEL}")
    marked = [item.nodeid for item in items if "optimum" in item.keywords]
    if marked:
        from quantkit.export import optimum_onnx_available

        if not optimum_onnx_available():
            raise pytest.UsageError(
                f"{len(marked)} selected test(s) are marked optimum (e.g. {marked[0]}) but optimum-onnx is not "
                "importable here; run them in the optimum stack (bash scripts/setup.sh --stack optimum; "
                ".venv-optimum/bin/python -m pytest -m optimum), or deselect them with -m 'not optimum'")


# --------------------------------------------------------------------------- tiny models of every task
NER_TAGS = ["O", "B-person", "I-person", "B-location", "I-location"]
NAMES = ("alice", "bob", "carol")
PLACES = ("paris", "london", "berlin")


def _tiny_tokenizer_and_config(path: Path, **config_kwargs):
    from transformers import BertConfig, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *NAMES, *PLACES, "who", "where", "is", "in",
             "what", "?", ".", *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]]
    vocab += list("abcdefghijklmnopqrstuvwxyz")
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(str(path / "vocab.txt"),  # positional: vocab_file (4.57) or vocab (5.x)
                                  do_lower_case=True, model_max_length=128)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, **config_kwargs)
    return tokenizer, config


@pytest.fixture(scope="session")
def tiny_task_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random models of the other tasks: a tagger (5 IOB2 tags), a sentence encoder saved as a
    sentence-transformers folder (mean pooling + Normalize), and an extractive QA reader."""
    import torch
    from transformers import BertForQuestionAnswering, BertForTokenClassification, BertModel

    out: dict[str, Path] = {}
    builds = {
        "token-classification": (BertForTokenClassification, dict(
            num_labels=len(NER_TAGS), id2label=dict(enumerate(NER_TAGS)),
            label2id={t: i for i, t in enumerate(NER_TAGS)}, architectures=["BertForTokenClassification"])),
        "feature-extraction": (BertModel, dict(architectures=["BertModel"])),
        "question-answering": (BertForQuestionAnswering, dict(architectures=["BertForQuestionAnswering"])),
    }
    for task, (cls, kwargs) in builds.items():
        path = tmp_path_factory.mktemp(f"tiny-{task}")
        tokenizer, config = _tiny_tokenizer_and_config(path, **kwargs)
        torch.manual_seed(1)
        model = cls(config).eval()
        model.save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
        out[task] = path
    st = out["feature-extraction"]
    (st / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    return out


@pytest.fixture(scope="session")
def tiny_task_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data of each task in its format: NER words + IOB2 tags, scored sentence pairs, SQuAD records
    (some contexts longer than a window, one unanswerable question)."""
    path = tmp_path_factory.mktemp("tiny-task-data")
    rng = random.Random(3)
    ner, pairs, squad = [], [], []
    for i in range(40):
        words, tags = [], []
        for _ in range(rng.randint(3, 10)):
            r = rng.random()
            if r < 0.15:
                words += [rng.choice(NAMES), rng.choice(NAMES)]
                tags += ["B-person", "I-person"]
            elif r < 0.3:
                words.append(rng.choice(PLACES))
                tags.append("B-location")
            else:
                words.append(rng.choice(WORDS))
                tags.append("O")
        ner.append({"tokens": words, "ner_tags": tags})
        a = " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
        b = " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
        pairs.append({"sentence1": a, "sentence2": b, "score": round(rng.uniform(0, 5), 2)})
        name, place = rng.choice(NAMES), rng.choice(PLACES)
        filler = " ".join(rng.choices(WORDS, k=rng.randint(5, 60)))
        context = f"{filler} . {name} is in {place} ."
        answers = {"text": [place], "answer_start": [context.index(f"in {place}") + 3]}
        if i % 10 == 9:
            answers = {"text": [], "answer_start": []}
        squad.append({"id": str(i), "question": f"where is {name} ?", "context": context, "answers": answers})
    files = {"token-classification": ("ner.jsonl", ner), "feature-extraction": ("sts.jsonl", pairs),
             "question-answering": ("squad.jsonl", squad)}
    out = {}
    for task, (name, rows) in files.items():
        with open(path / name, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        out[task] = path / name
    return out


# --------------------------------------------------------------------------- every task quantized once
def task_spec(task: str, model: Path, data: Path, tmp: Path, **extra) -> dict:
    """A fast dynamic-int8 spec for ``task``'s tiny model and data (dotted ``extra`` keys override)."""
    columns = {"text-classification": {}, "token-classification": {}, "question-answering": {},
               "feature-extraction": {"text_columns": ["sentence1", "sentence2"], "label_column": "score"}}[task]
    spec = {
        "spec_version": 1,
        "model": {"name_or_path": str(model), "task": task},
        "quantization": {"approach": "dynamic", "op_types": ["MatMul"]},
        "data": {"evaluation": {"path": str(data), **columns}, "max_length": 64},
        "evaluation": {"batch_size": 8, "latency": {"batch_size": 2, "sequence_length": 16, "warmup": 1,
                                                    "repeats": 3, "rounds": 2}},
        "task_options": {"doc_stride": 16},
        "output": {"dir": str(tmp / "out")},
    }
    return override(spec, extra)


def write_yaml(tmp: Path, spec: dict) -> Path:
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


ALL_TASKS = ("text-classification", "token-classification", "feature-extraction", "question-answering")


@pytest.fixture(scope="session")
def tiny_quantized(tiny_model_dir, tiny_data_dir, tiny_task_models, tiny_task_data, tmp_path_factory):
    """Every task's tiny model quantized once per session (dynamic int8, quantkit's exporter) with the
    Quantizer API: ``{task: QuantizationResult}``."""
    from quantkit import Quantizer

    models = {**tiny_task_models, "text-classification": tiny_model_dir}
    data = {**tiny_task_data, "text-classification": tiny_data_dir / "validation.jsonl"}
    out = {}
    for task in ALL_TASKS:
        tmp = tmp_path_factory.mktemp(f"q-{task}")
        path = write_yaml(tmp, task_spec(task, models[task], data[task], tmp))
        out[task] = Quantizer.from_pretrained(models[task]).quantize(path, progress=False)
    return out


# --------------------------------------------------------------------------- tiny causal LMs (tests/unit/llm)
@pytest.fixture(scope="session")
def decoder_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random causal LM of every listed family (tests/tiny_decoders.py)."""
    from tiny_decoders import DECODERS, make_decoder

    root = tmp_path_factory.mktemp("tiny-decoders")
    return {family: make_decoder(family, root / family) for family in DECODERS}


@pytest.fixture(scope="session")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    from tiny_decoders import text

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
