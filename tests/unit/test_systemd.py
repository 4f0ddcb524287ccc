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


@pytest.mark.parametrize("setting", [
    "Type=notify", "WatchdogSec=", "Restart=on-failure", "ExecReload=", "StateDirectory=wad",
    "RuntimeDirectory=wad", "ConfigurationDirectory=wad", "User=wad", "NoNewPrivileges=yes",
    "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
])
def test_unit_has_the_promised_settings(setting: str) -> None:
    lines = UNIT.read_text().splitlines()
    assert any(line.startswith(setting) for line in lines), f"{setting} missing"
