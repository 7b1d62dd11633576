"""The Trainer of train.py and what guards a run: one learning rate per parameter group (the model declares the
groups), the answer and parse losses on the computer's own distributions, a stop on the first non-finite loss or
weight (before anything is saved), a lock on the output folder, and resuming only from a complete checkpoint of
the same run."""

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

import modeling_llama_dcomp
from library.training.arguments import resume_mismatches
from library.training.losses import distillation_kl, distribution_cross_entropy, selection_nll
from modeling_llama_dcomp import LlamaDCompPreTrainedModel, record_computer_runs

# Trainer.push_to_hub leaves out names starting with "_": the lock is no part of the published model.
LOCK_FILE = "_train.lock"
SETTINGS_FILE = "run_settings.json"


def _read_running_code() -> dict[str, bytes]:
    """`{file name: source}` of the run-time code (modeling_llama_dcomp.py and the files it imports relatively:
    what save_pretrained copies into a model folder), read when this module is imported, next to the import of
    the code itself."""
    modeling = modeling_llama_dcomp.__file__
    return {Path(path).name: Path(path).read_bytes() for path in [modeling, *get_relative_import_files(modeling)]}


RUNNING_CODE = _read_running_code()


class TrainingError(RuntimeError):
    """A run that cannot go on: the message says why and what to do; train.py exits with it (status 1)."""


class DCompTrainer(Trainer):
    """The Trainer with the model's parameter groups (one learning rate each), the answer loss on the computer's
    output register, the parse loss on its parse slots, the distillation loss on ordinary text (a PEFT model
    against itself with its adapters off), a stop on a non-finite loss, and our model card."""

    def __init__(
        self,
        *args,
        answer_loss_weight: float = 0.0,
        parse_loss_weight: float = 0.0,
        text_distillation_weight: float = 0.0,
        trigger_positive_weight: float = 1.0,
        trigger_text_weight: float = 1.0,
        hidden_vote_loss_weight: float = 0.0,
        lead_computes: bool = False,
        model_card: str = "",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.answer_loss_weight = answer_loss_weight
        self.parse_loss_weight = parse_loss_weight
        self.text_distillation_weight = text_distillation_weight
        self.trigger_positive_weight = trigger_positive_weight
        self.trigger_text_weight = trigger_text_weight
        self.hidden_vote_loss_weight = hidden_vote_loss_weight
        self.lead_computes = lead_computes
        self.model_card = model_card

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        # save_pretrained copies the code files as they are on disk now: a checkout edited during an hour-long run
        # would pair new code with this run's weights and config. The folder gets the code that trained them.
        folder = Path(output_dir or self.args.output_dir)
        for name, source in RUNNING_CODE.items():
            if (folder / name).is_file():
                (folder / name).write_bytes(source)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            # Grouped by parameter name, which also covers the plain Llama baseline and a PEFT wrapper.
            groups = LlamaDCompPreTrainedModel.parameter_groups(model or self.model, self.args.learning_rates)
            self.optimizer = torch.optim.AdamW(
                groups,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
                weight_decay=self.args.weight_decay,
            )
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = inputs.pop("computer_targets", None)
        target_lengths = inputs.pop("computer_target_lengths", None)  # list answers (issue 13)
        slot_targets = inputs.pop("slot_targets", None)
        slot_known = inputs.pop("slot_known", None)
        text_rows = inputs.pop("text_rows", None)  # ordinary text: the distillation loss's rows
        config = self.model.config
        writes_tokens = getattr(config, "computer_output", None) == "tokens"
        answer_positions = inputs.get("computer_mask")
        if writes_tokens and not model.training and answer_positions is not None:
            inputs.pop("computer_mask")  # evaluation: the trigger decides where to compute, as in generate()
        lead_id = getattr(config, "computer_lead_token_id", None)
        if model.training and self.lead_computes and answer_positions is not None and lead_id is not None:
            inputs["computer_mask"], counts = lead_and_answer_positions(answer_positions, inputs["input_ids"], lead_id)
            targets, target_lengths, slot_targets, slot_known = (
                None if tensor is None else tensor.repeat_interleave(counts.to(tensor.device), 0)
                for tensor in (targets, target_lengths, slot_targets, slot_known)
            )
        with record_computer_runs() as runs:
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
        if writes_tokens:
            if model.training:  # the answer loss on the output bits and the trigger's loss (docs/TRAINING.md)
                run = runs[-1]
                if targets is not None and len(targets) > 0:  # text rows: none
                    if target_lengths is not None:  # list answers (issue 13)
                        right = right_lists(run, targets, target_lengths, self.model)
                    else:
                        right = right_programs(run, targets, self.model)
                    if self.answer_loss_weight:
                        loss = loss + self.answer_loss_weight * selection_nll(run.program_probs, right)
                    if self.hidden_vote_loss_weight and run.hidden_votes is not None:  # they also select alone
                        alone = run.hidden_votes.softmax(-1)
                        loss = loss + self.hidden_vote_loss_weight * selection_nll(alone, right)
                weights = (self.trigger_positive_weight, text_row_weights(answer_positions, self.trigger_text_weight))
                loss = loss + trigger_loss(run.trigger_logits, answer_positions, inputs["attention_mask"], *weights)
                if run.lead_logits is not None:
                    leads = lead_positions(answer_positions, inputs["input_ids"], config.computer_lead_token_id)
                    loss = loss + trigger_loss(run.lead_logits, leads, inputs["attention_mask"], *weights)
        elif targets is not None and self.answer_loss_weight:
            register = runs[-1].state.registers[:, config.library_output_register]  # (batch, n)
            loss = loss + self.answer_loss_weight * distribution_cross_entropy(register, targets)
        # The token read-out's evaluation computes where the trigger fires, not at the targets' positions.
        if slot_targets is not None and self.parse_loss_weight and (model.training or not writes_tokens):
            parsed = torch.cat([runs[-1].input_probs, runs[-1].memory_probs], dim=1)  # (positions, slots, width)
            loss = loss + self.parse_loss_weight * parse_nll(parsed, slot_targets, slot_known, self.model)
        if model.training and self.text_distillation_weight and text_rows is not None and text_rows.any():
            distillation = self.text_distillation(model, inputs, outputs.logits, text_rows)
            loss = loss + self.text_distillation_weight * distillation
        if model.training and not torch.isfinite(loss.detach()).all():
            raise non_finite(f"the loss is {float(loss.detach())}", self.state.global_step + 1, self.args.output_dir)
        return (loss, outputs) if return_outputs else loss

    def text_distillation(self, model, inputs: dict, logits: torch.Tensor, text_rows: torch.Tensor) -> torch.Tensor:
        """KL(base || model) at every position of the ordinary-text rows `text_rows (batch,)`, whose logits the
        collator kept (`AnswerCollator.text_logits`; `logits (kept, vocab)`): the base is the same PEFT model with
        its adapters off and the computer (if any) told to run nowhere, i.e. the pretrained Llama, in no-grad."""
        keep = inputs["logits_to_keep"]  # (batch, seq)
        ours = logits[text_rows[:, None].expand_as(keep)[keep]]  # (text positions, vocab)
        peft_model = self.accelerator.unwrap_model(model)
        rows = {name: inputs[name][text_rows] for name in ("input_ids", "attention_mask", "logits_to_keep")}
        if LlamaDCompPreTrainedModel.computers(peft_model):  # a plain Llama (--no_computer) has nothing to silence
            rows["computer_mask"] = torch.zeros_like(rows["attention_mask"], dtype=torch.bool)
        with torch.no_grad(), peft_model.disable_adapter():
            base = peft_model(**rows).logits
        return distillation_kl(base, ours)

    def create_model_card(self, **kwargs):
        if self.is_world_process_zero() and self.model_card:
            Path(self.args.output_dir, "README.md").write_text(self.model_card)


def parse_nll(parsed: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, model) -> torch.Tensor:
    """The parse loss: −log P(slot = the number written for it) under the parsed values `parsed (positions, slots,
    width)` in the machine's encoding (`values.nll`: one-hot, or bits read as independent), averaged over the
    slots with a target (`known`); the targets (positions, slots) come from the prompt text alone."""
    values = LlamaDCompPreTrainedModel.computers(model)[0].machine.values
    known = known.to(parsed.device)
    return values.nll(parsed[known], targets.to(parsed.device)[known]).mean()


def right_programs(run, targets: torch.Tensor, model) -> torch.Tensor:
    """`(positions, programs)` bool: program k's output is the answer `targets (positions,)` at that position, every
    program run on the run's inputs (`LlamaDCompComputer.program_outputs`)."""
    computer = LlamaDCompPreTrainedModel.computers(model)[0]
    return computer.program_outputs(run) == targets.to(run.program_probs.device)[:, None]


def right_lists(run, targets: torch.Tensor, lengths: torch.Tensor, model) -> torch.Tensor:
    """`right_programs` for whole answers (issue 13), `(positions, programs)` bool: program k is right where its
    answer (a list for the programs of `library_list_programs`, else its output register;
    `LlamaDCompComputer.program_answers`) is the target list `targets (positions, K)`, of `lengths (positions,)`
    numbers, exactly."""
    computer = LlamaDCompPreTrainedModel.computers(model)[0]
    answers, answer_lengths = computer.program_answers(run)  # (positions, programs, cells), (positions, programs)
    device = run.program_probs.device
    targets, lengths = targets.to(device), lengths.to(device)
    width = max(answers.shape[-1], targets.shape[-1])
    answers = torch.nn.functional.pad(answers, (0, width - answers.shape[-1]))
    targets = torch.nn.functional.pad(targets, (0, width - targets.shape[-1]))
    inside = torch.arange(width, device=device) < lengths[:, None]  # (positions, width)
    return ((answers == targets[:, None]) | ~inside[:, None]).all(-1) & (answer_lengths == lengths[:, None])


def trigger_loss(
    logits: torch.Tensor,
    answer_positions: torch.Tensor,
    attention_mask: torch.Tensor,
    positive_weight: float = 1.0,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The "tokens" read-out's trigger: binary cross-entropy of σ(logits) `(batch, seq)` against "the computer's
    answer starts here" (the answer positions, from where the answer is in the data), over the non-padding
    positions: an auxiliary loss whose target comes from the answer. An answer starts at one position of a row's
    dozens, so `positive_weight` (BCE's `pos_weight`) lets the few positives count for more: a miss leaves the
    base to answer, a false activation rewrites text, and the weight says which costs more. `row_weights
    (batch,)` weigh whole rows (the trainer's `trigger_text_weight`: ordinary text, where every position is a
    negative and a false activation rewrites the base's text, against the questions)."""
    where = attention_mask.bool()
    targets = answer_positions.to(logits.dtype)
    weight = torch.tensor(positive_weight, dtype=logits.dtype, device=logits.device)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight, reduction="none")
    if row_weights is not None:
        losses = losses * row_weights[:, None]
    return losses[where].mean()


def text_row_weights(answer_positions: torch.Tensor, text_weight: float) -> torch.Tensor:
    """`trigger_loss`'s row weights `(batch,)`: `text_weight` for the rows with no answer position (ordinary text),
    1 for the others (the trigger's and the lead's alike: a question whose prompt writes its own space has no lead
    positive, and is still a question)."""
    return torch.where(answer_positions.bool().any(1), 1.0, text_weight)


def lead_positions(answer_positions: torch.Tensor, input_ids: torch.Tensor, lead_token_id: int) -> torch.Tensor:
    """The lead head's targets `(batch, seq)`: the position before an answer position that holds the lead token (the
    space before the answer), from where the answer is in the data. The model writes that space after a prompt that
    ended without it ("Answer:" + " ", labelled), and writing it where the prompt goes on with it ("?" + " ") is as
    right, so both are positives: otherwise the same "?" would be a positive in one row and a negative in the other."""
    before = answer_positions.bool() & (input_ids == lead_token_id)
    return torch.nn.functional.pad(before[:, 1:], (0, 1), value=False)


def lead_and_answer_positions(
    answer_positions: torch.Tensor, input_ids: torch.Tensor, lead_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`--lead_computes`: where the computer runs in training `(batch, seq)`, the answer positions and their leads
    (`lead_positions`; the model's `explicit_leads` reads them back as leads), and how many computing positions
    each answer position's targets serve `(answers,)`: 2 where a lead precedes it, in the computer's order (row
    by row, the lead first)."""
    answers = answer_positions.bool()
    leads = lead_positions(answers, input_ids, lead_token_id) & ~answers
    led = torch.nn.functional.pad(leads[:, :-1], (1, 0), value=False)  # (batch, seq): an answer after its lead
    return answers | leads, 1 + led[answers].long()


def non_finite(what: str, step: int, output_dir: str) -> TrainingError:
    last = last_complete_checkpoint(Path(output_dir))
    return TrainingError(
        f"training stopped at step {step}: {what}. Nothing of this step was saved; the last good checkpoint is "
        f"{last or 'none'}. Lower the learning rates or check the initialisation (--gate_init, --parse_init_scale)."
    )


class TrainingGuard(TrainerCallback):
    """Stops a run whose weights are not finite: at the start (a resumed checkpoint is also checked against its
    library, `verify_library`) and after every optimizer step, before the step is logged or saved."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if hasattr(model, "verify_library"):
            model.verify_library()  # the resumed checkpoint's program tensors against the config's fingerprint
        self._check(model, state.global_step, args.output_dir, trainable_only=False)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._check(model, state.global_step, args.output_dir)

    @staticmethod
    def _check(model, step: int, output_dir: str, trainable_only: bool = True) -> None:
        parameters = [p for p in model.parameters() if p.requires_grad or not trainable_only]
        # One fused norm per step (an element-wise scan of every weight costs more than a CPU step): it is not
        # finite when a weight is not, or when weights beyond ~1e19 overflow it, which means the run diverged.
        if bool(torch.nn.utils.get_total_norm(parameters).isfinite()):
            return
        broken = (name for name, p in model.named_parameters() if not torch.isfinite(p.detach()).all())
        what = next(
            (f"parameter {name} holds non-finite values" for name in broken),
            "the weights' norm overflows (weights beyond ~1e19)",
        )
        raise non_finite(what, step, output_dir)


class LearningCurve(TrainerCallback):
    """Records (step, seconds since the process started, validation exact match) at every evaluation."""

    def __init__(self, started: float):
        self.started, self.points = started, []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_exact_match" in metrics:
            self.points.append(
                {
                    "step": state.global_step,
                    "seconds": time.time() - self.started,
                    "validation_exact_match": metrics["eval_exact_match"],
                }
            )


@contextmanager
def output_lock(output_dir: Path):
    """Holds `output_dir/train.lock` (an OS lock, released when the process ends, even by kill -9) for the run;
    raises TrainingError naming the holder's pid when another run holds it. Only the main process of a
    distributed run takes it."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise TrainingError(
                f"another train.py run (pid {holder}) is writing to {output_dir} (lock {path}); wait for it to end "
                "or choose another --output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint with the most steps whose `trainer_state.json` (the Trainer writes it last) reads back with
    that step: a folder left by a kill during a save has none, or a torn one, and is passed over."""
    complete = []
    for folder in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        try:
            step = int(folder.name.rsplit("-", 1)[1])
            state = json.loads((folder / "trainer_state.json").read_text())
        except (ValueError, OSError):
            continue
        if state.get("global_step") == step:
            complete.append((step, folder))
    return max(complete)[1] if complete else None


def resume_checkpoint(output_dir: Path, settings: dict) -> Path:
    """`--resume`: the last complete checkpoint in `output_dir`, after checking that this run's settings are
    those of the run it continues (`arguments.RESUME_FIXED`); raises TrainingError otherwise."""
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint is None:
        raise TrainingError(f"--resume: {output_dir} holds no complete checkpoint to resume from")
    saved = output_dir / SETTINGS_FILE
    if not saved.is_file():
        raise TrainingError(f"--resume: {saved} is missing, so the run's settings cannot be checked")
    now = json.loads(json.dumps(settings, default=str))  # as saved
    differences = resume_mismatches(json.loads(saved.read_text()), now)
    if differences:
        raise TrainingError(
            f"--resume: {output_dir} was trained with other settings ({'; '.join(differences)}); resume with the "
            "same ones or choose another --output_dir"
        )
    return checkpoint


def save_settings(output_dir: Path, settings: dict) -> None:
    """run_settings.json, written whole or not at all (what `resume_checkpoint` compares against)."""
    partial = output_dir / f"_{SETTINGS_FILE}.partial"
    partial.write_text(json.dumps(settings, indent=1, default=str))
    os.replace(partial, output_dir / SETTINGS_FILE)


def parameter_digest(model) -> str:
    """sha256 over every parameter in name order: equal digests, equal models."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
