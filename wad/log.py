"""Logging through structlog: JSON lines for machines, readable lines in a terminal.

Context such as `org` and `actor` is bound with `structlog.contextvars`, which Trio's tasks
inherit from their parent, so every line an organization's actors write carries its id.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(*, fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog once for the process. `fmt` is `auto`, `json` or `console`."""
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(_LEVELS[level])


class _StdlibToStructlog(logging.Handler):
    """Routes the standard library's log records (asyncpg, hypercorn, ...) through structlog, so
    that every line of the process has one format."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = structlog.get_logger(component=record.name)
            fields: dict[str, Any] = {}
            if record.exc_info and record.exc_info[1] is not None:
                fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            logger.log(record.levelno, record.getMessage(), **fields)
        except Exception:
            self.handleError(record)


def _route_stdlib(level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibToStructlog):
            root.removeHandler(handler)
    root.addHandler(_StdlibToStructlog())
    # Libraries chatter at info; their warnings and errors matter.
    root.setLevel(max(level, logging.WARNING))


def get(name: str, **context: Any) -> Any:
    """A logger for a component, with extra bound context."""
    return structlog.get_logger(component=name, **context)
