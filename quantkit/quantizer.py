"""The public API: :class:`Quantizer`, a thin façade over the stages in :mod:`quantkit.pipeline` and the search
in :mod:`quantkit.search.tune`; it returns a :class:`~quantkit.result.QuantizationResult`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .artifacts import REPORT_FILE, output_lock
from .backends import ProgressFactory
from .errors import HubError, ModelLoadError, SpecError, SpecIssue
from .export import exportable_tasks
from .latency import Timer
from .models import LoadedModel, load_model
from .pipeline import prepare, run_quantize, shard_executor
from .resolve import bind_task
from .result import QuantizationResult
from .search.tune import run_tune
from .spec import QuantizationSpec
from .tasks import Task

logger = logging.getLogger(__name__)

__all__ = ["Quantizer", "QuantizationResult"]


class Quantizer:
    """Quantize a Hugging Face model with a quantkit spec.

    >>> q = Quantizer.from_pretrained("../shared/models/minilm-spam")   # doctest: +SKIP
    >>> result = q.quantize("recipes/minilm-spam-dynamic.yaml", output_dir="out/dyn")  # doctest: +SKIP
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        task: str | None = None,
        *,
        revision: str | None = None,
        trust_remote_code: bool = False,
        new_head: bool = False,
        **load_options: Any,
    ) -> "Quantizer":
        """Load a Hub model id or local folder with the transformers Auto classes.

        A ``task`` whose head the checkpoint does not hold is refused unless ``new_head=True``. An artifact folder
        quantkit wrote is already quantized: load that with :meth:`load_quantized`.
        """
        if (Path(str(name_or_path)).expanduser() / REPORT_FILE).is_file():
            raise ModelLoadError(
                f"{name_or_path} is a model quantized by quantkit, not a model to quantize",
                hint="load it with Quantizer.load_quantized(...) or ORTModelFor*.from_pretrained(...); to quantize "
                "again, start from its base model (model.name_or_path in quantkit_report.json)",
            )
        loaded = load_model(
            str(name_or_path), task=task, revision=revision, trust_remote_code=trust_remote_code,
            exportable=exportable_tasks, new_head=new_head, **load_options
        )
        return cls(loaded)

    @staticmethod
    def load_quantized(
        path_or_repo_id: str | Path, *, revision: str | None = None, token: str | None = None
    ) -> QuantizationResult:
        """Load a model quantized by quantkit, from its artifact folder or the Hub repo it was pushed to.

        >>> result = Quantizer.load_quantized("my-org/minilm-spam-int8")   # doctest: +SKIP
        >>> result.model_path, result.relative_drop                        # doctest: +SKIP
        """
        return QuantizationResult.from_pretrained(path_or_repo_id, revision=revision, token=token)

    @classmethod
    def from_spec(cls, spec: QuantizationSpec) -> "Quantizer":
        """Load the model named in ``spec.model``."""
        m = spec.model
        if not m.name_or_path:
            raise SpecError([SpecIssue(None, "model.name_or_path", "required: set it in the spec or pass --model")])
        return cls.from_pretrained(m.name_or_path, m.task, revision=m.revision, trust_remote_code=m.trust_remote_code,
                                   new_head=m.new_head)

    def task_for(self, spec: QuantizationSpec) -> Task:
        """The loaded model's task, bound to its config and the spec's ``task_options``."""
        return bind_task(spec, self.loaded)[1]

    def quantize(
        self,
        spec: QuantizationSpec | str | Path,
        output_dir: str | Path | None = None,
        *,
        overwrite: bool | None = None,
        progress: bool | ProgressFactory = True,
        check: bool = True,
        timer: Timer | None = None,
    ) -> QuantizationResult:
        """Export, quantize, evaluate FP32 and quantized models, and write the artifact folder.

        With a ``tuning`` section in the spec this runs the accuracy-tolerance search (:meth:`tune`).
        The pre-flight checks (:func:`quantkit.checks.run_checks`) run first unless ``check=False``;
        they raise :class:`~quantkit.errors.PreflightError` listing every problem found. ``timer`` times
        models side by side (default: a fresh process per model and round).
        """
        job = prepare(self.loaded, spec, output_dir, overwrite=overwrite, progress=progress, check=check, timer=timer)
        with output_lock(job.target):  # one run per output folder; cleans what a killed run left
            with shard_executor(job.spec):  # every evaluation of the run shares one cluster connection
                result = run_tune(job) if job.spec.tuning is not None else run_quantize(job)
            return self._push_if_asked(job.spec, result)

    def tune(
        self,
        spec: QuantizationSpec | str | Path,
        output_dir: str | Path | None = None,
        *,
        overwrite: bool | None = None,
        progress: bool | ProgressFactory = True,
        on_trial: Any | None = None,
        check: bool = True,
        timer: Timer | None = None,
    ) -> QuantizationResult:
        """Search the spec's ``tuning.space`` for the best model within the accuracy tolerance.

        Finished trials live in a SQLite store beside the output folder, so rerunning the same
        call resumes. Raises :class:`~quantkit.errors.ToleranceNotMetError` (after saving the
        closest candidate in ``<output>-closest``) when nothing is within tolerance. The
        pre-flight checks run first unless ``check=False``.
        """
        job = prepare(self.loaded, spec, output_dir, overwrite=overwrite, progress=progress, check=check, tune=True,
                      timer=timer)
        with output_lock(job.target):  # one run per output folder; cleans what a killed run left
            with shard_executor(job.spec):  # every evaluation of the run shares one cluster connection
                result = run_tune(job, on_trial)
            return self._push_if_asked(job.spec, result)

    @staticmethod
    def _push_if_asked(spec: QuantizationSpec, result: QuantizationResult) -> QuantizationResult:
        """``hub: {push: true}``: push the finished artifact folder; a failed push keeps it and says how to retry."""
        hub = spec.hub
        if hub is None or not hub.push:
            return result
        try:
            result.push_to_hub(hub.repo_id, private=hub.private, revision=hub.revision,
                               commit_message=hub.commit_message, create_pr=hub.create_pr,
                               include_fp32=hub.include_fp32)
        except HubError as exc:
            retry = f"quantkit push {result.output_dir} --repo-id {hub.repo_id}"
            raise type(exc)(f"{exc}. The artifacts are saved in {result.output_dir}; retry the upload with "
                            f"`{retry}`", repo_id=exc.repo_id, status=exc.status, hint=exc.hint) from None
        return result
