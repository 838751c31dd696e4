"""Structured logs: one JSON object per line, with the study, round and site a line is about.

``fedneuro server start`` / ``site start`` take ``--log-format text|json``; the format travels
to the processes Flower starts (ServerApp, ClientApps) in ``FEDNEURO_LOG_FORMAT``, where
:func:`configure_from_env` sets it up. A record carries ``study``/``round``/``site`` when the
call passes them (``logger.info(..., extra={"study": ..., "round": ...})``) or when it is made
inside :func:`log_context`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

LOG_FORMAT_ENV = "FEDNEURO_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
CONTEXT_FIELDS = ("study", "round", "site")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"

_context: ContextVar[Mapping[str, Any]] = ContextVar("fedneuro_log_context", default={})


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Records logged inside carry these fields (``study``, ``round``, ``site``) unless the
    call gives its own through ``extra``. Nested contexts add to the outer one."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current :func:`log_context` fields onto a record that lacks them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def record_context(record: logging.LogRecord) -> dict[str, Any]:
    """The ``study``/``round``/``site`` fields a record carries (from ``extra`` or a context)."""
    found = {key: getattr(record, key) for key in CONTEXT_FIELDS if getattr(record, key, None) is not None}
    for key, value in _context.get().items():
        found.setdefault(key, value)
    return found


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}`` plus ``study``/``round``/``site`` when known,
    and ``exception`` with the traceback of a logged exception. One line per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_context(record).items():
            entry[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines for processes without a terminal: ``time LEVEL logger: message [study=… round=…]``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        fields = record_context(record)
        record.context = (" [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]") if fields else ""
        return super().format(record)


def make_handler(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """A stderr handler in ``fmt`` (``text`` or ``json``) with the context filter on."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    return handler


_CONFIGURED = "_fedneuro_configured"


def configure_from_env(*, verbose: bool = False) -> bool:
    """In a process Flower started (ServerApp, ClientApp): log ``fedneuro.*`` records to stderr
    in the format ``FEDNEURO_LOG_FORMAT`` names. No-op when it is unset (simulation: the
    ``fedneuro`` command has set up logging already) or already done; True if configured.

    The handler sits on the ``fedneuro`` logger, not the root, so Flower's own lines (its
    ``flwr`` logger has a handler of its own) are not printed twice."""
    fmt = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    if fmt not in LOG_FORMATS:
        return False
    logger = logging.getLogger("fedneuro")
    if any(getattr(h, _CONFIGURED, False) for h in logger.handlers):
        return True
    handler = make_handler(fmt)
    setattr(handler, _CONFIGURED, True)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    return True
