"""The plugin system: loading, configuration, isolation of failing plugins, and each hook."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import trio
import trio.lowlevel
import trio.testing
from structlog.testing import capture_logs

import wad
from tests.support.plugin_helpers import ORG, client, empty_pm, message
from wad import hookimpl, hookspecs
from wad.errors import ConfigError
from wad.payloads import (
    AgentReply,
    BackgroundTask,
    ClientStatusChange,
    ImportedChat,
    ImportedMessage,
    ImportRequest,
    ImportSource,
    LanguageGuess,
    MessageStatusChange,
    SessionStatusChange,
    StatusDecision,
)
from wad.plugins import (
    BUILTIN_PLUGINS,
    PluginSettings,
    agent_reply,
    call_all,
    call_first,
    detect_languages,
    detect_status,
    get_plugin_manager,
    import_sources,
    notify,
    run_background_tasks,
)


def failures(logs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(plugin, hook) of every "skipped" log line."""
    return [(line["plugin"], line["hook"]) for line in logs if "skipped" in line["event"]
            and "hook" in line]


# Loading and configuration --------------------------------------------------------------------


def test_hookimpl_is_exported_from_wad() -> None:
    assert wad.hookimpl is hookimpl


def test_bundled_plugins_are_registered_in_the_wad_entry_point_group() -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group="wad")}
    assert {"heuristic_status", "openrouter", "webhook"} <= names


def test_default_manager_has_builtin_and_bundled_plugins() -> None:
    pm = get_plugin_manager(PluginSettings(), bundled=False)  # bundled ones via entry points
    names = {name for name, _ in pm.list_name_plugin()}
    assert {"language", "heuristic_status", "openrouter", "webhook"} <= names
    # The webhook plugin is a class: each manager gets its own instance.
    other = get_plugin_manager(PluginSettings())
    assert pm.get_plugin("webhook") is not other.get_plugin("webhook")


def test_wads_defaults_are_the_builtin_plugins_of_one_list() -> None:
    # Without entry points and the bundled list, only the built-ins load: wad's defaults, as
    # the trylast implementations of their hooks (fastText called before langdetect, its
    # fallback: get_hookimpls lists them in the reverse of pluggy's call order).
    pm = get_plugin_manager(PluginSettings(entry_points=False), bundled=False)
    assert {name for name, _ in pm.list_name_plugin()} == set(BUILTIN_PLUGINS) == {
        "language", "fasttext_language", "heuristic_status"}
    expected = {"wad_detect_language": [("language", True), ("fasttext_language", True)],
                "wad_detect_status": [("heuristic_status", True)]}
    for hook, implementations in expected.items():
        impls = getattr(pm.hook, hook).get_hookimpls()
        assert [(i.plugin_name, i.trylast) for i in impls] == implementations
    assert not get_plugin_manager(PluginSettings(entry_points=False, disabled=[
        "heuristic_status"]), bundled=False).has_plugin("heuristic_status")


def test_disabled_and_enabled() -> None:
    pm = get_plugin_manager(PluginSettings(disabled=["openrouter", "language"]))
    names = {name for name, _ in pm.list_name_plugin()}
    assert "openrouter" not in names
    assert "language" not in names
    assert "heuristic_status" in names

    pm = get_plugin_manager(PluginSettings(enabled=["heuristic_status"]))
    names = {name for name, _ in pm.list_name_plugin()}
    assert names == {"language", "fasttext_language", "heuristic_status"}  # built-ins stay

    with pytest.raises(ConfigError, match=r"plugins\.enabled: no installed plugin named nope"):
        get_plugin_manager(PluginSettings(enabled=["nope"]))


def test_plugins_table_decodes_from_toml() -> None:
    text = """
        enabled = ["heuristic_status", "webhook"]
        status_min_confidence = 0.6
        [config.webhook]
        url = "https://crm.example/hooks/wad"
        secret = "s3cret"
        events = ["message.stored"]
    """
    settings = msgspec.toml.decode(text.encode(), type=PluginSettings)
    pm = get_plugin_manager(settings)
    config = pm.context.plugin_config("webhook")
    assert type(config).__name__ == "Config"
    assert config.url == "https://crm.example/hooks/wad"
    assert config.events == ["message.stored"]
    with pytest.raises(msgspec.ValidationError, match="status_min_confidence"):
        msgspec.toml.decode(b"status_min_confidence = 2.0", type=PluginSettings)


def test_the_whole_settings_may_be_given() -> None:
    settings = types.SimpleNamespace(plugins=PluginSettings(disabled=["openrouter"]),
                                     openrouter_api_key="")
    pm = get_plugin_manager(settings)  # type: ignore[arg-type]
    assert pm.context.settings is settings
    assert not pm.has_plugin("openrouter")
    assert pm.has_plugin("heuristic_status")


class Configurable:
    """A plugin with its own configuration Struct."""

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        greeting: str = "hello"
        retries: int = 1

    @hookimpl
    def wad_plugin_config_type(self) -> type[Any]:
        return self.Config


def test_plugin_config_type_decodes_and_validates_the_plugins_table() -> None:
    pm = empty_pm(config={"greeter": {"greeting": "salam"}})
    pm.register(Configurable, "greeter")
    assert pm.context.plugin_config("greeter") == Configurable.Config(greeting="salam")

    pm = empty_pm(config={"greeter": {"retries": "three"}})
    with pytest.raises(ConfigError, match=r"^plugins\.config\.greeter\.retries: Expected `int`"):
        pm.register(Configurable, "greeter")
    assert not pm.has_plugin("greeter")

    pm = empty_pm(config={"greeter": {"colour": "red"}})
    with pytest.raises(ConfigError, match=r"^plugins\.config\.greeter\.colour: unknown key"):
        pm.register(Configurable, "greeter")

    # A plugin that cannot even name its configuration type is skipped.
    broken = types.SimpleNamespace(wad_plugin_config_type=hookimpl(lambda: 1 / 0))
    with capture_logs() as logs:
        assert pm.register(broken, "broken") is None
    assert not pm.has_plugin("broken")
    assert failures(logs) == [("broken", "wad_plugin_config_type")]

    # Without a config type, the plugin sees its table as it is.
    pm = empty_pm(config={"plain": {"anything": [1, 2]}})
    pm.register(types.SimpleNamespace(), "plain")
    assert pm.context.plugin_config("plain") == {"anything": [1, 2]}


def test_bundled_plugin_config_errors_name_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAD_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match=r"plugins\.config\.webhook\.timeout_s"):
        get_plugin_manager(PluginSettings(config={"webhook": {"timeout_s": -1}}))
    with pytest.raises(ConfigError, match=r"plugins\.config\.webhook.*secret: required"):
        get_plugin_manager(PluginSettings(config={"webhook": {"url": "https://crm.example"}}))
    with pytest.raises(ConfigError, match=r"plugins\.config\.openrouter\.modle: unknown key"):
        get_plugin_manager(PluginSettings(config={"openrouter": {"modle": "x"}}))


def test_a_plugin_that_fails_to_load_is_skipped_unless_enabled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    broken = types.ModuleType("wad_test_broken_plugin")
    monkeypatch.setitem(sys.modules, "wad_test_broken_plugin", broken)

    class BrokenEntryPoint:
        name = "broken"

        def load(self) -> Any:
            raise RuntimeError("cannot import numpy")

    real = importlib.metadata.entry_points

    def entry_points(**kwargs: Any) -> Any:
        return [*real(**kwargs), BrokenEntryPoint()]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    with capture_logs() as logs:
        pm = get_plugin_manager(PluginSettings())
    assert not pm.has_plugin("broken")
    assert pm.has_plugin("heuristic_status")
    assert any(line.get("plugin") == "broken" for line in logs)
    with pytest.raises(ConfigError, match="plugin broken failed to load"):
        get_plugin_manager(PluginSettings(enabled=["broken"]))


# Isolation: a failing plugin never stops the others -------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @hookimpl
    async def wad_message_received(self, message: Any, client: Any) -> None:
        self.seen.append(("received", message.body))


class Boom:
    @hookimpl(tryfirst=True)
    async def wad_message_received(self, message: Any) -> None:
        raise RuntimeError("the CRM is on fire")

    @hookimpl(tryfirst=True)
    def wad_detect_status(self) -> StatusDecision:
        raise ValueError("sync failure")


async def test_a_raising_plugin_is_logged_with_its_name_and_skipped() -> None:
    pm = empty_pm()
    recorder = Recorder()
    pm.register(recorder, "recorder")
    pm.register(Boom(), "boom")
    pm.register(types.SimpleNamespace(wad_detect_status=hookimpl(
        lambda: StatusDecision(status="WARMED", confidence=0.9))), "fallback")
    with capture_logs() as logs:
        await notify(pm, "wad_message_received", message=message("hi"), client=client())
        decision = await detect_status(pm, client=client(), messages=[message("price?")],
                                       current_status="NEW_LEAD")
    assert recorder.seen == [("received", "hi")]
    assert decision == StatusDecision(status="WARMED", confidence=0.9, detector="fallback")
    assert failures(logs) == [("boom", "wad_message_received"), ("boom", "wad_detect_status")]
    failed = [line for line in logs if line.get("plugin") == "boom"][0]
    assert failed["log_level"] == "error"
    assert failed["exc_info"]


async def test_a_plugin_that_hangs_is_cut_off_and_skipped(autojump_clock: Any) -> None:
    pm = empty_pm(hook_timeout_s=5)

    class Slow:
        @hookimpl(tryfirst=True)
        async def wad_agent_reply(self) -> str:
            await trio.sleep(3600)
            return "too late"

    class Quick:
        @hookimpl
        def wad_agent_reply(self) -> str:
            return "Salam! The tour costs 450 USD."

    pm.register(Quick(), "quick")
    pm.register(Slow(), "slow")
    started = trio.current_time()
    with capture_logs() as logs:
        reply = await agent_reply(pm, message=message("price?"), client=client(),
                                  conversation=[message("price?")])
    assert reply == AgentReply(text="Salam! The tour costs 450 USD.", agent="quick")
    assert trio.current_time() - started == pytest.approx(5)
    assert failures(logs) == [("slow", "wad_agent_reply")]


async def test_cancellation_is_not_swallowed() -> None:
    pm = empty_pm()

    class Waits:
        @hookimpl
        async def wad_message_sent(self) -> None:
            await trio.sleep_forever()

    pm.register(Waits(), "waits")
    with trio.move_on_after(0.05) as scope:
        await notify(pm, "wad_message_sent", message=message("x", direction="OUT"), client=None)
    assert scope.cancelled_caught


# Each hook ------------------------------------------------------------------------------------


async def test_detect_status_asks_in_order_and_the_first_confident_answer_wins() -> None:
    pm = empty_pm(status_min_confidence=0.6)
    asked: list[str] = []

    def detector(name: str, answer: Any, *, tryfirst: bool = False, trylast: bool = False
                 ) -> Any:
        @hookimpl(tryfirst=tryfirst, trylast=trylast)
        async def wad_detect_status(client: Any, messages: Sequence[Any],
                                    current_status: Any) -> Any:
            asked.append(name)
            assert current_status == "QUALIFIED"
            assert messages[-1].body == "deal, we pay today"
            return answer

        return types.SimpleNamespace(wad_detect_status=wad_detect_status)

    pm.register(detector("last", StatusDecision(status="WARMED", confidence=1.0),
                         trylast=True), "last")
    pm.register(detector("unsure", StatusDecision(status="CLOSED", confidence=0.3)), "unsure")
    pm.register(detector("silent", None, tryfirst=True), "silent")
    pm.register(detector("garbage", {"status": "HAPPY", "confidence": 2}), "garbage")
    pm.register(detector("sure", {"status": "SOLD", "confidence": 0.8, "reason": "pays today",
                                  "detector": "llm-v2"}), "sure")

    with capture_logs() as logs:
        decision = await detect_status(pm, client=client(status="QUALIFIED"),
                                       messages=[message("deal, we pay today")],
                                       current_status="QUALIFIED")
    assert decision == StatusDecision(status="SOLD", confidence=0.8, reason="pays today",
                                      detector="llm-v2")
    # tryfirst first; then the latest registered; the trylast one is never reached.
    assert asked == ["silent", "sure"]
    assert not logs

    asked.clear()
    pm.unregister(name="sure")
    with capture_logs() as logs:
        decision = await detect_status(pm, client=client(status="QUALIFIED"),
                                       messages=[message("deal, we pay today")],
                                       current_status="QUALIFIED")
    assert asked == ["silent", "garbage", "unsure", "last"]
    assert decision == StatusDecision(status="WARMED", confidence=1.0, detector="last")
    assert [line["plugin"] for line in logs if line["log_level"] == "warning"] == ["garbage"]


async def test_agent_reply_first_answer_wins_and_is_named() -> None:
    pm = empty_pm()
    seen: dict[str, Any] = {}

    class Silent:
        @hookimpl
        def wad_agent_reply(self) -> None:
            return None

    class Agent:
        @hookimpl
        async def wad_agent_reply(self, message: Any, client: Any, conversation: Any) -> str:
            seen.update(message=message.body, client=client.name,
                        conversation=[m.body for m in conversation])
            return "  Здравствуйте! Тур стоит 450 долларов.  "

    class Blank:
        @hookimpl(tryfirst=True)
        def wad_agent_reply(self) -> str:
            return "   "

    pm.register(Agent(), "agent")
    pm.register(Silent(), "silent")
    pm.register(Blank(), "blank")
    history = [message("Здравствуйте"), message("Добрый день!", direction="OUT"),
               message("Сколько стоит тур?")]
    reply = await agent_reply(pm, message=history[-1], client=client(), conversation=history)
    assert reply == AgentReply(text="Здравствуйте! Тур стоит 450 долларов.", agent="agent")
    assert seen == {"message": "Сколько стоит тур?", "client": "Aigerim",
                    "conversation": ["Здравствуйте", "Добрый день!", "Сколько стоит тур?"]}

    pm.unregister(name="agent")
    assert await agent_reply(pm, message=history[-1], client=client(),
                             conversation=history) is None


async def test_language_detection_is_a_plugin_that_others_override() -> None:
    pm = get_plugin_manager(PluginSettings(entry_points=False), bundled=False)
    texts = ["Сколько стоит тур на Иссык-Куль?", "ok", "Wie viel kostet die Reise?"]
    guesses = await detect_languages(pm, texts, languages=["en", "ru", "de"])
    assert [g.language for g in guesses] == ["ru", None, "de"]

    class Kyrgyz:
        """Knows one more language, and defers on the rest."""

        @hookimpl
        def wad_detect_language(self, texts: Sequence[str], languages: Sequence[str]) -> Any:
            if not any("канча" in t for t in texts):
                return None
            return [LanguageGuess(language="ky", probability=0.9) for _ in texts]

    pm.register(Kyrgyz(), "kyrgyz")
    guesses = await detect_languages(pm, ["Тур канча турат?"], languages=["ru", "ky"])
    assert guesses == [LanguageGuess(language="ky", probability=0.9)]
    # A guess outside the configured languages counts as unknown.
    guesses = await detect_languages(pm, ["Тур канча турат?"], languages=["ru", "en"])
    assert guesses == [LanguageGuess(language=None)]
    guesses = await detect_languages(pm, ["Сколько стоит?"], languages=["ru", "ky"])
    assert [g.language for g in guesses] == ["ru"]


async def test_import_sources_are_found_by_name() -> None:
    pm = empty_pm()

    async def chats(request: ImportRequest) -> AsyncIterator[ImportedChat]:
        yield ImportedChat(key=f"{request.location}/chat-1", phone="+996 555 123 456",
                           name="Aigerim", messages=[ImportedMessage(
                               direction="IN", sender="CLIENT", body="Salam",
                               sent_at=datetime(2024, 5, 1, tzinfo=UTC))])

    class Crm:
        @hookimpl
        def wad_import_sources(self) -> list[ImportSource]:
            return [ImportSource(name="old-crm", description="The old CRM's export",
                                 chats=chats)]

    class Clash:
        @hookimpl
        def wad_import_sources(self) -> list[Any]:
            return [ImportSource(name="old-crm", description="Another", chats=chats), "junk"]

    pm.register(Crm(), "crm")
    pm.register(Clash(), "clash")
    with capture_logs() as logs:
        sources = import_sources(pm)
    assert list(sources) == ["old-crm"]
    assert sources["old-crm"].description == "Another"
    assert [line["plugin"] for line in logs] == ["clash", "crm"]

    chats_found = [chat async for chat in sources["old-crm"].chats(
        ImportRequest(organization_id=ORG, location="/tmp/export"))]
    assert chats_found[0].key == "/tmp/export/chat-1"
    assert chats_found[0].messages[0].body == "Salam"


async def test_background_tasks_run_and_restart_after_a_crash(autojump_clock: Any) -> None:
    pm = empty_pm()
    starts: list[float] = []
    ticks: list[float] = []

    class Worker:
        @hookimpl
        def wad_background_tasks(self, ctx: Any) -> list[BackgroundTask]:
            assert ctx is pm.context

            async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
                starts.append(trio.current_time())
                task_status.started()
                if len(starts) < 3:
                    raise RuntimeError("lost the connection")
                while True:
                    ticks.append(trio.current_time())
                    await trio.sleep(10)

            return [BackgroundTask(name="loop", run=run)]

    pm.register(Worker(), "worker")
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            names = await nursery.start(run_background_tasks, pm)
            await trio.sleep(30)
            nursery.cancel_scope.cancel()
    assert names == ["worker:loop"]
    begin = starts[0]
    assert [t - begin for t in starts] == [0, 1, 3]  # backoff 1 s, then 2 s
    assert len(ticks) >= 3
    crashed = [line for line in logs if line["event"].startswith("plugin task failed")]
    assert [(line["plugin"], line["task"]) for line in crashed] == [("worker", "loop")] * 2


NOTIFICATIONS: dict[str, dict[str, Any]] = {
    "wad_message_received": {"message": message("Hello"), "client": client()},
    "wad_message_sent": {"message": message("Hi!", direction="OUT"), "client": client()},
    "wad_message_status_changed": {"change": MessageStatusChange(
        organization_id=ORG, message=message("Hi!", direction="OUT", status="READ"),
        from_status="DELIVERED", to_status="READ", at=datetime(2025, 7, 1, tzinfo=UTC))},
    "wad_session_status_changed": {"change": SessionStatusChange(
        organization_id=ORG, from_state="CONNECTED", to_state="LOGGED_OUT",
        reason="logged out from the phone", at=datetime(2025, 7, 1, tzinfo=UTC))},
    "wad_client_status_changed": {"change": ClientStatusChange(
        organization_id=ORG, client=client(status="SOLD"), from_status="NEGOTIATION",
        to_status="SOLD", detector="heuristic_status", reason="SOLD: matched «paid»",
        at=datetime(2025, 7, 1, tzinfo=UTC))},
}


class AsyncListener:
    """Implements every notification hook as `async def`."""

    def __init__(self, name: str, received: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.name, self.received = name, received

    def _got(self, hook: str, **kwargs: Any) -> None:
        self.received.append((self.name, hook, kwargs))

    @hookimpl
    async def wad_message_received(self, message: Any, client: Any) -> None:
        await trio.lowlevel.checkpoint()
        self._got("wad_message_received", message=message, client=client)

    @hookimpl
    async def wad_message_sent(self, message: Any, client: Any) -> None:
        await trio.lowlevel.checkpoint()
        self._got("wad_message_sent", message=message, client=client)

    @hookimpl
    async def wad_message_status_changed(self, change: Any) -> None:
        await trio.lowlevel.checkpoint()
        self._got("wad_message_status_changed", change=change)

    @hookimpl
    async def wad_session_status_changed(self, change: Any) -> None:
        await trio.lowlevel.checkpoint()
        self._got("wad_session_status_changed", change=change)

    @hookimpl
    async def wad_client_status_changed(self, change: Any) -> None:
        await trio.lowlevel.checkpoint()
        self._got("wad_client_status_changed", change=change)


class SyncListener(AsyncListener):
    """The same hooks as plain functions (wad accepts both)."""

    @hookimpl
    def wad_message_received(self, message: Any, client: Any) -> None:  # type: ignore[override]
        self._got("wad_message_received", message=message, client=client)

    @hookimpl
    def wad_message_sent(self, message: Any, client: Any) -> None:  # type: ignore[override]
        self._got("wad_message_sent", message=message, client=client)

    @hookimpl
    def wad_message_status_changed(self, change: Any) -> None:  # type: ignore[override]
        self._got("wad_message_status_changed", change=change)

    @hookimpl
    def wad_session_status_changed(self, change: Any) -> None:  # type: ignore[override]
        self._got("wad_session_status_changed", change=change)

    @hookimpl
    def wad_client_status_changed(self, change: Any) -> None:  # type: ignore[override]
        self._got("wad_client_status_changed", change=change)


@pytest.mark.parametrize("hook_name", sorted(hookspecs.NOTIFICATION_HOOKS))
async def test_notification_reaches_every_plugin(hook_name: str) -> None:
    pm = empty_pm()
    received: list[tuple[str, str, dict[str, Any]]] = []
    pm.register(SyncListener("sync", received), "sync")
    pm.register(types.SimpleNamespace(**{hook_name: hookimpl(lambda: 1 / 0)}), "broken")
    pm.register(AsyncListener("async", received), "async")
    with capture_logs() as logs:
        await notify(pm, hook_name, **NOTIFICATIONS[hook_name])
    assert received == [("async", hook_name, NOTIFICATIONS[hook_name]),
                        ("sync", hook_name, NOTIFICATIONS[hook_name])]
    assert failures(logs) == [("broken", hook_name)]
    with pytest.raises(ValueError, match="not a notification hook"):
        await notify(pm, "wad_agent_reply")


async def test_call_all_answers_each_plugins_result_in_order() -> None:
    pm = empty_pm()
    for name, value in [("a", "first registered"), ("b", None), ("c", "last registered")]:
        pm.register(types.SimpleNamespace(
            wad_import_sources=hookimpl(lambda value=value: value)), name)
    answers = await call_all(pm, "wad_import_sources")
    assert [(a.plugin, a.value) for a in answers] == [("c", "last registered"),
                                                      ("a", "first registered")]


# Calling hooks as pluggy means them: firstresult, order, wrappers ---------------------------


def language_plugin(asked: list[str], name: str, answer: Any, *, tryfirst: bool = False,
                    trylast: bool = False) -> Any:
    """A plain (synchronous) language detector answering `answer`, noting it was asked."""

    @hookimpl(tryfirst=tryfirst, trylast=trylast)
    def wad_detect_language(texts: Sequence[str]) -> Any:
        asked.append(name)
        return None if answer is None else [LanguageGuess(language=answer) for _ in texts]

    return types.SimpleNamespace(wad_detect_language=wad_detect_language)


async def test_firstresult_stops_at_the_first_answer_in_pluggys_own_order() -> None:
    asked: list[str] = []
    pm = empty_pm()
    pm.register(language_plugin(asked, "default", "en", trylast=True), "default")
    pm.register(language_plugin(asked, "early", "de"), "early")
    pm.register(language_plugin(asked, "silent", None, tryfirst=True), "silent")
    pm.register(language_plugin(asked, "late", "ru"), "late")
    pm.register(language_plugin(asked, "also-silent", None), "also-silent")

    guesses = await detect_languages(pm, ["Салам"], languages=["ru", "en", "de"])
    assert guesses == [LanguageGuess(language="ru")]
    # tryfirst first, then later registered before earlier; nobody after the first answer.
    assert asked == ["silent", "also-silent", "late"]

    # pluggy itself, calling the same (synchronous) implementations, picks the same answer in
    # the same order: wad's own loop is pluggy's semantics, not an approximation of them.
    asked.clear()
    by_pluggy = pm.hook.wad_detect_language(ctx=pm.context, texts=["Салам"],
                                            languages=["ru", "en", "de"])
    assert by_pluggy == guesses
    assert asked == ["silent", "also-silent", "late"]

    # A hook without firstresult hears every implementation.
    assert hookspecs.wad_detect_status.wad_spec["firstresult"] is True  # type: ignore[attr-defined]
    assert hookspecs.wad_message_received.wad_spec["firstresult"] is False  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="not a firstresult hook"):
        await call_first(pm, "wad_message_received", message=message("hi"), client=None)


class StatusWrapper:
    """A new-style wrapper around status detection: sees the decision, vetoes SOLD without a
    reason, and notes what it saw."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl(wrapper=True)
    def wad_detect_status(self, client: Any) -> Any:
        decision = yield
        self.seen.append(decision)
        if decision is not None and decision.status == "SOLD" and not decision.reason:
            return StatusDecision(status="WARMED", confidence=0.9, reason="SOLD needs a reason")
        return decision


def status_plugin(status: str, confidence: float) -> Any:
    @hookimpl
    async def wad_detect_status() -> Any:
        await trio.lowlevel.checkpoint()  # a real async implementation
        return StatusDecision(status=status, confidence=confidence)  # type: ignore[arg-type]

    return types.SimpleNamespace(wad_detect_status=wad_detect_status)


async def test_a_wrapper_sees_and_may_replace_an_async_firstresult() -> None:
    pm = empty_pm()
    wrapper = StatusWrapper()
    pm.register(wrapper, "guard")  # registered first: a wrapper still runs around all others
    pm.register(status_plugin("QUALIFIED", 0.7), "plain")
    pm.register(status_plugin("SOLD", 0.95), "eager")

    async def detect() -> StatusDecision | None:
        return await detect_status(pm, client=client(status="WARMED"),
                                   messages=[message("maybe")], current_status="WARMED")

    decision = await detect()
    assert wrapper.seen == [StatusDecision(status="SOLD", confidence=0.95, detector="eager")]
    # The wrapper's answer is the result, named after the wrapper's plugin.
    assert decision == StatusDecision(status="WARMED", confidence=0.9,
                                      reason="SOLD needs a reason", detector="guard")

    pm.unregister(name="eager")
    decision = await detect()
    assert wrapper.seen[-1] == decision == StatusDecision(status="QUALIFIED", confidence=0.7,
                                                          detector="plain")


class OldStyleFilter:
    """An old-style `hookwrapper` that drops import sources whose name starts with `test-`."""

    @hookimpl(hookwrapper=True)
    def wad_import_sources(self) -> Any:
        outcome = yield
        outcome.force_result([[s for s in sources if not s.name.startswith("test-")]
                              for sources in outcome.get_result()])


class BrokenWrapper:
    @hookimpl(wrapper=True)
    def wad_import_sources(self) -> Any:
        yield
        raise RuntimeError("wrapper bug")


async def test_wrappers_wrap_synchronous_and_call_all_hooks() -> None:
    async def chats(request: ImportRequest) -> AsyncIterator[ImportedChat]:
        return
        yield

    pm = empty_pm()
    pm.register(types.SimpleNamespace(wad_import_sources=hookimpl(lambda: [
        ImportSource(name="crm", description="CRM", chats=chats),
        ImportSource(name="test-fixture", description="fixture", chats=chats)])), "sources")
    pm.register(OldStyleFilter(), "filter")
    assert sorted(import_sources(pm)) == ["crm"]

    # A wrapper that fails after its yield is logged with its name; the result stands.
    pm.register(BrokenWrapper(), "broken")
    with capture_logs() as logs:
        assert sorted(import_sources(pm)) == ["crm"]
    assert ("broken", "wad_import_sources") in [
        (e.get("plugin"), e.get("hook")) for e in logs if e["log_level"] == "error"]

    # Around a hook that hears everyone, a new-style wrapper sees every answer in call order
    # and may replace the list; answers it keeps keep their plugin's name.
    seen: list[Any] = []

    @hookimpl(wrapper=True)
    def wad_import_sources() -> Any:
        answers = yield
        seen.append(answers)
        return [*reversed(answers), "added"]

    pm.unregister(name="broken")
    pm.unregister(name="filter")
    pm.register(types.SimpleNamespace(wad_import_sources=hookimpl(lambda: ["other"])), "more")
    pm.register(types.SimpleNamespace(wad_import_sources=wad_import_sources), "reverse")
    answers = await call_all(pm, "wad_import_sources")
    assert seen == [[["other"], answers[0].value]]
    assert [a.plugin for a in answers] == ["sources", "more", "reverse"]
    assert answers[1].value == ["other"] and answers[2].value == "added"
