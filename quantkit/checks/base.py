"""The machinery of the pre-flight: problems, the report, the check registry and the shared context.

A check is a function ``fn(ctx) -> Iterable[Problem]`` registered with :func:`check`. Checks run
in stage order (spec/files → model → data → shapes → cost) and never stop at the first problem.
What several checks need (the model config, the tokenizer, the parsed dataset files) is computed
once by the :class:`CheckContext` and memoised, together with the problems met computing it;
exactly one check (the owner) reports those problems, so each is listed once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import PreflightError
from ..registry import Registry
from ..resolve import calibration_used, static_used
from ..spec import QuantizationSpec

logger = logging.getLogger(__name__)

__all__ = [
    "Problem",
    "Estimate",
    "CheckReport",
    "CheckContext",
    "CheckDef",
    "CHECKS",
    "check",
    "ordered_checks",
]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong (``error``: quantize would fail or produce garbage) or suspicious (``warning``).

    ``key_path`` is the spec key it is about (``data.evaluation.label_column``), ``message`` says
    what was found and what was expected, ``hint`` how to fix it.
    """

    key_path: str
    message: str
    hint: str | None = None
    severity: Severity = "error"
    #: The spec file's name (set by :func:`~quantkit.checks.run_checks`).
    file: str | None = None
    #: The check that reported it.
    check: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        key = f"{self.key_path}: " if self.key_path else ""
        return f"{where}{key}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def error(key_path: str, message: str, hint: str | None = None) -> Problem:
    return Problem(key_path, message, hint, "error")


def warning(key_path: str, message: str, hint: str | None = None) -> Problem:
    return Problem(key_path, message, hint, "warning")


@dataclass(frozen=True)
class Estimate:
    """An informational number (memory, duration, speed-up) with its one-line explanation."""

    name: str
    summary: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    """Every problem found, the estimates made, and how long it took."""

    problems: list[Problem] = field(default_factory=list)
    estimates: list[Estimate] = field(default_factory=list)
    spec_file: str | None = None
    checks_run: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when nothing would stop quantization (warnings allowed)."""
        return not self.errors

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else PreflightError.exit_code

    def find(self, key_path: str) -> list[Problem]:
        """Problems about ``key_path`` (exact) — handy in tests and scripts."""
        return [p for p in self.problems if p.key_path == key_path]

    def estimate(self, name: str) -> Estimate | None:
        return next((e for e in self.estimates if e.name == name), None)

    def raise_for_errors(self) -> None:
        """Raise :class:`~quantkit.errors.PreflightError` listing every error (and warning) when any error."""
        if not self.ok:
            raise PreflightError(self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "spec_file": self.spec_file,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [p.to_dict() for p in self.problems],
            "estimates": [e.to_dict() for e in self.estimates],
            "checks_run": list(self.checks_run),
            "duration_s": round(self.duration_s, 3),
        }


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class CheckDef:
    name: str
    fn: Callable[["CheckContext"], Iterable[Problem] | None]
    stage: int
    order: int
    doc: str = ""


CHECKS: Registry[CheckDef] = Registry("check")
_counter = iter(range(10**9))

#: Stages, in run order.
STAGES = {"files": 1, "model": 2, "data": 3, "shapes": 4, "cost": 5}


def check(name: str, stage: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(ctx) -> Iterable[Problem]`` as pre-flight check ``name`` in ``stage``."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        CHECKS.register(name)(CheckDef(name, fn, STAGES[stage], next(_counter), (fn.__doc__ or "").strip()))
        return fn

    return decorator


def ordered_checks() -> list[CheckDef]:
    """The registered checks in run order (stage, then registration order)."""
    return sorted((CHECKS.get(n) for n in CHECKS.names()), key=lambda d: (d.stage, d.order))


# --------------------------------------------------------------------------- context
@dataclass
class Memo:
    """A value computed once, with the problems met computing it (reported by its owner check)."""

    value: Any
    problems: list[Problem] = field(default_factory=list)


@dataclass
class CheckContext:
    """What the checks look at, plus lazily computed, memoised facts shared between checks."""

    spec: QuantizationSpec
    spec_file: str | None = None
    #: The folder of the spec file (relative paths in it resolved against it); None for a spec built in code.
    spec_dir: Path | None = None
    #: The artifact folder quantize would write (``--output`` or ``output.dir``).
    output_dir: Path | None = None
    overwrite: bool = False
    #: Whether the run tunes (spec has ``tuning`` or ``quantkit tune``).
    tune: bool = False
    #: An existing ONNX model to check (``--model`` folder with ``model.onnx`` or an ``.onnx`` file).
    onnx_path: Path | None = None
    #: An already loaded model (``Quantizer`` runs the checks with its own).
    loaded: Any | None = None
    #: Run the small timed probes (tokenization, one ONNX Runtime MatMul) for the estimates.
    probe: bool = True
    #: Override of the RAM considered available (bytes); None: psutil's figure.
    memory_available: int | None = None
    estimates: list[Estimate] = field(default_factory=list)
    _memo: dict[str, Memo] = field(default_factory=dict, repr=False)

    def memo(self, key: str, compute: Callable[[], Memo]) -> Memo:
        """Compute ``key`` once. ``compute`` returns a :class:`Memo` (value + problems)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def add_estimate(self, name: str, summary: str, **values: Any) -> None:
        self.estimates.append(Estimate(name, summary, values))

    # Shortcuts to the memoised facts (defined in the check modules, which own them).
    @property
    def model_name(self) -> str | None:
        if self.loaded is not None:
            return str(self.loaded.name_or_path)
        return self.spec.model.name_or_path

    @property
    def static_used(self) -> bool:
        """Whether any run of this spec calibrates (static/qat, or static in the tuning space)."""
        return static_used(self.spec)

    @property
    def calibration_used(self) -> bool:
        """Whether quantize reads ``data.calibration`` (:func:`quantkit.resolve.calibration_used`)."""
        return calibration_used(self.spec)


def run_registered(ctx: CheckContext, report: CheckReport, only: Iterable[str] | None = None) -> None:
    """Run every registered check (or ``only`` those) on ``ctx``, collecting into ``report``."""
    wanted = set(only) if only is not None else None
    for d in ordered_checks():
        if wanted is not None and d.name not in wanted:
            continue
        started = time.perf_counter()
        try:
            found = list(d.fn(ctx) or [])
        except Exception as exc:  # noqa: BLE001 - a broken check must not hide the others
            logger.debug("check %s crashed", d.name, exc_info=True)
            found = [warning("", f"internal: check {d.name!r} could not run ({type(exc).__name__}: {exc})",
                             "please report it (this check's problem, not your spec's: `--no-check` skips the pre-flight)")]
        report.checks_run.append(d.name)
        for p in found:
            report.problems.append(Problem(p.key_path, p.message, p.hint, p.severity, ctx.spec_file, d.name))
        logger.debug("check %s: %d problem(s) in %.3fs", d.name, len(found), time.perf_counter() - started)
