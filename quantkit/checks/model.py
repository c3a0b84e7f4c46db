"""Stage 2: the model's config loads (no weights), its task exports, remote code, and the tokenizer."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

from ..errors import QuantkitError, SpecError
from ..export import base as export_base
from ..families import family_of
from ..models import canonical_model_task, gguf_source, head_mismatch, infer_task, load_config, model_folder
from ..tasks import task_for, task_names
from .base import CheckContext, Memo, Problem, check, error, warning
from .files import is_local_model, weight_files

logger = logging.getLogger(__name__)

__all__ = ["get_config", "get_task", "get_task_object", "get_tokenizer", "model_size", "ModelSize", "max_positions", "hidden_dims",
           "relative_positions"]


# --------------------------------------------------------------------------- memoised facts
def _raw_config(ctx: CheckContext) -> dict[str, Any] | None:
    """config.json of a local model folder as plain JSON (no transformers), or None."""

    def compute() -> Memo:
        name = ctx.model_name
        if not name or not is_local_model(name):
            return Memo(None)
        try:
            return Memo(json.loads((Path(name).expanduser() / "config.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return Memo(None)

    return ctx.memo("raw_config", compute).value


def get_config(ctx: CheckContext) -> Memo:
    """The transformers config (``AutoConfig``; never the weights). Problems are owned by ``model.config``."""

    def compute() -> Memo:
        if ctx.loaded is not None:
            return Memo(ctx.loaded.config)
        name = ctx.model_name
        if not name:
            return Memo(None)  # files.model reports it
        try:
            if gguf_source(name) is not None:
                return Memo(load_config(name))
        except QuantkitError as exc:
            return Memo(None, [error("model.name_or_path", str(exc), getattr(exc, "hint", None))])
        if is_local_model(name) and not (Path(name).expanduser() / "config.json").is_file():
            return Memo(None)  # files.model reports it
        from transformers import AutoConfig

        m = ctx.spec.model
        try:
            return Memo(AutoConfig.from_pretrained(name, revision=m.revision, trust_remote_code=m.trust_remote_code))
        except ValueError as exc:
            text = str(exc)
            if "trust_remote_code" in text:
                return Memo(None, [error(
                    "model.trust_remote_code",
                    f"{name}: the model needs its own code to load (config.json maps AutoConfig to a file in the "
                    "repository), and model.trust_remote_code is false",
                    "set model.trust_remote_code: true only if you trust this repository's code",
                )])
            raw = _raw_config(ctx) or {}
            if "model_type" in raw or "Unrecognized model" in text:
                import transformers

                return Memo(None, [error(
                    "model.name_or_path",
                    f"{name}: model type {raw.get('model_type', '?')!r} is unknown to transformers "
                    f"{transformers.__version__}: {text.splitlines()[0]}",
                    "use a model of a type transformers supports, or one shipping its own code "
                    "(with model.trust_remote_code: true)",
                )])
            return Memo(None, [error("model.name_or_path", f"{name}: cannot read the model config: {text}")])
        except OSError as exc:
            where = "no loadable config.json here" if is_local_model(name) else "the Hub could not provide it"
            return Memo(None, [error("model.name_or_path", f"cannot load model: {name}: {where}: {exc}",
                                     "check model.name_or_path / --model, network access and HF_TOKEN")])

    return ctx.memo("config", compute)


def get_task_object(ctx: CheckContext) -> Memo:
    """The :class:`~quantkit.tasks.Task` bound to the model (None when the task or config is unknown)."""

    def compute() -> Memo:
        name, config = get_task(ctx).value, get_config(ctx).value
        if name is None or config is None:
            return Memo(None)

        if name not in task_names():
            return Memo(None)
        m = ctx.spec.model
        folder = model_folder(m.name_or_path, m.revision, files=("modules.json", "1_Pooling/config.json")) \
            if m.name_or_path else None
        return Memo(task_for(name, config, ctx.spec.task_options, folder))

    return ctx.memo("task_object", compute)


def get_task(ctx: CheckContext) -> Memo:
    """The export task: ``model.task`` (canonical name) or inferred from ``architectures``."""

    def compute() -> Memo:
        if ctx.loaded is not None:
            return Memo(ctx.loaded.task)
        config = get_config(ctx).value
        if config is None:
            return Memo(None)

        if ctx.spec.model.task:
            try:
                return Memo(canonical_model_task(ctx.spec.model.task))
            except SpecError as exc:
                return Memo(None, [error("model.task", exc.issues[0].message if exc.issues else str(exc))])
        try:
            return Memo(infer_task(config))
        except SpecError:
            archs = getattr(config, "architectures", None) or []
            return Memo(None, [error(
                "model.task",
                f"cannot infer the task from the model config (architectures: {archs or 'none'})",
                "set model.task, e.g. text-classification",
            )])

    return ctx.memo("task", compute)


def get_tokenizer(ctx: CheckContext) -> Memo:
    """The tokenizer (``AutoTokenizer``, no weights). Problems are owned by ``model.tokenizer``."""

    def compute() -> Memo:
        if ctx.loaded is not None:
            return Memo(ctx.loaded.tokenizer)
        if get_config(ctx).value is None:
            return Memo(None)
        from transformers import AutoTokenizer

        m = ctx.spec.model
        try:
            tok = AutoTokenizer.from_pretrained(ctx.model_name, revision=m.revision,
                                                trust_remote_code=m.trust_remote_code)
        except Exception as exc:  # noqa: BLE001 - tokenizer classes raise anything
            return Memo(None, [error("model.name_or_path", f"cannot load model: the tokenizer of {ctx.model_name} "
                                     f"does not load: {type(exc).__name__}: {exc}",
                                     "save the tokenizer next to the model (tokenizer.save_pretrained)")])
        return Memo(tok)

    return ctx.memo("tokenizer", compute)


def hidden_dims(config: Any) -> dict[str, int] | None:
    """hidden, layers, heads, intermediate, vocab of a transformer config (None when unknown)."""

    def first(*names: str) -> int | None:
        for n in names:
            v = getattr(config, n, None)
            if isinstance(v, int) and v > 0:
                return v
        return None

    hidden = first("hidden_size", "d_model", "n_embd", "dim")
    layers = first("num_hidden_layers", "num_layers", "n_layer", "n_layers")
    heads = first("num_attention_heads", "n_head", "n_heads", "encoder_attention_heads")
    if hidden is None or layers is None or heads is None:
        return None
    inter = first("intermediate_size", "n_inner", "ffn_dim", "hidden_dim", "encoder_ffn_dim", "d_ff") or 4 * hidden
    return {"hidden": hidden, "layers": layers, "heads": heads, "intermediate": inter,
            "vocab": first("vocab_size") or 0, "positions": max_positions(config) or 0,
            "type_vocab": first("type_vocab_size") or 0}


#: Model types whose position ids start after the padding index (positions usable = max - pad - 1).
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "data2vec-text", "longformer", "ibert", "markuplm"}


def relative_positions(config: Any) -> bool:
    """Whether positions are rotary/relative (longer inputs still run; max_position_embeddings is advisory)."""
    rope = getattr(config, "rope_parameters", None)  # transformers 5 keeps rope_theta in rope_parameters
    return (getattr(config, "rope_theta", None) is not None or isinstance(rope, dict) and bool(rope)
            or getattr(config, "position_biased_input", True) is False
            or "rotary" in str(getattr(config, "position_embedding_type", "")))


def max_positions(config: Any) -> int | None:
    """Longest sequence the position embeddings cover, or None when the config does not say."""
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length"):
        v = getattr(config, name, None)
        if isinstance(v, int) and v > 0:

            family = family_of(getattr(config, "model_type", None))
            if getattr(config, "model_type", None) in _OFFSET_POSITIONS or (family and family.position_offset):
                pad = getattr(config, "pad_token_id", 1)
                return v - (pad if isinstance(pad, int) else 1) - 1
            return v
    return None


class ModelSize(dict):
    """``params``, ``embedding_params``, ``bytes_on_disk`` and ``source`` of a model, without loading weights."""


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}


def _safetensors_params(path: Path) -> int:
    """Parameter count from a safetensors file's JSON header (the weights are not read)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 * 2**20:
            raise ValueError("implausible safetensors header")
        header = json.loads(f.read(n))
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in info["shape"]:
            count *= int(d)
        total += count
    return total


def model_size(ctx: CheckContext) -> ModelSize | None:
    """Parameters of the model: safetensors headers when local, else estimated from the config."""

    def compute() -> Memo:
        config = get_config(ctx).value
        dims = hidden_dims(config) if config is not None else None
        emb = 0
        if dims:
            emb = dims["hidden"] * (dims["vocab"] + dims["positions"] + dims["type_vocab"])
        if ctx.loaded is not None:
            return Memo(ModelSize(params=ctx.loaded.num_parameters, embedding_params=emb, source="loaded model"))
        name = ctx.model_name
        if name and is_local_model(name) and Path(name).expanduser().is_dir():
            files = weight_files(Path(name).expanduser())
            st = [f for f in files if f.suffix == ".safetensors"]
            try:
                if st:
                    return Memo(ModelSize(params=sum(_safetensors_params(f) for f in st), embedding_params=emb,
                                          source="safetensors header"))
            except (OSError, ValueError, KeyError, struct.error) as exc:
                logger.debug("cannot read safetensors headers: %s", exc)
            if files:  # pytorch_model.bin: assume float32
                return Memo(ModelSize(params=sum(f.stat().st_size for f in files) // 4, embedding_params=emb,
                                      source="weight file size"))
        if dims:
            h, i, layers = dims["hidden"], dims["intermediate"], dims["layers"]
            return Memo(ModelSize(params=emb + layers * (4 * h * h + 2 * h * i + 9 * h + i), embedding_params=emb,
                                  source="estimated from the config"))
        return Memo(None)

    return ctx.memo("model_size", compute).value


# --------------------------------------------------------------------------- checks
@check("model.config", stage="model")
def check_config(ctx: CheckContext) -> list[Problem]:
    """The config loads without weights; trust_remote_code is needed exactly when the model ships code."""
    memo = get_config(ctx)
    problems = list(memo.problems)
    config = memo.value
    if config is None or ctx.loaded is not None:
        return problems
    auto_map = getattr(config, "auto_map", None) or (_raw_config(ctx) or {}).get("auto_map")
    if ctx.spec.model.trust_remote_code and not auto_map:
        problems.append(warning(
            "model.trust_remote_code",
            f"true but {ctx.model_name} ships no code (config.json has no auto_map): transformers' built-in "
            f"{type(config).__name__} is used",
            "set model.trust_remote_code: false (never run remote code you do not need)",
        ))
    elif auto_map and not ctx.spec.model.trust_remote_code:
        problems.append(warning(
            "model.trust_remote_code",
            f"{ctx.model_name} ships its own model code (auto_map: {', '.join(sorted(auto_map))}) that will not run; "
            f"transformers' built-in {type(config).__name__} is used instead",
            "fine if the built-in class is the same architecture; otherwise set model.trust_remote_code: true",
        ))
    return problems


@check("model.task", stage="model")
def check_task(ctx: CheckContext) -> list[Problem]:
    """The task is known, exportable to ONNX for this model type, and evaluable by quantkit."""
    memo = get_task(ctx)
    problems = list(memo.problems)
    task, config = memo.value, get_config(ctx).value
    if task is None or config is None:
        return problems

    model_type = getattr(config, "model_type", None) or "?"
    choice = ctx.spec.export.exporter
    if choice == "optimum" and not export_base.optimum_onnx_available():
        problems.append(error(
            "export.exporter", "optimum, but optimum-onnx is not installed (it needs the transformers 4.57 stack)",
            "use export.exporter: quantkit (or auto), or install quantkit[optimum] in a separate environment "
            "(bash scripts/setup.sh --stack optimum)",
        ))
        return problems
    supported = export_base.exportable_tasks(model_type, choice)
    if not supported:
        either = ("neither quantkit's exporter nor optimum-onnx supports it" if export_base.optimum_onnx_available()
                  else "quantkit's exporter does not support it (optimum-onnx is not installed)")
        who = {"quantkit": "quantkit's exporter does not support it",
               "optimum": "optimum-onnx has no export config for it"}.get(choice, either)
        problems.append(error(
            "model.name_or_path",
            f"model type {model_type!r} ({type(config).__name__}) cannot be exported to ONNX: {who}",
            "choose a model of an exportable type (bert, distilbert, roberta, xlm-roberta, deberta-v2, electra, "
            "mpnet, modernbert, ...)",
        ))
    elif task not in supported:
        problems.append(error("model.task", f"{task!r} cannot be exported for model type {model_type!r}; "
                              f"expected one of {', '.join(supported)}",
                              "set model.task to one of those, or drop it to infer it from the model"))
    if task not in task_names():
        problems.append(error("model.task", f"{task!r} cannot be evaluated yet; quantkit evaluates "
                              f"{', '.join(task_names())} models",
                              "use a classifier, tagger, sentence encoder or extractive QA model"))
    if ctx.spec.model.task and ctx.loaded is None and task in task_names():
        try:
            head = infer_task(config)
        except SpecError:
            head = None
        if (mismatch := head_mismatch(config, task)) is not None:
            allowed = ctx.spec.model.new_head
            problems.append((warning if allowed else error)(
                "model.task", mismatch + ("; model.new_head: true attaches it on purpose" if allowed else ""),
                f"use a checkpoint fine-tuned for {task}, or set model.task: {head}" + (
                    "" if allowed else ", or model.new_head: true to attach a new head on purpose"),
            ))
    return problems


@check("model.tokenizer", stage="model")
def check_tokenizer(ctx: CheckContext) -> list[Problem]:
    """The tokenizer loads, can pad, and its ids fit the model's embedding table."""
    memo = get_tokenizer(ctx)
    problems = list(memo.problems)
    tok, config = memo.value, get_config(ctx).value
    if tok is None or config is None:
        return problems
    vocab = getattr(config, "vocab_size", None)
    size = len(tok)
    name = ctx.model_name
    base = getattr(tok, "vocab_size", size)  # without added tokens
    if isinstance(vocab, int) and vocab > 0:
        if base > vocab:
            problems.append(error(
                "model.name_or_path",
                f"the tokenizer of {name} has {size} tokens but the model's vocab_size is {vocab}: ids >= {vocab} "
                "would index past the embedding table (a tokenizer of another model?)",
                "use the tokenizer the model was trained with (same folder as the weights)",
            ))
        elif size > vocab:
            problems.append(warning(
                "model.name_or_path",
                f"the tokenizer of {name} has {size - base} added token(s) with ids >= the model's vocab_size "
                f"{vocab}: text containing them would index past the embedding table",
                "resize the model's embeddings to the tokenizer (model.resize_token_embeddings) and save it",
            ))
        elif size < 0.9 * vocab and vocab - size > 128:
            problems.append(warning(
                "model.name_or_path",
                f"the tokenizer of {name} has {size} tokens, far fewer than the model's vocab_size {vocab} "
                "(a tokenizer of another model?)",
                "use the tokenizer the model was trained with",
            ))
    if getattr(tok, "pad_token", None) is None:
        problems.append(error(
            "model.name_or_path",
            f"the tokenizer of {name} has no padding token; quantkit pads every batch (data.padding)",
            "set a pad_token in the tokenizer (e.g. tokenizer.pad_token = tokenizer.eos_token; save_pretrained)",
        ))
    pad_config = getattr(config, "pad_token_id", None)
    pad_tok = getattr(tok, "pad_token_id", None)
    if isinstance(pad_config, int) and isinstance(pad_tok, int) and pad_config != pad_tok:
        problems.append(warning(
            "model.name_or_path",
            f"the tokenizer pads with id {pad_tok} but the model config's pad_token_id is {pad_config}",
            "use the tokenizer the model was trained with",
        ))
    return problems
