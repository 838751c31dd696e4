"""`fedneuro data`: a site operator's tools for its own data."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from fedneuro.cli.common import JSON_OPTION, console, out_console, print_json, user_errors

if TYPE_CHECKING:
    from fedneuro.data.check import SiteCheck

app = typer.Typer(help="Check a site's data against a study.", no_args_is_help=True)


@app.command("check")
def check(
    path: Path = typer.Argument(..., help="the site's data: a BIDS dataset or a folder with "
                                "recordings.tsv"),
    study_path: Path = typer.Option(..., "--study", help="study file (its [data] section is "
                                    "the spec, its backbone the input contract)"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="reuse/keep harmonised "
                                          "windows here (same cache as training)"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Report participants, recordings, channels, sampling rates, durations, label balance
    and every problem; exit 1 when the data cannot be used for the study."""
    from fedneuro.data.check import check_site
    from fedneuro.models.registry import get_backbone_preset
    from fedneuro.study import StudyFileError, load_study

    with user_errors(StudyFileError, ValueError):
        study = load_study(study_path)
        contract = get_backbone_preset(study.model.backbone).contract
    if study.study.modality == "mri":
        _check_mri(path, study, contract, json_output)
        return
    # stdout carries the report only: chatter of the readers (MNE prints warnings to stdout
    # when a log file handler is configured) goes to stderr.
    with console.status(f"checking {path}"), contextlib.redirect_stdout(sys.stderr):
        report = check_site(path, study.data, contract, cache_dir=cache_dir)
    if json_output:
        print_json(report.model_dump(mode="json"))
    else:
        _print_report(report)
    if not report.usable:
        raise typer.Exit(1)


def _names(names: list[str], limit: int = 6) -> str:
    if not names:
        return "-"
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit})" if len(names) > limit else "")


def _print_report(report: SiteCheck) -> None:
    c = report.contract
    out_console.print(
        f"[bold]{escape(report.root)}[/] ({report.layout}, labels from {report.label_source}); "
        f"contract: {len(c.channels)} channels, {c.sfreq:g} Hz, {c.input_window_seconds:g} s "
        f"windows ({c.n_times} samples)"
    )
    parts = Table(title="Participants", show_lines=False)
    for col in ("participant", "eligible", "label", "recordings", "windows", "note"):
        parts.add_column(col)
    for p in report.participants:
        note = p.excluded_reason or p.without_windows_reason or ""
        parts.add_row(
            escape(p.participant_id), "yes" if p.eligible else "[red]no[/]",
            escape(p.label or "-"), str(p.recordings), str(p.windows), escape(note),
        )
    out_console.print(parts)

    recs = Table(title="Recordings")
    recs.add_column("file", overflow="fold")
    for col in ("status", "Hz", "s", "missing", "interpolated", "windows (rejected)"):
        recs.add_column(col)
    recs.add_column("reason / notes", overflow="fold")
    style = {"ok": "green", "no_windows": "yellow", "refused": "red", "not_opened": "dim"}
    for r in report.recordings:
        recs.add_row(
            escape(r.file), f"[{style[r.status]}]{r.status}[/]",
            f"{r.sfreq:g}" if r.sfreq else "-",
            f"{r.duration_s:g}" if r.duration_s is not None else "-",
            escape(_names(r.channels_missing)), escape(_names(r.channels_interpolated)),
            f"{r.windows} ({r.windows_rejected})" if r.status in ("ok", "no_windows") else "-",
            escape("; ".join(filter(None, [r.reason, *r.notes]))),
        )
    out_console.print(recs)

    classes = Table(title="Label balance")
    for col in ("class", "values", "participants", "windows"):
        classes.add_column(col)
    for k in report.classes:
        classes.add_row(str(k.index), escape(", ".join(k.names)), str(k.participants),
                        str(k.windows))
    out_console.print(classes)
    rates = ", ".join(f"{hz} Hz x{n}" for hz, n in report.sampling_rates.items()) or "-"
    out_console.print(
        f"sampling rates: {rates}; {report.total_duration_s:g} s of EEG opened; "
        f"{report.n_windows} windows"
    )
    if report.problems:
        probs = Table(title=f"Problems ({len(report.problems)})")
        probs.add_column("file")
        probs.add_column("reason")
        for prob in report.problems:
            probs.add_row(escape(prob.file), escape(prob.reason))
        out_console.print(probs)
    if report.usable:
        out_console.print("[bold green]usable[/] for this study")
    else:
        out_console.print("[bold red]not usable[/] for this study:")
        for reason in report.unusable_reasons:
            out_console.print(f"  - {escape(reason)}")


def _check_mri(path: Path, study: object, contract: object, json_output: bool) -> None:
    from fedneuro.data.mri_check import check_mri_site

    with user_errors(ValueError, OSError), console.status(f"checking {path}"):
        report = check_mri_site(path, study.mri, contract)  # type: ignore[attr-defined]
    if json_output:
        print_json(report.model_dump(mode="json"))
    else:
        shape = "x".join(str(n) for n in report.contract.shape)
        voxel = "x".join(f"{v:g}" for v in report.contract.voxel_size_mm)
        out_console.print(f"[bold]{escape(report.root)}[/]: contract {shape} voxels of {voxel} mm; "
                          f"{len(report.eligible)} eligible, {len(report.excluded)} excluded participants")
        table = Table(title="Images")
        for column in ("file", "orientation", "voxel mm", "shape", "samples", "notes"):
            table.add_column(column, overflow="fold")
        for image in report.images:
            table.add_row(escape(image.file), image.source.orientation,
                          "x".join(f"{v:g}" for v in image.source.voxel_size_mm),
                          "x".join(str(n) for n in image.source.shape), str(image.n_outputs),
                          escape("; ".join(image.problems)))
        out_console.print(table)
        out_console.print("samples per class: " + ", ".join(f"{k} {v}" for k, v in report.samples_per_class.items()))
        for problem in report.problems:
            out_console.print(f"[red]problem:[/] {escape(problem)}")
        for pid, reason in report.excluded.items():
            out_console.print(f"excluded {escape(pid)}: {escape(reason)}")
        out_console.print("[green]usable[/]" if report.usable else "[red]not usable for this study[/]")
    if not report.usable:
        raise typer.Exit(1)
