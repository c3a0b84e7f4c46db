"""Stage 3 (data): text-classification data a run would choke on or learn nothing from.

Complements :mod:`quantkit.checks.dataset` (parsing, columns, labels): every text empty, texts so
long that tokenizing them dominates the run, fewer calibration rows than one calibration batch, and
evaluation sets too small for the metric to mean anything.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from .base import CheckContext, Problem, check, error, warning
from .dataset import dataset_columns, used_entries, get_rows, rows_used

__all__ = ["LONG_TEXT_CHARS", "utf8_problem", "check_encoding", "check_texts", "check_data_sizes"]

#: Texts above this many characters are tokenized in full before truncation: slow, and pointless.
LONG_TEXT_CHARS = 100_000
#: Metrics that are undefined on fewer than two rows.
_NEEDS_TWO = {"pearson", "spearman", "matthews_correlation"}


def utf8_problem(path: Path, chunk: int = 1 << 20) -> str | None:
    """None when the file is valid UTF-8 (read in chunks), else where it is not."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    return f"invalid UTF-8 at byte {offset + exc.start}"
                offset += len(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "invalid UTF-8 at the end of the file (cut in the middle of a character)"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    return None


@check("data.encoding", stage="data")
def check_encoding(ctx: CheckContext) -> list[Problem]:
    """Local text files (.csv, .json, .jsonl) are UTF-8, as the dataset loader reads them."""
    problems: list[Problem] = []
    for key, ds in used_entries(ctx):
        path = Path(ds.path)
        if not ds.is_local or ds.file_format not in ("csv", "json") or not path.is_file():
            continue
        if (why := utf8_problem(path)) is not None:
            problems.append(error(f"{key}.path", f"{path.name}: {why}; the loader reads UTF-8 only",
                                  f"re-encode it, e.g. iconv -f latin1 -t utf-8 {path.name}"))
    return problems


@check("data.texts", stage="data")
def check_texts(ctx: CheckContext) -> list[Problem]:
    """Text columns are not all empty, and hold no texts so long that tokenizing them dominates the run."""
    problems: list[Problem] = []
    for key, ds in used_entries(ctx):
        view = get_rows(ctx, key, ds).value
        if view is None or view.table is None:
            continue
        stop = ds.limit if (ds.limit is not None and not ds.shuffle) else None
        task, columns = dataset_columns(ctx, ds)
        if task is None:
            continue
        for i, col in enumerate(columns.text):
            if col not in view.columns:
                continue  # data.columns reports it
            values = view.column(col, stop)
            if task.text_column_kind == "words":  # a list of words per row: its text is the words joined
                values = [" ".join(map(str, v)) if isinstance(v, (list, tuple)) else v for v in values]
            texts = ["" if v is None else str(v) for v in values]
            if texts and not any(t.strip() for t in texts):
                problems.append(error(f"{key}.text_columns.{i}", f"every {col!r} value in {view.path} is empty or "
                                      "null: there is no text to tokenize", f"point {key} at the text data"))
                continue
            empty = sum(1 for v in values if v is not None and not str(v).strip())
            if empty:
                problems.append(warning(f"{key}.text_columns.{i}", f"{empty} row(s) of {view.path} have an empty "
                                        f"{col!r}; they are tokenized as special tokens only"))
            long = [len(t) for t in texts if len(t) > LONG_TEXT_CHARS]
            if long and not task.one_document:  # a causal LM's text is one long document by design
                problems.append(warning(f"{key}.text_columns.{i}", f"{len(long)} row(s) of {view.path} have a "
                                        f"{col!r} over {LONG_TEXT_CHARS} characters (longest {max(long)}); each is "
                                        "tokenized in full before truncation to data.max_length",
                                        "cut the texts to a few thousand characters first"))
    return problems


@check("data.sizes", stage="data")
def check_data_sizes(ctx: CheckContext) -> list[Problem]:
    """The calibration set fills at least one calibration batch; the evaluation set is big enough to score."""
    spec = ctx.spec
    problems: list[Problem] = []
    for key, ds in used_entries(ctx):
        view = get_rows(ctx, key, ds).value
        if view is None or not view.num_rows:
            continue
        n = rows_used(ds, view)
        if key == "data.calibration" and ctx.static_used:
            batch = spec.quantization.calibration.batch_size
            if n < batch:
                problems.append(warning("quantization.calibration.batch_size", f"{batch} is more than the {n} "
                                        f"calibration row(s) of {view.path}: calibration runs one batch of {n}",
                                        f"give at least {batch} rows, or lower the batch size"))
        task, _ = dataset_columns(ctx, ds)
        if key == "data.evaluation" and task is not None and not task.one_document:
            metric = spec.evaluation.metric
            if n < 2 and metric in _NEEDS_TWO:
                problems.append(error(f"{key}.path", f"{view.path} has {n} row(s): {metric} is undefined on fewer "
                                      "than 2 rows", "evaluate on more rows"))
            elif n < 10:
                problems.append(warning(f"{key}.path", f"{view.path} has only {n} row(s): one prediction moves "
                                        f"{metric} by {1 / n:.0%}, more than any tolerance",
                                        "evaluate on a few hundred rows"))
    return problems
