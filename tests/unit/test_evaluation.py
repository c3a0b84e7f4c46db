"""Evaluation (quantkit.evaluation): metrics, predictions, runtime probe. Datasets are tested in test_data.py."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

from quantkit.errors import RegistryError
from quantkit.evaluation import METRICS, compute_metric, to_predictions
from quantkit.latency import measure_runtime
from quantkit.spec import LatencySpec


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("f1", lambda p, r: f1_score(r, p)),
        ("matthews_correlation", lambda p, r: matthews_corrcoef(r, p)),
        ("accuracy", lambda p, r: float(np.mean(p == r))),
    ],
)
def test_metrics_match_sklearn(name, reference):
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 2, 200)
    preds = np.where(rng.random(200) < 0.8, refs, 1 - refs)
    assert compute_metric(name, preds, refs) == pytest.approx(reference(preds, refs), abs=1e-12)


def test_macro_f1_and_correlation():
    refs = np.array([0, 1, 2, 2, 1, 0])
    preds = np.array([0, 2, 2, 2, 1, 0])
    assert compute_metric("f1", preds, refs, average="macro") == pytest.approx(
        f1_score(refs, preds, average="macro"), abs=1e-12
    )
    x = np.array([0.1, 0.4, 0.35, 0.8])
    assert compute_metric("pearson", x, 2 * x + 1) == pytest.approx(1.0, abs=1e-9)
    assert compute_metric("spearman", x, x**3) == pytest.approx(1.0, abs=1e-9)


def test_unknown_metric_is_a_registry_error():
    with pytest.raises(RegistryError, match="unknown metric 'bleu'"):
        METRICS.get("bleu")


def test_predictions_from_logits():
    logits = np.array([[0.1, 0.9], [2.0, -1.0]])
    assert to_predictions(logits, regression=False).tolist() == [1, 0]
    assert to_predictions(np.array([[0.3], [0.7]]), regression=True).tolist() == [0.3, 0.7]


def test_runtime_probe_measures_in_a_subprocess(tiny_fp32):
    stats = measure_runtime(tiny_fp32.path, LatencySpec(batch_size=2, warmup=1, repeats=5), sequence_length=16,
                            vocab_size=80)
    assert stats.batch_size == 2 and stats.sequence_length == 16 and stats.threads >= 1
    assert 0 < stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.throughput == pytest.approx(2 / (stats.p50_ms / 1000), rel=1e-6)
    # the probe's own peak, not the test process's (which holds torch): well under 1 GB
    assert 10 < stats.peak_rss_mb < 1000
    assert stats.model_rss_mb >= 0
