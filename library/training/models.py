"""The tokenizer and the model train.py trains: a Llama (a checkpoint folder, a GGUF file, or from scratch in the
paper's shape), converted into LlamaDComp with the task's library installed, optionally with LoRA adapters."""

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from library import tasks as task_library
from library.install import from_llama, number_token_ids, turn_boundaries
from library.loading import load_tokenizer
from library.tokenizer import llama3_tokenizer
from library.training.arguments import ArgumentError
from library.training.data import (
    LIST_ANSWER_PROGRAMS,
    LIST_MAX_STEPS,
    LIST_TRIGGER_CONTEXT,
    TaskSpec,
    library_sources,
)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_tokenizer(args):
    """The model's own tokenizer (`--model` folder or `--gguf` file), else the LLaMA-3 tokenizer."""
    if args.gguf is not None:
        tokenizer = AutoTokenizer.from_pretrained(Path(args.gguf).parent, gguf_file=Path(args.gguf).name)
    elif args.model is not None and (Path(args.model) / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(args.model)  # only the folder's own code files, no prompt
    else:
        return llama3_tokenizer()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_llama(args, tokenizer) -> LlamaForCausalLM:
    """The given Llama (`--model` / `--gguf`), or a from-scratch one in the paper's shape (§4.2: hidden 128-256,
    two layers, the 128,256-token LLaMA-3 vocabulary; untied embeddings, ~33 M parameters at hidden 128)."""
    if args.gguf is not None:
        gguf = Path(args.gguf)
        llama = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        llama.config.quantization_config = None  # save_pretrained refuses a "gguf-quantized" config
        # The weights are dequantized to float32; without this the Trainer refuses to train the Llama itself
        # ("quantized with GGUF", as in the --no_computer baseline; `from_llama` builds a new model anyway).
        llama.hf_quantizer, llama.is_quantized = None, False
        return llama
    if args.model is not None:
        return LlamaForCausalLM.from_pretrained(args.model)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def build_model(model_args, data_args, computer_args, spec: TaskSpec, tokenizer):
    """`build_llama`, converted with `from_llama` and the task's library installed after `--computer_layer`
    (the plain Llama with `--no_computer`)."""
    llama = build_llama(model_args, tokenizer)
    if model_args.no_computer:
        return llama
    layers = llama.config.num_hidden_layers
    if not -layers <= computer_args.computer_layer < layers:
        raise ArgumentError(
            f"--computer_layer: {computer_args.computer_layer} is not a layer of this {layers}-layer model "
            f"(choose from {-layers} to {layers - 1}; -1 is the last)"
        )
    computer_layer = computer_args.computer_layer % layers
    vote_from = computer_args.selection_vote_from_layer
    if vote_from is not None and not (-layers <= vote_from < layers and vote_from % layers <= computer_layer):
        raise ArgumentError(
            f"--selection_vote_from_layer: {vote_from} is not a layer of this {layers}-layer model at or before the "
            f"computer's ({computer_layer})"
        )
    vote_layers = [] if vote_from is None else list(range(vote_from % layers, computer_layer + 1))
    names = computer_args.library.split(",") if computer_args.library else list(spec.library)
    common = dict(
        computer_layer=computer_layer,
        library=library_sources(names),
        computer_gate_init=computer_args.gate_init,
        computer_selection_temperature=computer_args.selection_temperature,
        library_input_registers=list(spec.input_registers),
        library_memory_inputs=spec.memory_inputs,
        computer_copy_from_end=computer_args.copy_from_end,
    )
    if data_args.encoding == "binary":  # exact signed values, read from and written as the tokenizer's numbers
        task_fields = list_fields(spec, names) if spec.count_register >= 0 else {}
        if computer_args.trigger_context is not None:
            task_fields["computer_trigger_context"] = computer_args.trigger_context
        if computer_args.trigger_dropout:
            task_fields["computer_trigger_dropout"] = computer_args.trigger_dropout
        if computer_args.trigger_numbers:
            task_fields["computer_trigger_numbers"] = computer_args.trigger_numbers
        if computer_args.own_text_window is not None:
            task_fields["computer_own_text_window"] = computer_args.own_text_window
        if computer_args.lead_token:  # the space `tokenize_for_causal_lm` labels after an ending without one
            task_fields["computer_lead_token_id"] = task_library.space_token(tokenizer)
            task_fields["computer_lead_minus_token_id"] = task_library.space_minus_token(tokenizer)
        return from_llama(
            llama,
            tokenizer=tokenizer,
            computer_encoding="binary",
            computer_bits=data_args.bits,
            computer_output="tokens",
            computer_parse="linear" if computer_args.parse == "linear" else "copy",
            computer_selection_context=computer_args.selection_context,
            computer_selection_boundary_ids=turn_boundaries(tokenizer) if computer_args.selection_within_turn else [],
            computer_selection_dropout=computer_args.selection_dropout,
            computer_selection_hidden_votes=computer_args.selection_hidden_votes,
            computer_selection_vote_layers=vote_layers,
            **common,
            **task_fields,
        )
    tokens = number_token_ids(tokenizer, data_args.n)
    number_ids = [ids[0] if len(ids) == 1 else -1 for ids in tokens]
    return from_llama(
        llama,
        computer_values=data_args.n,
        computer_parse=parse_kind(computer_args.parse, tokens),
        computer_number_token_ids=number_ids,
        **common,
    )


def list_fields(spec: TaskSpec, names: list[str]) -> dict:
    """The binary list task's computer (issue 13): the count register, the programs whose answer is the sorted
    memory, one memory cell and one copy ordinal per number of the longest list (the last ordinal is shared by
    every later number), the longest sequential sort's steps, 42 registers where the 16-lane odd-even sort
    (38 data registers) is in the library, and a trigger that reads the last `LIST_TRIGGER_CONTEXT` token ids."""
    return dict(
        library_count_register=spec.count_register,
        library_list_programs=[name for name in names if name in LIST_ANSWER_PROGRAMS],
        computer_memory_size=spec.memory_inputs,
        computer_copy_ordinals=spec.memory_inputs + 1,
        computer_max_steps=LIST_MAX_STEPS,
        computer_registers=42 if "sort_oddeven" in names else 16,
        computer_trigger_context=LIST_TRIGGER_CONTEXT,
    )


def parse_kind(choice: str, tokens: list[list[int]]) -> str:
    """`--parse`: "auto" is "copy" when the copy parse reads every value 0..n-1 back from its tokens (`tokens`,
    from `number_token_ids`: each token of a value is some value's single token, and their digits concatenate to
    the value: LLaMA-3's "127", SmolLM2's "1", "2", "7"), else "linear"."""
    if choice != "auto":
        return choice
    single = {ids[0]: str(value) for value, ids in enumerate(tokens) if len(ids) == 1}
    readable = all(
        all(token in single for token in ids) and "".join(single[token] for token in ids) == str(value)
        for value, ids in enumerate(tokens)
    )
    return "copy" if readable else "linear"


def add_lora(model, rank: int):
    """LoRA adapters on the base attention/MLP weights; the computer block is trained and saved in full."""
    from peft import LoraConfig, get_peft_model

    modules_to_save = ["computer"] if hasattr(model, "computers") else None
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, modules_to_save=modules_to_save, task_type="CAUSAL_LM"
    )
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    wrapped = get_peft_model(model, config)
    # PEFT's copy of a module to save trains every parameter; the ones the recipe froze stay frozen
    # (`recipes.point_by_ordinal_alone`, the list trigger's hidden-state weights)
    for name, parameter in wrapped.named_parameters():
        copied = name.removeprefix("base_model.model.").replace(".modules_to_save.default.", ".")
        if ".modules_to_save.default." in name and copied in frozen:
            parameter.requires_grad_(False)
    return wrapped
