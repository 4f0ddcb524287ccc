"""`wad demo`: the whole daemon on a fresh machine, with nothing configured.

One process runs the embedded PostgreSQL, the WhatsApp Web simulator and the daemon (in a
temporary state directory). The demo creates an organization, shows its QR code in the terminal,
has the simulated phone scan it, has a simulated client write a few messages, shows what the
daemon did with them, and stops cleanly. `--json` ends with one JSON line summing it up.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import segno
import trio

from wad import log
from wad.config import ApiSettings, DaemonSettings, InboundSettings, Settings, WhatsAppSettings
from wad.daemon import Daemon
from wad.db.connect import asyncio_loop
from wad.db.pool import Database
from wad.db.repo import clients as clients_repo
from wad.db.repo import messages as messages_repo
from wad.db.repo import organizations
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo
from wad.org.outbound.queue import queue_message
from wad.sim.client import SimClient
from wad.sim.model import SimConfig
from wad.sim.server import serve as serve_simulator

ACCOUNT = "996555000111"
CLIENT = "996555123456"
CLIENT_MESSAGES = [
    "Hello! I saw your Song-Kol horse trek. Is there a tour in July?",
    "My name is Aida, we are two adults.",
    "How much does the 3-day trip cost per person?",
]


class DemoFailed(Exception):
    """A step of the demo did not happen in time."""


def _say(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


async def _wait_for(what: str, check: Any, timeout: float) -> Any:
    with trio.move_on_after(timeout):
        while True:
            value = await check()
            if value:
                return value
            await trio.sleep(0.1)
    raise DemoFailed(f"timed out after {timeout:.0f}s waiting for {what}")


async def _outbox_status(db: Database, outbox_id: uuid.UUID) -> str | None:
    item = await outbox_repo.get(db, outbox_id=outbox_id)
    return item.status if item is not None else None


async def _count_messages(db: Database, org_id: uuid.UUID, *, processed: bool) -> int:
    return await messages_repo.count(db, organization_id=org_id, processed_only=processed)


async def _count_when_all(db: Database, org_id: uuid.UUID, *, processed: bool) -> int:
    """How many of the client's messages are stored (or processed), once all are or after a
    minute, whichever comes first."""

    async def all_there() -> int:
        count = await _count_messages(db, org_id, processed=processed)
        return count if count >= len(CLIENT_MESSAGES) else 0

    try:
        return int(await _wait_for("the messages", all_there, 60))
    except DemoFailed:
        return await _count_messages(db, org_id, processed=processed)


async def run_demo(state_dir: Path, *, out: TextIO, as_json: bool) -> dict[str, Any]:
    """Run every step; answer the summary."""
    started = time.monotonic()
    settings = Settings(
        daemon=DaemonSettings(state_dir=str(state_dir), log_level="warning"),
        api=ApiSettings(listen="127.0.0.1:0"),
        whatsapp=WhatsAppSettings(url="http://127.0.0.1:1/", ready_timeout_s=30.0),
        # A demo shows the pipeline without the human-like pauses of production.
        inbound=InboundSettings(processing_delay_min_s=0.2, processing_delay_max_s=0.5,
                                reply_delay_min_s=0.5, reply_delay_max_s=1.0,
                                enrichment_pause_min_s=0.1, enrichment_pause_max_s=0.2),
    )
    summary: dict[str, Any] = {}
    async with asyncio_loop(), trio.open_nursery() as nursery:
        sim = await nursery.start(partial(serve_simulator, seed=42, config=SimConfig(
            qr_rotate_s=20.0, sync_delay_s=1.0)))
        settings.whatsapp.url = sim.url
        _say(out, f"simulator (standing in for WhatsApp Web) at {sim.url}")
        daemon = Daemon(settings)
        ctx = await nursery.start(daemon.run)
        db: Database = ctx.db
        manager = ctx.services.orgs
        assert manager is not None
        _say(out, f"daemon ready: state in {state_dir}, API on "
                  f"{', '.join(ctx.services.addresses)}")

        async with SimClient(sim.url) as phone:
            await phone.create_account(ACCOUNT, "Demo Tours", business=True)
            org = await organizations.create(db, name="Demo Tours")
            _say(out, f"organization 'Demo Tours' created: {org.id}")
            await manager.connect(org.id)

            async def pending() -> Any:
                row = await sessions_repo.get(db, organization_id=org.id)
                return row if row and row.state == "QR_CODE_PENDING" and row.qr_payload else None

            row = await _wait_for("the QR code", pending, 60)
            _say(out, "scan this QR code with WhatsApp on the phone (the simulated phone will):")
            if not as_json:
                segno.make(row.qr_payload, error="l").terminal(out=out, compact=True)
            else:
                _say(out, f"  QR payload: {row.qr_payload}")
            await phone.scan_qr(ACCOUNT, row.qr_payload)

            async def connected() -> Any:
                current = await sessions_repo.get(db, organization_id=org.id)
                return current if current and current.state == "CONNECTED" else None

            row = await _wait_for("the link", connected, 60)
            _say(out, f"linked: {row.phone_number} ({row.push_name}), WhatsApp Web "
                      f"{row.wa_version}")

            for text in CLIENT_MESSAGES:
                await phone.deliver(ACCOUNT, CLIENT, text, push_name="Aida")
                _say(out, f"  client +{CLIENT} writes: {text}")

            stored = await _count_when_all(db, org.id, processed=False)
            _say(out, f"messages stored: {stored} of {len(CLIENT_MESSAGES)}")
            processed = await _count_when_all(db, org.id, processed=True)
            _say(out, f"messages processed (client, conversation, language, status): {processed}")
            for message in await messages_repo.list_for_organization(db, organization_id=org.id):
                _say(out, f"  [{message.language or '?'}] {message.body}")
            first = await clients_repo.first(db, organization_id=org.id)
            client = {k: getattr(first, k) for k in
                      ("phone", "name", "push_name", "preferred_language", "status")
                      } if first is not None else None
            if client is not None:
                _say(out, "client record: " + ", ".join(f"{k}={v}" for k, v in client.items()))
            # The operator answers through the durable, rate-limited send queue.
            reply = "Hello Aida! Yes: the 3-day Song-Kol trek leaves every Saturday in July."
            item, _ = await queue_message(db, organization_id=org.id, to=f"+{CLIENT}",
                                          content=reply, bus=ctx.services.bus)
            _say(out, f"queued a reply to +{CLIENT} through the send queue: {reply}")

            async def reply_read() -> Any:
                status = await _outbox_status(db, item.id)
                return status if status in ("DELIVERED", "READ") else None

            try:
                reply_status = await _wait_for("the reply to be delivered", reply_read, 60)
            except DemoFailed:
                reply_status = await _outbox_status(db, item.id)
            on_phone = sum(1 for m in (await phone.sent(ACCOUNT))["messages"]
                           if m.get("body") == reply)
            _say(out, f"reply {reply_status}: WhatsApp received it {on_phone} time(s)")
            final = await sessions_repo.get(db, organization_id=org.id)
            summary = {
                "organization_id": str(org.id),
                "state": final.state if final else "UNKNOWN",
                "linked_number": final.phone_number if final else None,
                "messages_stored": stored,
                "messages_processed": processed,
                "reply_status": reply_status,
                "reply_sent_times": on_phone,
                "client": client,
            }
        _say(out, "stopping the daemon (the session is archived and the browser closed)")
        daemon.shutdown.set()
        with trio.fail_after(90):
            await daemon.stopped.wait()
        nursery.cancel_scope.cancel()
    summary["duration_s"] = round(time.monotonic() - started, 2)
    return summary


def main(*, as_json: bool, keep: bool = False) -> int:
    """Blocking entry point of `wad demo`."""
    log.configure(fmt="console" if sys.stdout.isatty() else "json", level="warning",
                  stream=sys.stderr)
    state_dir = Path(tempfile.mkdtemp(prefix="wad-demo-"))
    os.chmod(state_dir, 0o711)  # the embedded cluster's `postgres` user must pass through
    out = sys.stdout
    try:
        summary = trio.run(partial(run_demo, state_dir, out=out, as_json=as_json))
    except DemoFailed as exc:
        _say(out, f"demo failed: {exc}")
        return 1
    finally:
        if not keep:
            shutil.rmtree(state_dir, ignore_errors=True)
    ok = (summary.get("state") == "CONNECTED" and summary.get("messages_stored", 0) > 0
          and summary.get("reply_sent_times") == 1)
    if as_json:
        print(json.dumps(summary, default=str), flush=True)
    else:
        _say(out, f"done in {summary['duration_s']} s: {summary['state']}, "
                  f"{summary['messages_stored']} messages stored")
    return 0 if ok else 1
