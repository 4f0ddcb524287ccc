"""The administrator's sending commands, over the control socket like the rest of `wad`:

    wad send ORG --to NUMBER --text TEXT [--priority N] [--key KEY] [--wait]
    wad send resume ORG
    wad send cancel ID
    wad settings ORG [--set KEY=VALUE ...]

`wad send` queues one message (the daemon sends it within the organization's limits; `--wait`
follows it until WhatsApp confirmed or it failed). `wad send resume` closes the circuit breaker
after a ban or too many failures. `wad send cancel` cancels a message still queued (its id is
the one `wad send` printed). `wad settings` shows an organization's limits and bulk rules,
and changes some with `--set rateLimiting.messagesPerMinute=15` (or just
`messagesPerMinute=15`; values are JSON: `true`, `20`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from wad.cli import control as ctl
from wad.cli.control import EXIT_FAILED, EXIT_OK, CtlError, Daemon, resolve_org
from wad.org.outbound.settings import RateLimiting, Safety

_DONE = ("SENT", "DELIVERED", "READ")
# The settings' keys as the API names them (the CRM's names), from the settings themselves.
_FIELDS = {"rateLimiting": RateLimiting.__struct_encode_fields__,
           "safety": Safety.__struct_encode_fields__}
_GROUPS = tuple(_FIELDS)

Add = Callable[[Any, str, Callable[[Daemon, argparse.Namespace], int], str],
               argparse.ArgumentParser]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], add: Add) -> None:
    """Add `send` and `settings` to `wad`'s subcommands (`add` is `wad.cli.control`'s helper)."""
    p = add(sub, "send", cmd_send,
            "queue a message (`send ORG --to N --text T`), `send resume ORG` or "
            "`send cancel ID`")
    p.usage = ("wad send ORG --to NUMBER --text TEXT [--priority N] [--key KEY] [--wait]\n"
               "       wad send resume ORG\n"
               "       wad send cancel ID")
    p.add_argument("target", nargs="+", metavar="ORG",
                   help="the organization (id or name); or `resume ORG` to resume sending "
                   "after a ban or too many failures; or `cancel ID` to cancel a queued "
                   "message")
    p.add_argument("--to", metavar="NUMBER", help="the client's number, e.g. +996555123456")
    p.add_argument("--text", metavar="TEXT", help="what to send (1-4096 characters)")
    p.add_argument("--priority", type=int, default=1, metavar="N",
                   help="1 normal (default), 5 agent, 10 urgent")
    p.add_argument("--key", metavar="KEY",
                   help="idempotency key: running the command again queues nothing new")
    p.add_argument("--wait", action="store_true",
                   help="follow the message until WhatsApp confirmed it (exit 0) or it failed "
                   "(exit 1)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")

    p = add(sub, "settings", cmd_settings, "show or change an organization's sending limits")
    p.add_argument("org", metavar="ORG")
    p.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. rateLimiting.messagesPerMinute=15 or enableMassSending=true "
                   "(repeatable)")


def cmd_send(daemon: Daemon, args: argparse.Namespace) -> int:
    if args.target[0] == "resume" and len(args.target) == 2:
        return _resume(daemon, args.target[1], as_json=args.json)
    if args.target[0] == "cancel" and len(args.target) == 2:
        return _cancel(daemon, args.target[1], as_json=args.json)
    if len(args.target) != 1:
        raise CtlError("give one organization: `wad send ORG --to NUMBER --text TEXT`, "
                       "`wad send resume ORG` or `wad send cancel ID`")
    if not args.to or args.text is None:
        raise CtlError("`wad send ORG` needs --to NUMBER and --text TEXT")
    org = resolve_org(daemon, args.target[0])
    body: dict[str, Any] = {"organizationId": org["id"], "to": args.to,
                            "content": args.text, "priority": args.priority}
    if args.key:
        body["idempotencyKey"] = args.key
    queued = daemon.post("/api/whatsapp/send", body)
    if args.json:
        ctl._print_json(queued)
    elif queued["created"]:
        print(f"queued {queued['id']} for {queued['to']} ({org['name']}, priority "
              f"{queued['priority']})")
    else:
        print(f"already queued with that key: {queued['id']} ({queued['status']})")
    if args.wait:
        return _follow(daemon, queued["id"], as_json=args.json, timeout=args.timeout)
    return EXIT_OK


def _follow(daemon: Daemon, message_id: str, *, as_json: bool, timeout: float,
            poll_s: float = 0.5) -> int:
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        state = daemon.get(f"/api/whatsapp/messages/{message_id}")
        status = state["status"]
        if status != said and not as_json:
            detail = f": {state['lastError']}" if state["lastError"] else ""
            print(f"{status} (attempt {state['attempts']}){detail}", flush=True)
            said = status
        if status in _DONE or status in ("FAILED", "CANCELLED", "EXPIRED"):
            if as_json:
                ctl._print_json(state)
            return EXIT_OK if status in _DONE else EXIT_FAILED
        if time.monotonic() >= deadline:
            raise CtlError(f"gave up after {timeout:.0f}s; the message is still {status} "
                           f"(see `wad settings` for the limits and `wad status` for the "
                           "session)")
        time.sleep(poll_s)


def _resume(daemon: Daemon, ref: str, *, as_json: bool) -> int:
    org = resolve_org(daemon, ref)
    answer = daemon.post(f"/api/whatsapp/send/resume/{org['id']}")
    if as_json:
        ctl._print_json(answer)
    elif answer["wasPaused"]:
        print(f"{org['name']}: sending resumed (it was paused: {answer['previousReason']})")
    else:
        print(f"{org['name']}: sending was not paused")
    return EXIT_OK


def _cancel(daemon: Daemon, message_id: str, *, as_json: bool) -> int:
    answer = daemon.request("DELETE", f"/api/whatsapp/messages/{message_id}").json()
    if as_json:
        ctl._print_json(answer)
    else:
        print(f"cancelled {answer['id']} (to {answer['to']}); it will not be sent")
    return EXIT_OK


def parse_change(text: str) -> tuple[str, str, Any]:
    """`rateLimiting.messagesPerMinute=15` (or `messagesPerMinute=15`) -> (group, key, 15)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise CtlError(f"--set {text!r}: expected KEY=VALUE, e.g. "
                       "rateLimiting.messagesPerMinute=15")
    key = key.strip()
    group, dot, name = key.rpartition(".")
    if dot:
        if group not in _GROUPS:
            raise CtlError(f"--set {key}: the group is rateLimiting or safety")
    else:
        groups = [g for g, names in _FIELDS.items() if name in names]
        if not groups:
            known = ", ".join(f"{g}.{n}" for g, names in _FIELDS.items() for n in names)
            raise CtlError(f"--set {key}: unknown setting (known: {known})")
        group = groups[0]
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # the daemon says what is wrong with it
    return group, name, value


def cmd_settings(daemon: Daemon, args: argparse.Namespace) -> int:
    org = resolve_org(daemon, args.org)
    path = f"/api/whatsapp/settings/{org['id']}"
    if args.changes:
        patch: dict[str, dict[str, Any]] = {}
        for change in args.changes:
            group, name, value = parse_change(change)
            patch.setdefault(group, {})[name] = value
        current = daemon.request("PUT", path, json_body=patch).json()
    else:
        current = daemon.get(path)
    if args.json:
        ctl._print_json(current)
        return EXIT_OK
    print(f"{org['name']} ({org['id']})")
    for group in _GROUPS:
        for name, value in current[group].items():
            shown = json.dumps(value) if isinstance(value, bool) else str(value)
            print(f"  {group + '.' + name:<36} {shown}")
    return EXIT_OK
