"""`fedneuro consent`: the site's consent registry (DUO terms), eligibility and withdrawal impact."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from fedneuro.cli.common import JSON_OPTION, console, day_or_today, fail, out_console, print_json, user_errors

app = typer.Typer(help="Participant consent (GA4GH DUO terms): import, withdraw, coverage, impact.", no_args_is_help=True)

STATE_DIR_OPTION = typer.Option(..., "--state-dir", help="the site's state directory (holds consent.json)")


@app.command("import")
def import_(
    source: Path = typer.Argument(..., help="participants.tsv (BIDS), a .csv or a .json list with consent_duo, "
                                  "consent_date, consent_expiry, consent_withdrawn"),
    state_dir: Path = STATE_DIR_OPTION,
    force: bool = typer.Option(False, "--force", help="let this file undo recorded withdrawals (e.g. a corrected export)"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Import consents into the registry: all rows or none; every bad row is listed."""
    from fedneuro.governance.consent import ConsentError, import_consent_file

    with user_errors(ConsentError):
        report = import_consent_file(state_dir, source, force=force)
    if json_output:
        print_json(report.model_dump())
        return
    out_console.print(
        f"imported {source}: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged, {len(report.without_consent)} rows without consent"
    )
    if report.kept_withdrawn:
        out_console.print(f"kept recorded withdrawals of {', '.join(report.kept_withdrawn)} "
                          "(the file is older; use --force to override)")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


@app.command("list")
def list_(state_dir: Path = STATE_DIR_OPTION, json_output: bool = JSON_OPTION) -> None:
    """Every consent on record."""
    from fedneuro.governance.consent import ConsentError, load_registry

    with user_errors(ConsentError):
        registry = load_registry(state_dir)
    if json_output:
        print_json({"state_dir": str(state_dir), "records": [r.model_dump(mode="json") for r in registry.records]})
        return
    table = Table(title=f"Consents at {state_dir} ({len(registry.records)})")
    for column in ("participant", "terms", "given", "expires", "withdrawn", "source"):
        table.add_column(column)
    for r in registry.records:
        table.add_row(r.participant_id, ";".join(map(str, r.terms)), str(r.given), str(r.expires or "-"),
                      str(r.withdrawn or "-"), Path(r.source).name)
    out_console.print(table)


@app.command("withdraw")
def withdraw(
    participant: str = typer.Argument(..., help="participant id, e.g. sub-007"),
    state_dir: Path = STATE_DIR_OPTION,
    on: str | None = typer.Option(None, "--date", help="date of the withdrawal, YYYY-MM-DD (default: today)"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Record a withdrawal, and list the model versions already trained with the participant."""
    from fedneuro.governance.consent import ConsentError, withdraw_participant
    from fedneuro.governance.contributions import ContributionError, contributions_path, impact

    with user_errors(ConsentError, ContributionError):
        record = withdraw_participant(state_dir, participant, on=day_or_today(on, "--date"))
        used = impact(contributions_path(state_dir), participant)
    result = {"participant_id": participant, "withdrawn": str(record.withdrawn),
              "record": record.model_dump(mode="json"), "model_versions": [u._asdict() for u in used]}
    if json_output:
        print_json(result)
        return
    out_console.print(f"{participant}: consent withdrawn on {record.withdrawn}")
    if used:
        out_console.print(f"already used in {len(used)} model version(s): " + ", ".join(u.model_version for u in used))


@app.command("status")
def status(
    state_dir: Path = STATE_DIR_OPTION,
    purpose_text: str = typer.Option("HMB", "--purpose", help="the study's research category: GRU, HMB, POA or DS:<disease id>"),
    commercial: bool = typer.Option(False, "--commercial", help="the study is commercial"),
    not_for_profit: bool = typer.Option(False, "--not-for-profit", help="the study is run by a not-for-profit organisation"),
    institution: str | None = typer.Option(None, "--institution", help="the institution using the data"),
    country: str | None = typer.Option(None, "--country", help="where the data is used (ISO 3166 code, e.g. DE)"),
    project: str | None = typer.Option(None, "--project", help="project or study id"),
    ethics_ref: str | None = typer.Option(None, "--ethics-ref", help="ethics approval reference"),
    ethics_from: str | None = typer.Option(None, "--ethics-from", help="approval valid from, YYYY-MM-DD"),
    ethics_until: str | None = typer.Option(None, "--ethics-until", help="approval valid until, YYYY-MM-DD"),
    participants: Path | None = typer.Option(None, "--participants", help="participants.tsv: also count those with no consent on record"),
    on: str | None = typer.Option(None, "--date", help="evaluate on this date, YYYY-MM-DD (default: today)"),
    json_output: bool = JSON_OPTION,
) -> None:
    """How many participants a study with this purpose may use, and why the others may not."""
    from pydantic import ValidationError

    from fedneuro.governance.consent import ConsentError, eligibility, load_registry, summarize

    today = day_or_today(on, "--date")
    purpose = _purpose(purpose_text, commercial=commercial, not_for_profit=not_for_profit, institution=institution,
                       country=country, project=project, ethics=(ethics_ref, ethics_from, ethics_until))
    with user_errors(ConsentError, ValidationError):
        registry = load_registry(state_dir)
        ids = _participant_ids(participants) if participants is not None else None
        result = eligibility(registry, purpose, today, participant_ids=ids)
    summary = summarize(result)
    if json_output:
        print_json({"state_dir": str(state_dir), "date": str(today), "purpose": purpose.model_dump(mode="json"),
                    "summary": summary.model_dump(), "participants": {p: e.model_dump() for p, e in result.items()}})
        return
    out_console.print(f"{summary.eligible} of {summary.total} participants eligible for {purpose_text} on {today}")
    if summary.reasons:
        table = Table(title="Why the others are not")
        table.add_column("reason")
        table.add_column("participants", justify="right")
        for kind, count in summary.reasons.items():
            table.add_row(kind, str(count))
        out_console.print(table)
    for pid, e in result.items():
        if not e.eligible:
            out_console.print(f"  {pid}: " + "; ".join(e.reasons), highlight=False, markup=False)
    for note, count in summary.notes.items():
        out_console.print(f"obligation for {count} eligible participant(s): {note}")


@app.command("impact")
def impact_(
    participant: str = typer.Argument(..., help="participant id, e.g. sub-007"),
    state_dir: Path = STATE_DIR_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """The model versions trained with a participant's data (from contributions.jsonl)."""
    from fedneuro.governance.contributions import ContributionError, contributions_path, impact

    path = contributions_path(state_dir)
    with user_errors(ContributionError):
        used = impact(path, participant)
    if json_output:
        print_json({"participant_id": participant, "contributions_file": str(path),
                    "model_versions": [u._asdict() for u in used]})
        return
    if not used:
        out_console.print(f"{participant}: used in no recorded model version" +
                          ("" if path.exists() else f" ({path} does not exist yet)"))
        return
    table = Table(title=f"Model versions trained with {participant}")
    for column in ("study", "round", "model version"):
        table.add_column(column)
    for u in used:
        table.add_row(u.study_id, str(u.round), u.model_version)
    out_console.print(table)


def _purpose(text: str, *, ethics: tuple[str | None, str | None, str | None], **fields: Any) -> Any:
    from pydantic import ValidationError

    from fedneuro.governance.duo import EthicsApproval, StudyPurpose

    code, _, disease = text.partition(":")
    if code not in {"GRU", "HMB", "DS", "POA"}:
        fail(f"Invalid value for '--purpose': {text!r}. Use GRU, HMB, POA or DS:<disease id> (e.g. DS:MONDO:0005027).")
    reference, valid_from, valid_until = ethics
    approval = None
    if any(ethics):
        if not all(ethics):
            fail("--ethics-ref, --ethics-from and --ethics-until go together: give all three or none")
        with user_errors(ValidationError):
            approval = EthicsApproval(reference=reference, valid_from=day_or_today(valid_from, "--ethics-from"),
                                      valid_until=day_or_today(valid_until, "--ethics-until"))
    with user_errors(ValidationError):
        return StudyPurpose(permission=code, disease=disease or None, ethics=approval, **fields)  # type: ignore[arg-type]


def _participant_ids(path: Path) -> list[str]:
    from fedneuro.governance.consent import ConsentImportError

    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise ConsentImportError(f"{path}: cannot read it ({error.strerror})") from None
    rows = list(csv.DictReader(text.splitlines(), delimiter="," if path.suffix.lower() == ".csv" else "\t"))
    if not rows or "participant_id" not in rows[0]:
        raise ConsentImportError(f"{path}: needs a participant_id column and one row per participant")
    return [r["participant_id"].strip() for r in rows if (r["participant_id"] or "").strip() not in {"", "n/a"}]
