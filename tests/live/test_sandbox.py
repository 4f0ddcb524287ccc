"""The browser is sandboxed and holds no secret (issue 17, part 1).

As an unprivileged user (`nobody`, switched to with `setpriv` when the tests run as root), a real
session opened through wad's driver against the simulator runs Chromium with its sandbox: every
renderer is under a seccomp-bpf filter (`Seccomp: 2`) and in user, PID and network namespaces of
its own. As root, a real `wad run` with its embedded PostgreSQL warns that the sandbox is off.
In both, no browser process, no Playwright driver and no PostgreSQL process has a secret in its
`/proc/PID/environ`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio import Process

from tests.support.daemonproc import descendants, start_daemon
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve

pytestmark = pytest.mark.browser

SCRIPT = Path(__file__).resolve().parent.parent / "support" / "sandboxed_session.py"
FILTER = SCRIPT.parent / "syscall_filter.py"
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
    opened: dict[Path, int] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        prefix = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                  "--clear-groups", "--"]
        opened = let_others_through(ROOT, Path(sys.prefix))
    try:
        yield home, prefix
    finally:
        for folder, mode in opened.items():
            os.chmod(folder, mode)
        shutil.rmtree(home, ignore_errors=True)


def let_others_through(*paths: Path) -> dict[Path, int]:
    """Let other users pass through (not list) the folders above `paths`, so that the
    unprivileged user reaches the checkout and its virtual environment wherever they were
    cloned (a fresh clone under a private temp folder, say); answers the modes to restore."""
    changed: dict[Path, int] = {}
    for path in paths:
        for folder in [path, *path.parents]:
            mode = folder.stat().st_mode & 0o7777
            if folder not in changed and not mode & 0o001:
                changed[folder] = mode
                os.chmod(folder, mode | 0o001)
    return changed


@asynccontextmanager
async def unprivileged_session(sim: SimServer, home: Path, prefix: list[str],
                               launcher: list[str]) -> AsyncIterator[tuple[Process, int | None,
                                                                           bytes]]:
    """Run the session script (LAUNCHER + its arguments) as the unprivileged user with every
    secret in its environment; yield (its process, the browser's pid or None when the session
    did not open, what it printed). Closed (killed if need be) at the end of the block."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "LANG": "C.UTF-8",
           **SECRETS, "WAD_DATABASE_URL": DSN}
    proc = await trio.lowlevel.open_process(
        [*prefix, *launcher, str(SCRIPT), sim.url, str(home / "profile"), str(home)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        cwd=home)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        out = b""
        with trio.move_on_after(120):
            while b'{"browser_pid"' not in out or not out.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(4096)
                if not chunk:
                    break
                out += chunk
        line = next((ln for ln in out.splitlines() if ln.startswith(b'{"browser_pid"')), None)
        yield proc, (int(json.loads(line)["browser_pid"]) if line else None), out
    finally:
        with trio.move_on_after(30):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await proc.stdin.send_all(b"close\n")
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def assert_sandboxed(browser: int, uid: int) -> None:
    """The browser runs as UID without --no-sandbox, and every renderer is under seccomp-bpf in
    user, PID and network namespaces of its own (and only those)."""
    assert status(browser)["Uid"].split()[0] == str(uid)
    assert "--no-sandbox" not in cmdline(browser)
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


def _uid(prefix: list[str]) -> int:
    return pwd.getpwnam("nobody").pw_uid if prefix else os.geteuid()


async def test_as_an_unprivileged_user_chromium_is_sandboxed_and_holds_no_secret(
        sim: SimServer, unprivileged_home: tuple[Path, list[str]]) -> None:
    home, prefix = unprivileged_home
    async with unprivileged_session(sim, home, prefix, [sys.executable]) as (proc, browser, out):
        assert browser is not None, f"the session did not open: {out[-4000:]!r}"
        assert_sandboxed(browser, _uid(prefix))
        # (The browser process itself is not under seccomp, by design: it is the one that
        # talks to the network and the disk.)

        # No secret anywhere below the script: Playwright's driver, the browser, its helpers.
        everything = descendants(proc.pid)
        assert browser in everything
        assert any(kind(pid) == "node" for pid in everything)
        assert leaked(everything, {**SECRETS, "WAD_DATABASE_URL": DSN}) == []


def _unit_system_calls() -> set[str]:
    """The system calls the unit's `SystemCallFilter=` allows, groups expanded by
    systemd-analyze."""
    unit = (ROOT / "systemd" / "wad.service").read_text().splitlines()
    [line] = [ln for ln in unit if ln.startswith("SystemCallFilter=")]
    names = line.split("=", 1)[1].split()
    assert not names[0].startswith("~")
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (tests/unit/test_systemd.py installs it)"

    def expand(name: str, seen: set[str]) -> set[str]:
        if not name.startswith("@"):
            return {name}
        if name in seen:
            return set()
        seen.add(name)
        out = subprocess.run([analyze, "syscall-filter", name], capture_output=True,
                             text=True, check=True, timeout=60).stdout
        members = [m.strip() for m in out.splitlines()[1:]
                   if m.strip() and not m.strip().startswith("#")]
        return set().union(*(expand(m, seen) for m in members))

    seen: set[str] = set()
    return set().union(*(expand(name, seen) for name in names))


def _debian_python_with_seccomp() -> str:
    """Debian's python3 with libseccomp's module (installed when missing, as root)."""
    python = "/usr/bin/python3"
    probe = [python, "-c", "import seccomp"]
    if subprocess.run(probe, capture_output=True).returncode != 0 and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "python3-seccomp"],
                       capture_output=True, timeout=600)
    if subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("needs Debian's python3 with python3-seccomp (apt-get install "
                    "python3-seccomp) to apply the unit's system call filter without systemd")
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.skip(f"Debian's python3 is {version}, the tests' Python is "
                    f"{sys.version_info[:2]}: they cannot share the virtualenv's packages")
    return python


async def test_chromium_keeps_its_sandbox_under_the_units_system_call_filter(
        sim: SimServer, unprivileged_home: tuple[Path, list[str]]) -> None:
    """Without systemd as PID 1 here, the unit's `SystemCallFilter=` (with
    `SystemCallErrorNumber=EPERM`) is applied with libseccomp to the session: Chromium starts
    and sandboxes its renderers. Without the two calls the unit adds for Chromium's sandbox
    (`seccomp`, `chroot`) it does not start at all."""
    home, prefix = unprivileged_home
    python = _debian_python_with_seccomp()
    allowed = _unit_system_calls()
    assert {"seccomp", "chroot", "pkey_alloc", "read", "clone3"} <= allowed
    venv_site = next(p for p in sys.path if p.endswith("site-packages"))
    for name, calls in (("unit", allowed), ("without", allowed - {"seccomp", "chroot"})):
        listing = home / f"{name}.txt"
        listing.write_text("\n".join(sorted(calls)) + "\n")
        launcher = [python, str(FILTER), str(listing), venv_site]
        async with unprivileged_session(sim, home, prefix, launcher) as (_proc, browser, out):
            if name == "unit":
                assert browser is not None, f"the session did not open: {out[-4000:]!r}"
                assert status(browser)["Seccomp"] == "2"  # the unit's filter is on
                assert_sandboxed(browser, _uid(prefix))
            else:
                assert browser is None
                assert b"cannot start Chromium" in out, out[-4000:]
        shutil.rmtree(home / "profile", ignore_errors=True)


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
            r = await client.post("/api/whatsapp/connect", json={"organizationId": org["id"]})
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
