"""`fedneuro report`: the ethics-board report of a run, as report.html and report.json."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from fedneuro.cli.common import JSON_OPTION, console, fail, out_console, parse_day, setup_logging


def _pubkeys(options: list[str]) -> dict[str, Path]:
    keys: dict[str, Path] = {}
    for option in options:
        name, sep, path = option.partition("=")
        if not sep or not name or not path:
            fail(f"Invalid value for '--pubkey': {option!r}. Use SITE=KEY.pub, e.g. --pubkey hospital-a=keys/hospital-a.pub")
        if name in keys:
            fail(f"Invalid value for '--pubkey': {name!r} is given twice; give one key per site")
        keys[name] = Path(path)
    return keys


def report(
    run_dir: Path = typer.Argument(..., help="a `fedneuro simulate`/`demo` output folder, or a coordinator's study folder"),
    out: Path = typer.Option(..., "--out", help="folder for report.html and report.json"),
    study_path: Path | None = typer.Option(
        None, "--study", help="the study file (default: study.toml in the run folder, else the one launch.json names)"
    ),
    pubkey: list[str] = typer.Option(
        [], "--pubkey", help="SITE=KEY.pub: the public key an audit log is verified with (default: NAME.pub beside the log)"
    ),
    purpose: str | None = typer.Option(
        None, "--purpose", help="evaluate consent against GRU, HMB, POA or DS:<disease id> instead of the purpose the study declares (governance.purpose)"
    ),
    on: str | None = typer.Option(None, "--date", help="evaluate consents on this day, YYYY-MM-DD (default: today)"),
    audit: bool = typer.Option(
        False, "--audit", help="run the membership-inference audit at every site whose data this machine holds (slow)"
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Ethics-board report: per-site (ε, δ) recomputed from the ledgers, trust model, consent,
    approvals, audit-log verification, membership audit and metrics.

    A missing input is reported as "not available" with the reason and a corrupt one with its
    path and problem; neither stops the report. Exit code 0 when the report is written.
    """
    from fedneuro.reporting.ethics import collect_report, parse_purpose
    from fedneuro.reporting.render import report_json, write_report

    setup_logging()
    if not run_dir.is_dir():
        fail(f"Invalid value for 'RUN_DIR': {run_dir} is not a folder; give the --out folder of `fedneuro simulate` "
             "or `fedneuro demo`, or a coordinator's studies/<id> folder")
    keys = _pubkeys(pubkey)
    chosen = None
    if purpose is not None:
        try:
            chosen = parse_purpose(purpose)
        except ValueError as error:
            fail(str(error))
    with console.status("collecting and recomputing the report" + (" (with membership audits)" if audit else "")):
        result = collect_report(run_dir, study_path=study_path, pubkeys=keys, purpose=chosen, on=None if on is None else parse_day(on), run_audit=audit)
        json_path, html_path = write_report(result, out)
    if json_output:
        sys.stdout.write(report_json(result))  # exactly report.json
        return
    out_console.print(f"wrote {html_path} and {json_path}: {len(result.sites)} site(s), "
                      f"{len(result.findings)} finding(s), {len(result.problems)} corrupt input(s)", highlight=False)
    for finding in result.findings:
        where = finding.section + (f" · {finding.site}" if finding.site else "")
        out_console.print(f"  [{where}] {finding.message}", highlight=False, markup=False)
