"""Time and memory of packing, sealing and restoring a login archive.

    .venv/bin/python bench/archive.py [--mib 64]

Builds a profile whose IndexedDB holds `--mib` MiB (half random, half repetitive, like real
leveldb files) plus a cache that must not be packed, then packs it (copy + deterministic tar.gz),
seals it, and restores it through a temporary folder. Prints each step's time, the sizes, and
the peak of Python's own allocations (tracemalloc) during each step: packing streams through
files, so its peak stays small; sealing and restoring hold the sealed archive once.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from wad.browser import profile as archive

T = TypeVar("T")
MIB = 1 << 20


def build_profile(root: Path, mib: int) -> Path:
    profile = root / "org-bench"
    idb = profile / "Default" / "IndexedDB" / "https_web.whatsapp.com_0.indexeddb.leveldb"
    idb.mkdir(parents=True)
    for n in range(mib):
        data = os.urandom(MIB // 2) + bytes([n % 251]) * (MIB // 2)
        (idb / f"{n:06d}.ldb").write_bytes(data)
    cache = profile / "Default" / "Cache"
    cache.mkdir()
    (cache / "data_1").write_bytes(os.urandom(8 * MIB))
    return profile


def measured(label: str, step: Callable[[], T]) -> T:
    tracemalloc.start()
    started = time.perf_counter()
    result = step()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label:<10} {elapsed:7.2f} s   peak Python memory {peak / MIB:7.1f} MiB")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="IndexedDB size in MiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wad-bench-archive-") as tmp:
        root = Path(tmp)
        profile = build_profile(root, args.mib)
        keys = archive.keyring(root, "bench-secret-" + "x" * 32)
        org = uuid.uuid4()
        work = root / "work"
        work.mkdir()
        packed = measured("pack", lambda: archive.pack_login(profile, work))
        again = archive.pack_login(profile, root / "work")
        sealed = measured("seal", lambda: archive.seal_file(packed.path, keys.current, org))
        target = root / "restored"
        measured("restore", lambda: archive.restore(sealed, keys, org, packed.sha256, target))
        print(f"profile login {args.mib} MiB -> packed {packed.size / MIB:.1f} MiB, sealed "
              f"{len(sealed) / MIB:.1f} MiB; packing twice gives the same digest: "
              f"{again.sha256 == packed.sha256}")


if __name__ == "__main__":
    main()
