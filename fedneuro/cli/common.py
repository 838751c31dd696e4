"""Shared CLI plumbing: consoles, logging, clean error exits, JSON output."""

from __future__ import annotations

import json
import logging
import sys
from datetime import date
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

console = Console(stderr=True)  # logs, progress, errors
out_console = Console()  # reports

JSON_OPTION = typer.Option(False, "--json", help="print machine-readable JSON on stdout")


LOG_FORMAT_OPTION = typer.Option(
    "text", "--log-format", help="logs on stderr: text (for people) or json (one object per line, for log collectors)"
)


def setup_logging(verbose: bool = False, fmt: str = "text") -> None:
    """Logs on stderr: ``text`` (rich, for a terminal) or ``json`` (one object per line with
    time, level, logger, message and the study/round/site a line is about; fedneuro.logs)."""
    from fedneuro.logs import LOG_FORMATS, make_handler

    if fmt not in LOG_FORMATS:
        fail(f"--log-format {fmt!r}: use one of {', '.join(LOG_FORMATS)}")
    if fmt == "json":
        handler: logging.Handler = make_handler("json", sys.stderr)
    else:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    logging.getLogger("fedneuro").setLevel(logging.DEBUG if verbose else logging.INFO)


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def user_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Turn expected errors (bad files, bad settings) into a message and exit code 2."""
    try:
        yield
    except kinds as error:
        fail(str(error))


def parse_day(value: str, option: str = "--date") -> date:
    """A YYYY-MM-DD option value, or a clean exit naming the option."""
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        fail(f"Invalid value for '{option}': {value!r}. Write the date as YYYY-MM-DD, e.g. 2025-03-01.")


def day_or_today(value: str | None, option: str = "--date") -> date:
    """A YYYY-MM-DD option; today (this machine's clock) when not given."""
    return date.today() if value is None else parse_day(value, option)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
