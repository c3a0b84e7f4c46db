"""The model card (``README.md``) pushed with an artifact folder, generated from its report.

The metadata is what makes the model findable on the Hub: ``base_model`` (with
``base_model_relation: quantized``), ``library_name: onnx`` (the Hub's library filter for ONNX
models) plus the ``transformers`` and ``optimum`` tags (they load through transformers' config, tokenizer and
``pipeline`` and Optimum's ``ORTModelFor*``), ``pipeline_tag``, the ``license`` carried from the base model, ``datasets`` and a
``model-index`` with the evaluation metric of the FP32 and the INT8 model. The body states how the
model was quantized, on which CPU it was measured, FP32 vs INT8 accuracy, latency and size, the nodes
kept in FP32, the tuning summary and how to load it.

Every number comes from ``quantkit_report.json``; nothing depends on when or where the card is
generated, so the same folder always gives the same card (which keeps pushes idempotent). Local file
system paths are never written into the card, only file names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import ArtifactError
from .latency import timing_card_lines
from .spec import looks_like_repo_id
from .tasks import task_for

logger = logging.getLogger(__name__)

__all__ = [
    "LIBRARY_NAME",
    "BASE_TAGS",
    "model_card_text",
    "model_card_for_folder",
    "validate_model_card",
    "find_license",
    "find_base_model",
]

LIBRARY_NAME = "onnx"
BASE_TAGS = ("onnx", "int8", "quantized", "quantkit", "transformers", "optimum", "onnxruntime")

_METRIC_NAMES = {
    "accuracy": "Accuracy",
    "f1": "F1",
    "precision": "Precision",
    "recall": "Recall",
    "matthews_correlation": "Matthews correlation",
    "pearson": "Pearson correlation",
    "spearman": "Spearman correlation",
    "agreement": "Agreement with FP32 predictions",
    "exact_match": "Exact match",
    "cosine": "Cosine similarity to FP32 embeddings",
    "perplexity": "Perplexity",
    "kl_divergence": "KL divergence from FP32 (next token)",
    "top1_agreement": "Top-1 next-token agreement with FP32",
}
_DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".raw")
#: Operators that show what the quantized graph computes in integers.
_INT8_OPS = ("MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QLinearConv", "QuantizeLinear",
             "DequantizeLinear", "ConvInteger", "QGemm", "QAttention", "MatMulNBits", "GatherBlockQuantized")
_SHOWN_PACKAGES = ("quantkit", "onnxruntime", "optimum", "optimum-onnx", "transformers", "onnx", "torch",
                   "neural-compressor")
_MAX_TRIAL_ROWS = 30


# --------------------------------------------------------------------------- helpers
def _is_local(path: str) -> bool:
    return (
        path.startswith((".", "/", "~")) or "\\" in path or path.lower().endswith(_DATA_SUFFIXES)
        or os.path.exists(path)
    )


def _hub_id(value: Any) -> str | None:

    if isinstance(value, str) and value and not _is_local(value) and looks_like_repo_id(value):
        return value
    return None


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def _ms(value: Any) -> str:
    return f"{value:.2f} ms" if isinstance(value, (int, float)) else "-"


def _ratio(new: Any, old: Any) -> str:
    if isinstance(new, (int, float)) and isinstance(old, (int, float)) and old:
        return f"{new / old:.2f}×"
    return "-"


def _front_matter(path: Path) -> dict[str, Any]:
    """The YAML metadata block of a README.md, or {} (never raises)."""
    try:
        from huggingface_hub.repocard import metadata_load

        return metadata_load(path) or {}
    except Exception as exc:  # noqa: BLE001 - a malformed README only loses its metadata
        logger.debug("cannot read metadata of %s: %s", path, exc)
        return {}


def _dataset_label(path: str) -> str:
    """A dataset's name for the card: the Hub id, or a local file's folder and name (``spamassassin/validation.jsonl``;
    never the path above it)."""
    if _hub_id(path):
        return path
    local = Path(path)
    return "/".join(part for part in (local.parent.name, local.name) if part) or path


# --------------------------------------------------------------------------- metadata sources
def find_base_model(report: dict[str, Any], explicit: str | None = None) -> str | None:
    """The base model's Hub id: ``explicit``; else the report's model when it is a Hub id; else, for a local
    folder, the ``base_model`` of its README's front matter (a folder saved from the Hub often has one)."""
    if explicit:
        return explicit
    source = report.get("model", {}).get("name_or_path")
    if hub := _hub_id(source):
        return hub
    if isinstance(source, str) and source and Path(source).expanduser().is_dir():
        value = _front_matter(Path(source).expanduser() / "README.md").get("base_model")
        value = value[0] if isinstance(value, list) and len(value) == 1 else value
        return value if isinstance(value, str) and looks_like_repo_id(value) else None
    return None


def find_license(report: dict[str, Any], folder: Path | None = None, *, explicit: str | None = None) -> str | None:
    """The license to carry, from the first local source that has one: ``explicit``; the report's
    ``model.license``; the base model's local folder README front matter; the artifact folder's own README
    front matter. (The base model's card on the Hub is asked by :mod:`quantkit.hub` when these have none.)"""
    if explicit:
        return explicit
    model = report.get("model", {})
    if model.get("license"):
        return str(model["license"])
    candidates = []
    source = model.get("name_or_path")
    if isinstance(source, str) and source and Path(source).expanduser().is_dir():
        candidates.append(Path(source).expanduser() / "README.md")
    if folder is not None:
        candidates.append(folder / "README.md")
    for readme in candidates:
        if readme.is_file():
            value = _front_matter(readme).get("license")
            if value:
                return str(value)
    return None


# --------------------------------------------------------------------------- the card
def _metadata(report: dict[str, Any], repo_id: str, base_model: str | None, license: str | None) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    task = _task(report)
    cfg = report.get("quantization", {}).get("config", {})
    evaluation = report.get("evaluation", {})
    data_spec = report.get("spec", {}).get("data", {}) or {}
    approach = cfg.get("approach", "dynamic")
    tags = [*BASE_TAGS, f"{approach.replace('_', '-')}-quantization"]
    if approach == "weight_only":
        bits = (cfg.get("weight_only") or {}).get("bits", 4)
        tags = [t if t != "int8" else f"int{bits}" for t in tags]
    backend = report.get("quantization", {}).get("backend")
    if backend and backend not in tags:  # onnxruntime is a base tag already
        tags.append(backend)
    datasets = []
    for key in ("evaluation", "calibration"):
        ds = data_spec.get(key) or {}
        hub = _hub_id(ds.get("path"))
        if hub and hub not in datasets:
            datasets.append(hub)
    eval_results = None
    metric = evaluation.get("metric") or report.get("quantized", {}).get("metric")
    fp32_value = report.get("fp32", {}).get("value")
    q_value = report.get("quantized", {}).get("value")
    if metric and isinstance(fp32_value, (int, float)) and isinstance(q_value, (int, float)):
        ds_path = str(evaluation.get("dataset") or "")
        ds = data_spec.get("evaluation") or {}
        common = dict(
            task_type=task.card_task_type,
            task_name=task.card_task_type.replace("-", " ").title(),
            dataset_type=_dataset_label(ds_path),
            dataset_name=_dataset_label(ds_path) + (f" ({ds['name']})" if ds.get("name") else ""),
            dataset_config=ds.get("name"),
            dataset_split=evaluation.get("split"),
            dataset_revision=ds.get("revision"),
            metric_type=metric,
        )
        label = _METRIC_NAMES.get(metric, metric)
        eval_results = [
            EvalResult(**common, metric_value=round(float(fp32_value), 6), metric_name=f"{label} (FP32)"),
            EvalResult(**common, metric_value=round(float(q_value), 6), metric_name=f"{label} ({_quantized_label(report)})"),
        ]
    extra: dict[str, Any] = {}
    if base_model:
        extra["base_model_relation"] = "quantized"
    data = ModelCardData(
        base_model=base_model,
        library_name=LIBRARY_NAME,
        pipeline_tag=task.pipeline_tag,
        license=license,
        datasets=datasets or None,
        tags=tags,
        model_name=repo_id.split("/")[1],
        eval_results=eval_results,
        **extra,
    )
    return data.to_yaml()


def _results_section(report: dict[str, Any]) -> list[str]:
    fp32, q = report.get("fp32", {}), report.get("quantized", {})
    evaluation = report.get("evaluation", {})
    metric = evaluation.get("metric") or fp32.get("metric", "metric")
    ds = _dataset_label(str(evaluation.get("dataset") or ""))
    split = evaluation.get("split")
    examples = evaluation.get("examples")
    where = f"{ds}" + (f", split {split}" if split else "") + (f", {examples} examples" if examples else "")
    change = "-"
    if isinstance(fp32.get("value"), (int, float)) and isinstance(q.get("value"), (int, float)) and fp32["value"]:
        change = f"{(q['value'] - fp32['value']) / abs(fp32['value']):+.2%}"
    label = _quantized_label(report)
    lines = [
        "## Results",
        "",
        f"Evaluated on **{_cell(where)}** (max length {evaluation.get('max_length', '-')} tokens).",
        "",
        f"| | FP32 | {label} | {label} / FP32 |",
        "|---|---:|---:|---:|",
        f"| {_cell(metric)} | {_num(fp32.get('value'))} | {_num(q.get('value'))} | {change} |",
    ]
    result = report.get("result") or {}
    scores = result.get("scores") or {}
    for name in ("kl_divergence", "top1_agreement"):  # a causal LM's next-token agreement with FP32
        if name != metric and name in scores.get("quantized", {}):
            lines.append(f"| {name} vs FP32 | {_num(scores['fp32'][name])} | {_num(scores['quantized'][name])} | |")
    tps, dratio = result.get("decode_tokens_per_s") or {}, result.get("decode_latency_ratio") or {}
    if "fp32" in tps and "int8" in tps and dratio:
        lines.append(f"| decode tokens/s (batch 1) | {_num(tps['fp32'], 1)} | {_num(tps['int8'], 1)} | "
                     f"{dratio['median']:.2f}x time per token ({dratio['low']:.2f}-{dratio['high']:.2f}) |")
    fl, ql = fp32.get("latency") or {}, q.get("latency") or {}
    if fl and ql:
        shape = f"batch {fl.get('batch_size')} × {fl.get('sequence_length')} tokens, {fl.get('threads')} threads"
        measured = (report.get("result") or {}).get("latency_ratio")
        # one definition of the speed ratio everywhere: the median of per-round ratios (the Timing section's)
        p50_ratio = (f"{measured['median']:.2f}x" if isinstance(measured, dict) and measured.get("median")
                     else _ratio(ql.get('p50_ms'), fl.get('p50_ms')))
        lines += [
            f"| p50 latency ({shape}) | {_ms(fl.get('p50_ms'))} | {_ms(ql.get('p50_ms'))} | {p50_ratio} |",
            f"| p90 latency | {_ms(fl.get('p90_ms'))} | {_ms(ql.get('p90_ms'))} | "
            f"{_ratio(ql.get('p90_ms'), fl.get('p90_ms'))} |",
            f"| throughput (examples/s) | {_num(fl.get('throughput'), 1)} | {_num(ql.get('throughput'), 1)} | "
            f"{_ratio(ql.get('throughput'), fl.get('throughput'))} |",
            f"| peak memory (RSS MB) | {_num(fl.get('peak_rss_mb'), 0)} | {_num(ql.get('peak_rss_mb'), 0)} | "
            f"{_ratio(ql.get('peak_rss_mb'), fl.get('peak_rss_mb'))} |",
        ]
    lines.append(
        f"| model size (MB) | {_num(fp32.get('size_mb'), 1)} | {_num(q.get('size_mb'), 1)} | "
        f"{_ratio(q.get('size_bytes'), fp32.get('size_bytes'))} |"
    )
    lines += ["", "Latency is ONNX Runtime on the CPU below; ratios on other CPUs differ (see Hardware).", ""]
    return lines


def _quantized_label(report: dict[str, Any]) -> str:
    """INT8, or the weight-only bit width (INT4 / INT8 weights)."""
    cfg = (report.get("quantization") or {}).get("config") or {}
    if cfg.get("approach") == "weight_only":
        return f"INT{(cfg.get('weight_only') or {}).get('bits', 4)} weights"
    return "INT8"


def _quantization_section(report: dict[str, Any]) -> list[str]:
    quant = report.get("quantization", {})
    cfg = quant.get("config", {})
    approach = cfg.get("approach", "?")
    how = {
        "dynamic": "dynamic quantization: int8 weights, activation ranges computed at run time",
        "static": "static quantization: int8 weights and activations, ranges calibrated ahead of time",
        "qat": "quantization-aware training, exported as a QDQ graph with int8 weights",
        "weight_only": "weight-only quantization: block-wise integer weights (MatMulNBits), float activations",
    }.get(approach, approach)
    lines = ["## Quantization", "", f"- Approach: {how}", f"- Backend: {quant.get('backend', '?')}"]
    if approach == "weight_only":
        w = quant.get("weight_only") or {}
        lines.append(f"- Weights: {w.get('settings', '?')}; {w.get('linear_layers', '?')} linear layers"
                     + (f", {len(w['excluded'])} kept in FP32" if w.get("excluded") else ""))
    elif approach != "dynamic":
        lines.append(f"- Format: {cfg.get('format') or 'qdq'}")
    if approach != "weight_only":
        lines.append(
        f"- Types: {cfg.get('weight_type', '?')} weights ({'symmetric' if cfg.get('symmetric_weights') else 'asymmetric'}"
        f", {'per channel' if cfg.get('per_channel') else 'per tensor'}"
        f"{', 7-bit reduced range' if cfg.get('reduce_range') else ''}), {cfg.get('activation_type', '?')} activations"
        )
    if cfg.get("op_types") and approach != "weight_only":
        lines.append(f"- Quantized operators: {', '.join(cfg['op_types'])}"
                     f"{' (weight MatMuls only)' if cfg.get('weights_only_matmul') else ''}")
    cal = cfg.get("calibration") or {}
    if approach == "static" and cal:
        detail = f"{cal.get('method')}, {cal.get('num_samples')} samples"
        if cal.get("method") == "percentile":
            detail += f", percentile {cal.get('percentile')}"
        lines.append(f"- Calibration: {detail}")
    graph = quant.get("graph") or {}
    ops = graph.get("ops") or {}
    shown = [f"{op} ×{ops[op]}" for op in _INT8_OPS if ops.get(op)]
    if graph.get("quantized_weights") is not None:
        lines.append(f"- Quantized weight tensors: {graph['quantized_weights']}")
    if shown:
        lines.append(f"- Integer/QDQ operators in the graph: {', '.join(shown)}")
    export = report.get("export") or {}
    if export.get("opset"):
        diff = export.get("max_abs_diff")
        check = f"; FP32 export matched PyTorch within {diff:.2g} (max abs diff)" if isinstance(diff, (int, float)) else ""
        lines.append(f"- ONNX opset {export['opset']}{check}")
    lines += ["", "<details><summary>Full quantization config</summary>", "", "```yaml",
              yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return lines


def _hardware_section(report: dict[str, Any]) -> list[str]:
    env = report.get("environment", {})
    cpu = env.get("cpu") or {}
    features = cpu.get("features") or []
    lines = [
        "## Hardware",
        "",
        f"Measured{' and tuned' if report.get('tuning') else ''} on **{_cell(cpu.get('model', 'unknown CPU'))}** "
        f"({cpu.get('arch', '?')}, {cpu.get('physical_cores', '?')} physical / {cpu.get('logical_cores', '?')} "
        "logical cores).",
        "",
        f"- ISA flags relevant to int8: {', '.join(features) if features else 'none detected'}",
        f"- VNNI (int8 dot products): {'yes' if cpu.get('has_vnni') else 'no'}",
        "",
        "INT8 speed-ups are largest on CPUs with AVX512-VNNI, AVX-VNNI or AMX; without VNNI, ONNX Runtime "
        "emulates int8 dot products with AVX2 and gains less.",
        "",
    ]
    packages = env.get("packages") or {}
    versions = [f"{name} {packages[name]}" for name in _SHOWN_PACKAGES if packages.get(name)]
    if versions:
        lines += [f"Software: {', '.join(versions)} (Python {env.get('python', '?')}).", ""]
    return lines


def _fallback_section(report: dict[str, Any]) -> list[str]:
    tuning = report.get("tuning") or {}
    nodes = tuning.get("fallback_nodes") or []
    excluded = report.get("quantization", {}).get("config", {}).get("nodes_to_exclude") or []
    lines = ["## Nodes kept in FP32", ""]
    if nodes:
        lines += ["Returned to FP32 by the tuning's fallback search (most sensitive first):", "",
                  "| node | metric gained |", "|---|---:|"]
        lines += [f"| `{_cell(n.get('node'))}` | {_num(n.get('metric_gain'))} |" for n in nodes]
        rest = [n for n in excluded if n not in {x.get("node") for x in nodes}]
        if rest:
            lines += ["", f"Also excluded by the config: {', '.join(f'`{_cell(n)}`' for n in rest)}"]
    elif excluded:
        lines += [f"Excluded from quantization by the config ({len(excluded)}):", ""]
        lines += [f"- `{_cell(n)}`" for n in excluded]
    else:
        lines.append("None: every node of the quantized operator types runs in int8.")
    lines.append("")
    return lines


def _tuning_section(report: dict[str, Any], files: Sequence[str]) -> list[str]:
    tuning = report.get("tuning")
    if not tuning:
        return []
    counts = tuning.get("counts") or {}
    trials = tuning.get("trials") or []
    lines = [
        "## Tuning",
        "",
        f"- Strategy: {tuning.get('strategy')}, objective: {tuning.get('objective')}, "
        f"target: {_cell(tuning.get('target', '-'))}",
        f"- Trials: {len(trials)} of a space of {tuning.get('space_size', '?')} "
        f"({counts.get('ok', 0)} evaluated, {counts.get('pruned', 0)} pruned, {counts.get('failed', 0)} failed)",
        f"- Chosen: trial {tuning.get('chosen_trial')}: {_cell(tuning.get('reason', '-'))}",
        "",
    ]
    if "tuning.png" in files:
        lines += ["![metric vs latency of every trial](tuning.png)", ""]
    if trials:
        lines += ["| trial | config | status | metric | p50 ms | size MB | within tolerance |",
                  "|---:|---|---|---:|---:|---:|---|"]
        for t in trials[:_MAX_TRIAL_ROWS]:
            lines.append(
                f"| {t.get('trial')} | {_cell(t.get('config') or '-')} | {t.get('status')} | {_num(t.get('metric'))} | "
                f"{_num(t.get('latency_ms'), 1)} | {_num(t.get('size_mb'), 1)} | {'yes' if t.get('passed') else 'no'} |"
            )
        if len(trials) > _MAX_TRIAL_ROWS:
            lines.append(f"\n{len(trials) - _MAX_TRIAL_ROWS} more trial(s) in quantkit_report.json.")
        lines.append("")
    return lines


def _task(report: dict[str, Any]) -> Any:
    """The report's task, bound to what the report says of it (pooling of a sentence encoder)."""
    from types import SimpleNamespace


    name = (report.get("model") or {}).get("task")
    if not name:
        raise ArtifactError("the report has no model.task: not a report quantkit wrote (every run records its task)")
    section = report.get("task") or {}
    options = SimpleNamespace(pooling=section.get("pooling", "auto"),
                              normalize={True: "true", False: "false"}.get(section.get("normalize"), "auto"))
    return task_for(name, options=options)


def _usage_section(report: dict[str, Any], repo_id: str) -> list[str]:
    task = _task(report)
    return [
        "## Usage",
        "",
        "With quantkit's runtime (quantkit installed from its source repository: `bash scripts/setup.sh`, or "
        "`pip install -e .` in a clone; any transformers version, no optimum-onnx):",
        "",
        "```python",
        *task.runtime_usage(repo_id),
        "```",
        "",
        "With Optimum's `ORTModel` classes and transformers' `pipeline()` (`pip install 'quantkit[optimum]'` or "
        "`pip install optimum-onnx[onnxruntime]`; optimum-onnx 0.1.0 needs transformers < 4.58):",
        "",
        "```python",
        *task.usage(repo_id),
        "```",
        "",
    ]


def model_card_text(
    report: dict[str, Any],
    repo_id: str,
    *,
    files: Iterable[str] = (),
    base_model: str | None = None,
    license: str | None = None,
) -> str:
    """The model card for an artifact whose ``quantkit_report.json`` is ``report``.

    ``files`` are the paths pushed with it (to link ``tuning.png`` and list them); ``base_model`` and
    ``license`` go into the metadata when given (see :func:`find_base_model`, :func:`find_license`).
    """
    files = sorted(files)
    name = repo_id.split("/")[1]
    source = report.get("model", {}).get("name_or_path") or "?"
    cfg = report.get("quantization", {}).get("config", {})
    origin = f"[{base_model}](/{base_model})" if base_model else f"a local model (`{_cell(Path(str(source)).name)}`)"
    intro = (
        f"{_quantized_label(report).replace(' weights', '-weight')} ONNX version of {origin} for x86 CPUs, made with quantkit "
        f"({cfg.get('approach', '?')} quantization via {report.get('quantization', {}).get('backend', '?')}"
        f"{', tuned within an accuracy tolerance' if report.get('tuning') else ''}). "
        "It runs with `quantkit.runtime` on any transformers version, and loads with Optimum's `ORTModel` classes "
        "and transformers' `pipeline`."
    )
    body = [f"# {name}", "", intro, ""]
    body += [f"> **Warning** — {w}\n" for w in report.get("warnings") or []]
    body += _results_section(report)
    body += _quantization_section(report)
    body += _hardware_section(report)
    body += timing_card_lines(report)
    body += _fallback_section(report)
    body += _tuning_section(report, files)
    body += _usage_section(report, repo_id)
    if files:
        body += ["## Files", ""] + [f"- `{_cell(f)}`" for f in files] + [""]
    created = report.get("created")
    body.append(f"This card was generated by quantkit from `quantkit_report.json`"
                f"{f' (created {created})' if created else ''}.")
    metadata = _metadata(report, repo_id, base_model, license)
    return f"---\n{metadata}\n---\n\n" + "\n".join(body) + "\n"


def validate_model_card(text: str) -> Any:
    """Parse ``text`` with :class:`huggingface_hub.ModelCard` (metadata and model-index must be valid);
    return the card. Raises ValueError if it does not parse."""
    from huggingface_hub import ModelCard

    card = ModelCard(text, ignore_metadata_errors=False)
    data = card.data
    if data.eval_results is not None and len(data.eval_results) < 2:
        raise ValueError("model-index lost its FP32/INT8 results")
    return card


def model_card_for_folder(
    folder: Path,
    repo_id: str,
    *,
    report: dict[str, Any],
    files: Iterable[str] = (),
    base_model: str | None = None,
    license: str | None = None,
) -> str:
    """Generate and validate the card for the artifact ``folder`` (found metadata filled in).

    ``license`` is carried when given (e.g. the base model's license on the Hub, looked up by
    :mod:`quantkit.hub`); else it is found locally (:func:`find_license`)."""
    base = find_base_model(report, base_model)
    found = find_license(report, folder, explicit=license)
    text = model_card_text(report, repo_id, files=files, base_model=base, license=found)
    validate_model_card(text)
    return text
