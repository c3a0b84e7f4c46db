"""Tiny random causal LMs of every decoder family quantkit exports, saved as safetensors folders with a small
word-piece tokenizer (the encoder tests' vocabulary), and a text to score them on."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

#: family → (transformers config class, causal-LM class, config overrides).
DECODERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"num_key_value_heads": 2, "sliding_window": None}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"num_key_value_heads": 2, "head_dim": 16}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"num_key_value_heads": 1, "head_dim": 16,
                                                             "sliding_window": 16, "layer_types": None}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"num_key_value_heads": 2, "pad_token_id": 0}),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"num_key_value_heads": 1, "head_dim": 16}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"num_key_value_heads": 2, "head_dim": 16, "sliding_window": 16}),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", {"num_key_value_heads": 2}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"num_key_value_heads": 2}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {"num_key_value_heads": 2}),
}

WORDS = ("the whale sea ship captain ahab ishmael white boat harpoon water deep long voyage crew sail wind storm "
         "night day man old young great small and of to a in was he his it that with as").split()


def tokenizer(path: Path) -> Any:
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *WORDS,
             *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"], *"abcdefghijklmnopqrstuvwxyz"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(str(path / "vocab.txt"), do_lower_case=True, model_max_length=256)
    tok.eos_token = "[SEP]"
    tok.bos_token = "[CLS]"
    return tok


def make_decoder(family: str, path: Path, *, layers: int = 2, hidden: int = 64, seed: int = 0) -> Path:
    """A random ``family`` causal LM (``layers`` blocks, ``hidden`` wide, 4 heads, 128 positions) at ``path``."""
    import torch
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(path)
    config_name, model_name, extra = DECODERS[family]
    if family == "gpt2":
        kwargs = dict(n_embd=hidden, n_layer=layers, n_head=4, n_positions=128, vocab_size=len(tok))
    else:
        kwargs = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, max_position_embeddings=128, vocab_size=len(tok))
    kwargs.update({k: v for k, v in extra.items() if v is not None or k == "sliding_window"})
    kwargs.pop("layer_types", None)
    kwargs.setdefault("pad_token_id", tok.pad_token_id)
    config = getattr(transformers, config_name)(**kwargs, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config.architectures = [model_name]
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def text(n_words: int = 1500, seed: int = 0) -> str:
    rng = random.Random(seed)
    sentences = []
    while sum(len(s.split()) for s in sentences) < n_words:
        sentences.append(" ".join(rng.choices(WORDS, k=rng.randint(5, 14))) + ".")
    return "\n".join(" ".join(sentences[i:i + 4]) for i in range(0, len(sentences), 4)) + "\n"


def llm_spec(model: Path | str, text_path: Path | str, out: Path | str, *, limit: int | None = None,
             **quantization: Any) -> dict[str, Any]:
    """A quick weight-only spec on a tiny decoder: 32-token windows of ``text_path``, one short timing round."""
    evaluation: dict[str, Any] = {"path": str(text_path)}
    if limit is not None:
        evaluation["limit"] = limit
    return {"spec_version": 1, "model": {"name_or_path": str(model), "task": "text-generation"},
            "quantization": {"approach": "weight_only", **quantization},
            "data": {"evaluation": evaluation, "max_length": 32},
            "evaluation": {"batch_size": 2, "latency": {"batch_size": 1, "sequence_length": 16, "rounds": 1,
                                                        "warmup": 1, "repeats": 3, "new_tokens": 2}},
            "output": {"dir": str(out), "keep_fp32": True}}
