"""A weight-only causal-LM artifact loads with Optimum's ORTModelForCausalLM (the quantkit[optimum] stack:
optimum-onnx 0.1.0, transformers 4.57) and generates what quantkit.runtime generates."""

from __future__ import annotations

import pytest
from tiny_decoders import llm_spec

pytestmark = pytest.mark.optimum


def test_ortmodel_for_causal_lm_generates_like_the_runtime(decoder_dirs, text_file, tmp_path):
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    from quantkit import Quantizer
    from quantkit.runtime import load
    from quantkit.specio import parse_spec

    spec = parse_spec(llm_spec(decoder_dirs["llama"], text_file, tmp_path / "int8", limit=2,
                               weight_only={"bits": 8}))
    result = Quantizer.from_pretrained(str(decoder_dirs["llama"])).quantize(spec, progress=False)
    model = ORTModelForCausalLM.from_pretrained(result.output_dir)
    tok = AutoTokenizer.from_pretrained(result.output_dir)
    ids = tok("the whale and the sea", add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    expected = out[0, ids.shape[1]:].tolist()
    got = load(result.output_dir).generate(ids[0].tolist(), max_new_tokens=6, details=True)
    eos = tok.eos_token_id
    cut = expected.index(eos) if eos in expected else len(expected)
    assert got.token_ids == expected[:cut]
