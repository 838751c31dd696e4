"""`fedneuro study`: the study file's template and checks."""

from __future__ import annotations

from pathlib import Path

import typer

from fedneuro.cli.common import JSON_OPTION, console, fail, print_json, user_errors
from fedneuro.study import StudyFileError, default_study_path, load_study

app = typer.Typer(help="Study files: template and validation.", no_args_is_help=True)


@app.command("template")
def template(modality: str = typer.Option("eeg", "--modality", help="eeg or mri")) -> None:
    """Print the default study file (the demo's), to copy and edit."""
    if modality not in {"eeg", "mri"}:
        fail(f"Invalid value for '--modality': {modality!r}. Use eeg or mri.")
    typer.echo(default_study_path(modality).read_text(encoding="utf-8"), nl=False)  # type: ignore[arg-type]


@app.command("check")
def check(path: Path = typer.Argument(..., help="study file"), json_output: bool = JSON_OPTION) -> None:
    """Validate a study file and show its digest."""
    with user_errors(StudyFileError):
        study = load_study(path)
    if json_output:
        print_json({"study_id": study.study.id, "digest": study.digest(), "study": study.model_dump(mode="json")})
    else:
        console.print(f"{path}: valid study {study.study.id!r}, digest {study.digest()}")
