"""Token generation with a decoder graph and its KV cache (``quantkit.export.decoder``'s inputs and outputs).

:class:`Generator` runs one prompt: a prefill of the prompt's tokens with an empty cache, then one decode step per
new token, each feeding the previous step's ``present.*`` back as ``past_key_values.*``. Greedy by default;
``do_sample`` draws from the temperature-scaled distribution cut to ``top_k`` tokens and nucleus ``top_p`` with a
seeded generator. It stops at ``max_new_tokens``, at an end-of-sequence token (the tokenizer's and the generation
config's), or when the text ends with one of ``stop`` strings. :meth:`Generator.stream` yields the text of each
step as it is decoded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .feeds import carried_cache, complete_feeds, is_past

__all__ = ["GenerationConfig", "Generated", "Generator", "next_token"]


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Generated:
    """One generation: the new text and token ids, why it stopped, and its speed."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    stopped_by: str  # "length" | "eos" | "stop"
    prefill_s: float = 0.0
    decode_s: float = 0.0
    step_times: list[float] = field(default_factory=list, repr=False)

    @property
    def decode_tokens_per_s(self) -> float:
        steps = max(len(self.token_ids) - 1, 0)  # the first new token comes from the prefill
        return steps / self.decode_s if self.decode_s > 0 and steps else float("nan")

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else float("nan")


def next_token(logits: np.ndarray, config: GenerationConfig, rng: np.random.Generator) -> int:
    """The next token from one position's logits: argmax, or a draw (temperature, top-k, top-p)."""
    if not config.do_sample:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / config.temperature
    if 0 < config.top_k < len(z):
        cut = np.partition(z, -config.top_k)[-config.top_k]
        z = np.where(z < cut, -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    if config.top_p < 1.0:
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < config.top_p  # the smallest set reaching top_p
        mask = np.zeros_like(p, dtype=bool)
        mask[order[keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return int(rng.choice(len(p), p=p))


class Generator:
    """Generation with ``session`` (an ONNX Runtime session of a decoder graph) and ``tokenizer``."""

    def __init__(self, session: Any, tokenizer: Any, eos_token_ids: Sequence[int] = ()) -> None:
        self.session, self.tokenizer = session, tokenizer
        self.inputs = session.get_inputs()
        self.output_names = [o.name for o in session.get_outputs()]
        if not any(is_past(i.name) for i in self.inputs):
            raise ValueError("this graph has no KV-cache inputs (past_key_values.*): it is not a decoder export")
        eos = set(int(i) for i in eos_token_ids)
        if getattr(tokenizer, "eos_token_id", None) is not None:
            eos.add(int(tokenizer.eos_token_id))
        self.eos = eos

    def _step(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray,
              past: dict[str, np.ndarray] | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **(past or {})}
        outs = dict(zip(self.output_names, self.session.run(None, complete_feeds(self.inputs, feeds))))
        return outs["logits"][0, -1], carried_cache(outs)

    def stream(self, prompt: str | Sequence[int], config: GenerationConfig) -> Iterator[tuple[str, Generated]]:
        """Yield ``(new text, state so far)`` after each generated token."""
        ids = list(prompt) if not isinstance(prompt, str) else self.tokenizer(prompt)["input_ids"]
        if not ids:
            raise ValueError("the prompt has no tokens")
        rng = np.random.default_rng(config.seed)
        state = Generated("", [], len(ids), "length")
        start = time.perf_counter()
        logits, past = self._step(np.asarray([ids], np.int64), np.ones((1, len(ids)), np.int64),
                                  np.arange(len(ids), dtype=np.int64)[None], None)
        state.prefill_s = time.perf_counter() - start
        shown = ""
        total = len(ids)
        while len(state.token_ids) < config.max_new_tokens:
            token = next_token(logits, config, rng)
            if token in self.eos:
                state.stopped_by = "eos"
                break
            state.token_ids.append(token)
            text = self.tokenizer.decode(state.token_ids, skip_special_tokens=True)
            hit = next((s for s in config.stop if s and s in text), None)
            if hit is not None:
                text = text[: text.index(hit)]
                state.stopped_by = "stop"
            new, shown = text[len(shown):], text
            state.text = text
            if new:
                yield new, state
            if hit is not None or len(state.token_ids) >= config.max_new_tokens:
                break
            t = time.perf_counter()
            total += 1
            logits, past = self._step(np.asarray([[token]], np.int64), np.ones((1, total), np.int64),
                                      np.asarray([[total - 1]], np.int64), past)
            state.step_times.append(time.perf_counter() - t)
        state.decode_s = float(sum(state.step_times))
        yield "", state

    def generate(self, prompt: str | Sequence[int], config: GenerationConfig) -> Generated:
        state = None
        for _, state in self.stream(prompt, config):
            pass
        assert state is not None
        return state
