"""Causal LMs end to end on the real models (issue #23): SmolLM2-135M-Instruct and Gemma-3-270M, fetched from
their PyPI wheels by scripts/fetch_models.py, scored on WikiText-2 test (../shared).

Acceptance: the FP32 ONNX graph reproduces PyTorch's perplexity of ../shared/README.md (30.15 on the first 4,088
tokens in 512-token windows); the int8 recipe stays within 1% of FP32 perplexity; KL and top-1 agreement are
reported; the int8 artifact generates the same greedy text as PyTorch. The int4 recipe's 2% tolerance is held by
notebooks/06_llm.ipynb (it runs that recipe on the same windows and asserts it; executed by tests/integration/test_notebooks.py).
Speeds are measured by bench/llm_table.py, not here. SmolLM2's weights come from a Q4_1 GGUF: already on a 4-bit
grid, so re-quantization error here understates the float-to-int4 error of a model trained in float.
"""

from __future__ import annotations

import sys

import pytest

from conftest import REPO, SHARED

from quantkit import Quantizer, load_spec
from quantkit.specio import with_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WIKITEXT = SHARED / "data" / "wikitext-2" / "wiki.test.raw"
QUICK = {"data.evaluation.limit": 8, "evaluation.latency.rounds": 1, "evaluation.latency.repeats": 3,
         "evaluation.latency.warmup": 1, "evaluation.latency.new_tokens": 4}


def _fetch(name: str):
    sys.path.insert(0, str(REPO / "scripts"))
    from fetch_models import fetch

    return fetch(name, REPO / ".models")


@pytest.fixture(scope="module")
def smollm2():
    return _fetch("smollm2-135m")


@pytest.fixture(scope="module")
def int8_run(smollm2, tmp_path_factory):
    spec = with_overrides(load_spec(REPO / "recipes" / "smollm2-wikitext-int8.yaml"), **QUICK)
    return Quantizer.from_pretrained(str(smollm2)).quantize(spec, tmp_path_factory.mktemp("smol") / "int8",
                                                           progress=False)


def test_fp32_perplexity_reproduces_pytorch_and_int8_stays_within_one_percent(int8_run):
    scores = int8_run.report["result"]["scores"]
    assert scores["fp32"]["scored_tokens"] == 4088 and scores["fp32"]["window"] == 512
    assert int8_run.fp32.value == pytest.approx(30.15, abs=0.05)  # ../shared/README.md, PyTorch FP32
    assert int8_run.relative_drop <= 0.01
    assert 0 < scores["quantized"]["kl_divergence"] < 0.05 and scores["quantized"]["top1_agreement"] >= 0.9
    ops = int8_run.report["quantization"]["graph"]["ops"]
    assert ops["MatMulNBits"] == 30 * 7 + 1 and ops["GatherBlockQuantized"] == 1
    assert int8_run.size_ratio < 0.35
    assert int8_run.report["result"]["decode_tokens_per_s"]["int8"] > 0


def test_the_int8_artifact_generates_what_pytorch_generates(int8_run, smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantkit.runtime import load

    prompt = "The capital of France is"
    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        expected = tok.decode(model.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1]:])
    got = load(int8_run.output_dir).generate(prompt, max_new_tokens=8)
    assert "Paris" in got and got.split()[0] == expected.split()[0]
