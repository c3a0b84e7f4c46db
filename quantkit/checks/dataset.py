"""Stage 3: the data ↔ model contract.

Dataset files are parsed with pyarrow (what ``datasets`` uses underneath, without its cache);
then the named columns, the label values against the model's ``id2label``/``num_labels``,
``max_length`` against the position embeddings and the tokenizer, the calibration sample count
and the metric against the task are checked. A few rows go through the real tokenization
pipeline (:func:`quantkit.data.encode`), timed, for the duration estimate.
"""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import encode
from ..errors import RegistryError
from ..tasks import canonical_task, task_for
from ..resolve import label_issue
from ..spec import DatasetSpec
from .base import CheckContext, Memo, Problem, check, error, warning
from .files import dataset_entries
from .model import get_config, get_task, get_task_object, get_tokenizer, max_positions, relative_positions

__all__ = ["TableView", "get_rows", "rows_used", "tokenized_sample"]

#: Rows tokenized (and timed) per dataset for the probe.
PROBE_ROWS = 32


@dataclass
class TableView:
    """A dataset's rows as read for the checks: column names, the rows, and label facts."""

    path: str
    columns: list[str]
    num_rows: int
    table: Any | None = None  # pyarrow.Table (local files)
    class_names: list[str] | None = None  # ClassLabel names (Hub datasets)

    def column(self, name: str, stop: int | None = None) -> list[Any]:
        if self.table is None:
            return []
        col = self.table.column(name)
        return (col.slice(0, stop) if stop is not None else col).to_pylist()

    def type_of(self, name: str) -> str:
        return str(self.table.schema.field(name).type) if self.table is not None else "?"


def _read_local(path: Path, fmt: str) -> Any:
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if fmt == "csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    if fmt == "text":  # one document, as quantkit.data reads it
        with open(path, encoding="utf-8") as f:
            return pa.Table.from_pydict({"text": [f.read()]})
    import pyarrow.json as pj

    try:
        return pj.read_json(path)
    except pa.ArrowInvalid:
        with open(path, encoding="utf-8") as f:
            head = f.read(1).strip() or f.read(64).lstrip()[:1]
        if not head.startswith(("[", "{")):
            raise
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)  # a JSON array of records (not JSON Lines)
        if isinstance(obj, list):
            return pa.Table.from_pylist(obj)
        if isinstance(obj, dict) and all(isinstance(v, list) for v in obj.values()):
            return pa.Table.from_pydict(obj)
        raise


def get_rows(ctx: CheckContext, key: str, ds: DatasetSpec) -> Memo:
    """The parsed rows of one dataset entry. Problems are owned by ``data.files``."""

    def compute() -> Memo:
        if ds.is_local:
            path = Path(ds.path)
            if not path.is_file() or ds.file_format is None:
                return Memo(None)  # files.data reports it (folders: checked when loaded)
            try:
                table = _read_local(path, ds.file_format)
            except Exception as exc:  # noqa: BLE001 - pyarrow/json raise many types
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                fix = ("use a UTF-8 text file" if ds.file_format == "text" else
                       "fix the file: one JSON object per line for .jsonl, a header row for .csv")
                return Memo(None, [error(f"{key}.path", f"cannot parse {path.name} as {ds.file_format}: {msg}", fix)])
            if table.num_rows == 0:
                return Memo(None, [error(f"{key}.path", f"{path.name} has no rows")])
            return Memo(TableView(path.name, list(table.column_names), table.num_rows, table))
        return _hub_rows(key, ds)

    return ctx.memo(f"rows:{key}", compute)


def _hub_rows(key: str, ds: DatasetSpec) -> Memo:
    """Columns and class names of a Hub dataset from its builder info (no data download)."""
    try:
        import datasets

        builder = datasets.load_dataset_builder(ds.path, ds.name, revision=ds.revision)
    except Exception as exc:  # noqa: BLE001 - network, auth, missing config...
        return Memo(None, [error(f"{key}.path", f"Hub dataset {ds.path!r}"
                                 f"{f' ({ds.name})' if ds.name else ''} cannot be reached or read: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                                 "check the dataset id, data.*.name, network access and HF_TOKEN")])
    info = builder.info
    problems: list[Problem] = []
    splits = info.splits or {}
    if splits and ds.split not in splits:
        problems.append(error(f"{key}.split", f"{ds.split!r} is not a split of {ds.path} "
                              f"(splits: {', '.join(splits)})"))
    features = info.features or {}
    names = None
    if ds.label_column and ds.label_column in features and hasattr(features[ds.label_column], "names"):
        names = list(features[ds.label_column].names)
    rows = splits[ds.split].num_examples if ds.split in splits else 0
    view = TableView(ds.path, list(features), rows or 0, None, names) if features else None
    return Memo(view, problems)


def rows_used(ds: DatasetSpec, view: TableView) -> int:
    """Rows quantize would use (after ``limit``)."""
    return min(view.num_rows, ds.limit) if ds.limit is not None else view.num_rows


def _closest(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------- checks
@check("data.files", stage="data")
def check_parse(ctx: CheckContext) -> list[Problem]:
    """Every dataset file parses and has rows (Hub datasets: the builder info is reachable)."""
    return [p for key, ds in used_entries(ctx) for p in get_rows(ctx, key, ds).problems]


def used_entries(ctx: CheckContext) -> list[tuple[str, DatasetSpec]]:
    """The dataset entries this run reads (calibration data only when it calibrates, trains or INC needs it)."""
    return [(k, ds) for k, ds in dataset_entries(ctx) if k != "data.calibration" or ctx.calibration_used]


def dataset_columns(ctx: CheckContext, ds: DatasetSpec) -> Any:
    """The task's columns of ``ds``: (task, columns), the task bound to the model, else the named task unbound;
    (None, None) when no task is known (the model checks say why)."""

    task = get_task_object(ctx).value
    if task is None:
        name = get_task(ctx).value or ctx.spec.model.task
        try:
            task = task_for(canonical_task(name)) if name else None
        except RegistryError:
            task = None
    if task is None:
        return None, None
    return task, task.columns(ds)


@check("data.columns", stage="data")
def check_columns(ctx: CheckContext) -> list[Problem]:
    """The text and label columns (the spec's, or the task's defaults) exist, and text columns hold text."""
    problems: list[Problem] = []
    for key, ds in used_entries(ctx):
        view = get_rows(ctx, key, ds).value
        if view is None or not view.columns:
            continue
        cols = view.columns
        listing = ", ".join(cols)
        task, columns = dataset_columns(ctx, ds)
        if task is None:
            continue
        for i, col in enumerate(columns.text):
            if col not in cols:
                problems.append(error(f"{key}.text_columns.{i}", f"column {col!r} not in {view.path} "
                                      f"(columns: {listing}){_closest(col, cols)}",
                                      f"set {key}.text_columns to the column(s) holding the text"))
            elif view.table is not None and task.text_column_kind == "words" and not view.type_of(col).startswith(
                    ("list", "large_list")):
                problems.append(error(f"{key}.text_columns.{i}", f"column {col!r} of {view.path} holds "
                                      f"{view.type_of(col)}; {task.name} reads a list of words per row",
                                      "point text_columns at the column of word lists (e.g. tokens)"))
            elif view.table is not None and task.text_column_kind == "text" and view.type_of(col) not in (
                    "string", "large_string"):
                problems.append(warning(f"{key}.text_columns.{i}", f"column {col!r} of {view.path} holds "
                                        f"{view.type_of(col)}, not text; it will be tokenized as str()"))
            elif view.table is not None and (nulls := view.table.column(col).null_count):
                problems.append(warning(f"{key}.text_columns.{i}", f"{nulls} row(s) of {view.path} have no "
                                        f"{col!r} value; they are tokenized as empty text"))
        if columns.label is not None and columns.label not in cols:
            default = f" ({task.name}'s default)" if ds.label_column == "auto" else ""
            problems.append(error(f"{key}.label_column", f"column {columns.label!r}{default} not in {view.path} "
                                  f"(columns: {listing}){_closest(columns.label, cols)}",
                                  f"set {key}.label_column to the label column, or null for unlabeled data "
                                  "(then evaluation.metric: agreement)"))
    return problems


def _label_problems(key: str, view: TableView, ds: DatasetSpec, config: Any) -> list[Problem]:
    num_labels = getattr(config, "num_labels", None)
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    label2id = {str(k).lower(): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    names = ", ".join(f"{i}: {n}" for i, n in sorted(id2label.items()))
    where = f"{key}.label_column"
    col = ds.label_column
    if view.class_names is not None:  # Hub ClassLabel
        bad = [(i, n) for i, n in enumerate(view.class_names) if i in id2label and id2label[i].lower() != n.lower()
               and not id2label[i].upper().startswith("LABEL_")]
        problems = []
        if num_labels is not None and len(view.class_names) > num_labels:
            problems.append(error(where, f"{view.path} has {len(view.class_names)} classes "
                                  f"({', '.join(view.class_names)}) but the model has num_labels {num_labels}"))
        if bad:
            problems.append(warning(where, "class ids mean different things: " + "; ".join(
                f"{i} is {n!r} in {view.path} but {id2label[i]!r} in the model" for i, n in bad)))
        return problems
    if view.table is None:
        return []
    stop = ds.limit if (ds.limit is not None and not ds.shuffle) else None
    values = view.column(col, stop)
    rows = "rows" if stop is None else f"the first {stop} rows"
    nulls = sum(v is None for v in values)
    if nulls:
        return [error(where, f"{nulls} of {rows} of {view.path} have no {col!r} value; expected a label in every row",
                      "drop unlabeled rows, or set label_column: null with metric: agreement")]
    kind = view.type_of(col)
    if num_labels == 1:  # regression
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return [error(where, f"the model is a regressor (num_labels 1), so {col!r} must hold numbers; "
                          f"{view.path} has {kind} values")]
        return []
    if all(isinstance(v, str) for v in values):
        unknown: dict[str, int] = {}
        for v in values:
            if v.lower() not in label2id:
                unknown[v] = unknown.get(v, 0) + 1
        if unknown:
            shown = ", ".join(f"{v!r} ({n} rows)" for v, n in sorted(unknown.items())[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            expected = ", ".join(sorted(label2id)) or "none"
            return [error(where, f"labels {shown}{more} in {view.path} are not names of the model's classes; "
                          f"expected one of {expected} (model label2id, case-insensitive) or integer ids",
                          "rename the labels, or use a model whose config.json id2label/label2id name these classes")]
        return []
    if kind.startswith(("int", "uint", "bool")):
        ints = [int(v) for v in values]
    elif kind in ("double", "float", "halffloat") and all(float(v).is_integer() for v in values):
        ints = [int(v) for v in values]
    else:
        sample = next((v for v in values if not isinstance(v, int)), values[0])
        return [error(where, f"expected integer class ids or label names in {col!r} of {view.path}, "
                      f"got {kind} values like {sample!r}",
                      "regression targets need a model with num_labels: 1 and metric pearson/spearman")]
    lo, hi = min(ints), max(ints)
    if num_labels is not None and (lo < 0 or hi >= num_labels):
        outside = sorted({v for v in ints if v < 0 or v >= num_labels})
        return [error(where, f"label values span {lo}..{hi} in {view.path} (outside: {outside[:5]}) but the model has "
                      f"num_labels {num_labels}: expected ids 0..{num_labels - 1} ({names})",
                      "use a model trained for these classes (config num_labels/id2label), or fix the labels")]
    return []


@check("data.labels", stage="data")
def check_labels(ctx: CheckContext) -> list[Problem]:
    """Label values match the model: ids within num_labels, names in label2id, numbers for regression."""
    config = get_config(ctx).value
    if config is None:
        return []
    problems: list[Problem] = []
    for key, ds in used_entries(ctx):  # quantize reads the labels of every dataset it loads, calibration too
        task, columns = dataset_columns(ctx, ds)
        view = get_rows(ctx, key, ds).value
        if task is None or view is None or any(c not in view.columns for c in (*columns.text, columns.label) if c):
            continue
        if task.class_labels and columns.label is not None:
            problems += _label_problems(key, view, ds.model_copy(update={"label_column": columns.label}), config)
        if view.table is not None:  # the task's own data contract, on the first rows
            n = min(view.num_rows, 256)
            rows = {c: view.column(c, n) for c in (*columns.text, columns.label) if c}
            for rp in task.check_rows(rows, columns, key):
                make = error if rp.severity == "error" else warning
                problems.append(make(rp.key_path, f"{view.path}: {rp.message}", rp.hint or None))
    return problems


@check("data.max_length", stage="data")
def check_max_length(ctx: CheckContext) -> list[Problem]:
    """max_length fits the position embeddings and the tokenizer; latency lengths too."""
    config = get_config(ctx).value
    if config is None:
        return []
    problems: list[Problem] = []
    limit = max_positions(config)
    spec = ctx.spec
    if limit is not None:
        what = f"the model's max_position_embeddings {limit}"
        soft = relative_positions(config)  # rotary/relative positions: longer inputs run, quality may drop
        make = warning if soft else error
        why = "(rotary/relative positions: it runs, but beyond the trained length)" if soft else \
            "longer inputs index past the position embedding table"
        if spec.data.max_length > limit:
            problems.append(make("data.max_length", f"{spec.data.max_length} exceeds {what}: {why}",
                                 f"set data.max_length to at most {limit}"))
        tl = spec.tuning.latency if spec.tuning is not None else None
        if tl is not None and tl.sequence_length is not None and tl.sequence_length > limit:
            problems.append(make("tuning.latency.sequence_length", f"{tl.sequence_length} exceeds {what}",
                                 f"set it to at most {limit}"))
        if soft:
            limit = None  # not a hard cap for the checks below
    tok = get_tokenizer(ctx).value
    tok_max = getattr(tok, "model_max_length", None) if tok is not None else None
    grid = getattr(spec.evaluation, "shapes", None)  # evaluation.shapes grid, where the spec has it
    if grid is not None:
        cap = min(x for x in (limit, tok_max if isinstance(tok_max, int) and tok_max < 10**6 else None, 10**9) if x)
        too_long = [s for s in grid.sequence_lengths if s > cap]
        if too_long:
            problems.append(error("evaluation.shapes.sequence_lengths", f"{too_long} exceed the longest sequence the "
                                  f"model and tokenizer take ({cap})", f"keep the grid's lengths at most {cap}"))
    binding = limit is None or tok_max is None or tok_max < limit or spec.data.max_length <= limit
    if isinstance(tok_max, int) and tok_max < 10**6 and spec.data.max_length > tok_max and binding:
        problems.append(error("data.max_length", f"{spec.data.max_length} exceeds the tokenizer's model_max_length "
                              f"{tok_max}", f"set data.max_length to at most {tok_max}"))
    return problems


@check("data.calibration", stage="data")
def check_calibration_data(ctx: CheckContext) -> list[Problem]:
    """The calibration set has the samples asked for, and is not the evaluation set."""
    spec = ctx.spec
    cal = spec.data.calibration
    if cal is None or not ctx.calibration_used:
        return []
    problems: list[Problem] = []
    if cal.path == spec.data.evaluation.path and cal.split == spec.data.evaluation.split and cal.name == \
            spec.data.evaluation.name:
        problems.append(warning("data.calibration.path", f"the calibration data is the evaluation data "
                                f"({Path(cal.path).name}): the measured accuracy will look better than it is",
                                "calibrate on training data (e.g. a shuffled, limited train split)"))
    view = get_rows(ctx, "data.calibration", cal).value
    static_searched = spec.tuning is not None and "static" in spec.tuning.space.get("approach", [])
    if view is None or not (spec.quantization.approach == "static" or static_searched):
        return problems  # only static calibration counts samples (QAT trains on every row)
    wanted = [spec.quantization.calibration.num_samples]
    if spec.tuning is not None:
        wanted += [v for v in spec.tuning.space.get("calibration.num_samples", []) if isinstance(v, int)]
    available = rows_used(cal, view)
    if available and max(wanted) > available:  # quantize goes on with what there is: a warning
        key = ("quantization.calibration.num_samples" if wanted[0] > available
               else "tuning.space.calibration.num_samples")
        problems.append(warning(key, f"asks for {max(wanted)} calibration samples but data.calibration "
                                f"({view.path}{f', limit {cal.limit}' if cal.limit else ''}) provides {available} "
                                f"rows: only {available} will be used",
                                f"lower it to at most {available}, or give more calibration rows"))
    return problems


@check("evaluation.metric", stage="data")
def check_metric(ctx: CheckContext) -> list[Problem]:
    """The metric fits the task (classification vs regression), the number of classes and the labels."""
    config = get_config(ctx).value
    task = get_task_object(ctx).value
    if config is None or task is None:
        return []
    ev = ctx.spec.evaluation
    ds = ctx.spec.data.evaluation
    columns = task.columns(ds)
    metric = ev.metric or task.default_metric(columns.label is not None)
    problems: list[Problem] = []
    problem = task.check_metric(metric, ev.average)
    if problem:
        key = "evaluation.average" if "'binary'" in problem else "evaluation.metric"
        problems.append(error(key, problem, f"set evaluation.metric to one of {', '.join(task.metrics)} "
                              f"(the {task.name} metrics), or leave it out for {task.default_metric()}"))
        return problems
    if issue := label_issue(metric, task.metrics[metric].needs_labels, columns.label is not None):
        problems.append(error(*issue, "set label_column, or use metric: agreement"))
    view = get_rows(ctx, "data.evaluation", ds).value
    if (task.class_labels and view is not None and view.table is not None and columns.label in view.columns
            and metric in ("f1", "precision", "recall", "matthews_correlation")):
        distinct = set(view.column(columns.label, ds.limit if not ds.shuffle else None))
        if len(distinct) < 2:
            problems.append(warning("evaluation.metric", f"the evaluation labels of {view.path} hold one class only "
                                    f"({distinct}); {metric} is degenerate there", "use accuracy or more data"))
    return problems


def tokenized_sample(ctx: CheckContext) -> Memo:
    """A few evaluation rows through :func:`quantkit.data.encode` (the real pipeline), timed.

    Value: ``{"inputs": {name: array}, "seconds_per_row": float, "rows": n}`` or None.
    """

    def compute() -> Memo:
        tok = get_tokenizer(ctx).value
        ds = ctx.spec.data.evaluation
        view = get_rows(ctx, "data.evaluation", ds).value
        if tok is None:
            return Memo(None)

        max_length = ctx.spec.data.max_length
        limit = getattr(tok, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < max_length:
            max_length = limit  # too long a max_length is data.max_length's problem, not the pipeline's
        task, columns = dataset_columns(ctx, ds)
        if task is not None and view is not None and view.table is not None and all(c in view.columns for c in columns.text):
            n = min(PROBE_ROWS, view.num_rows)
            rows = {c: view.column(c, n) for c in columns.text}
        else:  # no readable rows: the pipeline still runs on placeholder text
            n = 2
            filler = ["quantkit", "pre-flight"] if task.text_column_kind == "words" else "quantkit pre-flight"
            rows = {c: [filler] * n for c in columns.text}
        sample = _Rows(rows, n)
        seconds = 0.0
        for _ in range(2):  # the second, warm run is the one timed
            start = time.perf_counter()
            try:
                enc = encode(sample, tok, ds, task, key="data.evaluation", max_length=max_length,
                             padding=ctx.spec.data.padding, labelled=False)
            except Exception as exc:  # noqa: BLE001 - reported by shapes.inputs
                return Memo(None, [error("data.evaluation.text_columns", f"the tokenization pipeline fails on rows "
                                         f"of {view.path if view else ds.path}: {type(exc).__name__}: {exc}")])
            seconds = time.perf_counter() - start
        return Memo({"inputs": enc.inputs, "seconds_per_row": seconds / n, "rows": n})

    return ctx.memo("tokenized_sample", compute)


class _Rows:
    """The slice of a ``datasets.Dataset`` API :func:`quantkit.data.encode` uses, over plain columns."""

    def __init__(self, columns: dict[str, list[Any]], n: int) -> None:
        self._columns, self._n = columns, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, slice):
            return {c: v[item] for c, v in self._columns.items()}
        return self._columns[item]
