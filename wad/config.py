"""Settings: msgspec Structs decoded from one TOML file, secrets from the environment.

Decoding is validation: an unknown key, a wrong type or an out-of-range value raises
`ConfigError` with a message that names the key (for example `whatsapp.reconnect_max_attempts`).
`config/wad.toml` documents every setting.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from wad.errors import ConfigError
from wad.inbound.settings import InboundSettings
from wad.org import archive
from wad.outbound.settings import OutboundSettings
from wad.plugins import PluginSettings

PositiveSeconds = Annotated[float, Meta(gt=0)]
NonNegativeSeconds = Annotated[float, Meta(ge=0)]


class DaemonSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Process-wide settings."""

    state_dir: str = ""
    """Where profiles, the embedded database, the control socket and the key live.
    Empty: `$STATE_DIRECTORY` under systemd, else `./var`."""
    node_id: str = ""
    """This daemon's name among several on one database. Empty: host name and process id."""
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_s: PositiveSeconds = 20.0
    max_organizations: Annotated[int, Meta(ge=1, le=10000)] = 100
    """Most organizations this daemon runs at once (others are left to other daemons)."""
    claim_interval_s: PositiveSeconds = 5.0
    """How often the daemon claims unowned organizations and stops ones disconnected elsewhere."""
    lock_check_interval_s: PositiveSeconds = 1.0
    """How often the lock connection is checked; when it fails, every organization stops."""


class ApiSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The control API."""

    listen: str = "127.0.0.1:8080"
    """TCP address (`host:port`); empty string: unix control socket only."""
    socket_path: str = ""
    """Control socket path. Empty: `STATE_DIR/wad.sock` (or `$RUNTIME_DIRECTORY/wad.sock`)."""
    max_body_bytes: Annotated[int, Meta(ge=1024, le=16 * 1024 * 1024)] = 1024 * 1024
    header_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 10.0
    """A client must send a request's head within this time (slow clients cannot hold wad)."""
    body_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    """...and its body within this time."""
    send_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    """A client that stops reading an answer for this long is dropped."""


class DatabaseSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """PostgreSQL. With no DSN (here or in `WAD_DATABASE_URL`) a private cluster runs under
    `STATE_DIR/pg`."""

    dsn: str = ""
    pool_min: Annotated[int, Meta(ge=1, le=100)] = 2
    pool_max: Annotated[int, Meta(ge=1, le=500)] = 20
    postgres_bindir: str = ""
    """Where `initdb`, `pg_ctl` and `postgres` live. Empty: found through `pg_config --bindir`
    or `/usr/lib/postgresql/*/bin`."""


class WhatsAppSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The browser sessions."""

    url: str = "https://web.whatsapp.com/"
    chromium_path: str = "/usr/bin/chromium"
    headless: bool = True
    user_agent: str = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36"
    )
    ready_timeout_s: PositiveSeconds = 60.0
    """How long to wait for the page's internals (`Debug.VERSION`) after a navigation."""
    health_check_interval_s: PositiveSeconds = 30.0
    health_check_timeout_s: PositiveSeconds = 10.0
    reconnect_initial_s: PositiveSeconds = 1.0
    reconnect_max_s: PositiveSeconds = 30.0
    reconnect_max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 8
    takeover_on_conflict: bool = False
    takeover_delay_s: NonNegativeSeconds = 30.0
    archive_interval_s: PositiveSeconds = 3600.0


class ArchiveSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Retention of the encrypted login archives in the database (`wad.org.archive`)."""

    keep_latest: Annotated[int, Meta(ge=1, le=1000)] = 5
    """The newest archives kept whatever their age."""
    keep_daily_days: Annotated[int, Meta(ge=0, le=3650)] = 7
    """Also keep the newest archive of each day of the last this many days."""


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything wad reads from its configuration file."""

    daemon: DaemonSettings = msgspec.field(default_factory=DaemonSettings)
    api: ApiSettings = msgspec.field(default_factory=ApiSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    whatsapp: WhatsAppSettings = msgspec.field(default_factory=WhatsAppSettings)
    archives: ArchiveSettings = msgspec.field(default_factory=ArchiveSettings)
    inbound: InboundSettings = msgspec.field(default_factory=InboundSettings)
    outbound: OutboundSettings = msgspec.field(default_factory=OutboundSettings)
    plugins: PluginSettings = msgspec.field(default_factory=PluginSettings)

    # Secrets: never in the file, only from the environment (see `load`).
    secret_key: str = ""
    secret_key_old: str = ""
    """A previous `secret_key`, still accepted to open archives until `wad secret rotate`."""
    openrouter_api_key: str = ""
    source: str = ""

    @property
    def state_path(self) -> Path:
        """The state directory, resolved."""
        if self.daemon.state_dir:
            return Path(self.daemon.state_dir)
        if os.environ.get("STATE_DIRECTORY"):
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        return Path("var")

    @property
    def control_socket(self) -> Path:
        """Path of the unix control socket."""
        if self.api.socket_path:
            return Path(self.api.socket_path)
        if os.environ.get("RUNTIME_DIRECTORY"):
            return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0]) / "wad.sock"
        return self.state_path / "wad.sock"

    @property
    def node(self) -> str:
        """This daemon's node id."""
        return self.daemon.node_id or f"{socket.gethostname()}:{os.getpid()}"


_SECRET_FIELDS = {"secret_key", "secret_key_old", "openrouter_api_key", "source"}


def _check_no_secrets_in_file(raw: dict[str, object], path: str) -> None:
    for name in _SECRET_FIELDS:
        if name in raw:
            raise ConfigError(
                f"{path}: `{name}` cannot be set in the file; secrets come from the environment"
            )


def parse(text: str, *, source: str = "<config>") -> Settings:
    """Decode and validate TOML text; raises `ConfigError` naming the bad key."""
    try:
        raw = msgspec.toml.decode(text.encode())
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a table at top level")
    _check_no_secrets_in_file(raw, source)
    try:
        settings = msgspec.convert(raw, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    _check_consistency(settings, source)
    return settings


def _describe(exc: msgspec.ValidationError) -> str:
    """Turn msgspec's `... - at `$.whatsapp.url`` into `whatsapp.url: ...`."""
    message = str(exc)
    if " - at `$." in message:
        what, _, where = message.partition(" - at `$.")
        return f"{where.rstrip('`')}: {what}"
    if message.startswith("Object contains unknown field"):
        return message.replace("Object contains unknown field", "unknown key")
    return message


def _check_consistency(settings: Settings, source: str) -> None:
    db = settings.database
    if db.pool_min > db.pool_max:
        raise ConfigError(f"{source}: database.pool_min: must not exceed database.pool_max")
    wa = settings.whatsapp
    if wa.reconnect_initial_s > wa.reconnect_max_s:
        raise ConfigError(
            f"{source}: whatsapp.reconnect_initial_s: must not exceed whatsapp.reconnect_max_s"
        )
    if settings.api.listen and ":" not in settings.api.listen:
        raise ConfigError(f"{source}: api.listen: expected host:port, got {settings.api.listen!r}")


def load(path: str | os.PathLike[str] | None = None, *, env: dict[str, str] | None = None) -> Settings:
    """Load settings from PATH (or `WAD_CONFIG`; none: the embedded defaults) and the
    environment's secrets."""
    env = dict(os.environ) if env is None else env
    path = path or env.get("WAD_CONFIG") or None
    if path is None:
        settings = Settings()
        source = "<defaults>"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
        source = str(path)
        settings = parse(text, source=source)
    if env.get("WAD_DATABASE_URL"):
        settings.database.dsn = env["WAD_DATABASE_URL"]
    settings.secret_key = env.get("WAD_SECRET_KEY", "")
    if settings.secret_key:
        try:
            archive.check_secret(settings.secret_key, name="WAD_SECRET_KEY")
        except archive.ArchiveError as exc:
            raise ConfigError(str(exc)) from None
    settings.secret_key_old = env.get("WAD_SECRET_KEY_OLD", "")
    settings.openrouter_api_key = env.get("OPENROUTER_API_KEY", "")
    settings.source = source
    return settings
