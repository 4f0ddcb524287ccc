"""Settings: msgspec Structs decoded from one TOML file, secrets from the environment.

Decoding is validation: an unknown key, a wrong type or an out-of-range value raises
`ConfigError` with a message that names the key (for example `whatsapp.reconnect_max_attempts`).
`config/wad.toml` documents every setting.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from wad import environment
from wad.browser import profile as archive
from wad.errors import ConfigError

# Named kinds of setting, one bound each, for the core's settings and the plugins' alike.
PositiveSeconds = Annotated[float, Meta(gt=0)]
NonNegativeSeconds = Annotated[float, Meta(ge=0)]
Seconds = Annotated[float, Meta(ge=0, le=3600)]
"""A delay or pause: up to an hour."""
Timeout = Annotated[float, Meta(gt=0, le=3600)]
"""Seconds something may take before it counts as failed: up to an hour."""
RetryCount = Annotated[int, Meta(ge=0, le=10)]
"""Further attempts after a failed one."""
ConversationWindow = Annotated[int, Meta(ge=1, le=500)]
"""How many of a conversation's latest messages a decision (language, status, reply) reads."""

DEFAULT_LANGUAGES: tuple[str, ...] = ("en", "ru", "ar", "fr", "de", "es", "pl")
"""Candidate languages (ISO 639-1) of messages and clients unless `inbound.languages` says."""


class GraceSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Seconds each part of the supervision tree may take to stop once cancelled. They nest,
    and the daemon refuses to start when they do not: the graces of a supervisor's children
    together are at most its own (the organizations stop all at once, so there the largest
    counts), and `daemon.shutdown_grace_s` is at most systemd's `TimeoutStopSec`."""

    organizations_s: PositiveSeconds = 42.0
    """The organization manager: every organization stops at once within it."""
    organization_s: PositiveSeconds = 40.0
    """One organization's supervisor: its outbound, inbound and session actors, in turn."""
    session_s: PositiveSeconds = 30.0
    """The session actor: close the browser, save the login archive."""
    inbound_s: PositiveSeconds = 5.0
    outbound_s: PositiveSeconds = 5.0
    service_s: PositiveSeconds = 2.0
    """Each of the daemon's services (plugins' tasks, notifications, event log, metrics,
    imports, the systemd watchdog)."""


class DaemonSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Process-wide settings."""

    state_dir: str = ""
    """Where profiles, the embedded database, the control socket and the key live.
    Empty: `$STATE_DIRECTORY` under systemd, else `./var`."""
    node_id: str = ""
    """This daemon's name among several on one database. Empty: host name and process id."""
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_s: PositiveSeconds = 55.0
    """Seconds a graceful stop may take: the whole tree's grace (see `[graces]`)."""
    max_organizations: Annotated[int, Meta(ge=1, le=10000)] = 100
    """Most organizations this daemon runs at once (others are left to other daemons)."""
    claim_interval_s: PositiveSeconds = 5.0
    """How often the daemon claims unowned organizations and stops ones disconnected elsewhere."""
    lock_check_interval_s: PositiveSeconds = 1.0
    """How often the lock connection is checked. When a query on it fails, or it answered nothing
    for `lease_s - lease_renew_interval_s`, it is lost: sending stops at once; the organizations
    stop too unless the database is unavailable (then they wait for it, and are taken back)."""
    lease_s: Annotated[float, Meta(ge=2, le=600)] = 15.0
    """An owner's lease on its organizations: renewed in the database every
    `lease_renew_interval_s`; once it has expired another daemon may take them over (ending the
    stale owner's database session), and the owner itself sends nothing more for them. For this
    long after the database server starts, leases are reserved for their owners to take back."""
    lease_renew_interval_s: PositiveSeconds = 3.0
    tcp_keepalive_s: Annotated[int, Meta(ge=1, le=600)] = 5
    """TCP keepalive on the lock connection (idle seconds, then probes this many seconds apart,
    3 of them): PostgreSQL drops the locks of a daemon whose host went silent within about
    4 times this."""
    org_max_restarts: Annotated[int, Meta(ge=0, le=1000)] = 5
    """An organization's supervisor gives up (the organization ends `ERROR`) after more than
    this many restarts of its actors within `org_restart_period_s`."""
    org_restart_period_s: PositiveSeconds = 300.0
    """Long enough for the restarts' backoff (0.5 s doubling: 15.5 s for five) and six runs of
    a browser that takes its time to start and crash; the daemon says so at start when the
    backoff alone would fill it (then a crash loop could never be given up)."""


class ApiSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The control API."""

    listen: str = "127.0.0.1:8080"
    """TCP address (`host:port`); empty string: unix control socket only."""
    socket_path: str = ""
    """Control socket path. Empty: `STATE_DIR/wad.sock` (or `$RUNTIME_DIRECTORY/wad.sock`)."""
    max_body_bytes: Annotated[int, Meta(ge=1024, le=16 * 1024 * 1024)] = 1024 * 1024
    header_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 10.0
    """A client must send a request's head within this time (slow clients cannot hold wad)."""
    body_timeout_s: Timeout = 60.0
    """...and its body within this time."""
    send_timeout_s: Timeout = 60.0
    """A client that stops reading an answer for this long is dropped."""
    fast_lane: bool = True
    """Answer `GET /api/whatsapp/status/{org}` and `POST /api/whatsapp/send` in the fast lane
    (`wad.api.lane`), ahead of Hypercorn and Quart; false: every request through them."""
    stream_token_check_s: Annotated[float, Meta(gt=0, le=60)] = 2.0
    """An open event stream checks its token this often; a revoked token's stream ends."""
    tls_cert_file: str = ""
    """PEM certificate (chain) for the TCP address; with `tls_key_file`, the API is served over
    TLS there (the unix socket stays plain). Empty: plain HTTP."""
    tls_key_file: str = ""
    """PEM private key of `tls_cert_file`."""

    @property
    def tls(self) -> tuple[str, str] | None:
        """(certificate, key) when TLS is configured, else None."""
        return (self.tls_cert_file, self.tls_key_file) if self.tls_cert_file else None


class FeedSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The change feed (`GET /api/whatsapp/changes/{org}`, the event stream, webhooks)."""

    retention_days: Annotated[float, Meta(gt=0, le=3650)] = 7.0
    """Entries older than this are pruned; a reader whose cursor is older gets 410
    `cursor_expired` and resynchronises through the read API."""
    poll_s: Annotated[float, Meta(gt=0, le=600)] = 5.0
    """Readers are woken by `LISTEN/NOTIFY`; they also look this often, in case a notification
    was lost (the listening connection broke)."""
    prune_interval_s: Annotated[float, Meta(gt=0, le=86400)] = 3600.0
    """How often entries past retention are pruned."""


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
    chromium_path: str = "/usr/lib/chromium/chromium-headless-shell"
    headless: bool = True
    user_agent: str = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36"
    )
    ready_timeout_s: PositiveSeconds = 60.0
    """How long to wait for the page's internals (`Debug.VERSION`) after a navigation."""
    health_check_interval_s: PositiveSeconds = 30.0
    """A page that delivered nothing and answered nothing for this long is pinged."""
    health_check_timeout_s: PositiveSeconds = 10.0
    """How long the ping may take on an idle host; it grows with the host's load (the 1-minute
    load average per CPU) up to `health_check_max_timeout_s`."""
    health_check_max_timeout_s: PositiveSeconds = 120.0
    health_restart_spacing_s: NonNegativeSeconds = 10.0
    """At most one health-check restart per this many seconds across the daemon's
    organizations."""
    reconnect_initial_s: PositiveSeconds = 1.0
    reconnect_max_s: PositiveSeconds = 30.0
    reconnect_max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 8
    takeover_on_conflict: bool = False
    takeover_delay_s: NonNegativeSeconds = 30.0
    archive_interval_s: PositiveSeconds = 3600.0
    memory_saving_flags: bool = True
    """Start Chromium with the switches of `wad.browser.flags` (no GPU process, the network
    service in the browser process, no spare or omnibox-popup renderers) and Playwright's
    driver with a small V8 young generation."""
    browser_mode: Literal["per-org", "shared"] = "per-org"
    """`per-org`: one Chromium per organization (its own process tree and profile folder);
    `shared`: up to `orgs_per_browser` organizations per Chromium, each in its own browser
    context, its login kept in `storage.json` (`wad.browser.shared`)."""
    orgs_per_browser: Annotated[int, Meta(ge=1, le=100)] = 10
    """In `shared` mode: most organizations (browser contexts) in one Chromium."""
    storage_save_interval_s: PositiveSeconds = 60.0
    """In `shared` mode: how often a connected session's login is written to `storage.json`
    (also after connecting, before each login archive and when the session closes)."""



class InboundSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How incoming messages are stored and processed. Delays are drawn uniformly from
    [min, max]; tests set them to 0."""

    processing_delay_min_s: Seconds = 2.0
    """Processing of a stored message starts after a random delay in this range."""
    processing_delay_max_s: Seconds = 5.0
    reply_delay_min_s: Seconds = 2.0
    """An agent's reply is queued to be sent after a random delay in this range."""
    reply_delay_max_s: Seconds = 10.0
    enrichment_per_minute: Annotated[int, Meta(ge=1, le=60)] = 5
    """Extra WhatsApp requests (contact, profile picture) per minute per organization."""
    enrichment_pause_min_s: Seconds = 0.5
    """Random pause between two enrichment requests."""
    enrichment_pause_max_s: Seconds = 2.0
    languages: Annotated[list[str], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: list(DEFAULT_LANGUAGES))
    """Candidate languages (ISO 639-1) for messages and clients."""
    conversation_window: ConversationWindow = 30
    """Recent messages of a conversation handed to language, status and agent decisions."""
    store_groups: bool = False
    """Store messages of group chats (they are never processed into clients)."""
    store_status: bool = False
    """Store status broadcasts (stories) and broadcast lists."""
    store_newsletters: bool = False
    """Store channel (newsletter) posts."""
    catch_up_page_size: Annotated[int, Meta(ge=1, le=500)] = 50
    catch_up_max_pages: Annotated[int, Meta(ge=1, le=1000)] = 20
    """Per chat and reconnect; older gaps are the importer's business."""
    spool_max_events: Annotated[int, Meta(ge=1, le=1_000_000)] = 10_000
    """Events held while the database is unreachable before the session is made to wait."""
    db_retry_s: Annotated[float, Meta(gt=0, le=300)] = 1.0
    """How often an unreachable database is tried again."""
    max_concurrent_chats: Annotated[int, Meta(ge=1, le=256)] = 8
    """Chats processed at the same time (each chat's messages are processed in order)."""
    processing_max_attempts: Annotated[int, Meta(ge=1, le=100)] = 5
    """A message whose processing failed this many times is parked (`FAILED`, with its error,
    counted in `wad status` and the metrics); before that it is tried again with backoff."""
    processing_retry_initial_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    """The first retry's delay; it doubles for each later one, up to
    `processing_retry_max_s`."""
    processing_retry_max_s: Annotated[float, Meta(gt=0, le=86400)] = 300.0
    processing_timeout_s: Timeout = 300.0
    """One processing attempt taking longer than this counts as a failure."""

    def __post_init__(self) -> None:
        for name in ("processing_delay", "reply_delay", "enrichment_pause"):
            low, high = getattr(self, f"{name}_min_s"), getattr(self, f"{name}_max_s")
            if low > high:
                raise ValueError(f"{name}_min_s must not exceed {name}_max_s")


def inbound_settings(settings: object) -> InboundSettings:
    """The `inbound` part of the daemon's settings, or the defaults while `Settings` has none."""
    found = getattr(settings, "inbound", None)
    return found if isinstance(found, InboundSettings) else InboundSettings()


class OutboundSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[outbound]` table: how the outbound actor works (the limits themselves are each
    organization's settings)."""

    max_retries: RetryCount = 3
    """A failed send is tried again this many times, then it is `FAILED`."""
    retry_initial_s: Annotated[float, Meta(gt=0)] = 2.0
    """The first retry waits this long; each next one twice as long (2 s, 4 s, 8 s)."""
    confirm_timeout_s: Annotated[float, Meta(gt=0)] = 60.0
    """How long a send may wait for WhatsApp's server confirmation (ack 1) before wad looks for
    it in the chat and, if it is not there, counts the attempt as failed."""
    poll_interval_s: Annotated[float, Meta(gt=0)] = 5.0
    """How often an idle actor looks at the queue for messages queued by another process (this
    daemon's own API and agents wake it at once)."""
    breaker_window: Annotated[int, Meta(ge=1, le=10000)] = 100
    """The circuit breaker looks at this many of the latest finished sends..."""
    breaker_max_failed_ratio: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.02
    """...and stops sending when more than this share of them failed."""
    pacing: bool = True
    """Spread sends out within the limits, as a person sends: a gap between two sends (the even
    spacing of the minute limit, shortened by a random part of up to `pacing_jitter` of it) and
    at most `burst_limit` sends in any `burst_window_s`. Urgent messages (priority 10) skip the
    gap, never the limits."""
    pacing_jitter: Annotated[float, Meta(ge=0.0, le=0.5)] = 0.25
    burst_limit: Annotated[int, Meta(ge=1, le=20)] = 5
    burst_window_s: Annotated[float, Meta(ge=1.0, le=60.0)] = 10.0
    typing: bool = False
    """Show "typing..." in the client's chat before each send, for a time that grows with the
    text (`typing_chars_per_s`), at most `typing_max_s`."""
    typing_chars_per_s: Annotated[float, Meta(gt=0)] = 20.0
    typing_max_s: Annotated[float, Meta(ge=0.0, le=30.0)] = 4.0
    number_check: bool = True
    """Before the first send to a number the organization has no message with, ask WhatsApp
    whether the number exists; one without WhatsApp fails at once (`NOT_ON_WHATSAPP`)."""
    number_check_interval_s: Annotated[float, Meta(ge=0.0, le=60.0)] = 2.0
    """At least this long between two such questions of one organization."""
    number_check_ttl_s: Annotated[float, Meta(ge=0.0)] = 86400.0
    """How long an answer is trusted before the number is asked again."""


def outbound_settings(settings: Any) -> OutboundSettings:
    """The daemon's `[outbound]` settings, or the defaults while `Settings` has none."""
    found = getattr(settings, "outbound", None)
    return found if isinstance(found, OutboundSettings) else OutboundSettings()


class PluginSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[plugins]` table of the config file."""

    enabled: list[str] = []
    """If not empty, only these bundled and entry-point plugins are loaded (built-in ones always
    are, unless disabled). A name that no installed plugin has stops the start."""
    disabled: list[str] = []
    """Plugins never loaded, built-in ones included (for example `["openrouter"]`)."""
    entry_points: bool = True
    """Load plugins from the `wad` entry-point group (the bundled ones come that way too)."""
    hook_timeout_s: Annotated[float, Meta(gt=0)] = 90.0
    """Longest a single plugin may take in a single hook call before it is skipped."""
    status_min_confidence: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.5
    """A status decision below this confidence is ignored and the next detector is asked."""
    task_max_restarts: Annotated[int, Meta(ge=0, le=1000)] = 10
    """A plugin's background task that is restarted more than this many times within
    `task_restart_period_s` is given up (it stays `failed`; nothing else stops)."""
    task_restart_period_s: PositiveSeconds = 600.0
    config: dict[str, dict[str, Any]] = {}
    """`[plugins.config.<name>]`: each plugin's own table, validated by the plugin's Struct."""


class ArchiveSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Retention of the encrypted login archives in the database (`wad.browser.profile`)."""

    keep_latest: Annotated[int, Meta(ge=1, le=1000)] = 5
    """The newest archives kept whatever their age."""
    keep_daily_days: Annotated[int, Meta(ge=0, le=3650)] = 7
    """Also keep the newest archive of each day of the last this many days."""


class ImportSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Limits on the exported-chat files `wad import` reads. A file over any of them is refused
    whole, with the reason, and nothing of it is imported."""

    max_file_bytes: Annotated[int, Meta(ge=1024, le=1 << 34)] = 64 << 20
    """Largest chat text: a `.txt` file, or one inside a zip (uncompressed)."""
    max_archive_bytes: Annotated[int, Meta(ge=1024, le=1 << 40)] = 4 << 30
    """Largest total uncompressed size of a zip's entries (media included)."""
    max_entries: Annotated[int, Meta(ge=1, le=1_000_000)] = 10_000
    """Most entries in a zip."""
    max_ratio: Annotated[float, Meta(ge=2, le=100_000)] = 100.0
    """Largest compression ratio (uncompressed / compressed size) of a zip entry of 1 MiB or
    more: beyond it the entry is taken for a zip bomb."""


def import_settings(settings: object) -> ImportSettings:
    """The `[imports]` limits of the daemon's settings, or the defaults (no settings)."""
    found = getattr(settings, "imports", None)
    return found if isinstance(found, ImportSettings) else ImportSettings()


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything wad reads from its configuration file."""

    daemon: DaemonSettings = msgspec.field(default_factory=DaemonSettings)
    api: ApiSettings = msgspec.field(default_factory=ApiSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    whatsapp: WhatsAppSettings = msgspec.field(default_factory=WhatsAppSettings)
    archives: ArchiveSettings = msgspec.field(default_factory=ArchiveSettings)
    inbound: InboundSettings = msgspec.field(default_factory=InboundSettings)
    outbound: OutboundSettings = msgspec.field(default_factory=OutboundSettings)
    imports: ImportSettings = msgspec.field(default_factory=ImportSettings)
    feed: FeedSettings = msgspec.field(default_factory=FeedSettings)
    plugins: PluginSettings = msgspec.field(default_factory=PluginSettings)
    graces: GraceSettings = msgspec.field(default_factory=GraceSettings)

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
    if bool(settings.api.tls_cert_file) != bool(settings.api.tls_key_file):
        raise ConfigError(f"{source}: api.tls_cert_file and api.tls_key_file: give both (TLS) "
                          "or neither (plain HTTP)")


def load(path: str | os.PathLike[str] | None = None, *, env: dict[str, str] | None = None) -> Settings:
    """Load settings from PATH (or `WAD_CONFIG`; none: the embedded defaults) and the
    environment's secrets."""
    env = environment.with_secrets() if env is None else env
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
