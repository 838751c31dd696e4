"""`fedneuro provision`: the consortium's CA, TLS certificate, node-auth and signing keys, as kits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedneuro.cli.common import JSON_OPTION, out_console, print_json, user_errors


def provision(
    consortium_file: Path = typer.Argument(..., help="the consortium file (TOML): [consortium], [coordinator], [[sites]]"),
    out: Path = typer.Option(..., "--out", help="folder of the kits (ca/, coordinator/, sites/NAME/); reused on re-runs"),
    rotate: list[str] = typer.Option([], "--rotate", help="replace this site's node and signing keys (repeatable)"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Create or update the kits: re-running reuses every key; print fingerprints to confirm out of band."""
    from fedneuro.deploy.consortium import ConsortiumFileError, load_consortium
    from fedneuro.deploy.provision import KitError, ProvisionError
    from fedneuro.deploy.provision import provision as run_provision

    with user_errors(ConsortiumFileError, ProvisionError, KitError, OSError):
        spec = load_consortium(consortium_file)
        report = run_provision(spec, out, rotate=rotate)
    if json_output:
        print_json({"changed": report.changed, **report.model_dump(mode="json")})
        return
    _print_report(report.model_dump(mode="json"), changed=report.changed, source=consortium_file)


def _print_report(r: dict[str, Any], *, changed: bool, source: Path) -> None:
    out = r["out_dir"]
    table = Table(title=f"{escape(r['consortium'])}: fingerprints to confirm out of band",
                  caption=f"SuperLink {r['superlink_address']} · kits under {escape(out)}", box=box.SIMPLE)
    for column in ("party", "status", "key"):
        table.add_column(column, overflow="fold")
    # Never wrapped: an operator reads it aloud or compares it character by character.
    table.add_column("fingerprint", no_wrap=True, min_width=71)
    table.add_row("CA", r["ca"]["status"], "CA cert", r["ca"]["fingerprint"])
    c = r["coordinator"]
    table.add_row("coordinator", c["status"], "TLS cert", c["server_cert_fingerprint"])
    table.add_row("", "", "signing", c["signing_fingerprint"])
    for s in r["sites"]:
        table.add_row(escape(s["name"]), s["status"], "node", s["node_fingerprint"])
        table.add_row("", "", "signing", s["signing_fingerprint"])
    # A console at least as wide as the table: rich would otherwise squeeze out columns on a narrow
    # terminal or a pipe (80 columns); a long line is better than a missing party.
    Console(width=max(out_console.width, 112)).print(table)
    for s in r["sites"]:
        if s["previous"]:
            out_console.print(f"rotated {escape(s['name'])}: old node key {s['previous'].get('node_fingerprint', '?')}, "
                              f"old signing key {s['previous'].get('signing_fingerprint', '?')} (unregister the old "
                              "node from the SuperLink: flwr supernode ls / unregister)", highlight=False, soft_wrap=True)
    for change in c["changes"] if c["status"] != "unchanged" else []:
        out_console.print(f"coordinator kit: {escape(change)}", highlight=False, soft_wrap=True)
    for removed in r["removed_sites"]:
        where = (f"its kit folder {removed['kit_dir']} was left alone" if removed["kit_dir"]
                 else "it had no kit folder here")
        out_console.print(f"removed {escape(removed['name'])} from the coordinator kit; {where} (unregister its node "
                          f"key {removed['node_fingerprint']} from the SuperLink)", highlight=False, soft_wrap=True)
    for warning in r["warnings"]:
        out_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if not changed:
        out_console.print(f"unchanged: every kit under {escape(out)} already matches {escape(str(source))}",
                          highlight=False, soft_wrap=True)
