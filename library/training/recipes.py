"""How train.py initialises the computer block before training (docs/TRAINING.md explains why each helps): W_out
at the LM-head rows of the number tokens, the linear parse heads as ridge probes of the prompt's numbers, and the
copy parse pointing each slot at the number it reads in the prompt, fitted on prompt text alone; and the hidden
votes as a probe of the program that answers, the one fit that reads the answer (as the answer loss does)."""

import dataclasses

import torch

from library.install import number_token_ids
from library.training.data import TaskSpec, slot_values, written_numbers
from library.training.losses import selection_nll
from library.training.trainer import right_programs
from modeling_llama_dcomp import record_computer_runs, window_mean


def initialise(model, tokenizer, spec: TaskSpec, rows, collator, args, from_scratch: bool, beyond_rows=None) -> dict:
    """The whole recipe of `args` (`ComputerArguments`) on a fresh LlamaDComp model, with `rows` the training
    split and `beyond_rows` prompts in phrasings the run lacks (`--fit_phrasings`: half of the hidden votes' fit):
    returns what it found, {"probe_accuracy": ..., "copying": {slot: ordinal}, "hidden_vote_accuracy": ...,
    "hidden_vote_prompts": (prompts, of them in new phrasings)} (those it ran)."""
    found: dict = {}
    rows = rows.filter(lambda position: position >= 0, input_columns="answer_position")  # not ordinary text
    if model.config.computer_encoding == "binary":  # the token read-out has no W_out, the parse no value classes
        if spec.count_register >= 0 and args.parse_init_scale > 0:
            found["copying"] = init_list_copy_parse(model, spec, args.parse_init_scale)
        elif model.config.computer_parse == "copy" and args.parse_init_scale > 0:
            found["copying"] = init_copy_parse(model, spec, rows[: args.probe_examples]["text"], args.parse_init_scale)
        if args.fit_hidden_votes:
            own, wider = (args.fit_hidden_votes, 0) if beyond_rows is None else fit_shares(args.fit_hidden_votes)
            fitted = list(rows.select(range(min(own, len(rows)))))
            if beyond_rows is not None:
                fitted += list(beyond_rows.select(range(min(wider, len(beyond_rows)))))
            found["hidden_vote_accuracy"] = init_hidden_votes_from_probe(
                model, fitted, collator, steps=args.fit_steps, standardised=args.fit_standardised
            )
            found["hidden_vote_prompts"] = (len(fitted), len(fitted) - min(own, len(rows)))  # (all, new phrasings)
        return found
    init_read_out(model, tokenizer, args.number_row_norm if from_scratch else 0.0)
    if args.parse_init_scale > 0:
        found["probe_accuracy"] = init_parse_from_probe(
            model,
            spec,
            rows.select(range(min(args.probe_examples, len(rows)))),
            collator,
            args.parse_init_scale,
            targets_kind=args.probe_targets,
            ridge_penalty=args.probe_ridge,
        )
        if model.config.computer_parse == "copy":
            found["copying"] = init_copy_parse(model, spec, rows[: args.probe_examples]["text"], args.parse_init_scale)
    return found


def fit_shares(prompts: int) -> tuple[int, int]:
    """(the run's own prompts, prompts in the phrasings `--fit_phrasings` adds) of a hidden-vote fit on `prompts`
    prompts with a wider set: half each, the odd one to the wider set. The calibration reads that set's prompts after
    these (`library.training.calibration`)."""
    return prompts // 2, prompts - prompts // 2


def fixed_by_the_recipe(model, spec: TaskSpec, args) -> list[torch.nn.Parameter]:
    """The parameters `initialise` sets and then keeps as set: the hidden votes' fitted head (`--fit_hidden_votes`),
    the copy parse's query and key weights where it points by the ordinal alone (`point_by_ordinal_alone`), a list
    task's trigger weights (`init_list_copy_parse`). A resumed run loads them from its checkpoint instead and must
    freeze the same ones, or its optimizer's parameter groups would not match the ones it saved."""
    fixed = []
    for computer in model.computers():
        if args.fit_hidden_votes:
            fixed.append(computer.selection_hidden_votes.weight)
        if args.parse_init_scale <= 0:
            continue
        if model.config.computer_encoding == "binary" and spec.count_register >= 0:
            fixed.append(computer.trigger.weight)
        elif model.config.computer_parse == "copy" and model.config.computer_copy_from_end:
            fixed += [computer.copy_parse.query.weight, computer.copy_parse.key.weight]
    return fixed


@torch.no_grad()
def init_read_out(model, tokenizer, row_norm: float) -> None:
    """W_out column v := the LM-head row of the token of value v (the computer writes what the LM head reads);
    with `row_norm` > 0 those rows are first rescaled to that norm (a from-scratch head starts too small to
    express a confident number: max logit ~2.5 against 128k tokens)."""
    ids = number_token_ids(tokenizer, model.config.computer_values)
    head = model.get_output_embeddings().weight  # (vocab, hidden)
    if row_norm > 0:
        single = torch.tensor([token[0] for token in ids if len(token) == 1])
        head[single] = row_norm * head[single] / head[single].norm(dim=-1, keepdim=True)
    columns = torch.stack([head[torch.tensor(token)].mean(0) for token in ids], dim=1)  # (hidden, n)
    for computer in model.computers():
        computer.init_read_out(columns)


def digit_classes(values: torch.Tensor, n: int) -> torch.Tensor:
    """(len(values), digits + 1) class indices into `digits * 10 + digits` columns: each decimal digit of the
    value (units, tens, ...; 10 columns each), then its length in digits (`digits` = the digits of n - 1)."""
    digits = len(str(n - 1))
    columns = [10 * k + (values // 10**k) % 10 for k in range(digits)]
    length = sum((values >= 10**k).long() for k in range(1, digits))
    return torch.stack([*columns, 10 * digits + length], dim=1)


@torch.no_grad()
def init_parse_from_probe(
    model,
    spec: TaskSpec,
    rows,
    collator,
    scale: float,
    batch_size: int = 128,
    targets_kind: str = "values",
    ridge_penalty: float = 1e-2,
) -> float:
    """Parse heads := ridge-regression probes, fitted on the untrained model over `rows`, from the computer's
    normalised input at the answer position to what each slot should read according to `slot_values` (prompt
    text only, no answers). The random network already encodes the order of the prompt's numbers (~0.8 of
    registers right at step 0 for arithmetic), so the machine's output holds the answer with large probability
    from the first step and its gradient is informative. With `targets_kind="digits"` the probe regresses on the
    value's decimal digits and length (`digit_classes`) and a value's logit is the sum of its digits' (scaled by
    `scale`, not normalised): far fewer classes to fit, which on SmolLM2 (numbers written digit by digit) turns
    0.3 of held-out slots right into 0.9 (docs/results_pretrained_base.md). Returns the probes' mean top-1
    accuracy on the prompts they were fitted on."""
    computer, n = model.computer, model.config.computer_values
    features: list[torch.Tensor] = []
    hook = computer.register_forward_pre_hook(lambda module, inputs: features.append(inputs[0][inputs[1].positions]))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            model.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                computer_mask=batch["computer_mask"],
            )
    finally:
        hook.remove()
        model.train(was_training)
    x = computer.norm(torch.cat(features)).double()  # (N, hidden)
    ridge = torch.linalg.solve(x.T @ x + ridge_penalty * len(x) * torch.eye(x.shape[1], dtype=x.dtype), x.T)
    wanted = [values for text in rows["text"] for values in slot_values(spec, text, n)]  # one per feature row
    accuracies = []
    for slot in range(computer.num_slots):
        targets = torch.zeros(len(x), n, dtype=x.dtype)
        for i, values in enumerate(wanted):
            if slot < len(values) and values[slot] < n:
                targets[i, values[slot]] = 1.0
        if targets_kind == "digits":
            classes = digit_classes(torch.arange(n), n)  # (n, digits + 1)
            factors = torch.zeros(n, int(classes.max()) + 1, dtype=x.dtype)
            factors.scatter_(1, classes, 1.0)  # (n, digit columns): value -> its digits and length
            probe = ridge @ (targets @ factors) @ factors.T  # (hidden, n): a value's column = sum of its digits'
        else:
            probe = ridge @ targets  # (hidden, n)
            probe = probe / probe.norm(dim=0, keepdim=True).clamp_min(1e-12)
        for module in model.computers():
            module.init_parse_from_probe(slot, scale * probe)
        labelled = targets.sum(1) > 0
        if labelled.any():  # cells past the training lists are never labelled (their probe is zero: uniform)
            accuracies.append(float((targets[labelled].argmax(1) == (x[labelled] @ probe).argmax(1)).double().mean()))
    return sum(accuracies) / len(accuracies)


def init_hidden_votes_from_probe(
    model,
    rows,
    collator,
    batch_size: int = 64,
    steps: int = 500,
    decay: float = 1e-3,
    learning_rate: float = 1e-2,
    standardised: bool = False,
) -> float:
    """The hidden votes' head W_vote := a softmax-regression probe, fitted on the untrained model over `rows`: from
    the window mean the hidden votes read at the answer position (`window_mean` of `voted_states`) to the programs
    whose output on the prompt's operands (`slot_targets`, prompt text) is the answer (`computer_targets`)
    (`fit_selection_probe`, with `steps`, `decay`, `learning_rate` and `standardised`). Fitted alone, it
    learns the words of the phrasings from the hidden states, where a head trained beside the token votes gets
    little gradient and stays below such a probe (docs/RESULTS.md §7). Returns the share of `rows` it picks a right
    program for."""
    computer = model.computer
    head = computer.selection_hidden_votes
    if head is None:
        raise ValueError("fitting the hidden votes needs a computer with computer_selection_hidden_votes")
    collate = dataclasses.replace(collator, with_targets=True, with_slot_targets=True, text_logits=False)
    states: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, args, output: states.append(args[0]))
    features, right = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
                ids = batch["input_ids"]
                with record_computer_runs() as runs:
                    model.model(
                        input_ids=ids, attention_mask=batch["attention_mask"], computer_mask=batch["computer_mask"]
                    )
                run = runs[-1]
                positions, columns = run.positions.nonzero(as_tuple=True)
                voting = computer.voting_tokens(
                    ids, batch["attention_mask"], computer.numbers.read(ids), positions, columns
                )
                features.append(window_mean(states.pop().float(), voting, positions))  # (P, hidden)
                operands = computer.machine.values.encode(batch["slot_targets"], run.input_probs.dtype)  # (P, slots, w)
                inputs = len(computer.input_registers)
                exact = dataclasses.replace(run, input_probs=operands[:, :inputs], memory_probs=operands[:, inputs:])
                answers = right_programs(exact, batch["computer_targets"], model)  # (P, programs)
                right.append(answers & batch["slot_known"].all(1, keepdim=True))
    finally:
        hook.remove()
        model.train(was_training)
    x, y = torch.cat(features), torch.cat(right)
    x, y = x[y.any(1)], y[y.any(1)]  # a prompt no program answers (an operand out of range) teaches nothing
    if not len(x):
        raise ValueError(
            f"fitting the hidden votes: no program of the library answers any of the {len(rows)} prompts from their "
            "operands (are the answers and the operands in the library's range?)"
        )
    weight = fit_selection_probe(x, y, steps, decay, learning_rate, standardised)  # (programs, hidden)
    with torch.no_grad():
        for module in model.computers():
            module.selection_hidden_votes.weight.copy_(weight)
        picked = (x @ weight.T).argmax(-1)
        return float(y.gather(1, picked[:, None]).float().mean())


def fit_selection_probe(
    x: torch.Tensor,
    right: torch.Tensor,
    steps: int = 500,
    decay: float = 1e-3,
    learning_rate: float = 1e-2,
    standardised: bool = False,
) -> torch.Tensor:
    """W `(programs, d)`: a softmax regression from the features `x (N, d)` to the programs `right (N, programs)`
    marks as right for each row, by the selection's own likelihood (`selection_nll`) plus `decay`·|W|², `steps`
    full-batch Adam steps. `standardised`: fitted on the features divided by their standard deviation σ and
    returned as W/σ, so that it reads `x` as it comes and fit(x·s) = fit(x)/s for any per-feature scale s; the
    penalty then weighs every feature alike, where on the raw states it falls on the narrow ones
    (`--fit_standardised`, docs/RESULTS.md §7)."""
    scale = x.std(0, correction=0).clamp_min(1e-6) if standardised else x.new_ones(x.shape[1])  # (d,)
    weight = torch.zeros(right.shape[1], x.shape[1], dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=learning_rate)
    for _ in range(steps):
        loss = selection_nll(((x / scale) @ weight.T).softmax(-1), right) + decay * weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return weight.detach() / scale


def init_copy_parse(model, spec: TaskSpec, texts: list[str], scale: float, min_agreement: float = 0.9) -> dict:
    """Copy parse prior, from the prompt text alone (like the probe): a slot whose `slot_values` target is the
    k-th number of the prompt (the k-th from its end with `computer_copy_from_end`) in at least `min_agreement` of
    `texts` starts attending to ordinal k and copying (`CopyParse.init_ordinals`); any other slot (a list's length,
    say) starts on the linear parse. Returns {slot: ordinal} of the copying slots."""
    binary = model.config.computer_encoding == "binary"
    n = 2 ** (model.config.computer_bits - 1) if binary else model.config.computer_values
    copy = model.computer.copy_parse
    agreement = torch.zeros(copy.slots, copy.ordinal.num_embeddings)
    labelled = torch.zeros(copy.slots)
    for text in texts:
        numbers = written_numbers(text, signed=binary)  # ordinal k: the k-th of them, as in `CopyParse`
        if model.config.computer_copy_from_end:
            numbers = numbers[::-1]
        for values in slot_values(spec, text, n, signed=binary):
            for slot, value in enumerate(values[: copy.slots]):
                labelled[slot] += 1
                for k, number in enumerate(numbers[: copy.ordinal.num_embeddings]):
                    agreement[slot, k] += number == value
    share, ordinal = (agreement / labelled.clamp_min(1)[:, None]).max(1)  # (slots,)
    copying = {slot: int(ordinal[slot]) for slot in range(copy.slots) if share[slot] >= min_agreement}
    for computer in model.computers():
        computer.copy_parse.init_ordinals(copying, scale)
        if model.config.computer_copy_from_end:
            point_by_ordinal_alone(computer.copy_parse)
    return copying


@torch.no_grad()
def point_by_ordinal_alone(copy) -> None:
    """Zeroes and freezes the copy parse's query and key weights, so that each slot points by its ordinal (its
    query bias) alone: what a number says or where it stands in the sequence cannot pull the pointer to another
    number. Counted from the end, a question's operands always have the same ordinals; with the hidden states'
    parts trained on prompts that write only their operands, an earlier number of the prompt's own ("Question 3:
    …") was read in about a third of such questions (docs/RESULTS.md §7)."""
    for weight in (copy.query.weight, copy.key.weight):
        weight.zero_()
        weight.requires_grad_(False)


@torch.no_grad()
def init_list_copy_parse(model, spec: TaskSpec, scale: float) -> dict:
    """The list task's copy prior (issue 13): memory cell k points at the k-th written number, for every cell, not
    only the cells the training lengths fill; its query is the ordinal alone (query weights zeroed), so the
    pointer does not depend on the hidden state and no length needs training. Returns {slot: ordinal}."""
    registers = len(spec.input_registers)
    copying = {registers + k: k for k in range(spec.memory_inputs)}
    for computer in model.computers():
        copy = computer.copy_parse
        copy.init_ordinals(copying, scale)
        weight = copy.query.weight.view(copy.slots, copy.dim, -1)
        weight[registers:] = 0.0
        copy.key.weight.zero_()
        # where to answer: from the last token ids alone (`computer_trigger_context`), not the hidden state, whose
        # features drift with the list's length; its weights stay at their initial 0
        computer.trigger.weight.zero_()
        computer.trigger.weight.requires_grad_(False)
    return copying
