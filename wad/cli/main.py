"""`wad`: the one command. `run` is the daemon; most other subcommands talk to the running daemon
over its unix control socket.

The heavy parts (the daemon, the database, the demo, the simulator) are imported by the commands
that run them, so that the commands that only talk to a daemon start quickly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import wad
from wad import config as config_mod
from wad import environment, log
from wad.cli import control as ctl
from wad.cli import imports as import_cli
from wad.cli import send as outbound_cli
from wad.errors import WadError
from wad.supervise import first_leaf


def _cmd_run(args: argparse.Namespace) -> int:
    from wad import daemon

    settings = config_mod.load(args.config)
    # Read once; from here on no program the daemon starts can inherit a secret.
    environment.take_secrets()
    log.configure(fmt=settings.daemon.log_format, level=settings.daemon.log_level)
    return daemon.run(settings)


def _cmd_db_migrate(args: argparse.Namespace) -> int:
    import trio
    import trio_asyncio

    from wad.daemon import prepare_state_dir
    from wad.db.connect import open_database

    settings = config_mod.load(args.config)
    log.configure(fmt=settings.daemon.log_format, level=settings.daemon.log_level)
    prepare_state_dir(settings)

    async def migrate() -> None:
        # open_database applies the migrations and says which it applied.
        async with trio_asyncio.open_loop(), open_database(settings, owner=False, pool_max=1):
            pass

    trio.run(migrate)
    print("database is up to date")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from wad import demo

    return demo.main(as_json=args.json, keep=args.keep)


def _cmd_sim(args: argparse.Namespace) -> int:
    from wad.sim.server import run_standalone

    log.configure(fmt="auto", level="info")
    run_standalone(args.port, args.seed, args.tls_port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wad", description="The WhatsApp daemon of the CRM.")
    parser.add_argument("--version", action="version", version=f"wad {wad.__version__}")
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="configuration file (default: $WAD_CONFIG, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.set_defaults(func=_cmd_run)

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_migrate = db_sub.add_parser("migrate", help="apply the schema migrations")
    db_migrate.set_defaults(func=_cmd_db_migrate)

    demo = sub.add_parser("demo", help="run the demo: embedded database, simulator and daemon")
    demo.add_argument("--json", action="store_true", help="end with one JSON line")
    demo.add_argument("--keep", action="store_true", help="keep the demo's state directory")
    demo.set_defaults(func=_cmd_demo)

    sim = sub.add_parser("sim", help="run the WhatsApp Web simulator alone")
    sim.add_argument("--port", type=int, default=8099)
    sim.add_argument("--seed", type=int, default=None)
    sim.add_argument("--tls-port", type=int, default=None, metavar="PORT",
                     help="also serve HTTPS/WSS there, self-signed (for clients that map "
                          "web.whatsapp.com to the simulator; see docs/simulator.md)")
    sim.set_defaults(func=_cmd_sim)
    add = ctl.register(sub)
    outbound_cli.register(sub, add)  # `wad send`, `wad settings`
    import_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    code = 2
    try:
        return func(args)
    except* WadError as group:
        # Errors from inside nurseries arrive grouped (a bare one too, here): show the first.
        print(f"wad: {first_leaf(group)}", file=sys.stderr)
    except* KeyboardInterrupt:
        code = 130
    return code


if __name__ == "__main__":
    sys.exit(main())
