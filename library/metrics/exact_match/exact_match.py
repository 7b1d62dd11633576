"""Exact match with per-group accuracy, as an `evaluate` metric script.

Load it offline from its local path (the Hub is never contacted):

    evaluate.load("library/metrics/exact_match")      # or the path of this file
    library.tasks.exact_match_metric()                # the same, wherever the package is installed
"""

from collections import defaultdict

import datasets
import evaluate

_DESCRIPTION = """
Exact match: the fraction of predictions equal to their reference. Values are compared as they are given
(no normalisation): integers (`answer`), strings (`answer_text`) or lists of integers (sorted lists). With
`groups` (one label per example, e.g. the task's `operation`, `depth` or `length` column), also the accuracy
of each group.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of int, str or list of int.
    references: list of the same type and length.
    groups (optional): list of one label (str or int) per example.
Returns:
    exact_match: float in [0, 1], the fraction of exact matches over all examples.
    per_group: only with `groups`: {label: exact match of that group's examples}, labels as str, sorted.
Examples:
    >>> metric = evaluate.load("library/metrics/exact_match")
    >>> metric.compute(predictions=[7, 1, 3], references=[7, 2, 3], groups=["add", "sub", "sub"])
    {'exact_match': 0.6666666666666666, 'per_group': {'add': 1.0, 'sub': 0.5}}
"""

_CITATION = """
@misc{saldyt_algorithmic,
  title={Algorithmic Language Models with Neurally Compiled Libraries},
  author={Saldyt, Lucas and Kambhampati, Subbarao}
}
"""


def _features(value: datasets.features.features.FeatureType) -> datasets.Features:
    return datasets.Features({"predictions": value, "references": value})


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # evaluate takes the first option the first example fits; strings first, since the int64
            # option would parse " 7" as 7.
            features=[
                _features(datasets.Value("string")),
                _features(datasets.Value("int64")),
                _features(datasets.Sequence(datasets.Value("int64"))),
            ],
        )

    def _compute(self, predictions, references, groups=None) -> dict:
        matches = [prediction == reference for prediction, reference in zip(predictions, references)]
        result = {"exact_match": sum(matches) / len(matches)}
        if groups is not None:
            if len(groups) != len(matches):
                raise ValueError(f"{len(groups)} groups for {len(matches)} predictions")
            by_group = defaultdict(list)
            for group, match in zip(groups, matches):
                by_group[str(group)].append(match)
            result["per_group"] = {group: sum(found) / len(found) for group, found in sorted(by_group.items())}
        return result
