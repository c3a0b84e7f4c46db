"""Errors raised by quantkit.

Every error is a :class:`QuantkitError` and also subclasses the builtin exception
that best describes it, so callers can catch either. The CLI maps them to exit
codes via :attr:`QuantkitError.exit_code`: 2 for bad input, 1 for a failure
while doing the work.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "QuantkitError",
    "SpecError",
    "SpecIssue",
    "ModelLoadError",
    "DataError",
    "ExportError",
    "ExportValidationError",
    "QuantizationError",
    "EvaluationError",
    "ArtifactError",
    "OutputExistsError",
    "OutputLockedError",
    "DiskFullError",
    "TrialStoreError",
    "RegistryError",
    "ToleranceNotMetError",
    "ArtifactNotFoundError",
    "HubError",
    "HubAuthError",
    "HubNotFoundError",
    "HubRepoIdError",
    "BenchmarkError",
    "PreflightError",
    "ExecutorError",
    "ExecutorUnavailableError",
    "TimingMismatchError",
    "OptionalDependencyError",
]


class QuantkitError(Exception):
    """Base class of every error quantkit raises on purpose."""

    exit_code: int = 1
    #: Short title the CLI prints before the message.
    title: str = "quantkit failed"
    #: Optional hint printed after the message.
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class SpecIssue(tuple):
    """One problem found in a spec: (file, key path, message)."""

    __slots__ = ()

    def __new__(cls, file: str | None, path: str, message: str) -> "SpecIssue":
        return super().__new__(cls, (file, path, message))

    @property
    def file(self) -> str | None:
        return self[0]

    @property
    def path(self) -> str:
        return self[1]

    @property
    def message(self) -> str:
        return self[2]

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"


class SpecError(QuantkitError, ValueError):
    """The YAML spec is malformed: names the file, the key path and what was expected."""

    exit_code = 2
    title = "invalid spec"

    def __init__(self, issues: Sequence[SpecIssue] | str, *, hint: str | None = None) -> None:
        if isinstance(issues, str):
            issues = [SpecIssue(None, "", issues)]
        self.issues: list[SpecIssue] = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues), hint=hint)


class ModelLoadError(QuantkitError, OSError):
    """The model (or its tokenizer/config) could not be loaded."""

    exit_code = 2
    title = "cannot load model"


class DataError(QuantkitError, ValueError):
    """A dataset is missing, unreadable, or does not match what the spec says."""

    exit_code = 2
    title = "invalid data"


class ExportError(QuantkitError, RuntimeError):
    """Exporting the model to ONNX failed."""

    title = "ONNX export failed"


class ExportValidationError(ExportError):
    """The exported ONNX model does not reproduce the PyTorch outputs within tolerance."""

    title = "ONNX export does not match PyTorch"

    def __init__(self, message: str, *, max_abs_diff: float, atol: float, hint: str | None = None) -> None:
        self.max_abs_diff = max_abs_diff
        self.atol = atol
        super().__init__(message, hint=hint)


class OptionalDependencyError(QuantkitError, ImportError):
    """A feature needs a package of an optional extra that is not installed (e.g. ``quantkit[optimum]``)."""

    exit_code = 2
    title = "missing optional dependency"


class QuantizationError(QuantkitError, RuntimeError):
    """A quantization backend failed."""

    title = "quantization failed"


class EvaluationError(QuantkitError, RuntimeError):
    """Evaluating a model failed."""

    title = "evaluation failed"


class ArtifactError(QuantkitError, OSError):
    """Writing the artifact folder failed."""

    title = "cannot write artifacts"


class OutputExistsError(ArtifactError, FileExistsError):
    """The output folder already exists and overwrite was not requested."""

    exit_code = 2
    title = "output folder exists"


class OutputLockedError(ArtifactError, BlockingIOError):
    """Another quantkit run holds the lock of the same output folder."""

    exit_code = 2
    title = "output folder in use"

    def __init__(self, message: str, *, holder_pid: int | None = None, hint: str | None = None) -> None:
        self.holder_pid = holder_pid
        super().__init__(message, hint=hint)


class DiskFullError(ArtifactError):
    """The disk filled up (ENOSPC / EDQUOT) while writing; nothing was left half-written."""

    title = "disk full"
    hint = "free some space (or choose another --output on a disk with room) and rerun"


class TrialStoreError(QuantkitError, OSError):
    """The tuning trial database cannot be read (corrupted, not SQLite, or locked)."""

    exit_code = 2
    title = "cannot read the trial database"


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """A path or Hub repo that should hold a quantkit artifact folder does not (no ``model.onnx``)."""

    exit_code = 2
    title = "no quantkit artifact there"


class RegistryError(QuantkitError, KeyError):
    """An unknown name was asked of a registry (backend, metric, ...)."""

    exit_code = 2
    title = "unknown name"

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ToleranceNotMetError(QuantkitError, RuntimeError):
    """A search found no candidate within the accuracy tolerance; the closest one is saved anyway."""

    exit_code = 3
    title = "no candidate within tolerance"

    def __init__(self, message: str, *, closest_dir: str | None = None, gap: float | None = None,
                 hint: str | None = None) -> None:
        self.closest_dir = closest_dir
        self.gap = gap
        super().__init__(message, hint=hint)


class HubError(QuantkitError, RuntimeError):
    """A Hugging Face Hub request failed (after retries for connection errors and 5xx answers).

    Messages name the repo (and revision) concerned and never contain the token.
    """

    title = "Hugging Face Hub request failed"

    def __init__(self, message: str, *, repo_id: str | None = None, status: int | None = None,
                 hint: str | None = None) -> None:
        self.repo_id = repo_id
        self.status = status
        super().__init__(message, hint=hint)


class HubAuthError(HubError, PermissionError):
    """The Hub refused the credentials (401) or the permission (403) for a repo."""

    exit_code = 2
    title = "Hugging Face Hub authentication failed"


class HubNotFoundError(HubError, LookupError):
    """The repo or revision does not exist on the Hub (or is private and the token cannot see it)."""

    exit_code = 2
    title = "not found on the Hugging Face Hub"


class HubRepoIdError(HubError, ValueError):
    """A Hub repo id is not of the form ``owner/name``."""

    exit_code = 2
    title = "invalid Hub repo id"


class BenchmarkError(QuantkitError, ValueError):
    """Benchmark settings that cannot run: a sequence length above a model's limit, a non-positive size, ..."""

    exit_code = 2
    title = "invalid benchmark settings"


class PreflightError(QuantkitError, ValueError):
    """The pre-flight check (``quantkit check``) found problems that would make the run fail or mislead.

    ``problems`` holds every :class:`~quantkit.checks.Problem` found (errors and warnings), each with
    its spec key path and fix hint; the message lists them all.
    """

    exit_code = 2
    title = "pre-flight check failed"
    hint = "fix the problems above (`quantkit check --config SPEC` lists them)"

    def __init__(self, problems: Sequence[object], *, hint: str | None = None) -> None:
        self.problems = list(problems)
        lines = []
        for p in self.problems:
            severity = getattr(p, "severity", "error")
            lines.append(f"{'warning: ' if severity == 'warning' else ''}{p}")
            fix = getattr(p, "hint", None)
            if fix:
                lines.append(f"  fix: {fix}")
        super().__init__("\n".join(lines), hint=hint)

    @property
    def errors(self) -> list[object]:
        return [p for p in self.problems if getattr(p, "severity", "error") == "error"]


class ExecutorError(QuantkitError, RuntimeError):
    """Trials or evaluation shards could not run on the executor (a Ray cluster unreachable, a worker
    that cannot import quantkit, ...)."""

    title = "executor failed"


class ExecutorUnavailableError(ExecutorError, ImportError):
    """An executor was asked for whose optional dependency is not installed (``ray``: ``quantkit[ray]``)."""

    exit_code = 2
    title = "executor not available"


class TimingMismatchError(ExecutorError):
    """Latencies measured on different CPU types were about to be compared (the search refuses)."""

    title = "latencies from different CPUs"
