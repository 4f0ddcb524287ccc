"""Phone place names from wad's on-disk index answer as phonenumbers' in-memory geodata does,
without loading that geodata into the process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import phonenumbers
import pytest
from phonenumbers.prefix import _prefix_description_for_number

from wad.whatsapp import places

NUMBERS = ["+12025550123", "+14155550123", "+442071234567", "+4930123456", "+33142685300",
           "+74951234567", "+996312123456", "+996555123456", "+61291234567", "+81312345678",
           "+5511912345678", "+390612345678", "+8613812345678", "+919812345678"]

_REFERENCE = """
import json, sys, phonenumbers
from phonenumbers import geocoder
print(json.dumps([geocoder.description_for_number(phonenumbers.parse(n), "en")
                  for n in sys.argv[1:]]))
"""


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder (as XDG_CACHE_HOME) with the index built once for this module."""
    home = tmp_path_factory.mktemp("cache")
    assert places.prepare(home / "wad") is not None
    return home


def test_index_answers_as_the_full_geodata(cache_home: Path) -> None:
    path = places.prepare(cache_home / "wad")  # already there: not built again
    assert path is not None and path.name.endswith(f"{phonenumbers.__version__}.txt")
    index = places.EnglishPlaces(path)
    # phonenumbers' lookup, given the index where it expects its dict (only `in` and `[]`).
    ours = [_prefix_description_for_number(index, index.longest_prefix,  # type: ignore[arg-type]
                                           phonenumbers.parse(n), "en") for n in NUMBERS]
    # phonenumbers' own geocoder, with its whole geodata, in a process of its own.
    reference = subprocess.run([sys.executable, "-c", _REFERENCE, *NUMBERS], check=True,
                               capture_output=True, text=True)
    theirs = json.loads(reference.stdout)
    # description_for_number adds the country when there is no finer place; compare places.
    for number, mine, full in zip(NUMBERS, ours, theirs, strict=True):
        assert not mine or mine == full, number
    assert sum(1 for m in ours if m) >= 8
    assert "2025550" not in index and "1202" in index and index["1202"]["en"]
    # Every prefix of the file is found by the search (first, last, all between).
    keys = list(index)
    assert len(keys) == len(index) > 100_000 and keys == sorted(keys)
    for key in keys[:50] + keys[-50:] + keys[::997]:
        assert key in index
    assert "0" not in index and "99999999999" not in index


def test_number_context_does_not_load_the_geodata(cache_home: Path) -> None:
    script = """
import sys
from wad.whatsapp import messages
print(messages.number_context("+12025550123")["region"])
loaded = [m for m in sys.modules if m.startswith("phonenumbers.geodata.data")]
print(len(loaded))
"""
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_home), CACHE_DIRECTORY="")
    env.pop("CACHE_DIRECTORY")
    built = places.index_path(cache_home / "wad").stat().st_mtime_ns
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                          text=True, env=env)
    region, loaded = done.stdout.splitlines()[:2]
    assert region == "Washington D.C."
    assert loaded == "0"
    assert places.index_path(cache_home / "wad").stat().st_mtime_ns == built  # found, not rebuilt


def test_without_an_index_the_geodata_is_loaded(tmp_path: Path) -> None:
    script = """
import sys
from wad.whatsapp import places
places.prepare = lambda directory=None: None
from wad.whatsapp import messages
print(messages.number_context("+12025550123")["region"])
print(len([m for m in sys.modules if m.startswith("phonenumbers.geodata.data")]) > 0)
"""
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                          text=True, env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path)))
    assert done.stdout.split("\n")[:2] == ["Washington D.C.", "True"]
