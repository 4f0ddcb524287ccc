"""Import runs: the progress of a historical import, durable so that a rerun resumes it.

Every change of a run is in the change feed with it: `import.started` (created or resumed),
`import.progress` (total set, chats done), `import.finished`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

from wad.db.models import ImportRun
from wad.db.pool import Executor, atomic
from wad.db.repo import changes, columns, one, returned

_COLS = columns(ImportRun)


async def create(db: Executor, *, organization_id: uuid.UUID, source: str,
                 options: dict[str, Any] | None = None) -> ImportRun:
    """A new RUNNING import of `source` (e.g. "whatsapp") with the options it was started with."""
    async with atomic(db) as tx:
        row = await tx.fetchrow(
            f"""INSERT INTO import_runs (organization_id, source, options) VALUES ($1, $2, $3)
                RETURNING {_COLS}""",
            organization_id, source, options if options is not None else {})
        return await _announced(tx, "import.started", returned(ImportRun, row))


async def _announced(db: Executor, kind: str, run: ImportRun) -> ImportRun:
    await changes.record(db, organization_id=run.organization_id, kind=kind,
                         data=changes.import_data(run))
    return run


async def _changed(db: Executor, kind: str, sql: str, *args: object) -> ImportRun | None:
    """Run `sql` (an UPDATE of the run `args[0]`, answering it) and put the run in the feed as
    `kind`. The feed's cursor is locked before the run's row: an import's batch transaction
    records its clients (cursor) before it counts its chats (run row)."""
    async with atomic(db) as tx:
        org = await tx.fetchval("SELECT organization_id FROM import_runs WHERE id = $1", args[0])
        if org is None:
            return None
        await changes.hold_cursor(tx, organization_id=org)
        run = one(ImportRun, await tx.fetchrow(sql, *args))
        return None if run is None else await _announced(tx, kind, run)


async def get(db: Executor, *, run_id: uuid.UUID) -> ImportRun | None:
    return one(ImportRun, await db.fetchrow(f"SELECT {_COLS} FROM import_runs WHERE id = $1",
                                            run_id))


async def latest(db: Executor, *, organization_id: uuid.UUID, source: str | None = None
                 ) -> ImportRun | None:
    """The organization's most recently started import (of `source`, when given)."""
    row = await db.fetchrow(
        f"""SELECT {_COLS} FROM import_runs
            WHERE organization_id = $1 AND ($2::text IS NULL OR source = $2)
            ORDER BY started_at DESC, id DESC LIMIT 1""",
        organization_id, source)
    return one(ImportRun, row)


async def set_total(db: Executor, *, run_id: uuid.UUID, chats_total: int) -> ImportRun | None:
    """Record how many chats the import will go through."""
    return await _changed(
        db, "import.progress",
        f"UPDATE import_runs SET chats_total = $2 WHERE id = $1 RETURNING {_COLS}",
        run_id, chats_total)


async def record_chat(db: Executor, *, run_id: uuid.UUID, wa_chat_id: str, messages_stored: int,
                      duplicates: int, error: str | None = None) -> ImportRun | None:
    """Add one chat's outcome. Without an error the chat is done (and skipped on resume); with
    one it is listed in `errors` and will be tried again on resume. `chats_done` counts the done
    chats."""
    return await _changed(
        db, "import.progress",
        f"""UPDATE import_runs SET
                messages_stored = messages_stored + $3,
                duplicates = duplicates + $4,
                done_chats = CASE WHEN $5::text IS NOT NULL OR $2 = ANY(done_chats)
                                  THEN done_chats ELSE array_append(done_chats, $2) END,
                chats_done = cardinality(done_chats)
                             + CASE WHEN $5::text IS NULL AND NOT $2 = ANY(done_chats)
                                    THEN 1 ELSE 0 END,
                errors = CASE WHEN $5::text IS NULL THEN errors
                              ELSE errors || jsonb_build_array(
                                  jsonb_build_object('chat', $2::text, 'error', $5::text)) END
            WHERE id = $1 RETURNING {_COLS}""",
        run_id, wa_chat_id, messages_stored, duplicates, error)


async def resume(db: Executor, *, run_id: uuid.UUID) -> ImportRun | None:
    """Reopen a finished or interrupted run: RUNNING again, with its errors cleared (the failed
    chats are retried); done chats and counts are kept."""
    return await _changed(
        db, "import.started",
        f"""UPDATE import_runs SET status = 'RUNNING', finished_at = NULL, errors = '[]'
            WHERE id = $1 RETURNING {_COLS}""", run_id)


async def finish(db: Executor, *, run_id: uuid.UUID,
                 status: Literal["COMPLETED", "FAILED", "INTERRUPTED"]) -> ImportRun | None:
    """End a RUNNING import. None when it was not running."""
    return await _changed(
        db, "import.finished",
        f"""UPDATE import_runs SET status = $2, finished_at = now()
            WHERE id = $1 AND status = 'RUNNING' RETURNING {_COLS}""", run_id, status)


async def record_chats(db: Executor, *, run_id: uuid.UUID, done: Sequence[tuple[str, int]]
                       ) -> None:
    """`record_chat` without an error for many chats at once ((chat key, messages stored)
    each, keys distinct)."""
    if not done:
        return
    await _changed(
        db, "import.progress",
        f"""UPDATE import_runs SET
               messages_stored = messages_stored + $2,
               done_chats = done_chats || ARRAY(
                   SELECT k FROM unnest($3::text[]) AS k WHERE NOT k = ANY(done_chats)),
               chats_done = cardinality(done_chats) + (
                   SELECT count(*) FROM unnest($3::text[]) AS k WHERE NOT k = ANY(done_chats))
           WHERE id = $1 RETURNING {_COLS}""",
        run_id, sum(n for _, n in done), [k for k, _ in done])
