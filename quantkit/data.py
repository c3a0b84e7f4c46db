"""Datasets: loading (local files or the Hub), tokenization and batching."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DataError
if TYPE_CHECKING:
    from .spec import DatasetSpec

logger = logging.getLogger(__name__)

__all__ = ["TextDataset", "load_rows", "encode", "load_text_dataset"]


@dataclass
class TextDataset:
    """Tokenized rows held as padded ``int64`` arrays, plus the task's references when present.

    Every array is padded to ``max_length``; with ``padding="longest"`` each batch is
    trimmed to its longest example, so models see dynamic sequence lengths. What ``labels``
    holds is the task's business (class ids, tag sequences, answers, similarity scores);
    ``meta`` holds per-row arrays or lists the task needs to post-process outputs (word ids,
    offsets, feature → example maps) and is sliced with the rows; ``examples`` holds
    per-example data that is not per row (e.g. a QA example's context).
    """

    name: str
    inputs: dict[str, np.ndarray]
    labels: Any
    padding: str = "max_length"
    padding_side: str = "right"
    meta: dict[str, Any] = field(default_factory=dict)
    examples: Any = None

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
            {k: v[start:stop] for k, v in self.meta.items()},
            self.examples,
        )

    def take(self, index: Sequence[int] | np.ndarray) -> "TextDataset":
        """The rows at ``index`` (labels and meta follow; they must be per-row)."""
        idx = np.asarray(index, dtype=np.int64)

        def pick(v: Any) -> Any:
            return v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx]

        return TextDataset(self.name, {k: v[idx] for k, v in self.inputs.items()},
                           None if self.labels is None else pick(self.labels), self.padding, self.padding_side,
                           {k: pick(v) for k, v in self.meta.items()}, self.examples)

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


def load_rows(ds: DatasetSpec, key: str, columns: Any = None) -> Any:
    """Load the rows of one dataset entry as a ``datasets.Dataset``.

    ``key`` is the spec key path of the entry (e.g. ``data.evaluation``), used in errors;
    ``columns`` (a task's :class:`~quantkit.tasks.base.Columns`) are checked to exist.
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
                        "expected a .json, .jsonl, .csv, .parquet, .txt or .raw file"
                    )
                # A text file is one document (column "text"): a causal LM's evaluation text, cut into windows
                # by its task.
                extra = {"sample_by": "document"} if fmt == "text" else {}
                dset = datasets.load_dataset(fmt, data_files=str(path), split="train", **extra)
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

    present = set(dset.column_names)
    text = columns.text if columns is not None else tuple(ds.text_columns or ("text",))
    label = columns.label if columns is not None else (None if ds.label_column == "auto" else ds.label_column)
    for i, col in enumerate(text):
        if col not in present:
            raise DataError(
                f"{key}.text_columns.{i}: column {col!r} not in {ds.path} (columns: {', '.join(sorted(present))})"
            )
    if label is not None and label not in present:
        raise DataError(
            f"{key}.label_column: column {label!r} not in {ds.path} "
            f"(columns: {', '.join(sorted(present))}); use label_column: null for unlabeled data"
        )
    if len(dset) == 0:
        raise DataError(f"{key}.path: {ds.path} has no rows")
    if ds.shuffle:
        dset = dset.shuffle(seed=ds.seed)
    if ds.limit is not None and ds.limit < len(dset):
        dset = dset.select(range(ds.limit))
    return dset


def encode(
    rows: Any, tokenizer: Any, ds: DatasetSpec, task: Any, *, key: str, max_length: int, padding: str,
    labelled: bool | None = None,
) -> TextDataset:
    """Tokenize ``rows`` the way ``task`` (a :class:`~quantkit.tasks.Task` object) reads them (truncating to
    ``max_length``) into a :class:`TextDataset`.

    ``labelled=False`` skips the references even when the data has a label column.
    """
    columns = task.columns(ds)
    with_labels = columns.label is not None if labelled is None else labelled and columns.label is not None
    data = task.encode(rows, tokenizer, columns, key=key, max_length=max_length, padding=padding,
                       labelled=with_labels)
    return task.limit(data, ds.limit) if ds.limit is not None else data


def load_text_dataset(
    ds: DatasetSpec, tokenizer: Any, task: Any, *, key: str, max_length: int, padding: str,
) -> TextDataset:
    """:func:`load_rows` then :func:`encode` with ``task`` (a :class:`~quantkit.tasks.Task` object)."""
    rows = load_rows(ds, key, task.columns(ds))
    data = encode(rows, tokenizer, ds, task, key=key, max_length=max_length, padding=padding)
    logger.info("%s: %d rows from %d examples of %s", key, len(data), len(rows), ds.path)
    return data
