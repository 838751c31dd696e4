"""`fedneuro predict`: run a trained model on EEG recordings."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fedneuro.cli.common import JSON_OPTION, console, fail, out_console, print_json, setup_logging, user_errors


def predict(
    input_path: Path = typer.Option(..., "--input", help="a BIDS EEG dataset (or a folder with "
                                    "recordings.tsv), or one EEG file"),
    out: Path = typer.Option(..., "--out", help="predictions CSV to write"),
    model_dir: Path | None = typer.Option(None, "--model", help="model directory from `fedneuro model export`"),
    study_path: Path | None = typer.Option(None, "--study", help="study file (with --adapter, instead of --model)"),
    adapter: Path | None = typer.Option(None, "--adapter", help="trained adapter .safetensors (with --study)"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if available), cpu, cuda, cuda:N"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="windows per forward pass"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Per-recording class probabilities (averaged over windows) and the predicted class."""
    from fedneuro.models.export import ModelFileError, load_model_dir
    from fedneuro.models.manifest import ExchangeError
    from fedneuro.models.weights import WeightsError
    from fedneuro.study import StudyFileError, load_study
    from fedneuro.training.predict import load_study_model, predict_recordings, write_predictions_csv

    setup_logging()
    if model_dir is not None and (study_path is not None or adapter is not None):
        fail("give either --model DIR, or --study with --adapter, not both")
    if model_dir is None and (study_path is None or adapter is None):
        fail("give --model DIR (from `fedneuro model export`), or both --study and --adapter")
    with user_errors(StudyFileError, ModelFileError, ExchangeError, WeightsError, ValueError):
        if model_dir is not None:
            model = load_model_dir(model_dir)
        else:
            assert study_path is not None and adapter is not None
            model = load_study_model(load_study(study_path), adapter)
        # stdout carries the report only: reader chatter (MNE) goes to stderr.
        with console.status(f"predicting {input_path}"), contextlib.redirect_stdout(sys.stderr):
            rows = predict_recordings(model, input_path, device=device, batch_size=batch_size)
    write_predictions_csv(rows, model.card.class_names, out)
    if json_output:
        print_json([r.model_dump(mode="json") for r in rows])
    else:
        table = Table(title=f"Predictions ({model.card.preset}) -> {escape(str(out))}")
        for column in ("recording", "participant", "windows", *model.card.class_names, "predicted"):
            table.add_column(column)
        for r in rows:
            probs = [f"{r.probabilities[c]:.3f}" if c in r.probabilities else "-" for c in model.card.class_names]
            table.add_row(escape(r.recording), escape(r.participant or "-"), str(r.n_windows), *probs,
                          r.predicted or f"[red]{escape(r.error or 'error')}[/]")
        out_console.print(table)
    if not any(r.predicted for r in rows):
        console.print("[bold red]error:[/] no recording could be predicted (see the error column)")
        raise typer.Exit(1)
