"""`wad demo` runs to the end on a fresh machine and sums up what the daemon did."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.browser


def test_demo_runs_to_the_end_and_prints_a_json_summary() -> None:
    result = subprocess.run([sys.executable, "-m", "wad.cli.main", "demo", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["state"] == "CONNECTED"
    assert summary["messages_stored"] == 3
    assert summary["messages_processed"] == 3
    assert summary["organization_id"]
    assert summary["duration_s"] > 0
    assert summary["reply_status"] in ("DELIVERED", "READ")
    assert summary["reply_sent_times"] == 1
    client = summary["client"]
    assert client["phone"] == "+996555123456"
    assert client["name"] == "Aida"
    assert client["preferred_language"] == "en"
    assert "QR payload:" in result.stdout and "linked: +996555000111" in result.stdout
