"""`fedneuro evaluate`: the federated run beside centralised, local-only and leave-one-site-out baselines."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fedneuro.cli.common import JSON_OPTION, console, fail, out_console, print_json, setup_logging, user_errors

QUICK_N_BOOT = 200


def _parse_epsilons(text: str | None) -> list[float]:
    if not text:
        return []
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            values.append(float(part))
        except ValueError:
            fail(f"Invalid value for '--epsilon-sweep': {part!r} is not a number. Use e.g. --epsilon-sweep 1,4,8")
    return values


def evaluate(
    study_path: Path = typer.Argument(..., metavar="STUDY", help="the study file (TOML) the models are trained under"),
    site: list[str] = typer.Option(..., "--site", help="NAME=BIDS_DIR, once per site (names as in the federated run)"),
    out: Path = typer.Option(..., "--out", help="output directory: evaluation.json, evaluation.md, plots"),
    protocols: str = typer.Option(
        "centralised,local-only,loso", "--protocols",
        help="comma-separated: centralised, local-only, loso (leave-one-site-out); empty = none"),
    federated_summary: list[Path] = typer.Option(
        [], "--federated-summary", help="summary.json (or its run directory) of `fedneuro simulate`; repeatable"),
    privacy: str = typer.Option("dp", "--privacy", help="dp (the study's σ), none (non-private baseline) or both"),
    epsilon_sweep: str | None = typer.Option(
        None, "--epsilon-sweep", help="target ε values, e.g. 1,4,8: extra DP runs with σ planned for each"),
    n_boot: int | None = typer.Option(None, "--n-boot", min=0, help="participant bootstrap resamples (default 1000; --quick 200)"),
    confidence: float = typer.Option(0.95, "--confidence", help="interval coverage, in (0, 1)"),
    seed: int = typer.Option(0, "--seed", min=0, help="bootstrap seed (training seeds derive from the study seed)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="window cache directory (default: no cache)"),
    threads: int = typer.Option(0, "--threads", min=0,
                                help="CPU threads for torch (0 = torch's default; 1 is faster on a busy shared machine)"),
    quick: bool = typer.Option(False, "--quick", help=f"1 round per model, {QUICK_N_BOOT} resamples: a smoke test, not a result"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Train the baselines with the federation's own code, score every protocol on the same
    held-out participants, and write a report with participant-bootstrap intervals."""
    from pydantic import ValidationError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fedneuro.cli.simulate import parse_site
    from fedneuro.evaluation.protocols import (
        EvaluationConfig, EvaluationError, count_jobs, load_sites, parse_protocols, privacy_settings, run_evaluation,
    )
    from fedneuro.evaluation.report import write_report
    from fedneuro.privacy.engine import DPTrainingError
    from fedneuro.study import StudyFileError, load_study

    setup_logging()
    if privacy not in {"dp", "none", "both"}:
        fail(f"Invalid value for '--privacy': {privacy!r}. Use dp, none or both.")
    if not 0 < confidence < 1:
        fail(f"Invalid value for '--confidence': {confidence}; it must be in (0, 1), e.g. 0.95")
    with user_errors(StudyFileError):
        study = load_study(study_path)
    sites = [parse_site(s) for s in site]
    with user_errors(EvaluationError, ValidationError):
        chosen = parse_protocols(protocols)
        settings = privacy_settings(dp=privacy in {"dp", "both"}, non_private=privacy in {"none", "both"},
                                    epsilon_sweep=_parse_epsilons(epsilon_sweep))
        config = EvaluationConfig(n_boot=n_boot if n_boot is not None else (QUICK_N_BOOT if quick else 1000),
                                  confidence=confidence, seed=seed, rounds=1 if quick else None, device=device)
    if not chosen and not federated_summary:
        fail("nothing to evaluate: give --protocols and/or --federated-summary")
    with user_errors(ValueError, OSError, DPTrainingError), console.status(f"reading {len(sites)} site(s)"):
        data = load_sites(study, sites, cache_dir=cache_dir)
    if threads:
        import torch

        torch.set_num_threads(threads)
    total = count_jobs(chosen, len(data), len(settings))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=json_output) as bar:
        task = bar.add_task("training", total=total)

        def progress(description: str, done: int, total: int) -> None:
            bar.update(task, description=description, completed=done)

        with user_errors(ValueError, OSError, DPTrainingError):
            report = run_evaluation(study, data, protocols=chosen, settings=settings,
                                    federated_summaries=federated_summary, config=config, quick=quick,
                                    progress=progress)
    with user_errors(OSError):
        files = write_report(report, out)
    if json_output:
        print_json({"evaluation": report.model_dump(mode="json"), "files": files.model_dump()})
        return
    table = Table(title=f"Pooled test participants — study {report.study_id}"
                        + (" (--quick: smoke test)" if quick else ""))
    for column in ("protocol", "privacy", "ε", "balanced acc. [CI]", "AUROC", "worst site (bal. acc.)"):
        table.add_column(column, justify="right")
    from fedneuro.evaluation.report import format_metric

    for r in report.results:
        window = r.pooled.window if r.pooled else None
        worst = r.site_summary.get("window", {}).get("balanced_accuracy")
        table.add_row(
            r.protocol, r.setting_label, "∞" if not r.private else ("-" if r.epsilon is None else f"{r.epsilon:.2f}"),
            format_metric(window.metrics.get("balanced_accuracy")) if window else "–",
            format_metric(window.metrics.get("auroc")) if window else "–",
            f"{worst.worst:.3f} ({worst.worst_site})" if worst and worst.worst is not None else "–",
        )
    out_console.print(table)
    out_console.print(f"report: {files.markdown_path}\ndata: {files.json_path}\nplots: {len(files.plots)} in {out}",
                      highlight=False)
