"""Shared browsers' pieces that need no Chromium: the atomic storage write and the settings."""

import stat
from pathlib import Path

import pytest

from wad.browser import shared
from wad.config import ConfigError, parse


def test_storage_is_written_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / shared.STORAGE_FILE
    path.write_bytes(b"old login")
    shared._write_atomically(path, b'{"cookies":[]}')
    assert path.read_bytes() == b'{"cookies":[]}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [shared.STORAGE_FILE]


def test_a_failed_write_leaves_the_old_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    path = tmp_path / shared.STORAGE_FILE
    path.write_bytes(b"old login")

    def broken(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(shared.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        shared._write_atomically(path, b"new login")
    assert path.read_bytes() == b"old login"
    assert sorted(p.name for p in tmp_path.iterdir()) == [shared.STORAGE_FILE]


def test_browser_mode_settings_are_validated() -> None:
    settings = parse('[whatsapp]\nbrowser_mode = "shared"\norgs_per_browser = 5\n')
    assert (settings.whatsapp.browser_mode, settings.whatsapp.orgs_per_browser) == ("shared", 5)
    assert parse("").whatsapp.browser_mode == "per-org"
    with pytest.raises(ConfigError, match="whatsapp.browser_mode"):
        parse('[whatsapp]\nbrowser_mode = "pooled"\n')
    with pytest.raises(ConfigError, match="whatsapp.orgs_per_browser"):
        parse("[whatsapp]\norgs_per_browser = 0\n")


def test_memory_flags_repeat_the_installed_playwrights_feature_lists() -> None:
    # Chromium keeps only the last --disable-features/--enable-features: ours must carry
    # Playwright's own lists, or its choices would be undone (checked against the installed
    # Playwright, so an upgrade that changes them fails here).
    import re
    from importlib.util import find_spec

    from wad.browser import flags

    spec = find_spec("playwright")
    assert spec is not None and spec.origin is not None
    bundle = Path(spec.origin).parent / "driver" / "package" / "lib" / "coreBundle.js"
    source = bundle.read_text(encoding="utf-8")
    block = re.search(r"disabledFeatures = \[(.*?)\]\.filter", source, re.S)
    assert block is not None
    theirs = re.findall(r'^\s*"([A-Za-z0-9]+)"', block.group(1), re.M)
    assert theirs and set(theirs) == set(flags._PLAYWRIGHT_DISABLED)
    enabled = re.search(r"enabledFeatures = \(\) => \[(.*?)\]\.filter", source, re.S)
    assert enabled is not None
    theirs_on = re.findall(r'"([A-Za-z][A-Za-z0-9]+)"', enabled.group(1))
    assert set(theirs_on) == set(flags._PLAYWRIGHT_ENABLED)
    assert flags.memory_flags(False) == ()
    switches = dict(f.partition("=")[::2] for f in flags.memory_flags(True))
    assert set(switches["--disable-features"].split(",")) >= set(theirs)


def test_a_browser_whose_process_exited_takes_no_new_contexts() -> None:
    import os
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert shared.SharedBrowser(number=1, browser=None, pid=os.getpid()).running()
    assert not shared.SharedBrowser(number=2, browser=None, pid=gone.pid).running()
    assert not shared.SharedBrowser(number=3, browser=None, pid=os.getpid(), alive=False).running()
