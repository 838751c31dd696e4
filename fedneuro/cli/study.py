"""`fedneuro study`: the study file's template, checks, and the coordinator's signature."""

from __future__ import annotations

from pathlib import Path

import typer

from fedneuro.cli.common import JSON_OPTION, console, fail, out_console, print_json, user_errors
from fedneuro.study import StudyFileError, default_study_path, load_study

app = typer.Typer(help="Study files: template, validation, signing.", no_args_is_help=True)


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


@app.command("sign")
def sign(
    path: Path = typer.Argument(..., help="study file to sign (coordinator)"),
    key: Path = typer.Option(..., "--key", help="the coordinator's Ed25519 signing key (signing.key of its kit)"),
    out: Path | None = typer.Option(None, "--out", help="where to write the signature (default: STUDY.sig)"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Sign a study's digest with the coordinator's key, for the sites to check (writes STUDY.sig)."""
    from datetime import datetime, timezone

    from fedneuro.governance.keys import KeyFileError, load_signing_key
    from fedneuro.governance.study_signature import sign_study, signature_path_for, write_study_signature

    with user_errors(StudyFileError, KeyFileError):
        study = load_study(path)
        signing_key = load_signing_key(key)
    signature = sign_study(study, signing_key, datetime.now(timezone.utc))
    target = out or signature_path_for(path)
    with user_errors(OSError):
        write_study_signature(target, signature)
    if json_output:
        print_json({"study_file": str(path), "signature_file": str(target), **signature.model_dump()})
    else:
        out_console.print(f"{path}: study {study.study.id!r} (digest {signature.study_digest}) signed by "
                          f"{signature.signer}; signature in {target}", highlight=False, markup=False)


@app.command("verify")
def verify(
    path: Path = typer.Argument(..., help="study file"),
    pubkey: list[Path] = typer.Option(..., "--pubkey", help="a trusted coordinator public key (PEM); repeat for several"),
    signature_path: Path | None = typer.Option(None, "--signature", help="the signature file (default: STUDY.sig)"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Check that a trusted coordinator key signed exactly this study.

    Exit code 0: verified; 1: untrusted key, changed study or bad signature; 2: a file cannot be used.
    """
    from fedneuro.governance.keys import KeyFileError, load_public_key
    from fedneuro.governance.study_signature import (
        StudySignatureError,
        read_study_signature,
        signature_path_for,
        verify_study_signature,
    )

    source = signature_path or signature_path_for(path)
    with user_errors(StudyFileError, KeyFileError, StudySignatureError):
        study = load_study(path)
        keys = [load_public_key(p) for p in pubkey]
        signature = read_study_signature(source)
    try:
        signer: str | None = verify_study_signature(study, signature, keys)
        problem = None
    except StudySignatureError as error:
        signer, problem = None, str(error)
    if json_output:
        print_json({"study_file": str(path), "signature_file": str(source), "ok": problem is None, "signer": signer,
                    "study_id": study.study.id, "study_digest": study.digest(), "signed_at": signature.signed_at,
                    "problem": problem})
    elif problem is None:
        out_console.print(f"OK: {path}: study {study.study.id!r} signed by {signer} at {signature.signed_at}",
                          highlight=False, markup=False)
    else:
        out_console.print(f"FAILED: {path}: {problem}", highlight=False, markup=False)
    if problem is not None:
        raise typer.Exit(1)
