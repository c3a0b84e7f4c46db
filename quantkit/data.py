"""Datasets: loading (local files or the Hub), tokenization and batching."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .spec import DatasetSpec

logger = logging.getLogger(__name__)

__all__ = ["TextDataset", "load_rows", "encode", "load_text_dataset"]


@dataclass
class TextDataset:
    """Tokenized examples held as padded ``int64`` arrays, plus labels when present.

    Every array is padded to ``max_length``; with ``padding="longest"`` each batch is
    trimmed to its longest example, so models see dynamic sequence lengths.
    """

    name: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    padding: str = "max_length"
    padding_side: str = "right"

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def max_length(self) -> int:
        return next(iter(self.inputs.values())).shape[1]

    def slice(self, start: int, stop: int) -> "TextDataset":
        """Examples ``start:stop``."""
        return TextDataset(
            self.name,
            {k: v[start:stop] for k, v in self.inputs.items()},
            None if self.labels is None else self.labels[start:stop],
            self.padding,
            self.padding_side,
        )

    def select(self, n: int) -> "TextDataset":
        """The first ``n`` examples."""
        return self.slice(0, n)

    def batch(self, start: int, stop: int, input_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(input_names) if input_names is not None else list(self.inputs)
        missing = [n for n in names if n not in self.inputs]
        if missing:
            raise DataError(
                f"{self.name}: the model expects inputs {missing} that the tokenizer does not produce "
                f"(it produces {sorted(self.inputs)})"
            )
        out = {n: self.inputs[n][start:stop] for n in names}
        if self.padding == "longest" and "attention_mask" in self.inputs:
            mask = self.inputs["attention_mask"][start:stop]
            longest = max(int(mask.sum(axis=1).max()), 1)
            if self.padding_side == "right":
                out = {n: a[:, :longest] for n, a in out.items()}
            else:
                out = {n: a[:, a.shape[1] - longest :] for n, a in out.items()}
        return {n: np.ascontiguousarray(a) for n, a in out.items()}

    def batches(self, batch_size: int, input_names: Sequence[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self), batch_size):
            yield self.batch(start, start + batch_size, input_names)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)


def load_rows(ds: DatasetSpec, key: str) -> Any:
    """Load the rows of one dataset entry as a ``datasets.Dataset``.

    ``key`` is the spec key path of the entry (e.g. ``data.evaluation``), used in errors.
    """
    import datasets

    try:
        if ds.is_local:
            path = Path(ds.path)
            if not path.exists():
                raise DataError(f"{key}.path: file not found: {path}")
            if path.is_dir():
                dset = datasets.load_dataset(str(path), split=ds.split)
            else:
                fmt = ds.file_format
                if fmt is None:
                    raise DataError(
                        f"{key}.path: cannot tell the format of {path.name}; "
                        "expected a .json, .jsonl, .csv or .parquet file"
                    )
                dset = datasets.load_dataset(fmt, data_files=str(path), split="train")
        else:
            dset = datasets.load_dataset(ds.path, ds.name, split=ds.split, revision=ds.revision)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{key}.path: {ds.path}: not found: {exc}") from None
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise DataError(f"{key}.split: {ds.split!r} not available in {ds.path}: {exc}") from None
        raise DataError(f"{key}.path: cannot read {ds.path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow/json parse errors come in many types
        raise DataError(f"{key}.path: cannot read {ds.path}: {type(exc).__name__}: {exc}") from None

    columns = set(dset.column_names)
    for i, col in enumerate(ds.text_columns):
        if col not in columns:
            raise DataError(
                f"{key}.text_columns.{i}: column {col!r} not in {ds.path} (columns: {', '.join(sorted(columns))})"
            )
    if ds.label_column is not None and ds.label_column not in columns:
        raise DataError(
            f"{key}.label_column: column {ds.label_column!r} not in {ds.path} "
            f"(columns: {', '.join(sorted(columns))}); use label_column: null for unlabeled data"
        )
    if len(dset) == 0:
        raise DataError(f"{key}.path: {ds.path} has no rows")
    if ds.shuffle:
        dset = dset.shuffle(seed=ds.seed)
    if ds.limit is not None and ds.limit < len(dset):
        dset = dset.select(range(ds.limit))
    return dset


def _labels(values: list[Any], label2id: dict[str, int] | None, num_labels: int | None, key: str) -> np.ndarray:
    if num_labels == 1:  # regression
        try:
            return np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{key}.label_column: regression labels must be numbers") from None
    if values and all(isinstance(v, str) for v in values):
        mapping = {str(k).lower(): int(v) for k, v in (label2id or {}).items()}
        unknown = sorted({v for v in values if v.lower() not in mapping})
        if unknown:
            raise DataError(
                f"{key}.label_column: labels {unknown[:5]} are not in the model's label2id "
                f"({', '.join(sorted(mapping)) or 'empty'})"
            )
        return np.asarray([mapping[v.lower()] for v in values], dtype=np.int64)
    try:
        arr = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{key}.label_column: expected integer or string class labels") from None
    if num_labels is not None and len(arr) and (arr.min() < 0 or arr.max() >= num_labels):
        raise DataError(
            f"{key}.label_column: label values span {int(arr.min())}..{int(arr.max())} "
            f"but the model has {num_labels} labels (0..{num_labels - 1})"
        )
    return arr


def encode(
    rows: Any,
    tokenizer: Any,
    ds: DatasetSpec,
    *,
    key: str,
    max_length: int,
    padding: str,
    model_config: Any | None = None,
    chunk_size: int = 1024,
) -> TextDataset:
    """Tokenize ``rows`` (truncating to ``max_length``) into a :class:`TextDataset`."""
    n = len(rows)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < 10**6 and max_length > limit:
        raise DataError(f"data.max_length: {max_length} exceeds the tokenizer's model_max_length {limit}")
    pieces: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, chunk_size):
        chunk = rows[start : start + chunk_size]
        texts = [[str(t) if t is not None else "" for t in chunk[c]] for c in ds.text_columns]
        enc = tokenizer(
            *texts,
            truncation=True,
            max_length=max_length,
            padding="max_length",
            return_tensors="np",
        )
        for name, arr in enc.items():
            pieces.setdefault(name, []).append(arr.astype(np.int64))
    inputs = {k: np.concatenate(v) for k, v in pieces.items()}
    labels = None
    if ds.label_column is not None:
        label2id = getattr(model_config, "label2id", None)
        num_labels = getattr(model_config, "num_labels", None)
        labels = _labels(list(rows[ds.label_column]), label2id, num_labels, key)
    return TextDataset(
        name=key,
        inputs=inputs,
        labels=labels,
        padding=padding,
        padding_side=getattr(tokenizer, "padding_side", "right"),
    )


def load_text_dataset(
    ds: DatasetSpec, tokenizer: Any, *, key: str, max_length: int, padding: str, model_config: Any | None = None
) -> TextDataset:
    """:func:`load_rows` then :func:`encode`."""
    rows = load_rows(ds, key)
    data = encode(rows, tokenizer, ds, key=key, max_length=max_length, padding=padding, model_config=model_config)
    logger.info("%s: %d examples from %s", key, len(data), ds.path)
    return data
