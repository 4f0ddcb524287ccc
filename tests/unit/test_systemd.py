"""The systemd unit: valid for systemd, and the notify protocol it relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parent.parent.parent / "systemd" / "wad.service"


def _ensure_systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    # The test set-up installs Debian's systemd package when it is missing (as root).
    subprocess.run(["apt-get", "install", "-y", "-qq", "systemd"], check=True,
                   capture_output=True, timeout=600)
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is still missing after installing systemd"
    return found


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _ensure_systemd_analyze()
    # Verify the unit as it would be installed for this checkout's virtual environment
    # (systemd checks that ExecStart= names an executable).
    wad_bin = Path(sys.executable).parent / "wad"
    unit = tmp_path / "wad.service"
    unit.write_text(UNIT.read_text().replace("/opt/wad/.venv/bin/wad", str(wad_bin)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wad.service" not in result.stderr, result.stderr  # no warnings about our unit


HARDENING = [
    "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=", "ProtectHome=yes",
    "PrivateTmp=yes", "PrivateDevices=yes", "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
    "ProtectClock=yes", "ProtectHostname=yes", "ProtectProc=invisible", "RemoveIPC=yes",
    "RestrictNamespaces=user pid net", "RestrictRealtime=yes", "RestrictSUIDSGID=yes",
    "LockPersonality=yes", "RestrictAddressFamilies=", "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service", "SystemCallErrorNumber=EPERM", "CapabilityBoundingSet=",
    "AmbientCapabilities=", "LimitNOFILE=", "LimitCORE=0", "TasksMax=", "MemoryHigh=",
    "MemoryMax=", "UMask=0027",
]


@pytest.mark.parametrize("setting", [
    "Type=notify", "WatchdogSec=", "Restart=on-failure", "ExecReload=", "StateDirectory=wad",
    "RuntimeDirectory=wad", "ConfigurationDirectory=wad", "User=wad", *HARDENING,
])
def test_unit_has_the_promised_settings(setting: str) -> None:
    lines = UNIT.read_text().splitlines()
    assert any(line.startswith(setting) for line in lines), f"{setting} missing"


def _settings() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            found[name] = value
    return found


def test_unit_leaves_chromium_what_it_needs() -> None:
    """V8's JIT writes code it then runs, and Chromium's sandbox makes user, PID and network
    namespaces and calls seccomp and chroot: the unit must not take those away."""
    settings = _settings()
    assert "MemoryDenyWriteExecute" not in settings
    assert "PrivateUsers" not in settings
    assert set(settings["RestrictNamespaces"].split()) >= {"user", "pid", "net"}
    allowed = settings["SystemCallFilter"].split()
    assert {"seccomp", "chroot"} <= set(allowed), allowed
    assert not allowed[0].startswith("~")  # an allow list


def test_every_hardening_option_is_explained_in_the_operations_guide() -> None:
    guide = (UNIT.parent.parent / "docs" / "operations.md").read_text()
    section = guide.split("## The systemd unit's hardening", 1)[1]
    for setting in [*HARDENING, "MemoryDenyWriteExecute="]:
        name = setting.split("=", 1)[0]
        assert f"`{name}=" in section, f"{name} is not explained in docs/operations.md"
