"""The browser is sandboxed and holds no secret (issue 17, part 1).

As an unprivileged user (`nobody`, switched to with `setpriv` when the tests run as root), a real
session opened through wad's driver against the simulator runs Chromium with its sandbox: every
renderer is under a seccomp-bpf filter (`Seccomp: 2`) and in user, PID and network namespaces of
its own. As root, a real `wad run` with its embedded PostgreSQL warns that the sandbox is off.
In both, no browser process, no Playwright driver and no PostgreSQL process has a secret in its
`/proc/PID/environ`.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.support.daemonproc import start_daemon
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve

pytestmark = pytest.mark.browser

SCRIPT = Path(__file__).resolve().parent.parent / "support" / "sandboxed_session.py"
ROOT = SCRIPT.parent.parent.parent

# Distinctive values, so that a search cannot miss them or find them by chance.
SECRETS = {
    "WAD_SECRET_KEY": "wad-secret-key-" + uuid.uuid4().hex,
    "WAD_SECRET_KEY_OLD": "wad-old-secret-key-" + uuid.uuid4().hex,
    "OPENROUTER_API_KEY": "sk-or-v1-" + uuid.uuid4().hex,
    "WAD_WEBHOOK_SECRET": "whsec-" + uuid.uuid4().hex,
    "CRM_API_TOKEN": "crm-token-" + uuid.uuid4().hex,  # any other secret-looking variable
}
DSN = "postgresql://wad:pw-" + uuid.uuid4().hex + "@127.0.0.1:1/wad"


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(") ", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    """Every living process below PID."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    """A process's arguments (a sandboxed Chromium process rewrites its own into one string
    joined by spaces: split on those too)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.replace(b"\0", b" ").split()]


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def leaked(pids: list[int], values: dict[str, str]) -> list[str]:
    """`PID (program): NAME` for every secret value found in a process's environment."""
    found = []
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue  # gone meanwhile
        for name, value in values.items():
            if value.encode() in environ:
                found.append(f"{pid} ({kind(pid)}): {name}")
    return found


def kind(pid: int) -> str:
    """Chromium's process type (`browser` for the main one), or the program's name."""
    argv = cmdline(pid)
    for arg in argv:
        if arg.startswith("--type="):
            return arg.split("=", 1)[1]
    if argv and "chromium" in Path(argv[0]).name:
        return "browser"
    return Path(argv[0]).name if argv else "?"


@pytest.fixture
async def sim(nursery: trio.Nursery) -> SimServer:
    return await nursery.start(functools.partial(
        serve, seed=41, config=SimConfig(qr_rotate_s=30.0, sync_delay_s=0.3)))


@pytest.fixture
def unprivileged_home() -> Iterator[tuple[Path, list[str]]]:
    """A folder the unprivileged user owns, and the command prefix that runs as that user
    (nothing when the tests do not run as root)."""
    home = Path(tempfile.mkdtemp(prefix="wad-sbx-", dir="/tmp"))
    os.chmod(home, 0o755)
    prefix: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        prefix = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                  "--clear-groups", "--"]
    try:
        yield home, prefix
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_as_an_unprivileged_user_chromium_is_sandboxed_and_holds_no_secret(
        sim: SimServer, unprivileged_home: tuple[Path, list[str]]) -> None:
    home, prefix = unprivileged_home
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "LANG": "C.UTF-8",
           **SECRETS, "WAD_DATABASE_URL": DSN}
    proc = await trio.lowlevel.open_process(
        [*prefix, sys.executable, str(SCRIPT), sim.url, str(home / "profile"), str(home)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        cwd=home)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        out = b""
        with trio.move_on_after(120):
            while b'{"browser_pid"' not in out or not out.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(4096)
                if not chunk:
                    break
                out += chunk
        line = next((ln for ln in out.splitlines() if ln.startswith(b'{"browser_pid"')), None)
        if line is None:
            with trio.move_on_after(5):
                await proc.wait()
            with trio.move_on_after(1):
                out += await proc.stderr.receive_some(20000)
            pytest.fail(f"the session did not open (exit {proc.returncode}): {out!r}")
        browser = int(json.loads(line)["browser_pid"])
        assert _ppid(browser) is not None

        # The browser runs as the unprivileged user, without --no-sandbox.
        uid = os.geteuid() if not prefix else pwd.getpwnam("nobody").pw_uid
        assert status(browser)["Uid"].split()[0] == str(uid)
        assert "--no-sandbox" not in cmdline(browser)

        # Every renderer is under seccomp-bpf, in namespaces of its own.
        below = descendants(browser)
        renderers = [pid for pid in below if kind(pid) == "renderer"]
        assert renderers, [kind(pid) for pid in below]
        for pid in renderers:
            assert status(pid)["Seccomp"] == "2", (pid, status(pid))
            for ns in ("user", "pid", "net"):
                assert os.readlink(f"/proc/{pid}/ns/{ns}") != \
                    os.readlink(f"/proc/{browser}/ns/{ns}"), (pid, ns)
            # ... and only those: what the unit's RestrictNamespaces=user pid net allows.
            for ns in ("mnt", "ipc", "uts", "cgroup"):
                assert os.readlink(f"/proc/{pid}/ns/{ns}") == \
                    os.readlink(f"/proc/{browser}/ns/{ns}"), (pid, ns)
        # (The browser process itself is not, by design: it is the one that talks to the
        # network and the disk.)

        # No secret anywhere below the script: Playwright's driver, the browser, its helpers.
        everything = descendants(proc.pid)
        assert browser in everything
        assert any(kind(pid) == "node" for pid in everything)
        assert leaked(everything, {**SECRETS, "WAD_DATABASE_URL": DSN}) == []
    finally:
        with trio.move_on_after(30):
            await proc.stdin.send_all(b"close\n")
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_as_root_the_daemon_warns_and_no_browser_or_postgres_holds_a_secret(
        sim: SimServer, state_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the no-sandbox warning is for root; the unprivileged case is above")
    extra = f'[whatsapp]\nurl = "{sim.url}"\nready_timeout_s = 60.0\n'
    # No WAD_DATABASE_URL: the daemon runs its embedded PostgreSQL.
    daemon = await trio.to_thread.run_sync(functools.partial(
        start_daemon, state_dir, env=dict(SECRETS), extra_config=extra))
    try:
        # Logged while starting, before "wad is ready".
        warnings = [line for line in daemon.lines()
                    if "WITHOUT its sandbox" in str(line.get("event"))]
        assert len(warnings) == 1, daemon.log_path.read_text()[-3000:]
        assert warnings[0]["level"] == "warning"
        assert "User=wad" in str(warnings[0]["event"])
        async with daemon.socket_client() as client:
            org = (await client.post("/api/organizations", json={"name": "Sandbox"})).json()
            r = await client.post("/api/whatsapp/connect", json={"organization_id": org["id"]})
            assert r.status_code == 202, r.text
        await daemon.wait_state(org["id"], "QR_CODE_PENDING", timeout=90)

        below = descendants(daemon.proc.pid)
        browsers = [pid for pid in below if kind(pid) == "browser"]
        assert browsers, [kind(pid) for pid in below]
        assert any(kind(pid) == "renderer" for pid in below)
        postmaster = daemon.postgres_pid()
        assert postmaster is not None
        servers = [postmaster, *descendants(postmaster)]
        assert len(servers) > 1  # the postmaster and its background workers
        assert leaked(below + servers, SECRETS) == []
        # The daemon itself no longer holds them where children would inherit them: its
        # children above prove it; its own /proc/PID/environ keeps the kernel's copy.
    finally:
        await trio.to_thread.run_sync(daemon.stop)
