"""`fedneuro synth`: synthetic hospital sites as BIDS datasets."""

from __future__ import annotations

from pathlib import Path

import typer

from fedneuro.cli.common import JSON_OPTION, console, print_json, user_errors

app = typer.Typer(help="Generate synthetic data.", no_args_is_help=True)


@app.command("eeg")
def synth_eeg(
    out: Path = typer.Option(..., "--out", help="directory to create the site datasets in"),
    sites: int = typer.Option(3, "--sites", min=1, help="number of hospital sites"),
    seed: int = typer.Option(0, "--seed", min=0, help="same seed, same data"),
    participants: int | None = typer.Option(None, "--participants", help="participants per site"),
    duration: float | None = typer.Option(None, "--duration", help="seconds of EEG per participant"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Write one BIDS EEG dataset (EDF + participants.tsv) per simulated hospital."""
    from fedneuro.data.synth import synthesize_consortium

    kwargs: dict[str, object] = {"n_sites": sites, "seed": seed}
    if participants is not None:
        kwargs["participants_per_site"] = participants
    if duration is not None:
        kwargs["duration_s"] = duration
    with user_errors(ValueError, OSError):
        with console.status(f"synthesising {sites} sites"):
            written = synthesize_consortium(out, **kwargs)  # type: ignore[arg-type]
    result = {"sites": {name: str(root) for name, root in written}, "seed": seed}
    if json_output:
        print_json(result)
    else:
        for name, root in written:
            console.print(f"{name}: {root}")
