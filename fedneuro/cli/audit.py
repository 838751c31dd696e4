"""`fedneuro audit`: check a tamper-evident audit log against its writer's public key."""

from __future__ import annotations

from pathlib import Path

import typer

from fedneuro.cli.common import JSON_OPTION, out_console, print_json, user_errors

app = typer.Typer(help="Tamper-evident audit logs (hash chain, Ed25519 signatures).", no_args_is_help=True)


@app.command("verify")
def verify(
    log: Path = typer.Argument(..., help="the audit log (JSON lines)"),
    pubkey: Path = typer.Option(..., "--pubkey", help="the writer's Ed25519 public key (PEM, .pub)"),
    head: Path | None = typer.Option(None, "--head", help="the signed head file (default: LOG.head beside the log)"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Every entry's hash, signature and place in the chain, and the signed head.

    Exit code 0: intact; 1: tampering or damage found (each problem with its line);
    2: the log or the key cannot be used.
    """
    from fedneuro.governance.audit import AuditLogError, verify_audit_log
    from fedneuro.governance.keys import KeyFileError, load_public_key

    with user_errors(KeyFileError, AuditLogError):
        result = verify_audit_log(log, load_public_key(pubkey), head_path=head)
    if json_output:
        print_json({"log": str(log), **result.model_dump()})
    elif result.ok:
        out_console.print(f"OK: {log}: {result.entries} entries, chain and signed head intact "
                          f"(key {result.key_fingerprint})", highlight=False)
    else:
        out_console.print(f"FAILED: {log}: {len(result.problems)} problem(s) in {result.entries} readable entries",
                          highlight=False)
        for p in result.problems:
            where = f"line {p.line}" if p.line is not None else "file"
            out_console.print(f"  {where}: {p.kind}: {p.message}", highlight=False, markup=False)
    if not result.ok:
        raise typer.Exit(1)
