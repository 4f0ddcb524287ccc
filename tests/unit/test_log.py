"""Logging: JSON lines off a terminal, with bound context, and library records routed through
the same format."""

import io
import json
import logging

import structlog

from wad import log


def test_json_lines_carry_bound_context_and_stdlib_records() -> None:
    out = io.StringIO()
    log.configure(fmt="json", level="info", stream=out)
    try:
        with structlog.contextvars.bound_contextvars(org="o-1", actor="session"):
            log.get("session").info("session state", state="CONNECTED")
        logging.getLogger("asyncpg.pool").warning("Failed to restore the pool connection floor")
        logging.getLogger("asyncpg.pool").info("library chatter at info is not shown")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        structlog.reset_defaults()
        for handler in list(logging.getLogger().handlers):
            if type(handler).__name__ == "_StdlibToStructlog":
                logging.getLogger().removeHandler(handler)
    assert lines[0]["event"] == "session state"
    assert lines[0]["org"] == "o-1" and lines[0]["actor"] == "session"
    assert lines[0]["level"] == "info" and "timestamp" in lines[0]
    assert lines[1]["event"] == "Failed to restore the pool connection floor"
    assert lines[1]["component"] == "asyncpg.pool" and lines[1]["level"] == "warning"
    assert len(lines) == 2
