"""Correlation metrics for regression outputs (shipped with quantkit).

Select one with ``config_name``: pearson or spearman.
"""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr

_DESCRIPTION = "Pearson or Spearman correlation between predicted and reference values."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted values.
    references (list of float): reference values.
Returns:
    {config_name: float}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Correlation(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("pearson", "spearman"):
            raise KeyError(f"config_name must be pearson or spearman, got {self.config_name!r}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        fn = pearsonr if self.config_name == "pearson" else spearmanr
        return {self.config_name: float(fn(references, predictions)[0])}
