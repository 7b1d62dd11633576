"""What a train.py run leaves in its output folder besides the model: the model card (README.md, from the
`model_card.md` template), `run_summary.json` (settings, steps, wall time, every split's metrics, the learning
curve: what experiments read) and `learning_curve.png`."""

import dataclasses
import json
import string
from pathlib import Path

from transformers import TrainingArguments

from library.plotting import curves, figure

MODEL_CARD = Path(__file__).resolve().parents[2] / "model_card.md"
STOCK_TRAINING = {field.name: field.default for field in dataclasses.fields(TrainingArguments)}


def shown_settings(settings: dict) -> dict:
    """The settings a reader needs: every model/data/computer argument, and the training arguments that differ
    from `TrainingArguments`' own defaults (of its 100+)."""
    shown = {name: value for part in ("model", "data", "computer") for name, value in settings[part].items()}
    shown.update(
        {name: value for name, value in settings["training"].items() if STOCK_TRAINING.get(name, object()) != value}
    )
    return dict(sorted(shown.items()))


def render_model_card(settings: dict, command: str, model, results: dict, seconds: float, steps: int) -> str:
    """README.md of the output folder, from the `model_card.md` template (string.Template)."""
    config = model.config
    programs = getattr(config, "library_programs", [])
    library = (
        "\n".join(f"| `{name}` | {line} |" for name, line in zip(programs, config.library_entry_points))
        if programs
        else "| (none: `--no_computer` baseline) | |"
    )
    results_rows = "\n".join(
        f"| {split} | {values['exact_match']:.2%} | "
        + ", ".join(
            f"{key.removeprefix('exact_match_')} {value:.1%}" for key, value in values.items() if key != "exact_match"
        )
        + " |"
        for split, values in results.items()
    )
    options = "\n".join(f"| `--{name}` | `{value}` |" for name, value in shown_settings(settings).items())
    model_args, data_args, training = settings["model"], settings["data"], settings["training"]
    return string.Template(MODEL_CARD.read_text()).substitute(
        task=data_args["task"],
        n=data_args["n"],
        base=model_args["gguf"] or model_args["model"] or "none (from scratch)",
        model_class=type(model).__name__,
        hidden=config.hidden_size,
        layers=config.num_hidden_layers,
        vocab=f"{config.vocab_size:,}",
        parameters=f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}",
        computer_layer=getattr(config, "computer_layer", "none"),
        library=library,
        results=results_rows,
        parse=f'the "{getattr(config, "computer_parse", "none")}"',
        settings=options,
        seconds=f"{seconds:.0f}",
        steps=steps,
        command=command,
        repo=training["hub_model_id"] or Path(training["output_dir"]).name,
    )


def save_learning_curve(points: list[dict], output_dir: Path) -> None:
    """learning_curve.png: validation exact match against wall time since the process started."""
    with figure(output_dir / "learning_curve.png", size=(6, 3.5)) as axes:
        curves(
            axes[0, 0],
            {"validation": [points]},
            "seconds",
            "validation_exact_match",
            {"seconds": 1 / 60, "validation_exact_match": 100},
        )
        axes[0, 0].set(
            xlabel="wall time (minutes, from process start)", ylabel="validation exact match (%)", ylim=(0, 100)
        )


def write_run_summary(output_dir: Path, **summary) -> dict:
    """run_summary.json: `summary` as given (settings, command, steps, seconds, metrics, learning curve)."""
    (output_dir / "run_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def read_run_summary(output_dir: Path) -> dict:
    """A finished run's run_summary.json."""
    return json.loads((Path(output_dir) / "run_summary.json").read_text())
