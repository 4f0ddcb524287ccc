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


def get(name: str, **context: Any) -> Any:
    """A logger for a component, with extra bound context."""
    return structlog.get_logger(component=name, **context)
