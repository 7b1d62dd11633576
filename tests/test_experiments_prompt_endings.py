"""experiments.prompt_endings: the same questions asked with other prompt endings, scored by the answer's line."""

import datasets
import torch
from test_readout import calculator, smollm2_tokenizer

from experiments.prompt_endings import ENDINGS, HELD_OUT_ENDINGS, exact_match_by_ending
from library.tasks import WIDE_ENDINGS
from modeling_llama_dcomp import TOKEN_LOGIT_SCALE


def test_each_ending_is_scored_on_its_own_and_only_where_the_computer_answers():
    tokenizer = smollm2_tokenizer()
    model = calculator(tokenizer, "add", computer_trigger_context=1)
    space = tokenizer.encode(" ", add_special_tokens=False)[-1]
    colon = tokenizer.encode("Answer:", add_special_tokens=False)[-1]
    with torch.no_grad():  # compute after a final space or "Answer:" and nowhere else
        model.computer.trigger_tokens.zero_()
        model.computer.trigger_tokens[0, [space, colon]] = 20 / TOKEN_LOGIT_SCALE
    rows = datasets.Dataset.from_list(
        [
            {"text": "Add 12 and 30", "answer_text": "42", "operation": "add", "digits": 2},
            {"text": "Add -5 and 7", "answer_text": "2", "operation": "add", "digits": 1},
        ]
    )
    figures = exact_match_by_ending(model, tokenizer, rows, batch_size=2, max_new_tokens=4)
    assert figures["space (as trained): all"] == (1.0, 2)
    assert figures["GPT-3 arithmetic format: all"] == (1.0, 2)
    assert figures["held-out frame B: all"] == (1.0, 2)  # "Completion:", a colon too
    assert figures["no space: all"] == (0.0, 2)  # after "30" the tiny Llama answers alone, and wrongly
    assert figures["space (as trained): 1 digits"] == (1.0, 1) and figures["no space: add"] == (0.0, 2)
    assert {group.split(": ")[0] for group in figures} == set(ENDINGS) | {"GPT-3 arithmetic format, lm-eval acc"}
    # teacher-forced, the tiny base does not write the space after "Answer:" itself: no lead head, no greedy answer
    assert figures["GPT-3 arithmetic format, lm-eval acc: all"] == (0.0, 2)


def test_the_lm_eval_score_is_the_greedy_continuation_teacher_forced():
    """A model whose read-out writes the space after "Answer:" (the lead) and then the answer makes " 42" its
    greedy continuation; a wrong continuation is not."""
    from experiments.prompt_endings import greedy_continuations

    tokenizer = smollm2_tokenizer()
    space = tokenizer.encode(" ", add_special_tokens=False)[-1]
    colon = tokenizer.encode("Answer:", add_special_tokens=False)[-1]
    model = calculator(tokenizer, "add", computer_trigger_context=1, computer_lead_token_id=space)
    with torch.no_grad():  # the lead after "Answer:", the trigger at the space after it
        model.computer.trigger_tokens.zero_()
        model.computer.trigger_tokens[0, space] = 20 / TOKEN_LOGIT_SCALE
        model.computer.lead_tokens[0, colon] = 20 / TOKEN_LOGIT_SCALE
    contexts = ["Question: Add 12 and 30\nAnswer:"] * 2 + ["Question: Add -5 and 7\nAnswer:"]
    assert greedy_continuations(model, tokenizer, contexts, [" 42", " 43", " 2"], batch_size=2) == [True, False, True]


def test_the_held_out_frames_are_in_no_training_ending_set():
    assert not {ENDINGS[name] for name in HELD_OUT_ENDINGS} & set(WIDE_ENDINGS)  # WIDE_ENDINGS holds PLAIN_ENDINGS
