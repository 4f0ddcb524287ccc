"""How long the historical import takes, and how many WhatsApp requests it makes: a simulated
account with CHATS one-to-one chats of MESSAGES messages each (seven languages), imported by
`wad import`'s engine through a real Chromium into a private PostgreSQL (fsync on, as the
daemon's embedded cluster runs), on a session of the import's own.

    .venv/bin/python bench/import.py [--chats 100] [--messages 50] [--pace 1.0] [--no-fsync]

It prints:
- at the default pacing (one WhatsApp request a second): the wall time and the requests made
  (the chat list, then whole pages of history: one request per chat when a chat fits a page),
  against the earlier script's estimate of one request per message;
- with pacing off: the same import into another organization, and the messages written per
  second (language and status detection included), with the seconds each stage took
  (fetching from the page, language detection, status detection, database writes) and the
  rate of the database writes. The stages overlap: chats are fetched while earlier ones are
  detected, and a batch is written while the next one is detected, so a stage's seconds
  include the time it waited for the processor (one Python process, one GIL) and the writes'
  rate is a floor of what PostgreSQL takes.

The simulator runs in its own process (`wad sim`), so the figures are the import's: its
Python process (fetching through the browser's driver, parsing, detection, writing), its
Chromium and PostgreSQL. The load average at the start and end is printed: on a busy machine
the figures are a floor.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

from wad import log
from wad.browser.driver import BrowserDriver
from wad.config import DaemonSettings, DatabaseSettings, Settings, WhatsAppSettings
from wad.db import migrate
from wad.db.embedded import EmbeddedPostgres
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.importer import local
from wad.importer.options import DEFAULT_PACE_S, ImportOptions
from wad.importer.report import ImportReport
from wad.importer.session import own_session, profile_dir
from wad.sim import history
from wad.sim.client import SimClient, SimClientError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import SimProcess, load_average, scratch_dir, sim_process  # noqa: E402

ACCOUNT = "996555900900"


def chats(count: int, messages: int) -> list[dict[str, Any]]:
    """Conversations with valid numbers, alternating client and agency, in seven languages."""
    out = []
    start = int(time.time()) - 30 * 86400
    for i in range(count):
        lang = history.LANGUAGES[i % len(history.LANGUAGES)]
        specs = []
        for j in range(messages):
            mine = j % 2 == 1
            texts = history.AGENT[lang] if mine else history.CLIENT[lang]
            specs.append({"from_me": mine, "body": texts[(i + j) % len(texts)],
                          "t": start + i * 600 + j * 7})
        out.append({"id": f"99670{i:07d}", "messages": specs})
    return out


def contacts(count: int) -> list[dict[str, Any]]:
    """The chats' people, with the push names WhatsApp users set (so no contact look-ups)."""
    return [{"number": f"99670{i:07d}",
             "push_name": history.NAMES[history.LANGUAGES[i % 7]][i % 5].split(" ")[0]}
            for i in range(count)]


async def run_import(settings: Settings, db: Database, own: Any, org: uuid.UUID,
                     pace: float) -> tuple[ImportReport, dict[str, float]]:
    """The import's report, and its seconds per stage (fetching, languages, status,
    writing)."""
    options = ImportOptions(pace_s=pace)
    pm = local.import_plugin_manager(settings, use_llm=False)
    imp = local.importer(settings=settings, db=db, organization_id=org,
                         source=local.whatsapp_source(own.get, options), options=options,
                         pm=pm)
    return await imp.run(), dict(imp.progress.timings)


async def bench(args: argparse.Namespace, root: Path, sim: SimProcess) -> dict[str, Any]:
    cluster = EmbeddedPostgres(root / "pg", fsync=not args.no_fsync)
    dsn = await trio.to_thread.run_sync(cluster.start)
    try:
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            settings = Settings(daemon=DaemonSettings(state_dir=str(root / "state")),
                                database=DatabaseSettings(dsn=dsn),
                                whatsapp=WhatsAppSettings(url=sim.url, ready_timeout_s=60.0))
            async with (
                Database.open(dsn, min_size=2, max_size=10) as db,
                BrowserDriver.open(settings.whatsapp) as driver,
                SimClient(sim.url, timeout=60) as phone,
            ):
                await migrate.apply(db)
                await phone.config(qr_rotate_s=5.0, sync_delay_s=0.3)
                await phone.create_account(ACCOUNT, "Bench Tours", contacts=contacts(args.chats),
                                           chats=chats(args.chats, args.messages))
                paced_org = (await organizations.create(db, name="Paced")).id
                free_org = (await organizations.create(db, name="Unpaced")).id

                async def scan(payload: str) -> None:
                    try:
                        await phone.scan_qr(ACCOUNT, payload)
                    except SimClientError:
                        pass  # rotated meanwhile: the next code is scanned

                async with own_session(driver, profile_dir(root / "state", paced_org),
                                       on_qr=lambda p: nursery.start_soon(scan, p),
                                       link_timeout=60) as own:
                    began = time.perf_counter()
                    paced, _ = await run_import(settings, db, own, paced_org, args.pace)
                    paced_wall = time.perf_counter() - began
                    began = time.perf_counter()
                    free, stages = await run_import(settings, db, own, free_org, 0.0)
                    free_wall = time.perf_counter() - began
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(functools.partial(cluster.stop, mode="fast"))
    total = args.chats * args.messages
    for report in (paced, free):
        if report.state != "COMPLETED" or report.messages_stored != total:
            raise SystemExit(f"import did not store everything: {report}")
    return {
        "chats": args.chats, "messages": total, "pace_s": args.pace,
        "paced_wall_s": round(paced_wall, 1), "paced_requests": paced.requests,
        "earlier_script_requests": args.chats + total,
        "unpaced_wall_s": round(free_wall, 2), "unpaced_requests": free.requests,
        "messages_per_s_unpaced": round(total / free_wall, 1),
        "unpaced_stage_s": {k: round(v, 2) for k, v in stages.items()},
        "messages_per_s_writing": round(total / stages["writing"], 1)
        if stages["writing"] else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--messages", type=int, default=50, help="per chat")
    parser.add_argument("--pace", type=float, default=DEFAULT_PACE_S,
                        help="seconds between WhatsApp requests in the paced run")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    log.configure(fmt="console", level="warning", stream=sys.stderr)
    load_before = load_average()
    with scratch_dir("wad-bench-import-") as root, sim_process() as sim:
        result = trio.run(bench, args, root, sim)
    print(f"load average (1, 5, 15 min) at start {load_before}, at end {load_average()}")
    print(f"{result['chats']} chats x {args.messages} messages = {result['messages']} messages")
    print(f"paced at {result['pace_s']:g} s per request: {result['paced_wall_s']:.1f} s wall, "
          f"{result['paced_requests']} WhatsApp requests (one per message, as the earlier "
          f"script did, would be {result['earlier_script_requests']}: "
          f"~{result['earlier_script_requests'] * result['pace_s'] / 60:.0f} min)")
    print(f"pacing off: {result['unpaced_wall_s']:.2f} s wall, {result['unpaced_requests']} "
          f"requests, {result['messages_per_s_unpaced']:.0f} messages written per second")
    stages = result["unpaced_stage_s"]
    print("  of which (pacing off; stages overlap): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
          + f"; the database writes: {result['messages_per_s_writing']:.0f} messages/s "
          "(overlapping detection)")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
