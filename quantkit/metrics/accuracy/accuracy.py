"""Accuracy: the fraction of predictions equal to the references (shipped with quantkit)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy = (number of correct predictions) / (number of predictions)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
    normalize (bool): return the fraction (default) or the count of correct predictions.
    sample_weight (list of float): optional per-example weights.
Returns:
    accuracy (float)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        pred = np.asarray(predictions)
        ref = np.asarray(references)
        hits = (pred == ref).astype(np.float64)
        if sample_weight is not None:
            hits = hits * np.asarray(sample_weight, dtype=np.float64)
        return {"accuracy": float(hits.sum() / (len(hits) if sample_weight is None else np.sum(sample_weight)))
                if normalize else float(hits.sum())}
