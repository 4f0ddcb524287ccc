"""The administrator's commands: they talk to the running daemon over its unix control socket.

`register(subparsers)` adds `status`, `qr`, `pair`, `connect`, `disconnect`, `logout`, `org`,
`token` and `session` to `wad`. Requests on the socket act as the super admin; the socket's file
mode (0660) decides who may send them. When no daemon answers, every command says so in one line
and exits 1. Every command takes `--json` for output that scripts can read.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import httpx

from wad import config as config_mod
from wad.db.models import ROLES
from wad.errors import WadError

EXIT_OK = 0
EXIT_FAILED = 1

_ENDED = ("ERROR", "LOGGED_OUT", "BANNED")


class CtlError(WadError):
    """A failure to report in one line (exit 1)."""


# Talking to the daemon ----------------------------------------------------------------------


class Daemon:
    """The one HTTP client on the control socket, for every command that talks to the daemon.
    Requests on the socket act as super admin. A failure is a `CtlError` (a `WadError`) with
    the daemon's own message."""

    def __init__(self, socket_path: Path, *, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self._client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)),
                                    base_url="http://wad", timeout=timeout)

    @classmethod
    def probe(cls, socket_path: Path) -> Daemon | None:
        """A client when a daemon answers on the socket, else None."""
        if not socket_path.exists():
            return None
        daemon = cls(socket_path)
        try:
            daemon.request("GET", "/healthz", ok=tuple(range(200, 600)))
        except CtlError:
            daemon.close()
            return None
        return daemon

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, *, json_body: Any = None,
                params: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201, 202)
                ) -> httpx.Response:
        """Send a request; raise `CtlError` with the daemon's message on failure."""
        try:
            response = self._client.request(method, path, json=json_body, params=params)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise CtlError(self._unreachable(exc)) from None
        except httpx.TimeoutException:
            raise CtlError(f"the daemon on {self.socket_path} did not answer in time") from None
        if response.status_code not in ok:
            raise CtlError(_error_message(response))
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json_body=body, **kwargs).json()

    def _unreachable(self, exc: Exception) -> str:
        text = str(exc)
        if "Permission denied" in text or "Errno 13" in text:
            return (f"permission denied on the control socket {self.socket_path} (run as root "
                    "or as a member of its group)")
        return (f"no wad daemon is answering on {self.socket_path} (is `wad run` running, "
                "with the same configuration?)")


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return str(error["message"])
    except (ValueError, KeyError, TypeError):
        return f"the daemon answered {response.status_code}: {response.text[:200]}"


def resolve_org(daemon: Daemon, ref: str) -> dict[str, Any]:
    """An organization named by id or by its exact name (case-insensitive)."""
    orgs: list[dict[str, Any]] = daemon.get("/api/organizations")["organizations"]
    try:
        wanted = str(uuid.UUID(ref))
    except ValueError:
        matches = [o for o in orgs if o["name"].casefold() == ref.casefold()]
        if len(matches) > 1:
            ids = ", ".join(o["id"] for o in matches)
            raise CtlError(f"several organizations are named {ref!r}; use an id: {ids}") from None
        if not matches:
            raise CtlError(f"no organization named {ref!r} (see `wad org list`)") from None
        return matches[0]
    for org in orgs:
        if org["id"] == wanted:
            return org
    raise CtlError(f"no organization with id {wanted} (see `wad org list`)")


# Output -------------------------------------------------------------------------------------


def _print_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, ensure_ascii=False), file=out or sys.stdout, flush=True)


def _table(headers: list[str], rows: list[list[str]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip(),
              file=out)


def _when(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return value


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# Commands -----------------------------------------------------------------------------------


def cmd_status(daemon: Daemon, args: argparse.Namespace) -> int:
    if args.tree:
        view = daemon.get("/api/tree")
        if args.json:
            _print_json(view)
        else:
            for line in render_daemon_tree(view, names=_org_names(daemon)):
                print(line)
        return EXIT_OK
    if args.org:
        org = resolve_org(daemon, args.org)
        status = daemon.get(f"/api/whatsapp/status/{org['id']}")
        if args.json:
            _print_json({"name": org["name"], **status})
            return EXIT_OK
        print(f"{org['name']} ({org['id']})")
        for label, key in [("state", "status"), ("linked number", "phoneNumber"),
                           ("push name", "pushName"), ("last error", "errorMessage"),
                           ("node", "nodeId")]:
            print(f"  {label:<16} {status[key] or '-'}")
        print(f"  {'should run':<16} {'yes' if status['shouldRun'] else 'no'}")
        for label, key in [("last connected", "lastConnectedAt"),
                           ("last disconnected", "lastDisconnectedAt"),
                           ("updated", "updatedAt")]:
            print(f"  {label:<16} {_when(status[key])}")
        if status["sendingPaused"]:
            print(f"  {'sending paused':<16} {status['sendingPausedReason'] or 'yes'}")
        if status.get("parkedMessages"):
            print(f"  {'parked messages':<16} {status['parkedMessages']} (processing failed "
                  f"repeatedly; latest error: {_short(status.get('lastParkedError'))})")
        return EXIT_OK
    listing = daemon.get("/api/whatsapp/status")["organizations"]
    if args.json:
        _print_json(listing)
        return EXIT_OK
    if not listing:
        print("no organizations yet (create one with `wad org create NAME`)")
        return EXIT_OK
    _table(["ORGANIZATION", "ID", "STATE", "NUMBER", "PARKED", "LAST ERROR"],
           [[_short(o["name"], 30), o["organizationId"], o["status"], o["phoneNumber"] or "-",
             str(o.get("parkedMessages", 0)), _short(o["errorMessage"])] for o in listing])
    return EXIT_OK


def _org_names(daemon: Daemon) -> dict[str, str]:
    return {o["id"]: o["name"] for o in daemon.get("/api/organizations")["organizations"]}


def render_daemon_tree(view: dict[str, Any], names: dict[str, str]) -> list[str]:
    """`GET /api/tree` as lines: the daemon's supervisor, then each running organization with
    its session state and its supervisor's children."""
    lines = [f"node {view['node']}  wad {view['version']}  up {view['uptimeS']:.0f}s"]
    if view.get("daemon"):
        lines.extend(render_tree(view["daemon"]))
    running = view.get("organizations", {}).get("organizations", {})
    if not running:
        lines.append("no organization is running on this daemon")
    for org_id, org in running.items():
        extra = "".join(f"  {_words(k)} {v}" for k, v in org.items()
                        if k not in ("state", "supervisor") and not isinstance(v, dict | list))
        lines.append(f"organization {names.get(org_id, '?')} ({org_id})  session "
                     f"{org.get('state', '?')}{extra}")
        if isinstance(org.get("supervisor"), dict):
            lines.extend(render_tree(org["supervisor"], "   "))
    return lines


def _words(key: str) -> str:
    """A camelCase key as words: `browserStarts` is "browser starts"."""
    return re.sub(r"[A-Z]", lambda m: " " + m.group().lower(), key)


def render_tree(node: dict[str, Any], prefix: str = "") -> list[str]:
    """A supervisor's `tree()` as indented lines: children with state, restarts and the last
    restart's reason."""
    head = (f"{prefix}{node.get('name', '?')} [{node.get('strategy', '?')}] "
            f"restarts {node.get('restarts', 0)}")
    lines = [head]
    children = node.get("children", [])
    for i, child in enumerate(children):
        last = i == len(children) - 1
        branch, indent = ("└─ ", "   ") if last else ("├─ ", "│  ")
        text = (f"{child.get('id', '?')}  {child.get('state', '?')}  "
                f"restarts {child.get('restarts', 0)}")
        if child.get("lastRestartReason"):
            text += (f"  last: {_short(child['lastRestartReason'], 70)}"
                     f" at {_when(child.get('lastRestartAt'))}")
        lines.append(prefix + branch + text)
        nested = child.get("supervisor")
        if isinstance(nested, dict):
            lines.extend(render_tree(nested, prefix + indent))
    return lines


def cmd_qr(daemon: Daemon, args: argparse.Namespace) -> int:
    org = resolve_org(daemon, args.org)
    return follow_link(daemon, org, show_qr=True, as_json=args.json, timeout=args.timeout)


def follow_link(daemon: Daemon, org: dict[str, Any], *, show_qr: bool, as_json: bool,
                timeout: float, poll_s: float = 1.0, out: TextIO | None = None) -> int:
    """Poll the session until it is CONNECTED, drawing each new QR; 1 if it ends otherwise."""
    out = out or sys.stdout
    deadline = time.monotonic() + timeout
    shown: str | None = None
    waiting_said = False
    while True:
        status = daemon.get(f"/api/whatsapp/status/{org['id']}")
        state = status["status"]
        if state == "CONNECTED":
            if as_json:
                _print_json({"organizationId": org["id"], "status": state,
                             "phoneNumber": status["phoneNumber"]}, out)
            else:
                print(f"{org['name']} is connected"
                      + (f" as {status['phoneNumber']}" if status["phoneNumber"] else ""),
                      file=out, flush=True)
            return EXIT_OK
        if state in _ENDED or (state == "DISCONNECTED" and not status["shouldRun"]):
            why = f": {status['errorMessage']}" if status["errorMessage"] else ""
            hint = (f" (start it with `wad connect {org['id']}`)"
                    if state in ("DISCONNECTED", "LOGGED_OUT", "ERROR") else "")
            raise CtlError(f"{org['name']} is {state}{why}{hint}")
        if show_qr and state == "QR_CODE_PENDING":
            qr = daemon.get(f"/api/whatsapp/qr/{org['id']}")
            if qr["qrCode"] and qr["qrCode"] != shown:
                shown = qr["qrCode"]
                _draw(org, qr, as_json=as_json, out=out)
        elif not waiting_said and not as_json:
            print(f"{org['name']}: {state}, waiting…", file=out, flush=True)
            waiting_said = True
        if time.monotonic() >= deadline:
            raise CtlError(f"gave up after {timeout:.0f}s; {org['name']} is still {state}")
        time.sleep(poll_s)


def _draw(org: dict[str, Any], qr: dict[str, Any], *, as_json: bool, out: TextIO) -> None:
    import segno

    if as_json:
        _print_json({"organizationId": org["id"], "status": qr["status"],
                     "qrCode": qr["qrCode"], "issuedAt": qr["issuedAt"]}, out)
        return
    if out.isatty():
        out.write("\x1b[2J\x1b[H")  # redraw in place: a rotated code replaces the old one
    else:
        print("", file=out)
    print(f"{org['name']}: scan with WhatsApp on the phone (Settings > Linked devices > "
          f"Link a device). Issued {_when(qr['issuedAt'])}; it changes about every 20 s.",
          file=out)
    segno.make(qr["qrCode"], error="m").terminal(out=out, compact=True)
    out.flush()


def cmd_pair(daemon: Daemon, args: argparse.Namespace) -> int:
    org = resolve_org(daemon, args.org)
    answer = daemon.post(f"/api/whatsapp/pairing-code/{org['id']}",
                         {"phoneNumber": args.phone})
    code = answer["code"]
    if args.json:
        _print_json(answer)
    else:
        shown = f"{code[:4]}-{code[4:]}" if len(code) == 8 else code
        print(f"pairing code for {org['name']} ({answer['phoneNumber']}): {shown}")
        print("on the phone: Settings > Linked devices > Link a device > Link with phone "
              "number instead, then type the code")
    if args.wait:
        return follow_link(daemon, org, show_qr=False, as_json=args.json, timeout=args.timeout)
    return EXIT_OK


def _session_action(action: str, daemon: Daemon, args: argparse.Namespace) -> int:
    org = resolve_org(daemon, args.org)
    if action == "connect":
        result = daemon.post("/api/whatsapp/connect", {"organizationId": org["id"]})
    else:
        result = daemon.post(f"/api/whatsapp/{action}/{org['id']}")
    if args.json:
        _print_json(result)
    else:
        follow = (f" (follow with `wad qr {org['id']}`)"
                  if action == "connect" and result["status"] != "CONNECTED" else "")
        print(f"{org['name']}: {result['status']}{follow}")
    return EXIT_OK


def cmd_org_create(daemon: Daemon, args: argparse.Namespace) -> int:
    org = daemon.post("/api/organizations", {"name": args.name})
    if args.json:
        _print_json(org)
    else:
        print(org["id"])
    return EXIT_OK


def cmd_org_list(daemon: Daemon, args: argparse.Namespace) -> int:
    orgs = daemon.get("/api/organizations")["organizations"]
    if args.json:
        _print_json(orgs)
    elif not orgs:
        print("no organizations yet (create one with `wad org create NAME`)")
    else:
        _table(["ID", "NAME", "CREATED"],
               [[o["id"], _short(o["name"], 50), _when(o["createdAt"])] for o in orgs])
    return EXIT_OK


def cmd_token_create(daemon: Daemon, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"role": args.role, "name": args.name}
    if args.org:
        body["organizationId"] = resolve_org(daemon, args.org)["id"]
    token = daemon.post("/api/tokens", body)
    if args.json:
        _print_json(token)
    else:
        print(token["token"])
        if token["organizationId"]:
            where = f"organization {token['organizationId']}"
        else:
            where = "/metrics only" if token["role"] == "METRICS" else "every organization"
        print(f"{token['role']} token {token['id']} for {where}; it is shown only now, "
              "store it safely", file=sys.stderr)
    return EXIT_OK


def cmd_token_list(daemon: Daemon, args: argparse.Namespace) -> int:
    params = {"organizationId": resolve_org(daemon, args.org)["id"]} if args.org else None
    tokens = daemon.get("/api/tokens", params=params)["tokens"]
    if args.json:
        _print_json(tokens)
    elif not tokens:
        print("no tokens")
    else:
        _table(["ID", "PREFIX", "ROLE", "ORGANIZATION", "NAME", "LAST USED", "REVOKED"],
               [[t["id"], t["prefix"] + "…", t["role"], t["organizationId"] or "(all)",
                 _short(t["name"], 30), _when(t["lastUsedAt"]), _when(t["revokedAt"])]
                for t in tokens])
    return EXIT_OK


def cmd_token_revoke(daemon: Daemon, args: argparse.Namespace) -> int:
    ref = args.token
    try:
        token_id = str(uuid.UUID(ref))
    except ValueError:
        # The prefix that `wad token list` shows (or the whole token) names it too.
        tokens = daemon.get("/api/tokens")["tokens"]
        matches = [t for t in tokens if t["revokedAt"] is None
                   and (ref.startswith(t["prefix"]) or t["prefix"].startswith(ref.rstrip("…")))
                   and len(ref.rstrip("…")) >= 8]
        if len(matches) != 1:
            raise CtlError(f"{'no' if not matches else 'more than one'} active token matches "
                           f"{ref!r}; give its id (see `wad token list`)") from None
        token_id = matches[0]["id"]
    revoked = daemon.request("DELETE", f"/api/tokens/{token_id}").json()
    if args.json:
        _print_json(revoked)
    else:
        print(f"token {revoked['id']} ({revoked['prefix']}…) revoked")
    return EXIT_OK


def cmd_session_backups(daemon: Daemon, args: argparse.Namespace) -> int:
    org = resolve_org(daemon, args.org)
    kept = daemon.get(f"/api/sessions/{org['id']}/backups")
    if args.json:
        _print_json(kept)
        return EXIT_OK
    _print_backups(org, kept)
    return EXIT_OK


def _print_backups(org: dict[str, Any], kept: dict[str, Any]) -> None:
    print(f"{org['name']} ({org['id']})")
    archives = kept["archives"]
    print(f"archive versions in the database: {len(archives)}")
    if archives:
        _table(["  ID", "SIZE", "SHA-256", "CREATED", "KEY", "LAST RESTORED"],
               [[f"  {a['id']}", _size(a["size"]), a["sha256"][:16] + "…",
                 _when(a["createdAt"]), a.get("keyId") or "format 1",
                 _when(a["restoredAt"]) if a.get("restoredAt") else "-"] for a in archives])
    profile = kept["profile"]
    print("live profile: " + (f"{profile['path']} ({_size(profile['size'])}, changed "
                              f"{_when(profile['modifiedAt'])})" if profile else "none"))
    importer = kept.get("importProfile")
    print("import profile: " + (f"{importer['path']} ({_size(importer['size'])}, changed "
                                f"{_when(importer['modifiedAt'])})" if importer else "none"))
    print(f"trash folders: {len(kept['trash'])}")
    for folder in kept["trash"]:
        print(f"  {folder['path']} ({_size(folder['size'])}, {_when(folder['modifiedAt'])})")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def cmd_secret_rotate(daemon: Daemon, args: argparse.Namespace) -> int:
    """Ask the daemon to re-seal the archives batch by batch (each request stays short)."""
    resealed, failed, after_id, key_id = 0, [], 0, ""
    while True:
        batch = daemon.post("/api/secret/rotate", {"afterId": after_id, "limit": 20})
        resealed += batch["resealed"]
        failed += batch["failed"]
        after_id, key_id = batch["lastId"], batch["keyId"]
        if batch["done"]:
            break
    if args.json:
        _print_json({"keyId": key_id, "resealed": resealed, "failed": failed})
    else:
        print(f"re-sealed {resealed} archives under key {key_id}")
        for failure in failed:
            print(f"  archive {failure['archiveId']} (organization "
                  f"{failure['organizationId']}): {failure['error']}")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_audit(daemon: Daemon, args: argparse.Namespace) -> int:
    """One page of the audit trail, newest first."""
    params: dict[str, Any] = {"limit": args.limit}
    if args.org:
        params["organizationId"] = resolve_org(daemon, args.org)["id"]
    if args.before is not None:
        params["before"] = args.before
    page = daemon.get("/api/audit", params=params)
    if args.json:
        _print_json(page)
        return EXIT_OK
    if not page["entries"]:
        print("no audit entries")
        return EXIT_OK
    names = _org_names(daemon)
    _table(["ID", "AT", "ORGANIZATION", "ACTION", "BY", "DETAIL"],
           [[str(e["id"]), _when(e["at"]),
             names.get(e["organizationId"] or "", e["organizationId"] or "-"), e["action"],
             "control socket" if e["actor"] == "socket" else f"token {e['tokenId']}",
             _short(" ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                             for k, v in e["detail"].items()), 60)]
            for e in page["entries"]])
    if page["nextBefore"] is not None:
        print(f"older entries: add --before {page['nextBefore']}")
    return EXIT_OK


def cmd_session_purge(daemon: Daemon, args: argparse.Namespace) -> int:
    org = resolve_org(daemon, args.org)
    if not args.yes:
        kept = daemon.get(f"/api/sessions/{org['id']}/backups")
        _print_backups(org, kept)
        raise CtlError("purging deletes all of the above for good; run again with --yes")
    result = daemon.post(f"/api/sessions/{org['id']}/purge", {"confirm": True})
    if args.json:
        _print_json(result)
    else:
        print(f"{org['name']}: deleted {result['archivesDeleted']} archive versions and "
              f"{len(result['foldersDeleted'])} folders")
        for path in result["foldersDeleted"]:
            print(f"  {path}")
    return EXIT_OK


# Wiring -------------------------------------------------------------------------------------

Command = Callable[[Daemon, argparse.Namespace], int]


def socket_path(args: argparse.Namespace) -> Path:
    """`--socket`, else the configuration's control socket."""
    if getattr(args, "socket", None):
        return Path(args.socket)
    return config_mod.load(getattr(args, "config", None)).control_socket


def _runner(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            daemon = Daemon(socket_path(args))
        except config_mod.ConfigError as exc:
            _fail(str(exc))
        try:
            return command(daemon, args)
        except CtlError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            return 130
        finally:
            daemon.close()

    return run


def _fail(message: str) -> NoReturn:
    print(f"wad: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_FAILED)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]
             ) -> Callable[[Any, str, Command, str], argparse.ArgumentParser]:
    """Add the control commands to `wad`'s subcommands; answers the function that adds one
    more (with `--json` and `--socket`), for the other control commands (`wad send`...)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument("--socket", metavar="PATH", default=None,
                        help="control socket (default: from the configuration)")

    def add(parent: Any, name: str, command: Command, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_text,
                                                            parents=[common])
        parser.set_defaults(func=_runner(command))
        return parser

    p = add(sub, "status", cmd_status, "organizations and their WhatsApp sessions")
    p.add_argument("org", nargs="?", metavar="ORG", help="one organization (id or name)")
    p.add_argument("--tree", action="store_true", help="the live supervision tree")

    p = add(sub, "qr", cmd_qr, "draw the QR code in the terminal until the session is linked")
    p.add_argument("org", metavar="ORG")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")

    p = add(sub, "pair", cmd_pair, "link by phone number: show the pairing code")
    p.add_argument("org", metavar="ORG")
    p.add_argument("--phone", required=True, metavar="NUMBER",
                   help="the WhatsApp account's number, e.g. +996555123456")
    p.add_argument("--wait", action="store_true", help="then wait until linked")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")

    for action, text in [("connect", "start an organization's WhatsApp session"),
                         ("disconnect", "stop the session, keeping the login"),
                         ("logout", "unlink the device from WhatsApp (profile kept aside)")]:
        p = add(sub, action, _bind(action), text)
        p.add_argument("org", metavar="ORG")

    org = sub.add_parser("org", help="organizations")
    org_sub = org.add_subparsers(dest="org_command", required=True, metavar="ACTION")
    p = add(org_sub, "create", cmd_org_create, "create an organization; prints its id")
    p.add_argument("name", metavar="NAME")
    add(org_sub, "list", cmd_org_list, "list organizations")

    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = add(token_sub, "create", cmd_token_create, "create a token; prints it once")
    p.add_argument("--org", metavar="ORG",
                   help="the organization (not for SUPER_ADMIN or METRICS)")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--name", default="", help="what the token is for")
    p = add(token_sub, "list", cmd_token_list, "list tokens (never the tokens themselves)")
    p.add_argument("--org", metavar="ORG")
    p = add(token_sub, "revoke", cmd_token_revoke, "revoke a token; it stops working at once")
    p.add_argument("token", metavar="ID", help="the token's id (or its prefix)")

    session = sub.add_parser("session", help="kept login data")
    session_sub = session.add_subparsers(dest="session_command", required=True,
                                         metavar="ACTION")
    p = add(session_sub, "backups", cmd_session_backups,
            "archive versions and trash folders kept for an organization")
    p.add_argument("org", metavar="ORG")
    p = add(session_sub, "purge", cmd_session_purge,
            "delete an organization's kept login data (the only way it is ever deleted)")
    p.add_argument("org", metavar="ORG")
    p.add_argument("--yes", action="store_true", help="really delete")

    p = add(sub, "audit", cmd_audit,
            "the audit trail: settings, tokens, connects, logouts and purges, by whom and when")
    p.add_argument("org", nargs="?", metavar="ORG", help="one organization (default: all)")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="entries (1-500)")
    p.add_argument("--before", type=int, default=None, metavar="ID",
                   help="older entries than this id (the page cursor)")

    secret = sub.add_parser("secret", help="the archive key")
    secret_sub = secret.add_subparsers(dest="secret_command", required=True, metavar="ACTION")
    add(secret_sub, "rotate", cmd_secret_rotate,
        "re-seal every login archive under the daemon's current WAD_SECRET_KEY")
    return add


def _bind(action: str) -> Command:
    def command(daemon: Daemon, args: argparse.Namespace) -> int:
        return _session_action(action, daemon, args)

    return command
