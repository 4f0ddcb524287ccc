"""Paced deliveries for `bench/inbound.py`, driven from a process of its own so that the
client's work (an HTTP call to the simulator per message) is neither counted as the daemon's
CPU nor queued on the daemon's event loop.

    .venv/bin/python bench/sim_paced.py SIM_URL --accounts A [B ...] --count N --rate R
                                        [--senders 50]

Each account's phone delivers COUNT messages, the accounts together RATE a second (each account
starting a slot after the previous one), each message from one of SENDERS numbers new to the
organization. Prints one JSON object: each delivered message's WhatsApp id and the wall-clock
time (`time.time()`) just before the simulator was asked for it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wad.sim.client import SimClient  # noqa: E402


def paced_sender(account: str, i: int, senders: int) -> str:
    """The number of the `i`-th paced message's sender for `account`."""
    return f"99670{int(account[-4:]):03d}{i % senders:04d}"


async def deliver_paced(sim_url: str, accounts: list[str], count: int, rate: float,
                        senders: int) -> dict[str, float]:
    asked: dict[str, float] = {}
    async with SimClient(sim_url) as phone:

        async def one_account(account: str, offset: float) -> None:
            await trio.sleep(offset)
            interval = len(accounts) / rate
            for i in range(count):
                before = time.perf_counter()
                wall = time.time()
                got = await phone.deliver(account, paced_sender(account, i, senders),
                                          f"paced message {i}")
                asked[got["id"]["_serialized"]] = wall
                await trio.sleep(max(0.0, interval - (time.perf_counter() - before)))

        async with trio.open_nursery() as nursery:
            for n, account in enumerate(accounts):
                nursery.start_soon(one_account, account, n / rate)
    return asked


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("sim_url")
    parser.add_argument("--accounts", nargs="+", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--senders", type=int, default=50)
    args = parser.parse_args()
    asked = trio.run(deliver_paced, args.sim_url, args.accounts, args.count, args.rate,
                     args.senders)
    print(json.dumps(asked), flush=True)


if __name__ == "__main__":
    main()
