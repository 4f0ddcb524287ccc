"""Secrets leave the process environment once, at start, and still configure the daemon
(issue 17, part 1); started programs get a minimal environment. The processes themselves are
checked in tests/live/test_sandbox.py."""

from __future__ import annotations

import os
import uuid

import pytest
from wad_webhook import Config

from wad import environment
from wad.config import load

SECRETS = {
    "WAD_SECRET_KEY": "wad-secret-key-" + uuid.uuid4().hex,
    "WAD_SECRET_KEY_OLD": "wad-old-secret-key-" + uuid.uuid4().hex,
    "OPENROUTER_API_KEY": "sk-or-v1-" + uuid.uuid4().hex,
    "WAD_WEBHOOK_SECRET": "whsec-" + uuid.uuid4().hex,
    "CRM_API_TOKEN": "crm-token-" + uuid.uuid4().hex,
}
DSN = "postgresql://wad:pw-" + uuid.uuid4().hex + "@127.0.0.1:1/wad"


def test_secrets_are_taken_out_of_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setattr(environment, "_taken", {})
    taken = environment.take_secrets()
    assert set(SECRETS) <= set(taken)
    assert not set(SECRETS) & set(os.environ)
    assert environment.secret("WAD_WEBHOOK_SECRET") == SECRETS["WAD_WEBHOOK_SECRET"]
    assert os.environ["LANG"] == "C.UTF-8"
    child = environment.child_env(TMPDIR="/tmp/x")
    assert child["TMPDIR"] == "/tmp/x"
    assert not set(child.values()) & set(SECRETS.values())


def test_the_secrets_still_configure_the_daemon_after_they_are_taken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGHUP re-reads the configuration after the secrets left the environment: it must see
    the same ones, and the webhook plugin its secret."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WAD_DATABASE_URL", DSN)
    monkeypatch.setattr(environment, "_taken", {})
    before = load()
    environment.take_secrets()
    after = load()
    assert (after.secret_key, after.database.dsn, after.openrouter_api_key) == \
        (before.secret_key, DSN, SECRETS["OPENROUTER_API_KEY"])
    assert Config(url="http://127.0.0.1:9/hook").secret == SECRETS["WAD_WEBHOOK_SECRET"]


def test_node_options_are_added_for_the_block_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_OPTIONS", raising=False)
    with environment.node_options(["--max-semi-space-size=2"]):
        assert os.environ["NODE_OPTIONS"] == "--max-semi-space-size=2"
    assert "NODE_OPTIONS" not in os.environ
    # The operator's own options stay first, and come back afterwards.
    monkeypatch.setenv("NODE_OPTIONS", "--stack-trace-limit=50")
    with environment.node_options(["--max-semi-space-size=2"]):
        assert os.environ["NODE_OPTIONS"] == "--stack-trace-limit=50 --max-semi-space-size=2"
    assert os.environ["NODE_OPTIONS"] == "--stack-trace-limit=50"
    with environment.node_options([]):
        assert os.environ["NODE_OPTIONS"] == "--stack-trace-limit=50"
