"""Configuration: the example loads; bad keys, types and values are named."""

from pathlib import Path

import pytest

from wad import config
from wad.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent.parent / "config" / "wad.toml"


def test_example_file_loads_and_matches_defaults() -> None:
    loaded = config.load(EXAMPLE, env={})
    defaults = config.Settings()
    assert loaded.daemon == defaults.daemon
    assert loaded.api == defaults.api
    assert loaded.database == defaults.database
    assert loaded.whatsapp == defaults.whatsapp
    assert loaded.plugins == defaults.plugins
    assert loaded.inbound == defaults.inbound
    assert loaded.outbound == defaults.outbound


def test_example_documents_every_setting() -> None:
    text = EXAMPLE.read_text()
    for section in ("daemon", "api", "database", "whatsapp", "inbound", "outbound", "feed",
                    "plugins"):
        assert f"\n[{section}]\n" in text
        struct = getattr(config.Settings(), section)
        for name in struct.__struct_fields__:
            if section == "plugins" and name == "config":
                assert "[plugins.config." in text
                continue
            assert f"\n{name} = " in text, f"{section}.{name} is not in config/wad.toml"


def test_secrets_come_from_the_environment() -> None:
    settings = config.load(None, env={"WAD_DATABASE_URL": "postgresql://x@/db",
                                      "WAD_SECRET_KEY": "k" * 32, "OPENROUTER_API_KEY": "sk-1"})
    assert settings.database.dsn == "postgresql://x@/db"
    assert settings.secret_key == "k" * 32
    assert settings.openrouter_api_key == "sk-1"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[whatsapp]\nurll = 'x'\n", "urll"),
        ("[nonsense]\na = 1\n", "nonsense"),
        ("[whatsapp]\nheadless = 'yes'\n", "whatsapp.headless"),
        ("[database]\npool_max = 0\n", "database.pool_max"),
        ("[whatsapp]\nreconnect_max_attempts = -1\n", "whatsapp.reconnect_max_attempts"),
        ("[daemon]\nlog_level = 'loud'\n", "daemon.log_level"),
        ("[database]\npool_min = 30\npool_max = 10\n", "database.pool_min"),
        ("[api]\nlisten = 'nowhere'\n", "api.listen"),
        ("[api]\ntls_cert_file = '/etc/wad/api.crt'\n", "api.tls_key_file"),
        ("[api]\ntls_key_file = '/etc/wad/api.key'\n", "api.tls_cert_file"),
        ("[api]\nstream_token_check_s = 0\n", "api.stream_token_check_s"),
        ("secret_key = 'abc'\n", "secret_key"),
        ("[inbound]\nprocessing_delay_min_s = 9.0\nprocessing_delay_max_s = 1.0\n",
         "inbound"),
        ("[outbound]\nmax_retries = 99\n", "outbound.max_retries"),
        ("[daemon\n", "not valid TOML"),
    ],
)
def test_bad_configuration_names_the_key(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse(text, source="test.toml")
    assert named in str(err.value)
    assert "test.toml" in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        config.load(tmp_path / "absent.toml", env={})


def test_state_dir_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert config.Settings().state_path == Path("var")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/wad")
    assert config.Settings().state_path == Path("/var/lib/wad")
