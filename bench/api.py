"""The CRM's API at scale, and the control API under load.

Pages of the read API and of the change feed with a million messages
stored for one organization. A private PostgreSQL (fsync on unless `--no-fsync`) is filled with
`COPY` (`tests/support/readfill.py`): clients with one conversation each and their messages (a
message a minute, questions and answers in turn), a long conversation to page deep into, one
status change per client, and as many change-feed entries as messages. The API is served on
127.0.0.1 in this process and called over real HTTP with an AGENT token.

    .venv/bin/python bench/api.py [--messages 1000000] [--per-conversation 50]
                                  [--long 10000] [--requests 300] [--concurrency 4]
                                  [--sections read,feed,hypercorn,floor,status,send] [--plans]
                                  [--clients 10] [--client-processes 2] [--seconds 10]
                                  [--transports tcp,unix] [--profile FILE] [--no-fsync] [--json]

Sections (issue 20 adds its own beside these):
- `read`: each list of the read API, pages of 50: latency p50/p99/max over `--requests`
  requests one at a time, and requests per second with `--concurrency` callers;
- `feed`: pages of 50 of the change feed, through `wad.db.repo.changes.page` and, when this
  daemon serves it, `GET /api/whatsapp/changes/{org}`.

- `floor`, `status`, `send` (issue 20): the API served as `wad run` serves it (Hypercorn, in
  a process of its own: `bench/api_serve.py`) on TCP and on the unix socket, loaded by
  `--clients` keep-alive connections spread over `--client-processes` processes
  (`bench/api_load.py`) for `--seconds`: requests a second, p50/p99/max, and the CPU of the
  server, of PostgreSQL and of the client (so that a saturated client shows). `floor` is a bare
  Quart-Trio route answering a constant, served the same way: what any route costs at least;
  `hypercorn` is a bare ASGI app (no Quart) answering the same constant: what Hypercorn alone
  costs, the ceiling of any app served by one process.
  `status` is `GET /api/whatsapp/status/{org}` (goal: 1,500 a second, p99 under 20 ms),
  `send` is `POST /api/whatsapp/send` (goal: 500 a second, p99 under 50 ms), each client with
  its own organization (with the highest limits there are) and AGENT token (none on the socket,
  which is the super admin), sending to 20 numbers in turn (the first send to each makes its
  client and conversation). `--profile FILE` writes a cProfile of the API server.

With `--plans`, the plan of each read query at this size (`EXPLAIN`) is printed first. The goal
is a p99 under 20 ms for a page of 50; the client shares this process (and the machine) with the
server, so the figures are a ceiling on what the server alone costs.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api_load import Job, Target, http_request, process_cpu_s, run_load  # noqa: E402
from bench.common import load_average, scratch_dir  # noqa: E402
from tests.support.api import issue_token, serve_context  # noqa: E402
from tests.support.readfill import START, Explaining, describe, fill  # noqa: E402
from wad import log  # noqa: E402
from wad.api.context import AppContext  # noqa: E402
from wad.config import ApiSettings, DaemonSettings, DatabaseSettings, FeedSettings, Settings  # noqa: E402
from wad.db import migrate  # noqa: E402
from wad.db.embedded import EmbeddedPostgres  # noqa: E402
from wad.db.pool import Database  # noqa: E402
from wad.db.repo import answers as answers_repo  # noqa: E402
from wad.db.repo import changes as changes_repo  # noqa: E402
from wad.db.repo import imports as imports_repo  # noqa: E402
from wad.db.repo import organizations  # noqa: E402
from wad.db.repo import read as read_repo  # noqa: E402
from wad.org.outbound import settings as send_settings  # noqa: E402
from wad.org.outbound.settings import (  # noqa: E402
    MAX_PER_DAY,
    MAX_PER_HOUR,
    MAX_PER_MINUTE,
    RateLimitingPatch,
    SettingsPatch,
)

GOAL_MS = 20.0
PAGE = 50


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Bench:
    """What every section gets: the filled database, the served API and its caller."""

    args: argparse.Namespace
    db: Database
    org: uuid.UUID
    http: httpx.AsyncClient
    clients: list[uuid.UUID]
    conversations: list[uuid.UUID]
    long_conversation: uuid.UUID
    changes: int
    serves_feed: bool
    results: list[dict[str, Any]] = field(default_factory=list)

    async def measure(self, name: str, calls: list[Callable[[], Awaitable[None]]]) -> None:
        """Time `calls` one at a time, then all of them again `--concurrency` at a time."""
        latencies = []
        for call in calls:
            began = time.perf_counter()
            await call()
            latencies.append(1000 * (time.perf_counter() - began))
        todo = iter(calls)

        async def caller() -> None:
            for call in todo:
                await call()

        began = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(self.args.concurrency):
                nursery.start_soon(caller)
        wall = time.perf_counter() - began
        result = {"name": name, "requests": len(calls),
                  "p50_ms": round(percentile(latencies, 0.5), 2),
                  "p99_ms": round(percentile(latencies, 0.99), 2),
                  "max_ms": round(max(latencies), 2),
                  "per_s": round(len(calls) / wall, 1)}
        self.results.append(result)
        verdict = "ok" if result["p99_ms"] < GOAL_MS else f"OVER {GOAL_MS:g} ms"
        print(f"  {name:<44} p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
              f"max {result['max_ms']:7.2f} ms  {result['per_s']:7.1f} req/s "
              f"(x{self.args.concurrency})  {verdict}", flush=True)

    def get(self, path: str, params: dict[str, Any] | None = None,
            then: Callable[[dict[str, Any]], None] | None = None) -> Callable[[], Awaitable[None]]:
        """A call of `GET path` that must answer 200 (and hands the body to `then`)."""

        async def call() -> None:
            r = await self.http.get(path, params=params)
            if r.status_code != 200:
                raise SystemExit(f"GET {path} {params}: {r.status_code} {r.text[:300]}")
            if then is not None:
                then(r.json())

        return call

    def walk(self, path: str, key: str, params: dict[str, Any], count: int
             ) -> list[Callable[[], Awaitable[None]]]:
        """`count` calls that page through a list from its start, each following the
        previous one's `nextCursor` (back to the start at the end of the list)."""
        state: dict[str, str | None] = {"cursor": None}

        def step() -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                query = dict(params, limit=PAGE)
                if state["cursor"]:
                    query["cursor"] = state["cursor"]
                r = await self.http.get(path, params=query)
                if r.status_code != 200:
                    raise SystemExit(f"GET {path} {query}: {r.status_code} {r.text[:300]}")
                body = r.json()
                if body["nextCursor"] is not None and len(body[key]) != PAGE:
                    raise SystemExit(f"GET {path}: a page of {len(body[key])}, not {PAGE}")
                state["cursor"] = body["nextCursor"]

            return call

        return [step() for _ in range(count)]


# Sections -------------------------------------------------------------------------------------


async def section_read(b: Bench) -> None:
    """The read API's lists over HTTP, pages of 50."""
    n, org = b.args.requests, b.org
    rng = random.Random(1)
    print(f"read API, pages of {PAGE} ({n} requests each):")
    await b.measure("(for comparison: GET /api/whatsapp/settings)", [
        b.get(f"/api/whatsapp/settings/{org}") for _ in range(n)])
    clients = f"/api/whatsapp/clients/{org}"
    await b.measure("clients, paging on (newest first)", b.walk(clients, "clients", {}, n))
    await b.measure("clients, paging on (oldest first)",
                    b.walk(clients, "clients", {"order": "oldest"}, n))
    await b.measure("clients by status, paging on",
                    b.walk(clients, "clients", {"status": "SOLD"}, n))
    await b.measure("clients by language, paging on",
                    b.walk(clients, "clients", {"language": "ky"}, n))
    await b.measure("clients by name (contained), paging on",
                    b.walk(clients, "clients", {"name": "gulnara"}, n))
    recent = (START + timedelta(minutes=len(b.clients) // 2)).isoformat()
    await b.measure("clients updated since (half), paging on",
                    b.walk(clients, "clients", {"updatedSince": recent}, n))
    await b.measure("clients by phone", [
        b.get(clients, {"phone": f"+99670{rng.randrange(len(b.clients)):07d}"})
        for _ in range(n)])
    await b.measure("a client with its conversations", [
        b.get(f"{clients}/{rng.choice(b.clients)}") for _ in range(n)])
    await b.measure("a client's status history", [
        b.get(f"{clients}/{rng.choice(b.clients)}/status-history") for _ in range(n)])
    conversations = f"/api/whatsapp/conversations/{org}"
    await b.measure("a conversation (with its answer times)", [
        b.get(f"{conversations}/{rng.choice(b.conversations)}") for _ in range(n)])
    await b.measure("messages of a conversation (newest first)", [
        b.get(f"{conversations}/{rng.choice(b.conversations)}/messages", {"limit": PAGE})
        for _ in range(n)])
    await b.measure("messages of a conversation (oldest first)", [
        b.get(f"{conversations}/{rng.choice(b.conversations)}/messages",
              {"limit": PAGE, "order": "oldest"}) for _ in range(n)])
    long = f"{conversations}/{b.long_conversation}/messages"
    await b.measure(f"messages, paging on in one of {b.args.long}",
                    b.walk(long, "messages", {}, n))
    await b.measure("import runs", [b.get(f"/api/whatsapp/import/{org}/runs")
                                    for _ in range(n)])


async def section_feed(b: Bench) -> None:
    """Pages of 50 of the change feed."""
    n = b.args.requests
    rng = random.Random(2)
    print(f"change feed, pages of {PAGE} ({b.changes} entries; {n} requests each):")

    def page(after: int) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            found = await changes_repo.page(b.db, organization_id=b.org, after=after,
                                            limit=PAGE)
            if len(found) != PAGE:
                raise SystemExit(f"changes.page after {after}: {len(found)} entries")

        return call

    await b.measure("changes.page (the repository call)",
                    [page(rng.randrange(b.changes - PAGE)) for _ in range(n)])
    if not b.serves_feed:
        print("  GET /api/whatsapp/changes/{org}: not served by this daemon; not measured")
        return
    await b.measure("GET /api/whatsapp/changes/{org}", [
        b.get(f"/api/whatsapp/changes/{b.org}",
              {"after": rng.randrange(b.changes - PAGE), "limit": PAGE}) for _ in range(n)])


SECTIONS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "read": section_read,
    "feed": section_feed,
}


async def print_plans(b: Bench) -> None:
    """The plan of each read query at this size."""
    explaining = Explaining(b.db)
    client, conversation = b.clients[len(b.clients) // 2], b.long_conversation
    page = await read_repo.messages(b.db, organization_id=b.org, conversation_id=conversation,
                                    order="newest", limit=500)
    deep = page.rows[-1]
    calls: list[tuple[str, Awaitable[Any]]] = [
        ("clients", read_repo.clients(explaining, organization_id=b.org, order="newest",
                                      limit=PAGE)),
        ("clients by name", read_repo.clients(explaining, organization_id=b.org,
                                              order="newest", limit=PAGE, name="gulnara")),
        ("clients by status", read_repo.clients(explaining, organization_id=b.org,
                                                order="oldest", limit=PAGE, status="SOLD")),
        ("clients updated since", read_repo.clients(
            explaining, organization_id=b.org, order="newest", limit=PAGE,
            updated_since=START + timedelta(minutes=len(b.clients) - 100))),
        ("a client's conversations", read_repo.conversations_of(explaining,
                                                                client_id=client)),
        ("messages, a deep page", read_repo.messages(
            explaining, organization_id=b.org, conversation_id=conversation, order="newest",
            limit=PAGE,
            after=(deep.sent_at, deep.created_at, deep.id))),
        ("answer times", answers_repo.for_conversations(explaining,
                                                        conversation_ids=[conversation])),
        ("status history", read_repo.status_history(
            explaining, organization_id=b.org, client_id=client, order="newest", limit=PAGE)),
        ("changes.page", changes_repo.page(explaining, organization_id=b.org,
                                           after=b.changes // 2, limit=PAGE)),
    ]
    print("plans at this size:")
    for name, call in calls:
        await call
        _, plan = explaining.plans[-1]
        print(f"  {name}:")
        print("\n".join("    " + line for line in describe(plan).splitlines()))


async def run(args: argparse.Namespace, sections: list[str], root: Path
              ) -> list[dict[str, Any]]:
    cluster = EmbeddedPostgres(root / "pg", fsync=not args.no_fsync)
    dsn = await trio.to_thread.run_sync(cluster.start)
    try:
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery, \
                Database.open(dsn, min_size=2, max_size=10) as db:
            await migrate.apply(db)
            org = (await organizations.create(db, name="Bench Tours")).id
            began = time.perf_counter()
            long_count = args.long
            short = (args.messages - long_count) // args.per_conversation
            filled = await fill(db, org, clients=short, per_conversation=args.per_conversation,
                                changes=args.messages)
            long = await fill(db, org, clients=1, per_conversation=long_count, first=short)
            for source in ("whatsapp", "export", "whatsapp"):
                run_ = await imports_repo.create(db, organization_id=org, source=source)
                await imports_repo.finish(db, run_id=run_.id, status="COMPLETED")
            stored = int(await db.fetchval(
                "SELECT count(*) FROM messages WHERE organization_id = $1", org))
            print(f"filled with COPY in {time.perf_counter() - began:.0f} s: {stored} messages, "
                  f"{short + 1} clients and conversations, {filled.changes} feed entries",
                  flush=True)
            # The fill's feed entries are dated from START: kept, not pruned as past retention
            # by the feed service while the bench reads them.
            settings = Settings(daemon=DaemonSettings(state_dir=str(root / "state")),
                                database=DatabaseSettings(dsn=dsn),
                                api=ApiSettings(listen="127.0.0.1:0"),
                                feed=FeedSettings(retention_days=3650))
            ctx = AppContext(settings=settings, db=db)
            addresses, shutdown = await serve_context(nursery, ctx, listen="127.0.0.1:0")
            url = next(a for a in addresses if a.startswith("http://127."))
            token = await issue_token(db, "AGENT", org)
            async with httpx.AsyncClient(base_url=url, timeout=30, headers={
                    "Authorization": f"Bearer {token}"}) as http:
                probe = await http.get(f"/api/whatsapp/changes/{org}",
                                       params={"after": 0, "limit": 1})
                b = Bench(args=args, db=db, org=org, http=http, clients=filled.clients,
                          conversations=filled.conversations,
                          long_conversation=long.conversations[0], changes=filled.changes,
                          serves_feed=probe.status_code == 200)
                if args.plans:
                    await print_plans(b)
                for name in sections:
                    await SECTIONS[name](b)
            shutdown.set()
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(functools.partial(cluster.stop, mode="fast"))
    return b.results


# The control API under load: a server process, a multi-process client ----------------------


CONTROL_SECTIONS = ("hypercorn", "floor", "status", "send")
SERVER_OF_SECTION = {"hypercorn": ("--asgi-floor",), "floor": ("--floor",)}
"""`bench/api_serve.py`'s flags for a section's server (none, the API itself, for the others)."""
CONTROL_GOALS = {"send": (500.0, 50.0), "status": (1500.0, 20.0)}
"""Section -> (requests a second at least, p99 under ms), on this 2-core machine."""


@dataclass
class ControlSetup:
    dsn: str
    orgs: dict[str, list[uuid.UUID]]
    """Transport -> one organization per client (fresh ones for each transport's sends)."""
    tokens: dict[uuid.UUID, str]
    """Organization -> an AGENT token of it."""


async def _prepare_control(dsn: str, clients: int) -> ControlSetup:
    async with trio_asyncio.open_loop(), Database.open(dsn, min_size=1, max_size=2) as db:
        await migrate.apply(db)
        setup = ControlSetup(dsn=dsn, orgs={}, tokens={})
        for transport in ("tcp", "unix"):
            orgs = []
            for i in range(clients):
                org = (await organizations.create(db, name=f"Bench {transport} {i}")).id
                # The highest limits there are: the door counts, and lets every send in.
                await send_settings.update(db, org, SettingsPatch(rate_limiting=RateLimitingPatch(
                    messages_per_minute=MAX_PER_MINUTE, messages_per_hour=MAX_PER_HOUR,
                    messages_per_day=MAX_PER_DAY)))
                orgs.append(org)
                setup.tokens[org] = await issue_token(db, "AGENT", org)
            setup.orgs[transport] = orgs
        return setup


def _postgres_cpu_s(postmaster: int | None) -> float:
    """CPU seconds of the cluster's postmaster and its children (the backends) so far."""
    if postmaster is None:
        return 0.0
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(entry.name) == postmaster or int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            continue
    return total


def _control_jobs(section: str, transport: str, setup: ControlSetup, clients: int
                  ) -> list[Job]:
    """Each client's requests: its own organization, its own token (none on the socket)."""
    jobs = []
    for i, org in enumerate(setup.orgs[transport]):
        token = setup.tokens[org] if transport == "tcp" else None
        if section in ("floor", "hypercorn"):
            requests = [http_request("GET", "/floor")]
            status = 200
        elif section == "status":
            requests = [http_request("GET", f"/api/whatsapp/status/{org}", token=token)]
            status = 200
        else:
            requests = [http_request("POST", "/api/whatsapp/send", token=token, body=json.dumps({
                "organizationId": str(org), "to": f"+9967010{i:02d}{n:03d}",
                "content": f"Hello from the bench, message {n}"}).encode()) for n in range(20)]
            status = 202
        jobs.append(Job(requests=requests, status=status))
    return jobs[:clients]


def _measure_control(section: str, transport: str, addresses: list[str], socket_path: Path,
                     server_pid: int,
                     postmaster: int | None, setup: ControlSetup, args: argparse.Namespace
                     ) -> dict[str, Any]:
    if transport == "tcp":
        host, _, port = next(a for a in addresses if a.startswith("http://127.")
                             ).removeprefix("http://").rpartition(":")
        target = Target(tcp=(host, int(port)))
    else:
        target = Target(unix=str(socket_path))
    jobs = _control_jobs(section, transport, setup, args.clients)
    load_before = load_average()
    server_before, pg_before = process_cpu_s(server_pid), _postgres_cpu_s(postmaster)
    result = run_load(target, jobs, processes=args.client_processes, seconds=args.seconds)
    server_cpu = process_cpu_s(server_pid) - server_before
    pg_cpu = _postgres_cpu_s(postmaster) - pg_before
    lat = result.latencies_ms
    out = {"name": section, "transport": transport, "requests": len(lat),
           "per_s": round(len(lat) / result.wall_s, 1),
           "p50_ms": round(percentile(lat, 0.5), 2), "p99_ms": round(percentile(lat, 0.99), 2),
           "max_ms": round(max(lat), 2),
           "server_cpu_pct": round(100 * server_cpu / result.wall_s, 1),
           "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, len(lat)), 3),
           "postgres_cpu_pct": round(100 * pg_cpu / result.wall_s, 1),
           "client_cpu_pct": round(100 * result.client_cpu_s / result.wall_s, 1),
           "load_before": load_before, "load_after": load_average()}
    goal = CONTROL_GOALS.get(section)
    verdict = ""
    if goal is not None:
        rate, p99 = goal
        met = out["per_s"] >= rate and out["p99_ms"] < p99
        verdict = f"goal >= {rate:g}/s, p99 < {p99:g} ms: " + ("met" if met else "MISSED")
    out["verdict"] = verdict
    print(f"  {section:<10}{transport:<5} {out['per_s']:8.1f} req/s  p50 {out['p50_ms']:6.2f} ms  "
          f"p99 {out['p99_ms']:6.2f} ms  max {out['max_ms']:7.2f} ms  "
          f"CPU: server {out['server_cpu_pct']:5.1f}% "
          f"({out['server_cpu_ms_per_request']:.2f} ms/req), "
          f"postgres {out['postgres_cpu_pct']:5.1f}%, client {out['client_cpu_pct']:5.1f}%  "
          f"load {load_before} -> {out['load_after']}  {verdict}", flush=True)
    return out


def run_control(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    """The control sections: PostgreSQL, the API in a process of its own (`bench/api_serve.py`)
    and the load from `--client-processes` processes with `--clients` connections."""
    cluster = EmbeddedPostgres(root / "pg-control", fsync=not args.no_fsync)
    dsn = cluster.start()
    results: list[dict[str, Any]] = []
    try:
        setup = trio.run(_prepare_control, dsn, args.clients)
        print(f"control API: {args.clients} clients over {args.client_processes} client "
              f"processes, {args.seconds:g} s each; server: Hypercorn in its own process "
              f"(load average at start {load_average()})", flush=True)
        by_server: dict[tuple[str, ...], list[str]] = {}
        for section in (s for s in args.sections if s in CONTROL_SECTIONS):
            by_server.setdefault(SERVER_OF_SECTION.get(section, ()), []).append(section)
        for flags, sections in by_server.items():
            state = root / ("serve" + "".join(flags).replace("--", "-"))
            state.mkdir()
            server = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("api_serve.py")), dsn, str(state)]
                + list(flags)
                + ([f"--profile={args.profile}"] if args.profile and not flags else []),
                stdout=subprocess.PIPE, text=True)
            try:
                assert server.stdout is not None
                line = server.stdout.readline()
                if not line:
                    raise SystemExit("the API server did not start")
                addresses = json.loads(line)["addresses"]
                for section in sections:
                    for transport in args.transports:
                        results.append(_measure_control(section, transport, addresses,
                                                        state / "wad.sock", server.pid, cluster.pid(), setup, args))
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
    finally:
        cluster.stop(mode="fast")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--per-conversation", type=int, default=50)
    parser.add_argument("--long", type=int, default=10_000,
                        help="messages of the one long conversation (part of --messages)")
    parser.add_argument("--requests", type=int, default=300, help="per measurement")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sections", default=",".join([*SECTIONS, *CONTROL_SECTIONS]),
                        type=lambda text: [s for s in text.split(",") if s])
    parser.add_argument("--plans", action="store_true", help="print the queries' plans")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--clients", type=int, default=10,
                        help="control sections: concurrent connections")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="control sections: processes the connections are spread over")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="control sections: how long each measurement runs")
    parser.add_argument("--profile", type=Path,
                        help="control sections: write a cProfile of the API server here")
    parser.add_argument("--transports", default="tcp,unix",
                        type=lambda text: [t for t in text.split(",") if t])
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS and s not in CONTROL_SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}")
    log.configure(fmt="console", level="warning", stream=sys.stderr)
    with scratch_dir("wad-bench-api-") as root:
        results = []
        if any(s in SECTIONS for s in args.sections):
            results += trio.run(run, args, [s for s in args.sections if s in SECTIONS], root)
        if any(s in CONTROL_SECTIONS for s in args.sections):
            results += run_control(args, root)
    over = [r["name"] for r in results if r["p99_ms"] >= GOAL_MS and not r["name"].startswith(
        "(") and r["name"] not in CONTROL_SECTIONS]
    print(f"goal (p99 of a page under {GOAL_MS:g} ms): "
          + ("met by every measurement" if not over else f"missed by {', '.join(over)}"))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
