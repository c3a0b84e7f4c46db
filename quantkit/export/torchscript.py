"""quantkit's own exporter: ``torch.onnx.export`` (TorchScript tracing, ``dynamo=False``), no optimum-onnx.

Why TorchScript and eager attention: ONNX Runtime's transformer optimizer recognises the attention
subgraph the TorchScript exporter writes for eager attention and fuses it (``Attention``,
``EmbedLayerNormalization``, ``SkipLayerNormalization``, ``BiasGelu``), so dynamic int8 gets
``QAttention``; on graphs from ``dynamo=True`` it finds no Attention/EmbedLayerNormalization, and those
graphs keep ``value_info`` of weights the quantizer transposes. The model's attention implementation is
switched to ``eager`` for the trace and restored afterwards (eager and SDPA compute the same function).

The graph's inputs are the tokenizer's (``input_ids``, ``attention_mask``, ``token_type_ids`` when the
tokenizer makes it and the model takes it), in the order of the model's ``forward``; its outputs and
their symbolic axes are the task's (:attr:`quantkit.tasks.Task.output_names`, ``output_axes``). The trace
runs on a padded batch (rows of different lengths) so no "mask is all ones" shortcut is baked in.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError
from .base import EXPORTERS, Exporter
from .tracing import consolidate_external_data, eager_attention
from .validate import INPUT_AXES, sample_inputs

logger = logging.getLogger(__name__)

__all__ = ["QuantkitExporter", "ENCODER_FAMILIES", "graph_inputs", "model_class"]

#: Text-encoder model types quantkit's exporter supports (transformers ``model_type``). Each exports with
#: the TorchScript exporter and validates against PyTorch; which of the four tasks a family has comes from
#: transformers' Auto mappings. ORT's transformer fusion applies to those in ``quantkit.fusion``'s table.
ENCODER_FAMILIES = (
    "albert",
    "bert",
    "camembert",
    "data2vec-text",
    "deberta",
    "deberta-v2",
    "distilbert",
    "electra",
    "ernie",
    "megatron-bert",
    "mobilebert",
    "modernbert",
    "mpnet",
    "rembert",
    "roberta",
    "roformer",
    "xlm-roberta",
    "xlm-roberta-xl",
)

_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _normal(model_type: str) -> str:
    return model_type.replace("_", "-") if model_type.replace("_", "-") in ENCODER_FAMILIES else model_type


def _auto_mappings() -> dict[str, str]:
    """Task name → the transformers model_type → class mapping of its Auto class (each task's
    :attr:`~quantkit.tasks.Task.auto_model_mapping`)."""
    from ..tasks import TASKS

    return {name: TASKS.get(name).auto_model_mapping for name in TASKS.names()}


def graph_inputs(model: Any, tokenizer: Any, config: Any = None) -> list[str]:
    """The graph's inputs: what the tokenizer produces and ``model.forward`` accepts, in ``forward``'s order.

    ``model`` is a model or its class (the pre-flight check has no weights). ``token_type_ids`` is left
    out when the model has no token-type embeddings (``type_vocab_size`` 0), as optimum-onnx does: the
    input would be unused.
    """
    config = config if config is not None else model.config
    made = set(getattr(tokenizer, "model_input_names", None) or ("input_ids", "attention_mask"))
    made.add("input_ids")
    params = list(inspect.signature(model.forward).parameters)
    names = [p for p in params if p in _TOKEN_INPUTS and p in made]
    if "token_type_ids" in names and getattr(config, "type_vocab_size", 1) == 0:
        names.remove("token_type_ids")
    if "input_ids" not in names:
        name = model.__name__ if isinstance(model, type) else type(model).__name__
        raise ExportError(f"{name}.forward takes no input_ids; quantkit exports text encoders")
    return names


def model_class(config: Any, task: str) -> Any:
    """The transformers class that loads ``config`` for ``task`` (no weights loaded), or None."""
    import transformers
    from transformers.models.auto import modeling_auto

    mappings = _auto_mappings()
    mapping = getattr(modeling_auto, mappings[task], {}) if task in mappings else {}
    name = mapping.get(getattr(config, "model_type", ""))
    if isinstance(name, (tuple, list)):
        name = name[0]
    return getattr(transformers, name, None) if name else None


class _Outputs:
    """Wraps the model so the trace sees positional token inputs and returns the task's outputs in order."""

    @staticmethod
    def module(model: Any, names: list[str], task: Any) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: Any) -> tuple[Any, ...]:
                out = self.model(**dict(zip(names, args)))
                return task.torch_outputs(out)

        return Wrapped().eval()


@EXPORTERS.register("quantkit")
class QuantkitExporter(Exporter):
    """TorchScript export of a text encoder with the task's outputs (see the module docstring)."""

    name = "quantkit"

    @classmethod
    def supported_tasks(cls, model_type: str) -> list[str]:
        from ..tasks import TASKS
        from .decoder import DECODER_FAMILIES, decoder_tracing_supported

        if model_type in DECODER_FAMILIES:  # causal LMs: the tasks whose graph carries a KV cache
            return sorted(t for t in TASKS.names() if getattr(TASKS.get(t), "kv_cache", False)) if \
                decoder_tracing_supported() else []
        model_type = _normal(model_type)
        if model_type not in ENCODER_FAMILIES:
            return []
        from transformers.models.auto import modeling_auto

        return sorted(task for task, mapping in _auto_mappings().items()  # encoders: no KV-cache task
                      if model_type in getattr(modeling_auto, mapping, {}) and not getattr(TASKS.get(task), "kv_cache",
                                                                                          False))

    def _export(self, loaded: Any, folder: Path, opset: int) -> Path:
        import torch

        from ..tasks import task_for

        model, task = loaded.model, task_for(loaded.task, loaded.config)
        if getattr(task, "kv_cache", False):
            from .decoder import export_decoder

            return export_decoder(loaded, folder, opset)
        names = graph_inputs(model, loaded.tokenizer)
        vocab = int(getattr(loaded.config, "vocab_size", 1000) or 1000)
        max_pos = int(getattr(loaded.config, "max_position_embeddings", 512) or 512)
        feeds = sample_inputs(names, 2, max(min(16, max_pos), 2), vocab, np.random.default_rng(0))
        args = tuple(torch.from_numpy(feeds[n]) for n in names)
        axes: dict[str, dict[int, str]] = {n: dict(INPUT_AXES) for n in names}
        axes.update({n: dict(a) for n, a in task.output_axes.items()})
        path = Path(folder) / "model.onnx"
        was_training = model.training
        model.eval()
        try:
            with eager_attention(model), torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings on shape-dependent Python branches
                torch.onnx.export(
                    _Outputs.module(model, names, task),
                    args,
                    str(path),
                    input_names=names,
                    output_names=list(task.output_names),
                    dynamic_axes=axes,
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
        finally:
            model.train(was_training)
        consolidate_external_data(path)
        return path
