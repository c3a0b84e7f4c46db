"""Resolution: a validated spec (+ the loaded model) → a frozen :class:`Run`, and every cross-field rule that
needs a registry (backends, tasks), so that each rule exists once.

- :func:`spec_rule_issues`: the rules a spec can be checked against without a model (a backend's approaches,
  op types and graph optimization; a named task's metrics, text columns and QAT). :func:`quantkit.specio.parse_spec`
  runs them, so ``load_spec`` refuses such a spec with ``file: key.path: message``.
- :func:`calibration_used`, :func:`static_used`, :func:`search_routes`: what a spec will do, asked by the
  pipeline and the pre-flight checks alike.
- :func:`resolve_run`: the loaded model's task bound (its default metric filled), the hardware target's and the
  model family's defaults filled into the quantization fields the spec left unset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import product
from typing import Any

from .backends import BACKENDS, backend_class
from .errors import RegistryError, SpecError, SpecIssue
from .families import family_of, resolve_family
from .hardware import detect_target, hardware_profile, resolve_quantization
from .models import LoadedModel, model_folder
from .spec import QuantizationSpec
from .tasks import Task, get_task, task_for, task_names

logger = logging.getLogger(__name__)

__all__ = ["Run", "resolve_run", "bind_task", "spec_rule_issues", "config_issues", "label_issue", "calibration_used",
           "static_used", "search_routes", "search_backends"]

Issue = tuple[str, str]


# --------------------------------------------------------------------------- what a spec does
def static_used(spec: QuantizationSpec) -> bool:
    """Whether any run of this spec calibrates (static/qat, or static in the tuning space)."""
    q, t = spec.quantization, spec.tuning
    return q.approach in ("static", "qat") or (t is not None and "static" in t.space.get("approach", []))


def calibration_used(spec: QuantizationSpec) -> bool:
    """Whether a run of this spec reads ``data.calibration``: a calibrating approach, or a ``quantization.backend``
    that runs forward passes for every approach."""
    if spec.data.calibration is None:
        return False
    backend, q = spec.quantization.backend, spec.quantization
    calibrated_weights = q.approach == "weight_only" and q.weights.needs_calibration
    return static_used(spec) or calibrated_weights or (backend in BACKENDS and
                                                       backend_class(backend).reads_calibration_always)


def search_backends(spec: QuantizationSpec) -> set[str]:
    """The backends any run of this spec quantizes with (``quantization.backend`` and ``tuning.space.backend``)."""
    space = spec.tuning.space if spec.tuning is not None else {}
    return {spec.quantization.backend, *map(str, space.get("backend", []))}


def search_routes(spec: QuantizationSpec) -> list[tuple[str, str, bool]]:
    """(backend, approach, from_search) of every quantization this spec can run: its ``quantization`` section,
    then the combinations its ``tuning.space`` lists."""
    q = spec.quantization
    routes = [(q.backend, q.approach, False)]
    space = spec.tuning.space if spec.tuning is not None else {}
    for backend, approach in product(space.get("backend", [q.backend]), space.get("approach", [q.approach])):
        if (backend, approach) != (q.backend, q.approach):
            routes.append((str(backend), str(approach), True))
    return routes


# --------------------------------------------------------------------------- rules
def config_issues(config: Any) -> list[Issue]:
    """(key path, message) for a quantization config its backend cannot run (an unknown backend included)."""
    if config.backend not in BACKENDS:
        return [("quantization.backend", f"{config.backend!r} is not one of {', '.join(BACKENDS.names())}")]
    return backend_class(config.backend).config_issues(config)


def label_issue(metric: str, needs_labels: bool, labelled: bool) -> Issue | None:
    """The one rule on labels: a metric that needs references needs a label column in the evaluation data."""
    if needs_labels and not labelled:
        return ("data.evaluation.label_column", f"metric {metric!r} needs labels (references); set a label column "
                                                "or use metric: agreement")
    return None


def label_free_metrics() -> set[str]:
    """Metrics computed against the FP32 model's outputs, needing no labels (as the tasks define them)."""
    return {m for name in task_names() for m, info in get_task(name).metrics.items() if not info.needs_labels}


def _task_issues(spec: QuantizationSpec, task: Any) -> list[Issue]:
    """A task's rules on the spec: its metrics, its text column count, QAT. ``task``: a Task class or object."""
    issues: list[Issue] = []
    metric = spec.evaluation.metric
    if metric is not None and metric not in task.metrics:
        issues.append(("evaluation.metric", f"{metric!r} is not a {task.name} metric; "
                                            f"expected one of {', '.join(task.metrics)}"))
    low, high = task.text_column_count
    for key in ("calibration", "evaluation"):
        ds = getattr(spec.data, key)
        if ds is not None and ds.text_columns is not None and not low <= len(ds.text_columns) <= high:
            want = str(low) if low == high else f"{low} or {high}"
            issues.append((f"data.{key}.text_columns", f"{task.name} reads {want} text column(s), got "
                                                       f"{len(ds.text_columns)}"))
    if spec.quantization.approach == "qat" and not task.supports_qat:
        issues.append(("quantization.approach", f"qat is not available for {task.name} (no training objective); "
                                                "use dynamic or static"))
    return issues


def spec_rule_issues(spec: QuantizationSpec) -> list[Issue]:
    """Every rule that needs a registry, checked on a schema-valid spec: [(key path, message)]."""
    issues = config_issues(spec.quantization)
    q = spec.quantization
    metric = spec.evaluation.metric
    if metric is not None and spec.data.evaluation.label_column is None:
        issue = label_issue(metric, metric not in label_free_metrics(), labelled=False)
        issues += [issue] if issue else []
    if q.backend in BACKENDS and not backend_class(q.backend).optimizes_graph and spec.export.optimize not in (
            "auto", "none"):
        issues.append(("export.optimize", f"{spec.export.optimize!r} optimizes the ONNX graph before ONNX Runtime "
                                          f"quantizes it; backend {q.backend} quantizes in PyTorch (use auto or none)"))
    if spec.tuning is not None and "export.optimize" in spec.tuning.space:
        levels = [v for v in spec.tuning.space["export.optimize"] if v not in ("auto", "none")]
        graphless = [b for b in sorted(search_backends(spec)) if b not in BACKENDS or
                     not backend_class(b).optimizes_graph]
        if levels and graphless:
            issues.append(("tuning.space.export.optimize", "graph optimization levels other than auto/none need a "
                           f"backend that quantizes the ONNX graph for every candidate ({', '.join(graphless)} "
                           "quantizes in PyTorch)"))
    if spec.model.task is not None:
        try:
            task = get_task(spec.model.task)
        except RegistryError:
            issues.append(("model.task", f"{spec.model.task!r} is not a task quantkit evaluates; expected one of "
                                         f"{', '.join(task_names())} (or an alias)"))
        else:
            issues += _task_issues(spec, task)
    return issues


# --------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class Run:
    """One resolved run: the spec with its defaults filled, the loaded model, the bound task, and what the
    hardware target and the model family chose (for the report)."""

    spec: QuantizationSpec
    loaded: LoadedModel
    task: Task
    #: The hardware profile (``hardware_profile(spec.hardware).to_dict()``) and ``chosen`` fields.
    hardware: dict[str, Any]
    #: ``{"name", "chosen"}`` of the model family, None outside the tested families.
    family: dict[str, Any] | None

    @property
    def vocab_size(self) -> int:
        return int(getattr(self.loaded.config, "vocab_size", 30522))


def bind_task(spec: QuantizationSpec, loaded: LoadedModel) -> tuple[QuantizationSpec, Task]:
    """The loaded model's task bound to its config and the spec's ``task_options``; ``evaluation.metric`` filled
    with its default when the spec left it out (SpecError when the metric does not fit)."""
    folder = model_folder(loaded.name_or_path, loaded.revision, files=("modules.json", "1_Pooling/config.json"))
    task = task_for(loaded.task, loaded.config, spec.task_options, folder)
    problem = None
    if spec.evaluation.metric is not None:
        problem = task.check_metric(spec.evaluation.metric, spec.evaluation.average)
    if problem:
        raise SpecError([SpecIssue(None, "evaluation.metric", problem)])
    labelled = task.columns(spec.data.evaluation).label is not None
    metric = spec.evaluation.metric or task.default_metric(labelled)
    if issue := label_issue(metric, task.metrics[metric].needs_labels, labelled):
        raise SpecError([SpecIssue(None, *issue)])
    if issues := [i for i in _task_issues(spec, task) if i[0] == "quantization.approach"]:
        raise SpecError([SpecIssue(None, *issues[0])])
    return spec.model_copy(update={
        "evaluation": spec.evaluation.model_copy(update={"metric": metric}),
        "model": spec.model.model_copy(update={"task": loaded.task}),
    }), task


def _apply_hardware(spec: QuantizationSpec) -> tuple[QuantizationSpec, dict[str, Any]]:
    """Fill the quantization fields the spec left unset with the hardware target's defaults."""
    profile = hardware_profile(spec.hardware)
    config, chosen = resolve_quantization(spec.quantization, profile)
    if not profile.matches_this_cpu:
        logger.warning(
            "hardware: %s is not this CPU (%s, %s): latency measured here does not show how the model runs there",
            profile.target, profile.cpu.model, detect_target(profile.cpu),
        )
    if chosen:
        spec = spec.model_copy(update={"quantization": config})
    return spec, {**profile.to_dict(), "chosen": chosen}


def _apply_family(spec: QuantizationSpec, model_type: str) -> tuple[QuantizationSpec, dict[str, Any] | None]:
    """Fill the quantization fields still unset with the model family's defaults (quantkit/families.py)."""
    family = family_of(model_type)
    config, chosen = resolve_family(spec.quantization, model_type)
    described = {"name": family.name, "chosen": chosen} if family is not None else None
    return (spec.model_copy(update={"quantization": config}) if chosen else spec), described


def resolve_run(spec: QuantizationSpec, loaded: LoadedModel) -> Run:
    """Bind the task, then fill the hardware target's and the family's defaults: the :class:`Run`."""
    spec, task = bind_task(spec, loaded)
    spec, hardware = _apply_hardware(spec)
    spec, family = _apply_family(spec, loaded.model_type)
    return Run(spec=spec, loaded=loaded, task=task, hardware=hardware, family=family)
