"""Datasets (quantkit.data): loading, labels, padding. Evaluation is tested in test_evaluation.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from quantkit.data import load_text_dataset
from quantkit.errors import DataError
from quantkit.spec import DatasetSpec
from quantkit.tasks import task_for


def _load(loaded, path, **kw):
    return load_text_dataset(
        DatasetSpec(path=str(path), **kw), loaded.tokenizer, task_for("text-classification", loaded.config),
        key="data.evaluation", max_length=kw.pop("max_length", 32) if "max_length" in kw else 32,
        padding="max_length",
    )


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_loads_jsonl_and_tokenizes(tiny_loaded, tiny_data_dir):
    data = _load(tiny_loaded, tiny_data_dir / "validation.jsonl")
    assert len(data) == 48
    assert set(data.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert data.inputs["input_ids"].shape == (48, 32) and data.inputs["input_ids"].dtype == np.int64
    assert set(np.unique(data.labels)) <= {0, 1}


def test_limit_and_shuffle(tiny_loaded, tiny_data_dir):
    first = _load(tiny_loaded, tiny_data_dir / "train.jsonl", limit=10)
    shuffled = _load(tiny_loaded, tiny_data_dir / "train.jsonl", limit=10, shuffle=True, seed=3)
    assert len(first) == len(shuffled) == 10
    assert not np.array_equal(first.inputs["input_ids"], shuffled.inputs["input_ids"])


def test_csv_and_string_labels_map_through_label2id(tiny_loaded, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("body,tag\nfree money now,spam\nmeeting tomorrow,HAM\n", encoding="utf-8")
    data = _load(tiny_loaded, path, text_columns=["body"], label_column="tag")
    assert data.labels.tolist() == [1, 0]


def test_unknown_string_label_names_key_and_labels(tiny_loaded, tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "eggs"}])
    with pytest.raises(DataError, match=r"data\.evaluation\.label_column: labels \['eggs'\] are not in"):
        _load(tiny_loaded, path)


def test_label_out_of_range(tiny_loaded, tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 2}])
    with pytest.raises(DataError, match=r"label values span 0\.\.2 but the model has 2 labels"):
        _load(tiny_loaded, path)


def test_missing_column_lists_columns(tiny_loaded, tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"body": "a", "label": 0}])
    with pytest.raises(DataError, match=r"data\.evaluation\.text_columns\.0: column 'text' not in .*columns: body, label"):
        _load(tiny_loaded, path)


def test_missing_file(tiny_loaded, tmp_path):
    with pytest.raises(DataError, match=r"data\.evaluation\.path: file not found"):
        _load(tiny_loaded, tmp_path / "nope.jsonl")


def test_unreadable_file(tiny_loaded, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.evaluation\.path: cannot read"):
        _load(tiny_loaded, path)


def test_longest_padding_trims_batches(tiny_loaded, tiny_data_dir):
    data = _load(tiny_loaded, tiny_data_dir / "validation.jsonl")
    data.padding = "longest"
    batch = data.batch(0, 4)
    longest = int(data.inputs["attention_mask"][:4].sum(1).max())
    assert batch["input_ids"].shape == (4, longest) < (4, 32)
    np.testing.assert_array_equal(batch["input_ids"], data.inputs["input_ids"][:4, :longest])


def test_missing_model_input_is_explained(tiny_loaded, tiny_data_dir):
    data = _load(tiny_loaded, tiny_data_dir / "validation.jsonl")
    with pytest.raises(DataError, match="position_ids"):
        data.batch(0, 2, ["input_ids", "position_ids"])
