"""`python train.py predict --model DIR PROMPT ...`: answer questions with a model written by train.py and show
the computer's work at every number of the answer."""

import argparse
from pathlib import Path

import torch

from library.install import explain
from library.loading import check_generation_arguments, load_model, load_tokenizer


def number_starts(tokenizer, input_ids: list[int], answer_start: int) -> list[int]:
    """Where the computer runs while an answer is written (as in training, `data.add_number_positions`): the
    answer position (`answer_start - 1`, the prompt's last token) and every later position after which the answer
    written so far ends with ", " (a list's next number follows)."""
    return [answer_start - 1] + [
        position
        for position in range(answer_start, len(input_ids))
        if tokenizer.decode(input_ids[answer_start : position + 1]).endswith(", ")
    ]


@torch.no_grad()
def greedy_answer(model, tokenizer, prompt: str, max_new_tokens: int) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """Greedy decoding of the answer to `prompt`: `(ids (1, seq) of prompt + answer, where the answer starts,
    computer_mask or None)`.
    A plain Llama, and a LlamaDComp model whose computer writes tokens (its trigger decides where to compute),
    use plain `generate`; a residual-write LlamaDComp model decodes without a KV cache, re-running the computer at
    every `number_starts` position, which depends on the answer written so far."""
    ids = tokenizer(prompt.rstrip() + " ", return_tensors="pt")["input_ids"]  # the answer follows a space
    start = ids.shape[1]
    if getattr(model.config, "computer_output", None) != "residual_add":
        generated = model.generate(
            input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        return generated, start, None

    def computer_mask(ids: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(ids, dtype=torch.bool)  # (1, seq)
        mask[0, number_starts(tokenizer, ids[0].tolist(), start)] = True
        return mask

    for _ in range(max_new_tokens):
        token = model(input_ids=ids, computer_mask=computer_mask(ids), use_cache=False).logits[0, -1].argmax()
        if int(token) == tokenizer.eos_token_id:
            break
        ids = torch.cat([ids, token.view(1, 1)], dim=1)
    return ids, start, computer_mask(ids)


def predict(argv: list[str]) -> None:
    """Answer questions with a model written by train.py and show the computer's work at every number of the
    answer: the selected program, the parsed inputs with their probabilities, the result and the decompiled
    program."""
    parser = argparse.ArgumentParser(prog="train.py predict", description=predict.__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a folder written by train.py")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="most answer tokens (default: %(default)s)")
    parser.add_argument("prompts", nargs="+", help='questions, e.g. "Add 3 and 4"')
    args = parser.parse_args(argv)
    try:
        check_generation_arguments(args.prompts, args.max_new_tokens)
    except ValueError as error:
        parser.error(str(error))
    tokenizer = load_tokenizer(args.model)  # only the folder's own code files (docs/RELIABILITY.md)
    model = load_model(args.model).eval()
    for prompt in args.prompts:
        ids, start, mask = greedy_answer(model, tokenizer, prompt, args.max_new_tokens)
        answer = tokenizer.decode(ids[0, start:], skip_special_tokens=True).strip()
        print(f"{prompt}\nanswer: {answer}")
        if hasattr(model, "trace_computer"):  # where it ran: the mask, or where the trigger fired
            print(explain(model.trace_computer(input_ids=ids, computer_mask=mask, tokenizer=tokenizer), model))
