"""Loading Hugging Face models: the only module that calls transformers' Auto* loaders."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, SpecError, SpecIssue

logger = logging.getLogger(__name__)

__all__ = ["LoadedModel", "load_model", "infer_task", "canonical_model_task", "head_mismatch", "model_folder",
           "gguf_source", "load_config"]


@dataclass
class LoadedModel:
    """A transformers model with its tokenizer and task, ready to export."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    task: str
    name_or_path: str
    revision: str | None = None

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def gguf_source(name_or_path: str) -> tuple[str, str] | None:
    """(folder, file name) when the model is a GGUF file (a ``.gguf`` path, or a folder holding one GGUF and no
    config.json), else None. transformers dequantizes it to float32 on load (needs the ``gguf`` package)."""
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return str(path.parent), path.name
    if path.is_dir() and not (path / "config.json").is_file():
        files = sorted(p.name for p in path.glob("*.gguf"))
        if len(files) > 1:
            raise ModelLoadError(f"{name_or_path}: {len(files)} GGUF files ({', '.join(files)}); name one of them "
                                 "as the model path")
        if files:
            return str(path), files[0]
    return None


def load_config(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The transformers config of a model folder, Hub id or GGUF file; a :class:`ModelLoadError` when unreadable."""
    from transformers import AutoConfig

    gguf = gguf_source(name_or_path)
    try:
        if gguf is not None:
            return AutoConfig.from_pretrained(gguf[0], gguf_file=gguf[1])
        return AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, ImportError) as exc:
        if gguf is not None:
            raise ModelLoadError(f"{name_or_path}: the installed transformers cannot read this GGUF file: "
                                 f"{type(exc).__name__}: {exc}", hint="GGUF needs `pip install gguf`, and an "
                                 "architecture transformers' GGUF loader knows (llama, qwen2/3, gemma3, phi3, ...)") from None
        if "trust_remote_code" in str(exc):
            raise ModelLoadError(
                f"{name_or_path}: the model needs its own code to load; "
                "set model.trust_remote_code: true only if you trust this repository",
            ) from None
        raise ModelLoadError(f"{name_or_path}: cannot read the model config: {exc}") from exc
    except OSError as exc:
        local = Path(name_or_path).expanduser()
        if local.exists() or name_or_path.startswith((".", "/", "~")):
            msg = f"{name_or_path}: no loadable model here (expected a folder with config.json): {exc}"
        else:
            msg = f"{name_or_path}: not a local folder, and the Hub could not provide it: {exc}"
        raise ModelLoadError(msg, hint="check model.name_or_path / --model, network access and HF_TOKEN") from None


def infer_task(config: Any) -> str:
    """The task of a checkpoint from its config's ``architectures`` (the task registry's suffix rules)."""
    from .tasks import infer_task_from_architectures

    task = infer_task_from_architectures(config)
    if task is None:
        archs = ", ".join(getattr(config, "architectures", None) or []) or "none listed"
        raise SpecError(
            [SpecIssue(None, "model.task", f"cannot infer the task from the model config (architectures: {archs}); "
                       "set it explicitly (e.g. text-classification)")]
        )
    return task


def head_mismatch(config: Any, task: str) -> str | None:
    """Why loading the checkpoint of ``config`` for ``task`` would give a head initialised at random (its
    ``architectures`` name another task's head), or None when the weights hold what the task runs."""
    from .tasks import get_task, infer_task_from_architectures

    head = infer_task_from_architectures(config)
    if head is None or head == task or not get_task(task).adds_head:
        return None
    archs = ", ".join(getattr(config, "architectures", None) or [])
    return (f"{task!r}, but the checkpoint is a {archs} ({head}): its {task} head is not in the weights and would "
            "be initialised at random")


def canonical_model_task(task: str) -> str:
    from .errors import RegistryError
    from .tasks import canonical_task, task_names

    try:
        return canonical_task(task)
    except RegistryError:
        raise SpecError([SpecIssue(None, "model.task", f"quantkit has no task {task!r}; expected one of "
                                   f"{', '.join(task_names())}")]) from None


def model_folder(name_or_path: str, revision: str | None = None, files: tuple[str, ...] = ()) -> Path | None:
    """The local folder of a model: the path itself, or the Hub cache snapshot holding ``files``
    (downloaded when missing); None when neither has them."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return local
    if not files:
        return None
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        folder = None
        for name in files:
            try:
                folder = Path(hf_hub_download(name_or_path, name, revision=revision)).parent
            except EntryNotFoundError:
                continue
        if folder is not None and "/" in files[0]:
            folder = folder.parent
        return folder
    except Exception as exc:  # noqa: BLE001 - offline or no such repo: the caller falls back to defaults
        logger.debug("no %s for %s: %s", files, name_or_path, exc)
        return None


def _load_gguf(auto_cls: Any, folder: str, file: str, **load_options: Any) -> tuple[Any, Any]:
    """A GGUF file as a float32 transformers model and its tokenizer; the GGUF quantization record is dropped
    from the config (the weights are dequantized), so the config saves like any other."""
    import torch
    from transformers import AutoTokenizer

    load_options.setdefault("dtype", torch.float32)
    model = auto_cls.from_pretrained(folder, gguf_file=file, **load_options)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    for holder in (model.config, model):
        if getattr(holder, "quantization_config", None) is not None:
            delattr(holder, "quantization_config")
    model.hf_quantizer = None
    model.config.name_or_path = str(Path(folder) / file)
    return model, tokenizer


def load_model(
    name_or_path: str,
    *,
    task: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    exportable: Callable[[str], list[str]] | None = None,
    new_head: bool = False,
    **load_options: Any,
) -> LoadedModel:
    """Load config, model and tokenizer with the transformers Auto classes.

    The task is inferred from the config when not given. Safetensors weights are
    preferred when both formats exist; remote code runs only when asked. ``exportable(model_type)`` (the
    tasks an exporter supports, :func:`quantkit.export.exportable_tasks`) refuses a task that cannot be
    exported before any weights are read. A ``task`` whose head the checkpoint lacks (:func:`head_mismatch`) is
    refused unless ``new_head`` says a head initialised at random is what is wanted (e.g. to train it with QAT).
    """
    import transformers
    from transformers import AutoTokenizer

    from .tasks import get_task

    config = load_config(name_or_path, revision, trust_remote_code)
    task = canonical_model_task(task) if task else infer_task(config)
    if (mismatch := head_mismatch(config, task)) is not None:
        if not new_head:
            raise SpecError([SpecIssue(None, "model.task", f"{mismatch}; use a checkpoint fine-tuned for {task}, set "
                                       f"model.task to the checkpoint's task, or set model.new_head: true to attach "
                                       "a new head on purpose")])
        logger.warning("model.new_head: %s", mismatch)
    supported = exportable(config.model_type) if exportable is not None else []
    if supported and task not in supported:
        raise SpecError(
            [SpecIssue(None, "model.task", f"{task!r} cannot be exported for model type {config.model_type!r}; "
                       f"supported: {', '.join(supported)}")]
        )
    auto_cls = getattr(transformers, get_task(task).auto_model)
    gguf = gguf_source(name_or_path)
    try:
        if gguf is not None:
            model, tokenizer = _load_gguf(auto_cls, *gguf, **load_options)
        else:
            model = auto_cls.from_pretrained(
                name_or_path, revision=revision, trust_remote_code=trust_remote_code, **load_options
            )
            tokenizer = AutoTokenizer.from_pretrained(
                name_or_path, revision=revision, trust_remote_code=trust_remote_code
            )
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"{name_or_path}: cannot load model or tokenizer: {exc}") from None
    model.eval()
    logger.info("loaded %s (%s, task %s)", name_or_path, config.model_type, task)
    return LoadedModel(model=model, tokenizer=tokenizer, task=task, name_or_path=name_or_path, revision=revision)
