"""The hooks a wad plugin can implement. These docstrings are the plugin author's reference;
`docs/plugins.md` shows each with an example.

A plugin is a module, an object or a class (wad instantiates a class with no arguments) whose
functions are decorated with `wad.hookimpl` and named like the hooks below. An implementation
takes any subset of a hook's arguments, by name. Hooks marked *async* may be written as
`async def` or plain `def`; wad awaits what they return. Every call is isolated: an
implementation that raises or exceeds `plugins.hook_timeout_s` is logged with its plugin's
name and skipped, and the others still run. As with pluggy, a `firstresult` hook ("first answer
wins") stops at the first answer, and `@hookimpl(wrapper=True)` generators wrap any hook's call
and may replace its result (see `docs/plugins.md`, How wad calls hooks).

Every hook receives `ctx` (`wad.plugins.PluginContext`): the daemon's settings, its database
(None outside the daemon) and `ctx.plugin_config(name)`, the plugin's own configuration table.

Stages, in the order a message meets them: setup (once, at start), inbound processing (for each
stored message), importing (`wad import`), and notifications (after things happened).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from wad.config import Settings
    from wad.db.pool import Database
    from wad.payloads import (
        AgentReply,
        BackgroundTask,
        Client,
        ClientStatus,
        ClientStatusChange,
        ImportSource,
        LanguageGuess,
        Message,
        MessageStatusChange,
        SessionStatusChange,
        StatusDecision,
    )

hookspec = pluggy.HookspecMarker("wad")
"""Marks a function below as a hook's specification."""

hookimpl = pluggy.HookimplMarker("wad")
"""Marks a plugin's function as the implementation of the wad hook with the same name."""


class PluginContext:
    """What every hook gets as `ctx`: wad's settings, its database, and each plugin's
    configuration. `settings` and `db` are None until the daemon binds them (and in unit tests)."""

    def __init__(self, plugin_config: Callable[[str], Any]) -> None:
        self._plugin_config = plugin_config
        self.settings: Settings | None = None
        self.db: Database | None = None

    def plugin_config(self, name: str) -> Any:
        """The plugin's configuration: its decoded Struct when it declares one
        (`wad_plugin_config_type`), else the raw table (an empty dict when there is none)."""
        return self._plugin_config(name)


# Setup ----------------------------------------------------------------------------------------


@hookspec
def wad_plugin_config_type() -> type[Any] | None:
    """The msgspec Struct type of this plugin's configuration, or None for none.

    Called once, while the plugin manager is built, for each plugin. wad decodes the
    `[plugins.config.<name>]` table of the config file into this type (unknown keys and bad values
    stop the start with a message naming `plugins.config.<name>.<key>`), and
    `ctx.plugin_config(name)` answers the decoded value. Without it, the plugin gets the table as a
    plain dict. Synchronous.
    """


@hookspec
def wad_background_tasks(ctx: PluginContext) -> Sequence[BackgroundTask] | None:
    """Long-running tasks the daemon should run for this plugin, such as a delivery worker.

    Called once when the daemon has its database. Each task is started with `nursery.start` and
    runs until the daemon stops; a task that raises is logged with the plugin's name and restarted
    with exponential backoff (1 s doubling to 60 s). Synchronous: return the tasks, do not run them.
    """


# Inbound processing (for each stored message, in this order) ---------------------------------


@hookspec(firstresult=True)
def wad_detect_language(
    ctx: PluginContext, texts: Sequence[str], languages: Sequence[str]
) -> list[LanguageGuess] | None:
    """The language of each text, one `LanguageGuess` per text in the same order, limited to
    `languages` (ISO 639-1 codes such as `"ru"`); or None to let the next plugin answer.

    *Async.* First answer wins. wad's own implementation (langdetect, seeded, restricted to
    `languages`, very short texts unknown) runs last, so a plugin overrides it simply by answering.
    wad decides a client's preferred language from the guesses over the whole conversation, not
    from one message. Called with many texts at once when wad can batch.
    """


@hookspec(firstresult=True)
def wad_detect_status(
    ctx: PluginContext,
    client: Client,
    messages: Sequence[Message],
    current_status: ClientStatus | None,
) -> StatusDecision | None:
    """Where `client` stands in the sales funnel, judged from `messages` (the recent conversation,
    oldest first, both directions), or None to let the next detector decide.

    *Async.* wad asks the detectors one after another in hook order (`tryfirst` ones first,
    `trylast` ones, like the built-in heuristic detector, last) and the first decision whose
    `confidence` reaches `plugins.status_min_confidence` wins; the rest are not asked. When the
    status changes, wad writes the client's status history with `detector` (the plugin's name
    unless the decision names one) and `reason`, and sends `wad_client_status_changed`.
    """


@hookspec(firstresult=True)
def wad_agent_reply(
    ctx: PluginContext, message: Message, client: Client, conversation: Sequence[Message]
) -> AgentReply | str | None:
    """A reply to the client's incoming `message`, or None to stay silent.

    *Async.* `conversation` is the recent conversation, oldest first, ending with `message`. First
    answer wins: wad queues it for sending with priority 5, sender AI and a random delay (so a
    human seems to type), and records the agent's name (the plugin's name unless the reply names
    one). Called after status detection, so `client.status` is up to date.
    """


# Importing ------------------------------------------------------------------------------------


@hookspec
def wad_import_sources(ctx: PluginContext) -> Sequence[ImportSource] | None:
    """Named sources of chats for `wad import --source NAME`.

    Synchronous: return descriptions; wad calls a source's `chats(request)` only when the
    operator picks it. Names are unique; a second source with a taken name is logged and ignored.
    """


# Notifications (after the fact; wad awaits them, but their errors never reach the pipeline) ---


@hookspec
def wad_message_received(ctx: PluginContext, message: Message, client: Client | None) -> None:
    """A client's message was stored and processed (its language and client are known).

    *Async.* Also called for messages wad caught up on after a reconnect. `client` is None only if
    the sender could not be resolved to a client.
    """


@hookspec
def wad_message_sent(ctx: PluginContext, message: Message, client: Client | None) -> None:
    """An outgoing message was sent: queued by the API or an agent, or typed on the phone
    (`message.sender == "HUMAN"`).

    *Async.*
    """


@hookspec
def wad_message_status_changed(ctx: PluginContext, change: MessageStatusChange) -> None:
    """A stored message's status moved: an ack (`SENT`, `DELIVERED`, `READ`, `PLAYED`), a failure
    or a revoke.

    *Async.*
    """


@hookspec
def wad_session_status_changed(ctx: PluginContext, change: SessionStatusChange) -> None:
    """An organization's WhatsApp session changed state (for example `CONNECTED` to
    `LOGGED_OUT`).

    *Async.*
    """


@hookspec
def wad_client_status_changed(ctx: PluginContext, change: ClientStatusChange) -> None:
    """A client moved in the funnel; called after the status history row is written.

    *Async.*
    """


NOTIFICATION_HOOKS: dict[str, str] = {
    "wad_message_received": "message.received",
    "wad_message_sent": "message.sent",
    "wad_message_status_changed": "message.status_changed",
    "wad_session_status_changed": "session.status_changed",
    "wad_client_status_changed": "client.status_changed",
}
"""Each notification hook and the event name it travels under outside wad."""
