"""Classification metrics from scikit-learn (shipped with quantkit).

Select one with ``config_name``: f1, precision, recall or matthews_correlation.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score, matthews_corrcoef, precision_score, recall_score

_DESCRIPTION = "F1, precision, recall or Matthews correlation of predicted vs reference class labels."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
    average (str): 'binary' (default), 'macro', 'micro' or 'weighted' (not for matthews_correlation).
    pos_label (int): the positive class for average='binary' (default 1).
Returns:
    {config_name: float}
"""
_NAMES = ("f1", "precision", "recall", "matthews_correlation")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self):
        if self.config_name not in _NAMES:
            raise KeyError(f"config_name must be one of {', '.join(_NAMES)}, got {self.config_name!r}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, average="binary", pos_label=1):
        if self.config_name == "matthews_correlation":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        fn = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[self.config_name]
        value = fn(references, predictions, average=average, pos_label=pos_label, zero_division=0)
        return {self.config_name: float(value)}
