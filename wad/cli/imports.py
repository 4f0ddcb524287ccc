"""`wad import`: bring an account's existing chats into the CRM.

With the daemon running and the organization connected, the import runs inside the daemon on the
organization's own session (`POST /api/whatsapp/import/{org}` over the control socket, then its
progress with `GET`); Ctrl-C stops it there (`DELETE`). Otherwise this process runs it: on a
browser session of its own (`STATE_DIR/sessions/import-<org>`, the QR code drawn in the terminal
the first time), or, for `--source export`, on the files given. Either way a progress bar runs
on stderr, the report ends on stdout (`--json`: one JSON object), and running the same command
again resumes an interrupted import.

Exit status: 0 all chats imported, 1 some chats (or the import) failed, 2 the command was wrong
or could not start, 130 stopped with Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TextIO

import httpx
import msgspec
import trio

from wad import config as config_mod
from wad import log
from wad.cli.control import CtlError, Daemon
from wad.config import Settings
from wad.errors import WadError
from wad.importer.options import (
    DEFAULT_LINK_TIMEOUT_S,
    DEFAULT_PACE_S,
    DEFAULT_PAGE_SIZE,
    WHATSAPP_SOURCE,
    ImportOptions,
)
from wad.importer.report import ImportReport, progress_line, render

# The database, plugins and browser parts load only when an import runs (see `import_here`),
# so that registering the command costs `wad`'s other commands nothing.

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
POLL_S = 0.5


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `import` to `wad`'s subcommands."""
    p = sub.add_parser(
        "import", help="import the account's existing chats (live session or exported files)",
        description="Import an organization's existing WhatsApp chats: clients, conversations, "
        "messages, languages and statuses. Safe to run again: it resumes an interrupted import "
        "and never stores a message twice.")
    p.add_argument("--organization-id", required=True, type=_org_id, metavar="ID")
    p.add_argument("--limit", type=_positive, metavar="N",
                   help="at most N one-to-one chats, the most recent first")
    p.add_argument("--dry-run", action="store_true", help="do everything but write")
    p.add_argument("--use-llm", action="store_true",
                   help="decide statuses with the OpenRouter language model")
    p.add_argument("--openrouter-key", metavar="KEY",
                   help="OpenRouter key for --use-llm (default: $OPENROUTER_API_KEY)")
    dup = p.add_mutually_exclusive_group()
    dup.add_argument("--skip-duplicates", dest="skip_duplicates", action="store_true",
                     default=True, help="skip chats whose client is in the CRM (default)")
    dup.add_argument("--no-skip-duplicates", dest="skip_duplicates", action="store_false",
                     help="update existing clients and add the messages they lack")
    p.add_argument("--source", default=WHATSAPP_SOURCE, metavar="NAME",
                   help="whatsapp (the linked account, default) or export (exported chat files)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("paths", nargs="*", metavar="PATHS",
                   help="exported chats (.txt, .zip or folders) for --source export")
    p.add_argument("--me", metavar="NAME",
                   help="exports: the account owner's name in the files (their messages are "
                   "outgoing)")
    p.add_argument("--phone", action="append", default=[], metavar="NAME=NUMBER",
                   help="exports: the number of a contact the files show by name (repeatable)")
    p.add_argument("--timezone", metavar="ZONE",
                   help="exports: time zone of the times in the files (default: this machine's)")
    p.add_argument("--date-order", choices=("DMY", "MDY", "YMD"),
                   help="exports: date order when a file cannot tell")
    p.add_argument("--pace", type=float, default=DEFAULT_PACE_S, metavar="SECONDS",
                   help=f"at least this long between WhatsApp requests (default "
                   f"{DEFAULT_PACE_S:g}; 0: no pacing)")
    p.add_argument("--page-size", type=_positive, default=DEFAULT_PAGE_SIZE, metavar="N",
                   help=f"messages per history request (default {DEFAULT_PAGE_SIZE})")
    p.add_argument("--link-timeout", type=float, default=DEFAULT_LINK_TIMEOUT_S,
                   metavar="SECONDS", help="how long to wait for the QR scan (own session)")
    p.add_argument("--socket", metavar="PATH", default=None,
                   help="the daemon's control socket (default: from the configuration)")
    p.set_defaults(func=command)


def _org_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an organization id (a UUID): {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def options_from(args: argparse.Namespace) -> ImportOptions:
    """The command line as `ImportOptions`; `WadError` for combinations that cannot work."""
    source = args.source
    if source == WHATSAPP_SOURCE and args.paths:
        raise WadError("PATHS are for --source export (or another file source); the whatsapp "
                       "source reads the linked account")
    if source != WHATSAPP_SOURCE and not args.paths:
        raise WadError(f"--source {source} needs the paths of the files to import")
    phones: dict[str, str] = {}
    for item in args.phone:
        name, sep, number = item.rpartition("=")
        if not sep or not name.strip() or not number.strip():
            raise WadError(f"--phone expects NAME=NUMBER, not {item!r}")
        phones[name.strip()] = number.strip()
    try:
        return msgspec.convert({
            "source": source, "limit": args.limit, "dry_run": args.dry_run,
            "use_llm": args.use_llm, "skip_duplicates": args.skip_duplicates,
            "pace_s": args.pace, "page_size": args.page_size,
            "paths": [str(Path(p).absolute()) for p in args.paths], "me": args.me,
            "timezone": args.timezone, "date_order": args.date_order, "phones": phones,
        }, ImportOptions)
    except msgspec.ValidationError as exc:
        raise WadError(f"invalid option: {exc}") from None


def command(args: argparse.Namespace) -> int:
    settings = config_mod.load(args.config)
    # Logs go to stderr, quietly, so that stdout holds only the report.
    log.configure(fmt="console", level="warning", stream=sys.stderr)
    options = options_from(args)
    from wad.importer import local

    local.check_llm(settings, use_llm=options.use_llm, key=args.openrouter_key)
    # The key this command found (flag, environment or configuration) goes with the request,
    # so that a daemon started without one can still use it.
    key = local.openrouter_key(settings, args.openrouter_key) if options.use_llm else None
    socket = Path(args.socket) if args.socket else settings.control_socket
    if options.source == WHATSAPP_SOURCE:
        daemon = Daemon.probe(socket)
        if daemon is not None:
            with daemon:
                state = daemon.get(f"/api/whatsapp/status/{args.organization_id}")["status"]
                if state == "CONNECTED":
                    return through_daemon(daemon, args.organization_id, options, key=key,
                                          as_json=args.json)
            print(f"the daemon runs, but this organization's session there is {state}; "
                  "importing through a session of this command's own", file=sys.stderr)
    return run_here(settings, args.organization_id, options, key=key, as_json=args.json,
                    link_timeout=args.link_timeout)


def finish(report: ImportReport, *, as_json: bool, interrupted: bool = False,
           out: TextIO | None = None) -> int:
    """Print the report; answer the exit status."""
    out = out or sys.stdout
    if as_json:
        print(msgspec.json.encode(report).decode(), file=out, flush=True)
    else:
        print(render(report), file=out, flush=True)
    if interrupted:
        return EXIT_INTERRUPTED
    if report.state == "COMPLETED" and not report.chats_failed:
        return EXIT_OK
    return EXIT_FAILED


class ProgressBar:
    """The progress line on stderr: redrawn in place on a terminal, else a line per chat (at
    most one every few seconds)."""

    def __init__(self, stream: TextIO | None = None, *, every_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self._last = 0.0
        self._shown = ""

    def update(self, report: ImportReport) -> None:
        line = progress_line(report)
        if line == self._shown:
            return
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        elif now - self._last >= self.every_s or report.finished:
            self.stream.write(line + "\n")
        else:
            return
        self._shown = line
        self._last = now
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()


def draw_qr(payload: str, stream: TextIO | None = None) -> None:
    """Draw a QR code in the terminal for the phone to scan."""
    import segno

    stream = stream or sys.stderr
    print("\nScan with WhatsApp on the phone (Settings > Linked devices > Link a device); "
          "the code changes about every 20 s:", file=stream)
    segno.make(payload, error="m").terminal(out=stream, compact=True)
    stream.flush()


# In the daemon ------------------------------------------------------------------------------


def _report(response: httpx.Response) -> ImportReport:
    return msgspec.json.decode(response.content, type=ImportReport)


def through_daemon(daemon: Daemon, organization_id: uuid.UUID, options: ImportOptions,
                   *, key: str | None, as_json: bool, bar: ProgressBar | None = None,
                   poll_s: float = POLL_S) -> int:
    """Start the import in the daemon and follow it to the end; Ctrl-C stops it there."""
    body: dict[str, Any] = {
        "limit": options.limit, "dryRun": options.dry_run, "useLlm": options.use_llm,
        "skipDuplicates": options.skip_duplicates, "paceS": options.pace_s,
        "pageSize": options.page_size}
    if key:
        body["openrouterKey"] = key
    path = f"/api/whatsapp/import/{organization_id}"
    report = _report(daemon.request("POST", path, json_body=body))
    bar = bar or ProgressBar()
    interrupted = False
    try:
        while not report.finished:
            try:
                time.sleep(poll_s)
                report = _report(daemon.request("GET", path))
                bar.update(report)
            except KeyboardInterrupt:
                interrupted = True
                print("\nstopping the import (run the command again to resume)…",
                      file=sys.stderr, flush=True)
                try:
                    report = _report(daemon.request("DELETE", path))
                except CtlError:
                    pass  # it ended meanwhile
    finally:
        bar.close()
    return finish(report, as_json=as_json, interrupted=interrupted)


# In this process --------------------------------------------------------------------------


def run_here(settings: Settings, organization_id: uuid.UUID, options: ImportOptions, *,
             key: str | None, as_json: bool,
             link_timeout: float = DEFAULT_LINK_TIMEOUT_S) -> int:
    """Run the import in this process (blocking); Ctrl-C (or SIGTERM) stops it cleanly."""
    outcome: dict[str, Any] = {}
    bar = ProgressBar()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            work = trio.CancelScope()
            nursery.start_soon(_stop_on_signal, work, outcome)
            with work:
                outcome["report"] = await import_here(
                    settings, organization_id, options, key=key, on_progress=bar.update,
                    link_timeout=link_timeout, imported=outcome)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        bar.close()
    report = outcome.get("report") or outcome.get("partial")
    if report is None:
        print("wad: stopped before the import started", file=sys.stderr)
        return EXIT_INTERRUPTED
    return finish(report, as_json=as_json, interrupted=bool(outcome.get("signal")))


async def _stop_on_signal(work: trio.CancelScope, outcome: dict[str, Any]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if not outcome.get("signal"):
                print("\nstopping the import (run the command again to resume)…",
                      file=sys.stderr, flush=True)
            outcome["signal"] = True
            work.cancel()


async def import_here(settings: Settings, organization_id: uuid.UUID, options: ImportOptions,
                      *, key: str | None = None, on_progress: Any = None,
                      link_timeout: float = DEFAULT_LINK_TIMEOUT_S, driver: Any = None,
                      on_qr: Any = None, imported: dict[str, Any] | None = None
                      ) -> ImportReport:
    """The import, in this process: the database (configured or private), the plugins, and the
    source (a browser session of the import's own, or a plugin's files). `driver` may be given
    (tests share one); `imported["partial"]` holds the report so far if it is cancelled."""
    from wad.db.connect import asyncio_loop
    from wad.importer import local
    from wad.importer.session import own_session, profile_dir

    holder = imported if imported is not None else {}
    async with asyncio_loop(), local.import_database(settings) as db:
        await local.require_org(db, organization_id)
        pm = local.import_plugin_manager(settings, use_llm=options.use_llm, key=key)
        if options.source != WHATSAPP_SOURCE:
            imp = local.importer(settings=settings, db=db, organization_id=organization_id,
                                 source=local.plugin_source(
                                     pm, options, organization_id,
                                     await local.account_options(db, organization_id)),
                                 options=options, pm=pm, on_progress=on_progress)
            return await _run_keeping(imp, holder)
        profile = profile_dir(settings.state_path, organization_id)
        async with _driver(driver, settings) as browser, own_session(
                browser, profile, on_qr=on_qr or draw_qr, link_timeout=link_timeout) as own:
            imp = local.importer(settings=settings, db=db, organization_id=organization_id,
                                 source=local.whatsapp_source(own.get, options),
                                 options=options, pm=pm, on_progress=on_progress)
            return await _run_keeping(imp, holder)


async def _run_keeping(imp: Any, holder: dict[str, Any]) -> ImportReport:
    try:
        report: ImportReport = await imp.run()
        return report
    finally:
        holder["partial"] = imp.progress.report()


def _driver(driver: Any, settings: Settings) -> Any:
    """The given driver, or a new one for the block (Playwright loads only when needed)."""
    if driver is not None:
        return nullcontext(driver)
    from wad.browser.driver import BrowserDriver

    return BrowserDriver.open(settings.whatsapp)
