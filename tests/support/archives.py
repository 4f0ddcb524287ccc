"""Login archive test helpers: keys, a fake Chromium profile, a restore killed halfway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wad.db.repo import sessions as sessions_repo

KEY = "archive-test-key-" + "0123456789abcdef" * 2
NEW_KEY = "archive-test-new-key-" + "fedcba9876543210" * 2
ROOT = Path(__file__).resolve().parent.parent.parent


def make_profile(profile: Path, login: bytes = b"LOGIN-DEVICE-KEY") -> Path:
    idb = profile / "Default" / "IndexedDB" / "https_web.whatsapp.com_0.indexeddb.leveldb"
    idb.mkdir(parents=True, exist_ok=True)
    (idb / "000003.log").write_bytes(login * 50)
    (idb / "LOCK").write_bytes(b"")
    (idb / "LOG").write_bytes(b"leveldb text log")
    ls = profile / "Default" / "Local Storage" / "leveldb"
    ls.mkdir(parents=True, exist_ok=True)
    (ls / "000005.ldb").write_bytes(b"local-storage-bytes")
    (profile / "Default" / "Cookies").write_bytes(b"sqlite cookies")
    (profile / "Default" / "Cache").mkdir(exist_ok=True)
    (profile / "Default" / "Cache" / "big").write_bytes(b"x" * 1000)
    return profile


@contextmanager
def killed_restore(state_dir: Path, org: uuid.UUID, row: sessions_repo.SessionArchive,
                    target: Path, env: dict[str, str]) -> Iterator[Path]:
    """Start a restore in another process, kill it (SIGKILL) after its first unpacked file;
    answer that file's path."""
    blob = state_dir / "archive.bin"
    blob.write_bytes(row.archive)
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.archive_kill", str(state_dir), str(org), row.sha256.hex(),
         str(blob), str(target)],
        cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, **env})
    try:
        assert child.stdout is not None
        written = Path(child.stdout.readline().decode().strip())  # blocks until halfway
        assert written.is_file()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        yield written
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        blob.unlink()
