"""The text-generation task: windows, perplexity (ONNX vs PyTorch), top-k KL, bad inputs, a whole run, generation."""

from __future__ import annotations

import numpy as np
import pytest

from quantkit.data import load_text_dataset
from quantkit.evaluation import OnnxRunner
from quantkit.spec import DatasetSpec, TaskOptionsSpec
from quantkit.tasks import task_for
from quantkit.tasks.text_generation import TokenScores, kl_top_k, log_softmax, windows


@pytest.mark.parametrize("n,length,stride", [(100, 16, 16), (100, 16, 5), (17, 16, 16), (16, 16, 8), (64, 32, 31)])
def test_windows_score_each_token_at_most_once_and_skip_only_context_free_starts(n, length, stride):
    """Overlapping windows score every token but the text's first; windows that do not overlap (stride = length)
    cannot score their first token (no context), as the transformers perplexity guide computes it."""
    ids = np.arange(n) + 100
    rows, mask, score_from = windows(ids, length, stride)
    scored = []
    for w, (row, m, first) in enumerate(zip(rows, mask, score_from)):
        begin = w * stride
        assert np.array_equal(row[: int(m.sum())], ids[begin: begin + int(m.sum())])
        scored += [begin + p for p in range(int(first), int(m.sum()))]
    assert scored == sorted(set(scored))
    unscored = set(range(1, n)) - set(scored)
    assert unscored == ({w * stride for w in range(1, len(rows))} & set(range(n)) if stride == length else set())


def _dataset(loaded, path, length=32, **options):
    task = task_for("text-generation", loaded.config, TaskOptionsSpec(**options))
    data = load_text_dataset(DatasetSpec(path=str(path)), loaded.tokenizer, task, key="data.evaluation",
                             max_length=length, padding="max_length")
    return task, data


@pytest.mark.parametrize("stride", [None, 12])
def test_perplexity_of_the_onnx_graph_equals_pytorch_on_the_same_windows(stride, llama_loaded, llama_fp32, text_file):
    import torch

    task, data = _dataset(llama_loaded, text_file, 32, **({"stride": stride} if stride else {}))
    scores = OnnxRunner(llama_fp32.path).run(data, 3, task).values
    nll, count = 0.0, 0
    with torch.no_grad():
        for row in range(len(data)):
            ids = torch.from_numpy(data.inputs["input_ids"][row: row + 1])
            n = int(data.inputs["attention_mask"][row].sum())
            logits = llama_loaded.model(input_ids=ids[:, :n]).logits[0].double()
            logp = torch.log_softmax(logits, -1)
            first = int(data.meta["score_from"][row])
            for p in range(first - 1, n - 1):
                nll -= float(logp[p, ids[0, p + 1]])
                count += 1
    assert len(scores) == count == data.examples["scored_tokens"]
    assert task.compute("perplexity", scores, data) == pytest.approx(np.exp(nll / count), rel=1e-4)
    # FP32 against itself: KL 0, top-1 agreement 1
    assert task.compute("kl_divergence", scores, data, reference=scores) == pytest.approx(0.0, abs=1e-7)
    assert task.compute("top1_agreement", scores, data, reference=scores) == 1.0


def test_top_k_kl_is_exact_with_the_whole_vocabulary_and_a_lower_bound_below_it():
    rng = np.random.default_rng(0)
    p_logits, q_logits = rng.standard_normal((50, 40)) * 3, rng.standard_normal((50, 40)) * 3
    lp, lq = log_softmax(p_logits).astype(np.float64), log_softmax(q_logits).astype(np.float64)
    exact = float((np.exp(lp) * (lp - lq)).sum(1).mean())

    def scores(logp, ids):
        return TokenScores(np.zeros(len(ids)), logp.argmax(1), ids.astype(np.int32),
                           np.take_along_axis(logp, ids, 1).astype(np.float32))

    for k in (40, 8, 1):
        ids = np.argsort(-lp, axis=1)[:, :k]
        approx = kl_top_k(scores(lp, ids), scores(lq, ids))
        if k == 40:
            assert approx == pytest.approx(exact, rel=1e-4)
        else:
            assert 0 <= approx <= exact + 1e-6


def test_a_candidate_scores_fp32s_top_tokens_and_kl_refuses_mismatched_runs(llama_loaded, llama_fp32, text_file,
                                                                           tmp_path):
    from quantkit.backends import get_backend
    from quantkit.errors import EvaluationError
    from quantkit.spec import QuantizationConfig

    task, data = _dataset(llama_loaded, text_file, 32, kl_top_k=16)
    fp32 = OnnxRunner(llama_fp32.path).run(data, 2, task).values
    q = get_backend("onnxruntime").quantize(llama_fp32, QuantizationConfig(approach="weight_only"), tmp_path / "q.onnx")
    int4 = OnnxRunner(q.path).run(data, 2, task).values
    assert np.array_equal(int4.ref_ids, fp32.ref_ids) and fp32.ref_ids.shape[1] == 16
    kl = task.compute("kl_divergence", int4, data, reference=fp32)
    assert 0 < kl < 1
    assert 0.5 < task.compute("top1_agreement", int4, data, reference=fp32) <= 1
    _, other = _dataset(llama_loaded, text_file, 32, kl_top_k=16)
    fresh = OnnxRunner(q.path).run(other, 2, task).values  # no FP32 run on this data: its own top-k
    with pytest.raises(EvaluationError, match="evaluate FP32 first"):
        task.compute("kl_divergence", fresh, data, reference=fp32.__class__(fp32.nll, fp32.top1, fp32.ref_ids[:, :8],
                                                                             fp32.ref_logp[:, :8]))


def test_limit_counts_windows(llama_loaded, text_file):
    task = task_for("text-generation", llama_loaded.config)
    data = load_text_dataset(DatasetSpec(path=str(text_file), limit=3), llama_loaded.tokenizer, task,
                             key="data.evaluation", max_length=32, padding="max_length")
    assert len(data) == 3 and data.examples["count"] == 3
    assert data.examples["scored_tokens"] == 3 * 31  # windows of 32 tokens side by side: 31 predictions each
