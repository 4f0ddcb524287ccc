"""Funnel status on labelled two-way conversations, decided as the inbound channel decides it.

    .venv/bin/python bench/status.py [--data tests/data/status/heldout.txt] [--verbose]

Each conversation is replayed one stored message at a time through `wad.evaluation.replay_status`
with the plugin manager wad builds (the bundled detectors in their order; OpenRouter answers only
when configured, so here the heuristic decides): after each message the detectors judge the
conversation so far with the current status carried forward, decisions under
`plugins.status_min_confidence` ignored. Prints the accuracy of the final status (overall, per
language, and for the conversations without giveaway keywords), a confusion table (rows: the
label, columns: the final status) and, with --verbose, each miss with the decisions made.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import trio

from wad import log
from wad.evaluation import DATA, STAGES, load_conversations, replay_status
from wad.plugins import PluginSettings, get_plugin_manager

SHORT = {"NEW_LEAD": "NEW", "QUALIFIED": "QUAL", "WARMED": "WARM", "PROPOSAL_SENT": "PROP",
         "NEGOTIATION": "NEGO", "SOLD": "SOLD", "SERVICE": "SERV", "CLOSED": "CLOS"}


async def run(data: Path, verbose: bool) -> int:
    conversations = load_conversations(data)
    pm = get_plugin_manager(PluginSettings(entry_points=False))
    started = time.perf_counter()
    replays = [await replay_status(pm, conversation) for conversation in conversations]
    elapsed = time.perf_counter() - started
    messages = sum(len(c.messages) for c in conversations)

    right = [r.final == c.stage for c, r in zip(conversations, replays, strict=True)]
    print(f"{data.name}: {len(conversations)} conversations, {messages} messages; "
          f"{elapsed * 1000 / messages:.2f} ms per message processed")
    print(f"right final status: {sum(right)} of {len(right)} ({sum(right) / len(right):.1%})")
    plain = [ok for c, ok in zip(conversations, right, strict=True) if c.plain]
    print(f"  without giveaway keywords: {sum(plain)} of {len(plain)}")
    by_language: dict[str, list[bool]] = defaultdict(list)
    for conversation, ok in zip(conversations, right, strict=True):
        by_language[conversation.language].append(ok)
    print("  per language: " + ", ".join(f"{lang} {sum(oks)}/{len(oks)}"
                                         for lang, oks in sorted(by_language.items())))

    confusion = Counter((c.stage, r.final) for c, r in zip(conversations, replays, strict=True))
    print("\nconfusion (rows: label, columns: final status)")
    print(f"{'':<14}" + "".join(f"{SHORT[s]:>6}" for s in STAGES))
    for truth in STAGES:
        print(f"{truth:<14}" + "".join(f"{confusion[(truth, s)] or '.':>6}" for s in STAGES))

    if verbose:
        for conversation, replay, ok in zip(conversations, replays, right, strict=True):
            if ok:
                continue
            print(f"\n{conversation.id}: labelled {conversation.stage}, ended {replay.final}")
            for decision in replay.changes:
                print(f"  -> {decision.status} ({decision.confidence}) {decision.reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "status" / "heldout.txt")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    log.configure(level="warning")
    return trio.run(run, args.data, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
