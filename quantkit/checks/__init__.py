"""Pre-flight checks (``quantkit check``): find spec, data, model and shape problems in seconds,
before any export, calibration or tuning.

:func:`run_checks` validates the spec, then runs every registered check and returns a
:class:`CheckReport` listing **all** problems found — each with its spec key path, what was found,
what was expected and a fix hint — plus estimates of memory, disk and duration. It never loads
weights, calibrates or evaluates; the only work done is reading configs, tokenizer files and
dataset files, tokenizing a few rows and timing one small ONNX Runtime MatMul.

>>> report = run_checks("recipes/minilm-spam-dynamic.yaml")   # doctest: +SKIP
>>> report.ok, [str(p) for p in report.problems]              # doctest: +SKIP

Checks live in one module per stage (files, model, dataset, shapes, cost; executors, state) and register with
``@check(name, stage=...)``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any


from ..errors import SpecError
from ..spec import QuantizationSpec, looks_local
from ..specio import load_spec, read_yaml, resolve_paths, with_overrides
from . import cost as _cost  # noqa: F401  (each stage module registers its checks)
from . import hostile as _hostile  # noqa: F401
from . import dataset as _dataset  # noqa: F401
from . import executors as _executors  # noqa: F401
from . import files as _files  # noqa: F401
from . import model as _model  # noqa: F401
from . import family as _family  # noqa: F401  (after model: its checks follow model.task)
from . import shapes as _shapes  # noqa: F401
from . import state as _state  # noqa: F401
from . import weights as _weights  # noqa: F401
from .base import CHECKS, CheckContext, CheckReport, Estimate, Problem, check, ordered_checks, run_registered
from .files import missing_path_hint
from .shapes import check_onnx_model

logger = logging.getLogger(__name__)

__all__ = [
    "run_checks",
    "check_onnx_model",
    "CheckReport",
    "Problem",
    "Estimate",
    "CheckContext",
    "CHECKS",
    "check",
    "ordered_checks",
]


def _missing(path: str) -> str | None:
    """Why the local ``path`` cannot be used (not found, or the OS refuses the name), or None when it exists."""
    try:
        return None if Path(path).expanduser().exists() else "not found"
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        return f"unusable path ({getattr(exc, 'strerror', None) or exc})"


def _raw_path_problems(path: Path, file: str) -> list[Problem]:
    """Files named by a spec that does not validate: still say which ones are missing."""
    try:
        raw = read_yaml(path)  # the only reader of spec files: it refuses hostile documents before parsing them
    except SpecError:
        return []  # already reported by load_spec
    if not isinstance(raw, dict):
        return []
    resolve_paths(raw, path.resolve().parent)
    problems = []
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    for key in ("calibration", "evaluation"):
        ds = data.get(key)
        if isinstance(ds, dict) and isinstance(ds.get("path"), str) and looks_local(ds["path"]):
            if why := _missing(ds["path"]):
                hint = missing_path_hint(Path(ds["path"]), path.resolve().parent) if why == "not found" else None
                problems.append(Problem(f"data.{key}.path", f"file {why}: {ds['path']}", hint, "error", file, "spec"))
    m = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    name = m.get("name_or_path")
    if isinstance(name, str) and name.startswith((".", "/", "~")) and (why := _missing(name)):
        problems.append(Problem("model.name_or_path", f"cannot load model: folder {why}: {name}",
                                "check model.name_or_path / --model", "error", file, "spec"))
    return problems


def _split_model_arg(model: str | None) -> tuple[str | None, Path | None]:
    """``--model``: a Hub id, a folder (maybe with model.onnx), or an .onnx file (config next to it)."""
    if model is None:
        return None, None
    local = Path(model).expanduser()
    if local.is_file() and local.suffix == ".onnx":
        return str(local.resolve().parent), local.resolve()
    if local.exists():
        onnx = local / "model.onnx"
        return str(local.resolve()), onnx.resolve() if onnx.is_file() else None
    return model, None


def run_checks(
    spec: QuantizationSpec | str | Path,
    model: Any | None = None,
    *,
    output_dir: str | Path | None = None,
    overwrite: bool | None = None,
    tune: bool | None = None,
    onnx_path: str | Path | None = None,
    probe: bool = True,
    memory_available: int | None = None,
    spec_file: str | None = None,
    only: list[str] | None = None,
) -> CheckReport:
    """Run the pre-flight checks on ``spec`` and return every problem found.

    Args:
        spec: a spec file path or a loaded :class:`~quantkit.spec.QuantizationSpec`.
        model: overrides ``model.name_or_path`` (``--model``): a Hub id, a local folder, a folder
            holding ``model.onnx`` or an ``.onnx`` file (its ONNX graph is checked too), or an
            already loaded :class:`~quantkit.models.LoadedModel` (its config/tokenizer are reused).
        output_dir, overwrite: as given to quantize (default: the spec's ``output`` section).
        tune: whether the run tunes (default: the spec has a ``tuning`` section).
        onnx_path: an existing ONNX model to check (shape inference, input axes and dtypes).
        probe: run the timed probes for the duration and int8 estimates (about a second).
        memory_available: RAM to plan for, in bytes (default: what psutil reports available).
        spec_file: the file name used in messages when ``spec`` is already loaded.
        only: run only these check names.
    """
    started = time.perf_counter()
    report = CheckReport(spec_file=spec_file)
    spec_dir = None
    if not isinstance(spec, QuantizationSpec):
        path = Path(spec)
        spec_dir = path.resolve().parent
        report.spec_file = spec_file or path.name
        try:
            spec = load_spec(path)
        except SpecError as exc:
            report.problems += [Problem(i.path, i.message, "fix the spec (its schema: `quantkit schema`)", "error",
                                        i.file or report.spec_file, "spec") for i in exc.issues]
            report.problems += _raw_path_problems(path, report.spec_file)
            report.checks_run.append("spec")
            report.duration_s = time.perf_counter() - started
            return report
    report.checks_run.append("spec")
    loaded = None
    if model is not None and not isinstance(model, (str, Path)):
        loaded = model
    else:
        name, found_onnx = _split_model_arg(str(model) if model is not None else None)
        if name is None and spec.model.name_or_path:
            name, found_onnx = _split_model_arg(spec.model.name_or_path)
        if name is not None and name != spec.model.name_or_path:
            spec = with_overrides(spec, **{"model.name_or_path": name})
        onnx_path = onnx_path if onnx_path is not None else found_onnx
    ctx = CheckContext(
        spec=spec,
        spec_file=report.spec_file,
        spec_dir=spec_dir,
        output_dir=Path(output_dir) if output_dir is not None else None,
        overwrite=spec.output.overwrite if overwrite is None else overwrite,
        tune=(spec.tuning is not None) if tune is None else tune,
        onnx_path=Path(onnx_path) if onnx_path is not None else None,
        loaded=loaded,
        probe=probe,
        memory_available=memory_available,
    )
    run_registered(ctx, report, only)
    report.estimates = list(ctx.estimates)
    report.duration_s = time.perf_counter() - started
    logger.info("pre-flight: %d error(s), %d warning(s) in %.1fs", len(report.errors), len(report.warnings),
                report.duration_s)
    return report
