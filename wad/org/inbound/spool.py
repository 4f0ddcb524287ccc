"""Where message events wait while the database is unreachable: a bounded in-memory queue backed
by an append-only file (`STATE_DIR/spool/org-<id>.jsonl`), one JSON line per event, fsync'd
before `append` returns. The file is read back at start, so events survive a crash too, and is
emptied only once every event in it has been written to the database.

A torn last line (a crash in the middle of a write) is skipped: that event was never confirmed,
and the inbound channel's catch-up finds its message again.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import msgspec
import trio

from wad import log
from wad.browser.events import (
    AckChanged,
    MessageEdited,
    MessageReceived,
    MessageRevoked,
    OwnMessage,
)

_log = log.get("spool")

SpooledEvent = MessageReceived | OwnMessage | AckChanged | MessageEdited | MessageRevoked
"""The session's events that the inbound channel stores."""


class SpoolRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One event and when wad received it (Unix seconds; an edit's time, for example)."""

    at: float
    event: SpooledEvent


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SpoolRecord)


def spool_path(state_dir: Path, org_id: object) -> Path:
    """The organization's spool file under the state directory."""
    return Path(state_dir) / "spool" / f"org-{org_id}.jsonl"


class Spool:
    """The events waiting for the database, oldest first. Not thread-safe; one Trio task
    appends and one drains (they may be different tasks)."""

    def __init__(self, path: Path, *, max_events: int = 10_000) -> None:
        self.path = Path(path)
        self.max_events = max_events
        self._records: deque[SpoolRecord] = deque()
        self._space = trio.Event()
        self._space.set()
        self._write_lock = trio.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def __bool__(self) -> bool:
        return bool(self._records)

    def load(self) -> int:
        """Read what a previous run left in the file; answers how many events it holds."""
        self._records.clear()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                self._records.append(_decoder.decode(line))
            except msgspec.DecodeError as exc:
                torn = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
                _log.warning("spool line skipped", path=str(self.path), line=number,
                             torn=torn, error=str(exc))
        if self._records:
            _log.info("spool found events to replay", path=str(self.path),
                      events=len(self._records))
        self._update_space()
        return len(self._records)

    async def append(self, record: SpoolRecord) -> None:
        """Add an event at the end: written and fsync'd to the file first. Waits while the
        spool is full (the session then waits too: backpressure, nothing dropped)."""
        await self.append_many([record])

    async def append_many(self, records: Sequence[SpoolRecord]) -> None:
        """Add events at the end, in order, as `append` does; those that fit are written with
        one fsync."""
        pending = list(records)
        while pending:
            while len(self._records) >= self.max_events:
                await self._space.wait()
            room = self.max_events - len(self._records)
            part, pending = pending[:room], pending[room:]
            data = b"".join(_encoder.encode(record) + b"\n" for record in part)
            async with self._write_lock:
                await trio.to_thread.run_sync(self._write, data)
                self._records.extend(part)
            self._update_space()

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def peek(self) -> SpoolRecord | None:
        """The oldest waiting event."""
        return self._records[0] if self._records else None

    def peek_many(self, limit: int) -> list[SpoolRecord]:
        """The oldest waiting events, at most `limit`, oldest first."""
        return list(itertools.islice(self._records, limit))

    async def pop(self) -> None:
        """The oldest event is in the database now. The file is emptied when the last one is
        gone (until then a crash replays some events again, which is harmless: storing is
        idempotent)."""
        await self.pop_many(1)

    async def pop_many(self, count: int) -> None:
        """The `count` oldest events are in the database now (see `pop`)."""
        for _ in range(min(count, len(self._records))):
            self._records.popleft()
        if not self._records:
            async with self._write_lock:
                if not self._records:
                    await trio.to_thread.run_sync(self._truncate)
        self._update_space()

    def _truncate(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "r+b") as handle:
            handle.truncate(0)
            handle.flush()
            os.fsync(handle.fileno())

    def _update_space(self) -> None:
        if len(self._records) < self.max_events:
            self._space.set()
        elif self._space.is_set():
            self._space = trio.Event()
