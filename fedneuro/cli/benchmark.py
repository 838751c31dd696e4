"""`fedneuro benchmark`: every benchmark script of the checkout, one report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fedneuro.cli.common import JSON_OPTION, console, fail, out_console, print_json, setup_logging


def benchmark(
    out: Path = typer.Option(..., "--out", help="output directory: benchmarks.json, benchmarks.md, logs/"),
    quick: bool = typer.Option(False, "--quick", help="each script's smaller settings: minutes, a smoke test"),
    only: str | None = typer.Option(
        None, "--only", help="comma-separated benchmarks to run (default: all): dp_step, data_cache, models, "
                             "federation, sites_scaling, utility"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Run the benchmark scripts (benchmarks/*.py --json) one after another, check each ratio
    against its goal and write DIR/benchmarks.json and DIR/benchmarks.md with the machine."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fedneuro.benchmarking import BenchmarkRun, BenchmarkSetupError, BenchmarkSpec, benchmarks_dir, run_suite, select

    setup_logging()
    try:
        specs = select(only)
        benchmarks_dir(specs)
    except BenchmarkSetupError as error:
        fail(str(error))
    if out.exists() and not out.is_dir():
        fail(f"Invalid value for '--out': {out} exists and is not a directory")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=json_output) as bar:
        task = bar.add_task("benchmarks", total=len(specs))

        def started(spec: BenchmarkSpec, index: int) -> None:
            bar.update(task, description=f"{spec.name}: {spec.what}", completed=index)

        def done(run: BenchmarkRun, index: int) -> None:
            verdict = {True: "[green]goals met[/]", False: "[red]goal missed[/]", None: "no goal"}[run.passed]
            if run.status != "ok":
                verdict = f"[red]failed[/] ({run.error})"
            console.log(f"{run.spec.name}: {verdict} in {run.wall_time_s:.0f} s")
            bar.update(task, completed=index + 1)

        try:
            report = run_suite(specs, quick=quick, out=out, on_start=started, on_done=done)
        except OSError as error:
            fail(f"cannot write the report to {out}: {error}")
    if json_output:
        print_json(report)
    else:
        from fedneuro.benchmarking import describe_machine, format_value

        table = Table(title="Benchmarks" + (" (--quick: smoke test)" if quick else ""))
        for column in ("benchmark", "what", "value", "goal", ""):
            table.add_column(column, justify="right" if column in {"value", "goal"} else "left")
        for name, entry in report["benchmarks"].items():
            if entry["status"] != "ok":
                table.add_row(name, entry["what"], "[red]failed[/]", "", entry["error"] or "")
                continue
            for metric in entry["metrics"]:
                verdict = {True: "[green]✓[/]", False: "[red]✗[/]", None: ""}[metric["passed"]]
                table.add_row(name, metric["label"], format_value(metric["value"], metric["unit"]),
                              metric["goal"] or "—", verdict)
        out_console.print(table)
        summary = report["summary"]
        out_console.print(f"machine: {describe_machine(report['machine'])}\n"
                          f"{summary['ok']} of {summary['benchmarks']} benchmarks ran, "
                          f"{summary['goals_met']} of {summary['goals']} goals met; "
                          f"report: {out / 'benchmarks.md'}, data: {out / 'benchmarks.json'}", highlight=False)
    if report["summary"]["failed"]:
        raise typer.Exit(1)
