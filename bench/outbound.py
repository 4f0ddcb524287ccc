"""The outbound limiter: how fast the API takes messages, and how fast they go out against the
configured limit. A whole daemon runs in this process (`wad.daemon.Daemon`: a private PostgreSQL
with fsync on, the API on 127.0.0.1 and its socket, the organization actors) against the
WhatsApp Web simulator in a real Chromium.

    .venv/bin/python bench/outbound.py [--requests 1000] [--clients 10] [--minutes 2]
                                       [--per-minute 20]

It prints:
- API enqueue: `POST /api/whatsapp/send` over HTTP with a bearer token, `--clients` at a time,
  to an organization that is not connected (nothing drains its queue): requests per second and
  latency p50/p99/max;
- send rate: with the limits set high (`--per-minute`, at most 20; hour and day out of the way;
  concurrency 10), a linked organization gets more messages than the run can send, and the
  simulator's own record of the sends is compared with the configured rate and the pacing
  rules: sends per minute over the run's whole minutes (share of the allowed rate used), the
  most any 60 s and any 10 s window held, the shortest, median and longest gap between two
  sends, and the time to the first send.

The simulator, the browser driver and the daemon share one Python process, so on a small
machine the figures are a floor.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from wad import log
from wad.api.context import AppContext
from wad.config import ApiSettings, DaemonSettings, OutboundSettings, Settings, WhatsAppSettings
from wad.daemon import Daemon
from wad.org.outbound.settings import MAX_PER_DAY, MAX_PER_HOUR
from wad.sim.client import SimClient
from wad.sim.model import SimConfig
from wad.sim.server import serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import scratch_dir  # noqa: E402

ACCOUNT = "996555100900"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def most_in_a_window(times: list[float], length: float) -> int:
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= length:
            start += 1
        best = max(best, end - start + 1)
    return best


class Bench:
    def __init__(self, ctx: AppContext, phone: SimClient) -> None:
        self.ctx = ctx
        addresses: list[str] = ctx.services.addresses
        self.tcp = next(a for a in addresses if a.startswith("http://"))
        self.socket = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(ctx.settings.control_socket.absolute())),
            base_url="http://wad", timeout=60)
        self.phone = phone

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        r = await self.socket.request(method, path, **kwargs)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json()

    async def organization(self, name: str, **rate_limiting: int) -> str:
        org: str = (await self.call("POST", "/api/organizations", json={"name": name}))["id"]
        await self.call("PUT", f"/api/whatsapp/settings/{org}",
                        json={"rateLimiting": rate_limiting})
        return org

    async def enqueue_rate(self, requests: int, clients: int) -> None:
        org = await self.organization("Enqueue", messagesPerMinute=20,
                                      messagesPerHour=MAX_PER_HOUR, messagesPerDay=MAX_PER_DAY)
        token = (await self.call("POST", "/api/tokens", json={
            "role": "AGENT", "organizationId": org, "name": "bench"}))["token"]
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        numbers = iter(range(requests))

        async def client() -> None:
            async with httpx.AsyncClient(base_url=self.tcp, timeout=60, headers={
                    "Authorization": f"Bearer {token}"}) as http:
                for i in numbers:
                    began = time.perf_counter()
                    r = await http.post("/api/whatsapp/send", json={
                        "to": f"+9965552{i % 100000:05d}", "content": f"Скидка на тур, {i}"})
                    latencies.append(time.perf_counter() - began)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        began = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(client)
        took = time.perf_counter() - began
        print(f"API enqueue: {requests} requests, {clients} clients at a time, {took:.1f} s",
              flush=True)
        p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
        print(f"  {requests / took:.0f} requests/s; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms; answers {dict(sorted(statuses.items()))}",
              flush=True)

    async def send_rate(self, minutes: int, per_minute: int) -> None:
        org = await self.organization("Send", messagesPerMinute=per_minute,
                                      messagesPerHour=MAX_PER_HOUR,
                                      messagesPerDay=MAX_PER_DAY, concurrency=10)
        await self.phone.create_account(ACCOUNT, "Silk Road Tours")
        await self.call("POST", "/api/whatsapp/connect", json={"organizationId": org})
        while (await self.call("GET", f"/api/whatsapp/status/{org}"))["status"] != \
                "QR_CODE_PENDING":
            await trio.sleep(0.2)
        qr = await self.call("GET", f"/api/whatsapp/qr/{org}")
        await self.phone.scan_qr(ACCOUNT, qr["qrCode"])
        while (await self.call("GET", f"/api/whatsapp/status/{org}"))["status"] != "CONNECTED":
            await trio.sleep(0.2)

        wanted = per_minute * (minutes + 1)
        began = time.time()
        for i in range(wanted):
            await self.call("POST", "/api/whatsapp/send", json={
                "organizationId": org, "to": f"+9967001{i % 100000:05d}",
                "content": f"Здравствуйте! Сообщение {i}"})
        queued_s = time.time() - began
        run_s = minutes * 60.0
        await trio.sleep(max(0.0, run_s - (time.time() - began)) + 5.0)
        sent = await self.phone.sent(ACCOUNT)
        times = sorted(float(m["at"]) for m in sent["messages"] if m["result"] == "OK")
        within = [t for t in times if t < began + run_s]
        twice = [n for n in sent["counts"].values() if n > 1]
        allowed = per_minute * minutes
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        print(f"Send rate: configured {per_minute} a minute (concurrency 10); {wanted} queued "
              f"in {queued_s:.1f} s; measured over {minutes} whole minutes")
        print(f"  {len(within) / minutes:.1f} sends/minute measured: "
              f"{100.0 * len(within) / allowed:.1f}% of the allowed {allowed} "
              f"(goal >= 95%); first send "
              f"{(times[0] - began) if times else float('nan'):.2f} s after the first enqueue; "
              f"sent twice: {len(twice)}")
        print(f"  most in any 60 s window: {most_in_a_window(times, 60.0)} (limit {per_minute}); "
              f"most in any 10 s window: {most_in_a_window(times, 10.0)} (goal <= 5)")
        if gaps:
            print(f"  gaps between sends: min {min(gaps):.2f} s (goal >= 1.5 s), median "
                  f"{statistics.median(gaps):.2f} s, max {max(gaps):.1f} s")

    async def aclose(self) -> None:
        await self.socket.aclose()


async def main_async(args: argparse.Namespace, root: Path) -> None:
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(functools.partial(
            serve, seed=5, config=SimConfig(sync_delay_s=0.3, ack_delays_s=(0.2, 0.4, 0.6))))
        settings = Settings(
            daemon=DaemonSettings(state_dir=str(root), log_level="warning", log_format="json"),
            api=ApiSettings(listen="127.0.0.1:0"),
            whatsapp=WhatsAppSettings(url=sim.url, ready_timeout_s=30.0),
            outbound=OutboundSettings(poll_interval_s=1.0))
        daemon = Daemon(settings)
        ctx: AppContext = await nursery.start(daemon.run)
        async with SimClient(sim.url) as phone:
            bench = Bench(ctx, phone)
            try:
                await bench.enqueue_rate(args.requests, args.clients)
                await bench.send_rate(args.minutes, args.per_minute)
            finally:
                await bench.aclose()
        daemon.shutdown.set()
        await daemon.stopped.wait()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--minutes", type=int, default=2)
    parser.add_argument("--per-minute", type=int, default=20, choices=range(1, 21),
                        metavar="1-20")
    args = parser.parse_args(argv)
    log.configure(fmt="console", level="warning", stream=sys.stderr)
    with scratch_dir("wad-bench-out-") as root:
        trio.run(main_async, args, root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
