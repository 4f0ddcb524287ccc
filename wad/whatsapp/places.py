"""English place names of phone numbers from an index on disk, not from memory.

`phonenumbers.geocoder` imports `phonenumbers.geodata`: the place names of every number prefix
in every language phonenumbers knows, about 100 MiB of the daemon's memory and two seconds of
its start (measured: the daemon's PSS 162 MiB with it), for the English names that
`wad.whatsapp.messages.number_context` uses. `geocoder()` answers phonenumbers' own geocoder
module with that data replaced by an index of the English names in a sorted text file, searched
in place through `mmap`: phonenumbers' code runs unchanged (an English lookup skips prefixes
without an English name either way), a lookup reads a few pages from disk.

The index is built once per phonenumbers version, by a child process (which loads the geodata
once and exits), into `$CACHE_DIRECTORY` (systemd's CacheDirectory=), else
`$XDG_CACHE_HOME/wad`, else `~/.cache/wad`. When it cannot be built, the geodata is loaded into
memory as before (logged).
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import threading
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import phonenumbers

from wad import log

BUILD_TIMEOUT_S = 300.0
_lock = threading.Lock()
_build_lock = threading.Lock()
_geocoder: Any = None


def cache_dir() -> Path:
    """Where the index lives (see the module's docstring)."""
    if os.environ.get("CACHE_DIRECTORY"):
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wad"


def index_path(directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / f"phone-places-en-{phonenumbers.__version__}.txt"


def build(path: Path) -> None:
    """Write the index of English place names to PATH (atomically): a header line with the
    longest prefix, then `prefix<TAB>name` lines sorted by prefix. Loads the whole geodata:
    run it in a child process (`python -m wad.whatsapp.places PATH`)."""
    from phonenumbers.geodata import GEOCODE_DATA, GEOCODE_LONGEST_PREFIX

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as out:
            out.write(f"{_HEADER}{GEOCODE_LONGEST_PREFIX}\n")
            for prefix in sorted(p for p, names in GEOCODE_DATA.items() if "en" in names):
                name = GEOCODE_DATA[prefix]["en"]
                if "\t" in name or "\n" in name or not prefix.isdigit():
                    continue  # cannot be a line of the index (none such in phonenumbers' data)
                out.write(f"{prefix}\t{name}\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_HEADER = "#longest_prefix\t"


class EnglishPlaces(Mapping[str, dict[str, str]]):
    """Prefix -> {"en": name}, found by binary search in the memory-mapped index (what
    `phonenumbers.geodata.GEOCODE_DATA` holds, for English only)."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        first = self._map.find(b"\n")
        header = self._map[:first].decode()
        if not header.startswith(_HEADER):
            raise ValueError(f"{path}: not a place index")
        self.longest_prefix = int(header[len(_HEADER):])
        self._start = first + 1

    def _find(self, prefix: str) -> str | None:
        wanted = prefix.encode()
        mm, lo, hi = self._map, self._start, len(self._map)
        while lo < hi:
            mid = (lo + hi) // 2
            line = max(mm.rfind(b"\n", lo, mid) + 1, lo)
            end = mm.find(b"\n", line)
            end = len(mm) if end < 0 else end
            key, _, name = mm[line:end].partition(b"\t")
            if key < wanted:
                lo = end + 1
            elif key > wanted:
                hi = line
            else:
                return name.decode()
        return None

    def __getitem__(self, prefix: str) -> dict[str, str]:
        name = self._find(prefix) if isinstance(prefix, str) else None
        if name is None:
            raise KeyError(prefix)
        return {"en": name}

    def __contains__(self, prefix: object) -> bool:
        return isinstance(prefix, str) and self._find(prefix) is not None

    def __iter__(self) -> Iterator[str]:
        body = self._map[self._start:].decode()
        return iter(line.partition("\t")[0] for line in body.splitlines())

    def __len__(self) -> int:
        return self._map[self._start:].count(b"\n")


def prepare(directory: Path | None = None) -> Path | None:
    """Make sure the index exists (building it in a child process when missing); its path,
    or None when it could not be built."""
    path = index_path(directory)
    with _build_lock:
        if path.exists():
            return path
        return _build_in_child(path)


def _build_in_child(path: Path) -> Path | None:
    try:
        subprocess.run([sys.executable, "-m", "wad.whatsapp.places", str(path)], check=True,
                       timeout=BUILD_TIMEOUT_S, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.get("places").warning("phone place index not built; loading phonenumbers' geodata",
                                  path=str(path), error=str(exc)[:300])
        return None
    return path if path.exists() else None


def _install(places: EnglishPlaces) -> None:
    """Let `phonenumbers.geocoder` import the index as `phonenumbers.geodata` (its `locale`
    submodule, the country names, still loads from the package's folder)."""
    real = Path(phonenumbers.__file__).parent / "geodata"
    stub = types.ModuleType("phonenumbers.geodata", "English place names from wad's index")
    stub.__path__ = [str(real)]
    stub.__package__ = "phonenumbers.geodata"
    stub.GEOCODE_DATA = places  # type: ignore[attr-defined]
    stub.GEOCODE_LONGEST_PREFIX = places.longest_prefix  # type: ignore[attr-defined]
    sys.modules["phonenumbers.geodata"] = stub


def geocoder() -> Any:
    """`phonenumbers.geocoder`, reading English place names from the index when it can be had
    (built on first use if `prepare` has not run)."""
    global _geocoder
    with _lock:
        if _geocoder is None:
            if "phonenumbers.geocoder" not in sys.modules \
                    and "phonenumbers.geodata" not in sys.modules:
                path = prepare()
                if path is not None:
                    try:
                        _install(EnglishPlaces(path))
                    except (OSError, ValueError) as exc:
                        log.get("places").warning("phone place index unreadable",
                                                  path=str(path), error=str(exc))
            from phonenumbers import geocoder as found

            _geocoder = found
        return _geocoder


if __name__ == "__main__":
    build(Path(sys.argv[1]))
