"""The admin CLI against a real `wad run` process, over its control socket; and with no daemon."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.daemonproc import DaemonProcess, start_daemon
from wad.cli import control as ctl
from wad.cli import main as cli


@pytest.fixture
def daemon(state_dir: Path) -> Iterator[DaemonProcess]:
    proc = start_daemon(state_dir)
    try:
        yield proc
    finally:
        assert proc.stop() == 0


class Cli:
    """Runs `wad --config <the daemon's config> ...` in this process and captures its output."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = cli.main(["--config", str(self.config), *argv])
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert code == 0, (argv, out, err)
        return out


def test_cli_drives_a_running_daemon(daemon: DaemonProcess, state_dir: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    wad = Cli(state_dir / "wad.toml", capsys)
    mode = stat.S_IMODE(daemon.socket_path.stat().st_mode)
    assert mode & 0o007 == 0  # nobody outside the owner and group
    assert mode & 0o660 == mode

    assert "no organizations yet" in wad.ok("status")
    org_id = wad.ok("org", "create", "Issyk-Kul Tours").strip()
    uuid.UUID(org_id)
    other_id = wad.ok("org", "create", "Other Org").strip()
    listed = json.loads(wad.ok("org", "list", "--json"))
    assert [(o["id"], o["name"]) for o in listed] == [(org_id, "Issyk-Kul Tours"),
                                                     (other_id, "Other Org")]
    assert "Issyk-Kul Tours" in wad.ok("org", "list")

    table = wad.ok("status").splitlines()
    assert table[0].split() == ["ORGANIZATION", "ID", "STATE", "NUMBER", "PARKED", "LAST",
                                "ERROR"]
    assert any(org_id in line and "DISCONNECTED" in line for line in table[1:])
    one = json.loads(wad.ok("status", "issyk-kul tours", "--json"))  # by name, any case
    assert one["organizationId"] == org_id
    assert one["status"] == "DISCONNECTED"
    assert (one["parkedMessages"], one["lastParkedError"]) == (0, None)
    assert "state            DISCONNECTED" in wad.ok("status", org_id)

    # A token made by the CLI works over HTTP, for its own organization only.
    code, out, err = wad("token", "create", "--org", org_id, "--role", "VIEWER",
                         "--name", "crm")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("wad_")
    assert "shown only now" in err
    bearer = {"Authorization": f"Bearer {token}"}
    r = httpx.get(f"{daemon.tcp_url}/api/whatsapp/status/{org_id}", headers=bearer, timeout=10)
    assert r.status_code == 200
    assert r.json()["status"] == "DISCONNECTED"
    r = httpx.get(f"{daemon.tcp_url}/api/whatsapp/status/{other_id}", headers=bearer,
                  timeout=10)
    assert r.status_code == 403

    tokens = json.loads(wad.ok("token", "list", "--org", org_id, "--json"))
    assert len(tokens) == 1
    assert tokens[0]["prefix"] == token[:12]
    assert token not in json.dumps(tokens)
    assert tokens[0]["lastUsedAt"] is not None
    assert "revoked" in wad.ok("token", "revoke", tokens[0]["prefix"])
    r = httpx.get(f"{daemon.tcp_url}/api/whatsapp/status/{org_id}", headers=bearer, timeout=10)
    assert r.status_code == 401

    super_token = wad.ok("token", "create", "--role", "SUPER_ADMIN").strip()
    r = httpx.get(f"{daemon.tcp_url}/api/organizations",
                  headers={"Authorization": f"Bearer {super_token}"}, timeout=10)
    assert len(r.json()["organizations"]) == 2
    code, _, err = wad("token", "create", "--role", "ADMIN")
    assert code == 1
    assert "organizationId" in err

    # Kept session data: nothing yet; purging needs --yes.
    kept = json.loads(wad.ok("session", "backups", org_id, "--json"))
    assert kept == {"organizationId": org_id, "archives": [], "profile": None, "trash": [],
                    "importProfile": None}
    code, out, err = wad("session", "purge", org_id)
    assert code == 1
    assert "--yes" in err
    assert "archive versions in the database: 0" in out
    assert "deleted 0 archive versions" in wad.ok("session", "purge", org_id, "--yes")

    # Nothing to scan while the session is not connecting: said in one line, exit 1.
    code, out, err = wad("qr", org_id, "--timeout", "5")
    assert code == 1
    assert "DISCONNECTED" in err
    assert f"wad connect {org_id}" in err
    assert len(err.strip().splitlines()) == 1

    code, _, err = wad("status", "No Such Org")
    assert code == 1
    assert "no organization named 'No Such Org'" in err

    tree = wad.ok("status", "--tree")
    assert tree.startswith("node ")
    assert "no organization is running on this daemon" in tree
    # Every long-lived task of the daemon is in the tree, with its restart count.
    for task in ("change-feed", "metrics", "plugins", "notifications", "imports", "orgs"):
        assert any(f"─ {task}  " in line and line.endswith("  restarts 0")
                   for line in tree.splitlines()), (task, tree)
    assert "orgs [simple_one_for_one] restarts 0" in tree
    view = json.loads(wad.ok("status", "--tree", "--json"))
    assert view["organizations"]["organizations"] == {}


def test_status_tree_lists_each_plugin_task_by_name(state_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A daemon with the webhook plugin configured: its delivery worker is a child of its own
    in the tree, under `plugins`, with its restart count."""
    proc = start_daemon(state_dir, extra_config=(
        '[plugins.config.webhook]\nurl = "http://127.0.0.1:9/hooks"\n'
        'secret = "a secret for this test only"\n'))
    try:
        wad = Cli(state_dir / "wad.toml", capsys)
        tree = wad.ok("status", "--tree").splitlines()
        assert any(line.endswith("─ plugins  running  restarts 0") for line in tree), tree
        assert any(line.endswith("plugins [simple_one_for_one] restarts 0") for line in tree)
        assert any(line.endswith("─ webhook:deliveries  running  restarts 0") for line in tree)
        assert any(line.endswith("webhook:deliveries [one_for_one] restarts 0") for line in tree)
        assert any(line.endswith("─ run  running  restarts 0") for line in tree), tree
        # Beside it the language detector's `load` task (wad's built-in fastText plugin): it
        # loads the model as the daemon starts and is done then (its run stopped, not failed).
        deadline = time.monotonic() + 60
        while True:
            view = json.loads(wad.ok("status", "--tree", "--json"))
            plugins = next(c for c in view["daemon"]["children"] if c["id"] == "plugins")
            tasks = {t["id"]: t for t in plugins["supervisor"]["children"]}
            [load] = tasks["fasttext_language:load"]["supervisor"]["children"]
            if load["state"] != "running":
                break
            assert time.monotonic() < deadline, tasks
            time.sleep(0.2)
        assert (load["id"], load["state"], load["restart"], load["restarts"]) == (
            "run", "stopped", "transient", 0)
        assert sorted((t["id"], t["restart"], t["restarts"]) for t in tasks.values()) == [
            ("fasttext_language:load", "temporary", 0), ("webhook:deliveries", "temporary", 0)]
        deliveries = tasks["webhook:deliveries"]["supervisor"]["children"]
        assert [(c["id"], c["state"], c["restart"]) for c in deliveries
                ] == [("run", "running", "transient")]
    finally:
        assert proc.stop() == 0


def test_cli_says_in_one_line_when_no_daemon_answers(state_dir: Path) -> None:
    """As a real process, with the socket taken from the configuration file."""
    config = state_dir / "wad.toml"
    config.write_text(f'[daemon]\nstate_dir = "{state_dir}"\n')
    result = subprocess.run([sys.executable, "-m", "wad.cli.main", "--config", str(config), "status"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"wad: no wad daemon is answering on {state_dir / 'wad.sock'} (is `wad run` running, "
        "with the same configuration?)"]


def test_every_command_reports_a_missing_daemon(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Every control command, in this process (the same code path, without the start-up)."""
    org = str(uuid.uuid4())
    sock = str(tmp_path / "absent.sock")
    for argv in (["status", "--tree"], ["status", org], ["org", "list"], ["org", "create", "X"],
                 ["qr", org], ["pair", org, "--phone", "+996555123456"], ["connect", org],
                 ["disconnect", org], ["logout", org],
                 ["token", "create", "--role", "SUPER_ADMIN"], ["token", "list"],
                 ["token", "revoke", org], ["session", "backups", org],
                 ["session", "purge", org, "--yes"]):
        with pytest.raises(SystemExit) as exited:
            cli.main([*argv, "--socket", sock])
        assert exited.value.code == ctl.EXIT_FAILED
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, (argv, err)
        assert err[0] == (f"wad: no wad daemon is answering on {sock} (is `wad run` running, "
                          "with the same configuration?)")


def test_tree_rendering_shows_states_restarts_and_reasons() -> None:
    view = {
        "node": "host:1", "version": "0.1.0", "uptimeS": 42.0,
        "daemon": {"name": "wad", "strategy": "one_for_one", "restarts": 0, "children": [
            {"id": "orgs", "state": "running", "restarts": 0, "lastRestartReason": None,
             "lastRestartAt": None}]},
        "organizations": {"name": "orgs", "organizations": {
            "0b7e": {"state": "QR_CODE_PENDING", "browserStarts": 2, "supervisor": {
                "name": "org-0b7e", "strategy": "one_for_one", "restarts": 1, "children": [
                    {"id": "session", "state": "running", "restarts": 1,
                     "lastRestartReason": "TargetClosedError('page crashed')",
                     "lastRestartAt": "2026-11-21T10:00:00+00:00"}]}}}},
    }
    lines = ctl.render_daemon_tree(view, names={"0b7e": "Issyk-Kul Tours"})
    text = "\n".join(lines)
    assert lines[0] == "node host:1  wad 0.1.0  up 42s"
    assert "wad [one_for_one] restarts 0" in text
    assert "└─ orgs  running  restarts 0" in text
    assert ("organization Issyk-Kul Tours (0b7e)  session QR_CODE_PENDING  browser starts 2"
            in text)
    assert "org-0b7e [one_for_one] restarts 1" in text
    assert "session  running  restarts 1  last: TargetClosedError('page crashed') at" in text
