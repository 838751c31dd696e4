"""`fedneuro synth`: synthetic hospital sites (EEG as BIDS datasets or loose files)."""

from __future__ import annotations

import contextlib
import sys
from enum import Enum
from pathlib import Path

import typer

from fedneuro.cli.common import JSON_OPTION, console, print_json, user_errors

app = typer.Typer(help="Generate synthetic data.", no_args_is_help=True)


class EEGFormat(str, Enum):
    edf = "edf"
    bdf = "bdf"
    fif = "fif"
    brainvision = "brainvision"
    eeglab = "eeglab"


class Layout(str, Enum):
    auto = "auto"
    bids = "bids"
    loose = "loose"


class Task(str, Enum):
    rest = "rest"
    oddball = "oddball"


@app.command("eeg")
def synth_eeg(
    out: Path = typer.Option(..., "--out", help="directory to create the site datasets in"),
    sites: int = typer.Option(3, "--sites", min=1, help="number of hospital sites"),
    seed: int = typer.Option(0, "--seed", min=0, help="same seed, same data"),
    participants: int | None = typer.Option(None, "--participants", help="participants per site"),
    duration: float | None = typer.Option(
        None, "--duration", help="seconds of EEG per participant"
    ),
    fmt: EEGFormat = typer.Option(EEGFormat.edf, "--format", help="file format of the recordings"),
    layout: Layout = typer.Option(
        Layout.auto, "--layout",
        help="bids (mne-bids tree), loose (files + recordings.tsv), auto: bids unless --format fif",
    ),
    task: Task = typer.Option(
        Task.rest, "--task",
        help="rest: a label per participant; oddball: standard/target events (events.tsv or "
        "annotations) with a P300 to targets, for label_source = 'events'",
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Write one EEG dataset per simulated hospital: BIDS (EDF, BDF, BrainVision or EEGLAB,
    with participants.tsv) or loose files with recordings.tsv (any format, FIF included)."""
    from fedneuro.data.synth import synthesize_consortium

    chosen = layout.value
    if chosen == "auto":
        chosen = "loose" if fmt is EEGFormat.fif else "bids"
    kwargs: dict[str, object] = {
        "n_sites": sites, "seed": seed, "format": fmt.value, "task": task.value, "layout": chosen,
    }
    if participants is not None:
        kwargs["participants_per_site"] = participants
    if duration is not None:
        kwargs["duration_s"] = duration
    with user_errors(ValueError, OSError):
        status = console.status(f"synthesising {sites} sites")
        with status, contextlib.redirect_stdout(sys.stderr):
            written = synthesize_consortium(out, **kwargs)  # type: ignore[arg-type]
    result = {
        "sites": {name: str(root) for name, root in written},
        "seed": seed,
        "format": fmt.value,
        "layout": chosen,
        "task": task.value,
    }
    if json_output:
        print_json(result)
    else:
        for name, root in written:
            console.print(f"{name}: {root} ({chosen}, {fmt.value}, task {task.value})")


@app.command("mri")
def synth_mri(
    out: Path = typer.Option(..., "--out", help="directory to create the site datasets in"),
    sites: int = typer.Option(3, "--sites", min=1, help="number of hospital sites"),
    seed: int = typer.Option(0, "--seed", min=0, help="same seed, same data"),
    participants: int | None = typer.Option(None, "--participants", help="participants per site"),
    bold_volumes: int = typer.Option(
        0, "--bold-volumes", min=0, help="also write a resting-state bold run of this many volumes"
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Write one BIDS MRI dataset (T1w NIfTI + participants.tsv) per simulated hospital."""
    from fedneuro.data.synth_mri import synthesize_mri_consortium

    kwargs: dict[str, object] = {"n_sites": sites, "seed": seed, "n_bold_volumes": bold_volumes}
    if participants is not None:
        kwargs["participants_per_site"] = participants
    with user_errors(ValueError, OSError):
        with console.status(f"synthesising {sites} MRI sites"):
            written = synthesize_mri_consortium(out, **kwargs)  # type: ignore[arg-type]
    result = {"sites": {name: str(root) for name, root in written}, "seed": seed}
    if json_output:
        print_json(result)
    else:
        for name, root in written:
            console.print(f"{name}: {root}")
