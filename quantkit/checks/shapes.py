"""Stage 4: symbolic shapes.

- The graph to be exported: the exporter ``export.exporter`` resolves to names every input with its
  dynamic axes and dtype (quantkit's: the tokenizer's inputs the model's ``forward`` takes; optimum-onnx's:
  its ONNX export config for (model type, task)); each must be produced by the tokenizer pipeline
  (:func:`quantkit.data.encode` → int64 ``[batch, sequence]``) with the right dtype and rank.
- Axes pinned by ``export.dynamic_axes`` must agree with every batch size and length the run uses.
- An existing ONNX model (``--model`` folder with ``model.onnx``, or :func:`check_onnx_model`)
  passes ONNX strict shape inference, and its inputs have symbolic batch/sequence axes (or the
  pinned sizes) that match what the pipeline feeds; a mismatch names the node/input and both shapes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..export import resolve_exporter
from ..export.torchscript import graph_inputs, model_class
from ..spec import QuantizationSpec
from .base import CheckContext, Memo, Problem, check, error, warning
from .dataset import get_rows, rows_used, tokenized_sample
from .model import get_config, get_task, get_tokenizer

__all__ = ["get_onnx_config", "check_onnx_model", "pipeline_feeds"]

_AXIS = {"batch": 0, "sequence": 1}


def get_onnx_config(ctx: CheckContext) -> Memo:
    """The inputs of the graph ``export_onnx`` will write: ``{name: (axes by index, dtype, rank)}`` from the
    exporter ``export.exporter`` resolves to (None when the model or task is unknown)."""

    def compute() -> Memo:
        config, task = get_config(ctx).value, get_task(ctx).value
        if config is None or task is None:
            return Memo(None)

        model_type = getattr(config, "model_type", "") or ""
        exporter = resolve_exporter(ctx.spec.export.exporter, model_type, task)
        if exporter == "optimum":
            return Memo(_optimum_inputs(config, task))

        tok = get_tokenizer(ctx).value
        cls = model_class(config, task)
        if cls is None or tok is None:
            return Memo(None)  # model.task / model.tokenizer report why
        try:
            names = graph_inputs(cls, tok, config)
        except Exception:  # noqa: BLE001 - model.task reports a model quantkit cannot export
            return Memo(None)
        return Memo({n: ({0: "batch_size", 1: "sequence_length"}, "int64", 2) for n in names})

    return ctx.memo("onnx_config", compute)


def _optimum_inputs(config: Any, task: str) -> dict[str, tuple[dict[int, str], str, int]] | None:
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the ONNX configs)
    from optimum.exporters.tasks import TasksManager

    try:
        ctor = TasksManager.get_exporter_config_constructor(
            exporter="onnx", model_type=config.model_type, task=task, library_name="transformers")
        onnx_config = ctor(config)
    except (KeyError, ValueError):
        return None  # model.task reports why
    try:
        dummy = onnx_config.generate_dummy_inputs(framework="np")
    except Exception:  # noqa: BLE001 - some configs need more than the model config
        dummy = {}
    out = {}
    for name, axes in onnx_config.inputs.items():
        rank = dummy[name].ndim if name in dummy else ((max(axes) + 1) if axes else 0)
        full = {i: axes.get(i, dummy[name].shape[i] if name in dummy else "?") for i in range(rank)}
        out[name] = (full, str(dummy[name].dtype) if name in dummy else "int64", rank)
    return out


def _fmt(shape: Any) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def pipeline_feeds(ctx: CheckContext) -> dict[str, tuple[str, list[Any]]] | None:
    """What the tokenizer pipeline feeds the model: ``{name: (dtype, [batch, sequence])}``."""
    memo = tokenized_sample(ctx)
    if memo.value is None:
        return None
    seq: Any = ctx.spec.data.max_length if ctx.spec.data.padding == "max_length" else "longest<=" + str(
        ctx.spec.data.max_length)
    return {n: (str(a.dtype), ["batch", seq] if a.ndim == 2 else ["batch", *a.shape[1:]])
            for n, a in memo.value["inputs"].items()}


@check("shapes.inputs", stage="shapes")
def check_export_inputs(ctx: CheckContext) -> list[Problem]:
    """Every input of the graph to export is produced by the tokenizer pipeline, with its dtype and rank."""
    problems = list(tokenized_sample(ctx).problems)
    graph = get_onnx_config(ctx).value
    feeds = pipeline_feeds(ctx)
    if graph is None or feeds is None:
        return problems
    produced = ", ".join(feeds)
    for name, (axes, dtype, rank) in graph.items():
        names = [axes.get(i, "?") for i in range(rank)]
        if name not in feeds:
            problems.append(error(
                "model.name_or_path",
                f"the exported graph needs input {name!r} {_fmt(names)} ({dtype}), which the tokenizer pipeline "
                f"does not produce (it produces {produced})",
                "use the tokenizer the model was trained with, or a tokenizer whose model_input_names include it",
            ))
            continue
        fed_dtype, fed_shape = feeds[name]
        if rank != len(fed_shape):
            problems.append(error(
                "model.task",
                f"input {name!r}: the exported graph expects rank {rank} {_fmt(names)}, the tokenizer pipeline "
                f"feeds rank {len(fed_shape)} {_fmt(fed_shape)}",
                "quantkit feeds [batch, sequence] text batches: use a task whose inputs have that form "
                "(text-classification)",
            ))
        elif not np.issubdtype(np.dtype(dtype), np.integer):
            problems.append(error("model.task", f"input {name!r}: the exported graph expects {dtype}, the tokenizer "
                                  f"pipeline feeds {fed_dtype} token ids"))
    return problems


def _fixed_axes(spec: QuantizationSpec) -> dict[str, int]:
    e = spec.export
    sizes = {"batch": e.static_batch_size, "sequence": e.static_sequence_length}
    return {axis: sizes[axis] for axis in ("batch", "sequence") if axis not in e.dynamic_axes}


@check("shapes.fixed_axes", stage="shapes")
def check_fixed_axes(ctx: CheckContext) -> list[Problem]:
    """Axes pinned by export.dynamic_axes agree with every batch size and sequence length the run feeds."""
    spec = ctx.spec
    fixed = _fixed_axes(spec)
    problems: list[Problem] = []
    if "batch" in fixed:
        size = fixed["batch"]
        users = [("evaluation.batch_size", spec.evaluation.batch_size),
                 ("evaluation.latency.batch_size", spec.evaluation.latency.batch_size)]
        if spec.tuning is not None and spec.tuning.latency is not None:
            users.append(("tuning.latency.batch_size", spec.tuning.latency.batch_size))
        if ctx.static_used:
            users.append(("quantization.calibration.batch_size", spec.quantization.calibration.batch_size))
        grid = getattr(spec.evaluation, "shapes", None)  # evaluation.shapes grid, where the spec has it
        if grid is not None:
            users += [("evaluation.shapes.batch_sizes", b) for b in grid.batch_sizes]
        for key, value in users:
            if value != size:
                problems.append(error(key, f"{value}, but the graph's batch axis is fixed at {size} "
                                      f"(export.static_batch_size; batch not in export.dynamic_axes): "
                                      f"inputs [{value}, ...] cannot feed [{size}, ...]",
                                      f"set {key}: {size}, or add batch to export.dynamic_axes"))
        view = get_rows(ctx, "data.evaluation", spec.data.evaluation).value
        if view is not None and view.num_rows and size > 1 and rows_used(spec.data.evaluation, view) % size:
            n = rows_used(spec.data.evaluation, view)
            problems.append(error("export.static_batch_size", f"{n} evaluation rows do not split into batches of "
                                  f"{size}: the last batch has {n % size} rows and cannot feed the fixed batch axis",
                                  "add batch to export.dynamic_axes, or use a data.evaluation.limit divisible by "
                                  f"{size}"))
    if "sequence" in fixed:
        size = fixed["sequence"]
        lat = [("evaluation.latency.sequence_length", spec.evaluation.latency.sequence_length)]
        if spec.tuning is not None and spec.tuning.latency is not None:
            lat.append(("tuning.latency.sequence_length", spec.tuning.latency.sequence_length))
        grid = getattr(spec.evaluation, "shapes", None)
        if grid is not None:
            lat += [("evaluation.shapes.sequence_lengths", s) for s in grid.sequence_lengths]
        for key, value in lat:
            if value is not None and value != size:
                problems.append(error(key, f"{value}, but the graph's sequence axis is fixed at {size} "
                                      "(export.static_sequence_length)", f"set {key}: {size} or drop it"))
    return problems


@check("shapes.onnx", stage="shapes")
def check_existing_onnx(ctx: CheckContext) -> list[Problem]:
    """An ONNX model given with --model passes strict shape inference and matches the pipeline's feeds."""
    if ctx.onnx_path is None:
        return []
    return check_onnx_model(ctx.onnx_path, ctx.spec, feeds=pipeline_feeds(ctx))


def _dims(value_type: Any) -> list[Any] | None:
    t = value_type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_param if d.HasField("dim_param") else (int(d.dim_value) if d.HasField("dim_value") else "?")
            for d in t.shape.dim]


def _node_shapes(model: Any, node_name: str) -> str:
    """'input [shape], ...' of a node, from a lenient shape-inference pass."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001
        inferred = model
    g = inferred.graph
    shapes: dict[str, Any] = {i.name: list(i.dims) for i in g.initializer}
    for vi in [*g.input, *g.value_info, *g.output]:
        shapes.setdefault(vi.name, _dims(vi.type))
    node = next((n for n in g.node if n.name == node_name), None)
    if node is None:
        return ""
    parts = [f"{i} {_fmt(shapes[i]) if shapes.get(i) is not None else '[?]'}" for i in node.input if i]
    return f"; its inputs: {', '.join(parts)}"


def check_onnx_model(
    path: str | Path,
    spec: QuantizationSpec | None = None,
    *,
    feeds: dict[str, tuple[str, list[Any]]] | None = None,
) -> list[Problem]:
    """Check an ONNX file: strict shape inference with symbolic dims, and its inputs against the pipeline.

    ``feeds`` is what the tokenizer pipeline produces (``{name: (dtype, shape)}``, see
    :func:`pipeline_feeds`); without it every input is expected to be int64 ``[batch, sequence]``.
    Axes pinned by ``spec.export.dynamic_axes`` must equal the pinned sizes; all others must be
    symbolic. Returns problems (never raises for a bad model).
    """
    import onnx

    path = Path(path)
    key = "model.name_or_path"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        return [error(key, f"cannot read ONNX model {path}: {type(exc).__name__}: {exc}")]
    problems: list[Problem] = []
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - InferenceError, or a checker error
        text = str(exc).strip()
        for m in re.finditer(r"\(op_type:(\w+), node name: ([^)]*)\): (?:\[\w+\] )?([^\n(]+)", text):
            op, node, why = m.group(1), m.group(2), m.group(3).strip()
            problems.append(error(key, f"{path.name}: ONNX shape inference fails at node {node!r} ({op}): {why}"
                                  f"{_node_shapes(model, node)}", "re-export the model (quantkit exports it itself)"))
        if not problems:
            problems.append(error(key, f"{path.name}: ONNX shape inference fails: {text.splitlines()[0]}"))
    fixed = _fixed_axes(spec) if spec is not None else {}
    max_length = spec.data.max_length if spec is not None else None
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = _dims(inp.type) or []
        elem = onnx.TensorProto.DataType.Name(inp.type.tensor_type.elem_type).lower()
        if feeds is not None and inp.name not in feeds:
            problems.append(error(key, f"{path.name}: input {inp.name!r} {_fmt(dims)} is not produced by the "
                                  f"tokenizer pipeline (it produces {', '.join(feeds)})"))
            continue
        fed_dtype, fed_shape = feeds[inp.name] if feeds is not None else ("int64", ["batch", max_length or "seq"])
        if elem != fed_dtype:
            problems.append(error(key, f"{path.name}: input {inp.name!r} is {elem}, the tokenizer pipeline feeds "
                                  f"{fed_dtype}", "re-export with int64 token inputs"))
        if len(dims) != len(fed_shape):
            problems.append(error(key, f"{path.name}: input {inp.name!r} has rank {len(dims)} {_fmt(dims)}, the "
                                  f"tokenizer pipeline feeds rank {len(fed_shape)} {_fmt(fed_shape)}"))
            continue
        for axis, idx in _AXIS.items():
            dim = dims[idx]
            want = fixed.get(axis)
            if want is None and isinstance(dim, int):
                fed = fed_shape[idx]
                problems.append(error(
                    "export.dynamic_axes",
                    f"{path.name}: input {inp.name!r} has shape {_fmt(dims)}: its {axis} axis is fixed at {dim}, but "
                    f"the pipeline feeds {_fmt(fed_shape)} ({axis} {fed}{'' if axis == 'sequence' else ' varies'}); "
                    f"expected a symbolic {axis} dim",
                    f"re-export with a symbolic {axis} axis, or pin it in the spec (export.dynamic_axes without "
                    f"{axis}, export.static_{axis}_{'size' if axis == 'batch' else 'length'}: {dim})",
                ))
            elif want is not None and dim != want:
                problems.append(error(
                    "export.dynamic_axes",
                    f"{path.name}: input {inp.name!r} has shape {_fmt(dims)}, but the spec pins its {axis} axis at "
                    f"{want} (the pipeline feeds {_fmt([want if i == idx else d for i, d in enumerate(fed_shape)])})",
                ))
    if not [p for p in problems if p.severity == "error"] and len(model.graph.input) == len(inits):
        problems.append(warning(key, f"{path.name}: the graph has no inputs"))
    return problems
