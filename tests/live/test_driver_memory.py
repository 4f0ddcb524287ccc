"""Playwright's driver starts with the memory-saving V8 options when `memory_saving_flags` is on
(and without them when it is off); this process's environment is left as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wad.browser.driver import BrowserDriver
from wad.browser.flags import DRIVER_NODE_OPTIONS
from wad.config import WhatsAppSettings


def _node_children() -> list[int]:
    """Pids of this process's children that run node (Playwright's driver)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            program = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and Path(program.decode()).name == "node":
            found.append(int(entry.name))
    return found


def _node_options_of(pid: int) -> str:
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = item.partition(b"=")
        if name == b"NODE_OPTIONS":
            return value.decode()
    return ""


@pytest.mark.parametrize("saving", [True, False])
async def test_driver_runs_with_the_memory_options_when_saving(aio_loop: None,
                                                               saving: bool) -> None:
    before = os.environ.get("NODE_OPTIONS")
    known = set(_node_children())
    async with BrowserDriver.open(WhatsAppSettings(memory_saving_flags=saving)):
        started = [pid for pid in _node_children() if pid not in known]
        assert len(started) == 1
        options = _node_options_of(started[0]).split()
        assert all((option in options) == saving for option in DRIVER_NODE_OPTIONS)
        assert os.environ.get("NODE_OPTIONS") == before
