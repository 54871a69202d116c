"""Logging with the request's context on every line, as text or JSON lines.

`request_context(...)` sets the request id, app, environment and actor for
everything logged inside it (in this thread or task); a filter copies them
onto each record, so every module can use a plain named logger.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

FIELDS = ("request_id", "app", "env", "actor")
_context: ContextVar[dict[str, str]] = ContextVar("releasegate_log_context", default={})  # noqa: B039 - never mutated, only replaced


@contextmanager
def request_context(**fields: str | None) -> Iterator[None]:
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for name in FIELDS:
            setattr(record, name, context.get(name, "-"))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in FIELDS if getattr(record, k, "-") != "-"})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(app)s %(env)s %(actor)s] %(message)s"
)


def setup_logging(fmt: str = "auto", level: int = logging.INFO, path: Path | None = None) -> None:
    """Log to stderr, or to the file at `path` (the shell's and demo's: their terminal is the
    conversation)."""
    handler: logging.Handler = (
        logging.StreamHandler(sys.stderr) if path is None else logging.FileHandler(path)
    )
    handler.addFilter(ContextFilter())
    use_json = fmt == "json" or (fmt == "auto" and (path is not None or not sys.stderr.isatty()))
    handler.setFormatter(JsonFormatter() if use_json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
