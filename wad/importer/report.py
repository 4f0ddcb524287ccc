"""The progress of an import while it runs, its final report, and their text forms."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Literal

import msgspec
import trio

ImportState = Literal["STARTING", "LISTING", "RUNNING", "COMPLETED", "INTERRUPTED", "FAILED"]
FINISHED: frozenset[str] = frozenset({"COMPLETED", "INTERRUPTED", "FAILED"})
UNKNOWN_LANGUAGE = "unknown"


class ChatError(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A chat that could not be imported, and why."""

    chat: str
    error: str


class ImportCounts(msgspec.Struct, kw_only=True, rename="camel"):
    """Which import it is and the counters it keeps: what the running import's `Progress` and
    its `ImportReport` have in common. Counts of chats and messages cover the whole run, a
    resumed one included."""

    organization_id: uuid.UUID
    source: str
    dry_run: bool
    organization_name: str | None = None
    run_id: uuid.UUID | None = None
    """The `import_runs` row (None in a dry run, which writes nothing)."""
    resumed: bool = False
    """This invocation continued an interrupted run."""
    chats_found: int = 0
    """Every chat the source listed, groups and broadcasts included."""
    groups_skipped: int = 0
    broadcasts_skipped: int = 0
    """Status updates, broadcast lists and channels."""
    chats_total: int = 0
    """One-to-one chats this run goes through (after `--limit`)."""
    chats_imported: int = 0
    chats_duplicate: int = 0
    """Skipped because the client was in the CRM already (`--skip-duplicates`)."""
    chats_failed: int = 0
    chats_resumed: int = 0
    """Finished by an earlier, interrupted invocation of this run (skipped now)."""
    clients_created: int = 0
    clients_updated: int = 0
    messages_stored: int = 0
    """New messages written (in a dry run: that would be written)."""
    messages_duplicate: int = 0
    """Messages found already stored (never stored twice), decided per message."""
    errors: list[ChatError] = []
    warnings: list[str] = []
    """Lines of exported files that could not be parsed (with file and line), and the like."""
    requests: int = 0
    """WhatsApp requests made (listing, history pages, contact look-ups)."""
    current_chat: str | None = None
    reason: str | None = None
    """Why the import ended early (interrupted or failed)."""


class ImportReport(ImportCounts, kw_only=True, rename="camel"):
    """An import's progress and, once `state` is finished, its final report (`--json` prints
    this, and the API answers it: JSON names are camelCase, `chatsDone`). Counts of chats and messages cover the whole run, a resumed one included; statuses
    and languages cover the chats imported by this invocation."""

    state: ImportState
    began_at: datetime | None = None
    """When this invocation started (UTC)."""
    ended_at: datetime | None = None
    """When it ended (UTC); None while it runs."""
    chats_done: int = 0
    """Of `chats_total`, finished (imported, duplicates, and those done before a resume)."""
    clients_imported: int = 0
    """Clients whose chat this invocation imported (created and updated)."""
    messages_per_client: float | None = None
    """New messages written by this invocation per client it imported (average)."""
    statuses: dict[str, int] = {}
    languages: dict[str, int] = {}
    seconds: float = 0.0
    chats_per_minute: float | None = None
    eta_s: float | None = None
    """Estimated time left, once a chat has been done."""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class Progress(ImportCounts, kw_only=True, rename="camel"):
    """The mutable counters the engine keeps; `report()` takes a snapshot."""

    state: ImportState = "STARTING"
    messages_now: int = 0
    """New messages written by this invocation (`messages_stored` includes a resumed run's)."""
    statuses: Counter[str] = msgspec.field(default_factory=Counter)
    languages: Counter[str] = msgspec.field(default_factory=Counter)
    started_at: float = msgspec.field(default_factory=trio.current_time)
    finished_at: float | None = None
    started_wall: datetime = msgspec.field(default_factory=lambda: datetime.now(UTC))
    finished_wall: datetime | None = None
    done_now: int = 0
    """Chats finished by this invocation (for the rate)."""
    timings: dict[str, float] = msgspec.field(default_factory=lambda: dict.fromkeys(
        ("fetching", "languages", "status", "writing"), 0.0))
    """Seconds spent per stage (fetching, languages, status, writing), for `bench/import.py`."""

    @property
    def chats_done(self) -> int:
        return self.chats_imported + self.chats_duplicate + self.chats_resumed

    def report(self) -> ImportReport:
        end = self.finished_at if self.finished_at is not None else trio.current_time()
        seconds = max(0.0, end - self.started_at)
        rate = self.done_now / seconds * 60 if self.done_now and seconds > 0 else None
        left = self.chats_total - self.chats_done - self.chats_failed
        eta = (left / (rate / 60) if rate and left > 0 else (0.0 if rate else None))
        # The counters and the rest of the state by name (`chats_done` included); the fields
        # derived here on top.
        clients = self.clients_created + self.clients_updated
        return msgspec.structs.replace(
            msgspec.convert(self, ImportReport, from_attributes=True),
            began_at=self.started_wall, ended_at=self.finished_wall,
            clients_imported=clients,
            messages_per_client=round(self.messages_now / clients, 1) if clients else None,
            statuses=dict(self.statuses.most_common()),
            languages=dict(self.languages.most_common()), seconds=round(seconds, 3),
            chats_per_minute=round(rate, 2) if rate is not None else None,
            eta_s=round(eta, 1) if eta is not None else None)


# Text forms ---------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """`75.2` -> `1:15`; `3725` -> `1:02:05`; None -> `?`."""
    if seconds is None:
        return "?"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(report: ImportReport, width: int = 24) -> str:
    """One line for the progress bar: chats done of total, messages stored, duplicates, errors,
    rate and time left."""
    if report.state in ("STARTING", "LISTING"):
        return f"{'listing chats' if report.state == 'LISTING' else 'starting'}…"
    total = report.chats_total
    done = report.chats_done + report.chats_failed
    filled = int(width * done / total) if total else width
    bar = "#" * filled + "." * (width - filled)
    rate = f"{report.chats_per_minute:.1f} chats/min" if report.chats_per_minute else "- chats/min"
    return (f"[{bar}] {done}/{total} chats  {report.messages_stored} messages  "
            f"{report.chats_duplicate} duplicates  {report.chats_failed} errors  {rate}  "
            f"left {duration(report.eta_s)}")


def render(report: ImportReport) -> str:
    """The final report for a person, laid out as the CRM's import plan asks (seed 000): the
    organization, the date and time, the chats, the clients and messages (average per client),
    duplicates, errors with their reasons, and the status and language distributions."""
    head = {"COMPLETED": "Import finished", "INTERRUPTED": "Import interrupted",
            "FAILED": "Import failed"}.get(report.state, f"Import {report.state.lower()}")
    who = (f"{report.organization_name} ({report.organization_id})" if report.organization_name
           else f"organization {report.organization_id}")
    lines = [f"{head}: {who}, source {report.source}"
             + (f", run {report.run_id}" if report.run_id else "")
             + (" (resumed)" if report.resumed else "")]
    if report.began_at is not None:
        lines.append(f"  date: {report.began_at:%Y-%m-%d %H:%M} UTC"
                     + (f" to {report.ended_at:%H:%M}" if report.ended_at else ""))
    if report.dry_run:
        lines.append("DRY RUN: nothing was written; the counts say what an import would do")
    if report.reason:
        lines.append(f"  reason: {report.reason}")
    skipped = []
    if report.groups_skipped:
        skipped.append(f"{report.groups_skipped} group{'s' * (report.groups_skipped != 1)}")
    if report.broadcasts_skipped:
        skipped.append(f"{report.broadcasts_skipped} broadcast"
                       f"{'s' * (report.broadcasts_skipped != 1)}")
    stored = "would be stored" if report.dry_run else "stored"

    def row(label: str, value: object, note: str = "") -> str:
        return f"  {label:<22}{value!s:>7}{'  ' + note if note else ''}"

    lines += [
        "Chats",
        row("chats found", report.chats_found,
            f"({' and '.join(skipped)} skipped)" if skipped else ""),
        row("chats to import", report.chats_total),
        row("imported", report.chats_imported),
        row("skipped as duplicates", report.chats_duplicate, "(every message already stored)"),
    ]
    if report.chats_resumed:
        lines.append(row("done before resuming", report.chats_resumed))
    lines.append(row("errors", report.chats_failed))
    for error in report.errors:
        lines.append(f"    {error.chat}: {error.error}")
    lines += [
        "Clients and messages",
        row("clients imported", report.clients_imported),
        row("clients created", report.clients_created),
        row("clients updated", report.clients_updated),
        row(f"messages {stored}", report.messages_stored),
        row("already stored", report.messages_duplicate, "(duplicates, not stored again)"),
        row("average per client", "-" if report.messages_per_client is None
            else f"{report.messages_per_client:g}"),
        row("WhatsApp requests", report.requests),
        row("time taken", duration(report.seconds)),
    ]
    if report.statuses:
        lines.append("  statuses:  " + ", ".join(f"{k} {v}" for k, v in report.statuses.items()))
    if report.languages:
        lines.append("  languages: " + ", ".join(f"{k} {v}" for k, v in report.languages.items()))
    if report.warnings:
        lines.append(f"  warnings ({len(report.warnings)}):")
        lines += [f"    {w}" for w in report.warnings]
    return "\n".join(lines)
