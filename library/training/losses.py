"""−log p of a target under a value distribution the machine produced (already normalised, not logits): the
answer loss on the computer's output register, the parse loss on its parse slots (train.py), the answer loss of
adaptive compilation (`library.adaptation`) and the selection's; and the distillation loss that keeps ordinary
text as the base model writes it."""

import torch

from modeling_llama_dcomp import IGNORE_INDEX


def value_nll(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−log p(target) per item: `probs (..., n)`, `targets (...)` → `(...)`, 0 where the target is -100."""
    log_probs = probs.clamp_min(1e-12).log().flatten(0, -2)  # (items, n)
    flat = targets.flatten().to(probs.device)
    return torch.nn.functional.nll_loss(log_probs, flat, ignore_index=IGNORE_INDEX, reduction="none").view_as(targets)


def distribution_cross_entropy(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean `value_nll` over the targets that are not -100."""
    return value_nll(probs, targets).sum() / (targets != IGNORE_INDEX).sum()


def distillation_kl(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p_reference || p) of next-token distributions, summed over the vocabulary and averaged over positions:
    `reference_logits`, `logits (positions, vocab)`. Zero exactly where the two models agree at every position."""
    return torch.nn.functional.kl_div(
        logits.float().log_softmax(-1), reference_logits.float().log_softmax(-1), log_target=True, reduction="batchmean"
    )


def selection_nll(program_probs: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """−log p(answer) of a selection `program_probs (positions, programs)`: p(answer) = Σ_k π_k right_k, `right` the
    programs whose output is the answer (`right_programs`, or whole lists), averaged over the positions: a loss
    whose target comes from the answer."""
    likelihood = (program_probs * right).sum(-1)
    return -likelihood.clamp_min(1e-6).log().mean()
