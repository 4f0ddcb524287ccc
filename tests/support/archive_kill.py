"""Run by tests: a restore that is killed halfway. Restores one archive (a file) into a profile
folder, but stops after the first unpacked file, prints its path and waits to be killed.

    python -m tests.support.archive_kill STATE_DIR ORG_ID SHA256_HEX ARCHIVE_FILE TARGET
(the key: `WAD_SECRET_KEY` when set, else STATE_DIR/secret.key)."""

from __future__ import annotations

import os
import sys
import tarfile
import time
import uuid
from pathlib import Path

from wad.browser import profile as archive


def main() -> None:
    state_dir, org, sha, blob, target = sys.argv[1:6]
    extract = archive._extract_member

    def extract_then_hang(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
        extract(tar, member, dest)
        if member.isfile():
            print(dest / member.name, flush=True)
            time.sleep(600)  # killed here

    archive._extract_member = extract_then_hang
    keys = archive.keyring(Path(state_dir), os.environ.get("WAD_SECRET_KEY", ""))
    archive.restore(Path(blob).read_bytes(), keys, uuid.UUID(org), bytes.fromhex(sha),
                    Path(target))


if __name__ == "__main__":
    main()
