"""Exact match of greedy decoding, computed in one teacher-forced pass: greedy decoding writes exactly the answer
and EOS if and only if the argmax at every labelled position is its label. The LM head runs only at labelled
positions (boolean `logits_to_keep`), so only their argmax is kept."""

import dataclasses

import torch

from modeling_llama_dcomp import IGNORE_INDEX, shift_labels


def answer_predictions(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`preprocess_logits_for_metrics`: the argmax token at every labelled position `(batch, seq)` (-100 elsewhere),
    from the logits of the labelled positions only `(kept, vocab)`."""
    keep = shift_labels(labels) != IGNORE_INDEX
    predictions = torch.full_like(labels, IGNORE_INDEX)
    predictions[keep] = logits.reshape(-1, logits.shape[-1]).argmax(-1)
    return predictions


@dataclasses.dataclass
class ExactMatch:
    """`compute_metrics` for one split: exact match of the whole answer (every answer token and EOS), overall and
    per group (operation, depth or length), with the local `evaluate` metric module."""

    metric: object  # library.tasks.exact_match_metric()
    groups: list

    def __call__(self, prediction) -> dict:
        predictions = torch.as_tensor(prediction.predictions)
        shifted = shift_labels(torch.as_tensor(prediction.label_ids))  # (rows, seq): the label each position predicts
        keep = shifted != IGNORE_INDEX
        targets = [row[mask].tolist() for row, mask in zip(shifted, keep)]
        guesses = [row[mask].tolist() for row, mask in zip(predictions, keep)]
        result = self.metric.compute(predictions=guesses, references=targets, groups=self.groups)
        return {
            "exact_match": result["exact_match"],
            **{f"exact_match_{group}": value for group, value in result["per_group"].items()},
        }


def evaluate_split(trainer, metric, dataset, name: str, group_column: str) -> dict:
    """Exact match on one split, logged with prefix `name`: {"exact_match": ..., "exact_match_<group>": ...}."""
    trainer.compute_metrics = ExactMatch(metric, dataset[group_column])
    metrics = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=name)
    return {key.removeprefix(f"{name}_"): value for key, value in metrics.items() if "exact_match" in key}
