"""The private PostgreSQL cluster that wad runs when no DSN is configured.

It lives under `STATE_DIR/pg`, listens on a unix socket only (inside its data directory), is
created on first start, reused afterwards, and stopped on exit. As root, the server programs run
as the `postgres` user through `runuser` (initdb refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from wad import environment
from wad.errors import EmbeddedPostgresError

INSTALL_HINT = (
    "no PostgreSQL server programs found (initdb, pg_ctl); install them with "
    "`apt-get install postgresql`, or set database.postgres_bindir, "
    "or configure a database with WAD_DATABASE_URL"
)
DATABASE = "wad"
SERVER_USER = "postgres"


def process_alive(pid: int) -> bool:
    """True when `pid` runs (a zombie that no one reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def find_bindir(configured: str = "") -> Path:
    """Where `initdb` and `pg_ctl` live; raises `EmbeddedPostgresError` saying what to install."""
    candidates: list[Path] = []
    if configured:
        candidates.append(Path(configured))
    else:
        pg_config = shutil.which("pg_config")
        if pg_config:
            try:
                out = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
                ).stdout.strip()
                candidates.append(Path(out))
            except (OSError, subprocess.SubprocessError):
                pass
        candidates.extend(
            Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        )
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    where = f" in {configured}" if configured else ""
    raise EmbeddedPostgresError(INSTALL_HINT.replace("found", f"found{where}", 1))


class EmbeddedPostgres:
    """A private cluster in `data_dir`. `start()` answers the DSN; `stop()` leaves no process."""

    def __init__(self, data_dir: Path, *, bindir: str = "", fsync: bool = True) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.bindir_setting = bindir
        self.fsync = fsync
        self._as_root = os.geteuid() == 0

    @property
    def socket_dir(self) -> Path:
        return self.data_dir

    @property
    def dsn(self) -> str:
        return f"postgresql://{self._user()}@/{DATABASE}?host={self.socket_dir}"

    def _user(self) -> str:
        return SERVER_USER if self._as_root else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if self._as_root:
            args = ["runuser", "-u", SERVER_USER, "--", *args]
        try:
            # The server's own minimal environment: no secret, no DSN.
            result = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                                    env=environment.child_env())
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(f"{Path(args[0]).name} timed out after {timeout}s") from None
        return result

    def _prepare_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        if self._as_root:
            try:
                entry = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise EmbeddedPostgresError(
                    f"running as root needs the `{SERVER_USER}` user (it comes with "
                    "`apt-get install postgresql`)"
                ) from None
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            probe = self._run(["test", "-w", str(self.data_dir)])
            if probe.returncode != 0:
                raise EmbeddedPostgresError(
                    f"the `{SERVER_USER}` user cannot reach {self.data_dir}: every parent "
                    "directory must be searchable by it (chmod o+x), or choose another "
                    "daemon.state_dir"
                )

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def start(self) -> str:
        """Create the cluster if needed, start it, make sure the database exists; answer the DSN."""
        bindir = find_bindir(self.bindir_setting)
        self._prepare_dir()
        if not self.initialized():
            result = self._run(
                [str(bindir / "initdb"), "-D", str(self.data_dir), "-A", "trust", "-U",
                 self._user(), "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
            )
            if result.returncode != 0:
                raise EmbeddedPostgresError(f"initdb failed: {result.stderr.strip()[-2000:]}")
        if self.running():
            # A server left behind by a daemon that was killed: reuse it.
            pass
        else:
            options = f"-k {self.socket_dir} -c listen_addresses='' -c unix_socket_permissions=0700"
            if not self.fsync:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            result = self._run(
                [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60",
                 "-l", str(self.data_dir / "server.log"), "-o", options, "start"]
            )
            if result.returncode != 0:
                log_tail = ""
                log = self.data_dir / "server.log"
                if log.exists():
                    log_tail = log.read_text(errors="replace")[-1500:]
                raise EmbeddedPostgresError(
                    f"pg_ctl start failed: {result.stderr.strip()} {log_tail}".strip()
                )
        self._ensure_database(bindir)
        return self.dsn

    def _ensure_database(self, bindir: Path) -> None:
        psql = bindir / "psql"
        if not psql.is_file():
            psql = Path(shutil.which("psql") or "psql")
        check = self._run(
            [str(psql), "-h", str(self.socket_dir), "-U", self._user(), "-d", "postgres", "-tAc",
             f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"]
        )
        if check.returncode != 0:
            raise EmbeddedPostgresError(f"cannot reach the embedded cluster: {check.stderr.strip()}")
        if check.stdout.strip() != "1":
            made = self._run(
                [str(psql), "-h", str(self.socket_dir), "-U", self._user(), "-d", "postgres",
                 "-c", f"CREATE DATABASE {DATABASE}"]
            )
            if made.returncode != 0:
                raise EmbeddedPostgresError(f"cannot create database: {made.stderr.strip()}")

    def running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        return process_alive(pid)

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server and wait for it to exit; a no-op when it is not running."""
        if not self.running():
            return
        bindir = find_bindir(self.bindir_setting)
        result = self._run(
            [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60", "-m", mode, "stop"]
        )
        if result.returncode != 0 and self.running():
            raise EmbeddedPostgresError(f"pg_ctl stop failed: {result.stderr.strip()}")
