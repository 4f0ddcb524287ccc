"""The plugin manager: finding plugins, configuring them, and calling their hooks safely.

There is no global manager. `get_plugin_manager(settings)` builds one (the daemon once, each test
its own) with wad's built-in plugins, the bundled ones and those of the `wad` entry-point group,
minus what the config file disables. The hooks are in `wad.hookspecs`.

pluggy's own calls are synchronous and stop at the first exception, so wad calls each
implementation itself (`call_all`, `call_first` and the typed helpers below), the way pluggy
would: in pluggy's order, stopping at the first answer of a `firstresult` hook, with hook
wrappers around the call that may replace its result. On top, it awaits what an async
implementation returns, bounds each call by `plugins.hook_timeout_s`, and logs an implementation
that raises or times out with its plugin's name, then goes on with the next one.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Callable, Coroutine, Generator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import msgspec
import pluggy
import trio
from pluggy import HookImpl

from wad import hookspecs, log
from wad.config import PluginSettings, Settings
from wad.errors import ConfigError
from wad.hookspecs import PluginContext as PluginContext  # plugins import it from here
from wad.hookspecs import hookimpl as hookimpl  # and this
from wad.payloads import (
    AgentReply,
    BackgroundTask,
    Client,
    ClientStatus,
    ImportSource,
    LanguageGuess,
    Message,
    StatusDecision,
)
from wad.supervise import Backoff, ChildSpec, Restart, Strategy, Supervisor, describe

if TYPE_CHECKING:
    from wad.db.pool import Database

ENTRY_POINT_GROUP = "wad"

BUILTIN_PLUGINS: dict[str, str] = {
    # Before `language`: pluggy calls trylast implementations in reverse registration order.
    "fasttext_language": "wad_fasttext_language",
    "language": "wad.language",
    "heuristic_status": "wad_heuristic_status",
}
"""wad's own default behaviour (the language detectors: fastText first, langdetect as its
fallback; the heuristic status detector), registered
as plugins like any other, first and `trylast`, so that other plugins override them. Always
loaded unless `plugins.disabled` names them."""

BUNDLED_PLUGINS: dict[str, str] = {
    "openrouter": "wad_openrouter",
    "webhook": "wad_webhook:WebhookPlugin",
    "export": "wad_export_import",
}
"""The `wad-plugins` distribution (`plugins/`). Normally found through their entry points; when
that distribution is importable but not installed with its metadata, they are loaded from here."""

_log = log.get("plugins")

T = TypeVar("T", bound=msgspec.Struct)
R = TypeVar("R")


class Answer(NamedTuple):
    """One plugin's answer to a hook call."""

    plugin: str
    value: Any


class PluginManager(pluggy.PluginManager):
    """pluggy's manager for the `wad` project, with wad's plugin settings and context."""

    def __init__(self, settings: PluginSettings | None = None) -> None:
        super().__init__("wad")
        self.add_hookspecs(hookspecs)
        self.settings = settings or PluginSettings()
        self.context = PluginContext(self.plugin_config)
        self._configs: dict[str, Any] = {}
        self.on_error: list[Callable[[str, str], None]] = []
        """Called as `(plugin, hook)` when an implementation raises or times out (metrics)."""

    def bind(self, *, settings: Settings | None = None, db: Database | None = None) -> None:
        """Give hooks the daemon's settings and database (through `ctx`)."""
        if settings is not None:
            self.context.settings = settings
        if db is not None:
            self.context.db = db

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """Register a plugin (a class is instantiated with no arguments) and decode its
        configuration table; a bad table raises `ConfigError` naming the key."""
        if inspect.isclass(plugin):
            plugin = plugin()
        registered = super().register(plugin, name)
        if registered is not None:
            try:
                self._configure(registered, plugin)
            except ConfigError:
                self.unregister(plugin)
                raise
            except Exception:
                # The plugin cannot say what its configuration is: it cannot run configured.
                _log.exception("plugin failed; skipped", plugin=registered,
                               hook="wad_plugin_config_type")
                self.unregister(plugin)
                return None
        return registered

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        """Remove a plugin and forget its configuration."""
        if name is None and plugin is not None:
            name = self.get_name(plugin)
        removed = super().unregister(plugin, name)
        if name is not None:
            self._configs.pop(name, None)
        return removed

    def plugin_config(self, name: str) -> Any:
        """See `PluginContext.plugin_config`."""
        if name in self._configs:
            return self._configs[name]
        return dict(self.settings.config.get(name, {}))

    def _configure(self, name: str, plugin: Any) -> None:
        config_type = None
        for impl in self.hook.wad_plugin_config_type.get_hookimpls():
            if impl.plugin is plugin:
                config_type = impl.function()
        raw = self.settings.config.get(name, {})
        if config_type is None:
            self._configs[name] = dict(raw)
            return
        try:
            self._configs[name] = msgspec.convert(raw, config_type)
        except msgspec.ValidationError as exc:
            raise ConfigError(_describe_config_error(name, exc)) from None


def _describe_config_error(name: str, exc: msgspec.ValidationError) -> str:
    """`Expected int, got str - at `$.timeout_s`` becomes `plugins.config.NAME.timeout_s: ...`."""
    message = str(exc)
    prefix = f"plugins.config.{name}"
    if " - at `$." in message:
        what, _, where = message.partition(" - at `$.")
        return f"{prefix}.{where.rstrip('`')}: {what}"
    if message.startswith("Object contains unknown field `"):
        key = message.removeprefix("Object contains unknown field `").split("`", 1)[0]
        return f"{prefix}.{key}: unknown key"
    if message.startswith("Object missing required field `"):
        key = message.removeprefix("Object missing required field `").split("`", 1)[0]
        return f"{prefix}.{key}: required"
    return f"{prefix}: {message}"


def get_plugin_manager(
    settings: PluginSettings | Settings | None = None, *, builtins: bool = True,
    bundled: bool = True,
) -> PluginManager:
    """A new plugin manager with wad's built-in plugins, the bundled ones and the `wad`
    entry-point group, as the `[plugins]` table enables, disables and configures them. `settings`
    is that table (`PluginSettings`) or wad's whole `Settings` (then its `plugins` table is used
    and hooks see the settings as `ctx.settings`). Raises `ConfigError` for an enabled plugin
    that does not exist or fails to load, and for a plugin configuration that does not validate.
    Tests pass `builtins=False, bundled=False` with `entry_points=False` for an empty manager
    and register plugins inline."""
    app_settings = None
    if settings is not None and not isinstance(settings, PluginSettings):
        app_settings = settings
        settings = getattr(settings, "plugins", None)
    settings = settings or PluginSettings()
    pm = PluginManager(settings)
    pm.bind(settings=app_settings)
    disabled = set(settings.disabled)
    wanted = set(settings.enabled)

    if builtins:
        for name, ref in BUILTIN_PLUGINS.items():
            if name in disabled:
                continue
            try:
                plugin = _load_ref(ref)
            except ImportError:
                # wad installed without the `wad-plugins` distribution that carries it.
                _log.warning("built-in plugin not installed; skipped", plugin=name)
                continue
            pm.register(plugin, name)

    candidates: dict[str, Any] = {}
    if settings.entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            candidates.setdefault(ep.name, ep)
    if bundled:
        for name, ref in BUNDLED_PLUGINS.items():
            candidates.setdefault(name, ref)

    missing = wanted - set(candidates) - set(BUILTIN_PLUGINS)
    if missing:
        raise ConfigError(
            f"plugins.enabled: no installed plugin named {', '.join(sorted(missing))}"
            f" (installed: {', '.join(sorted(set(candidates) | set(BUILTIN_PLUGINS)))})"
        )

    # Sorted, so that plugins of equal rank are called in the same order on every machine.
    for name in sorted(candidates):
        if name in disabled or (wanted and name not in wanted) or pm.has_plugin(name):
            continue
        source = candidates[name]
        try:
            plugin = source.load() if hasattr(source, "load") else _load_ref(source)
        except Exception as exc:
            if name in wanted:
                raise ConfigError(f"plugins.enabled: plugin {name} failed to load: {exc!r}") from exc
            if isinstance(source, str) and isinstance(exc, ImportError):
                # A bundled plugin whose distribution is not installed: nothing to say.
                continue
            _log.exception("plugin failed to load; skipped", plugin=name)
            continue
        pm.register(plugin, name)

    for name in settings.config:
        if not pm.has_plugin(name):
            _log.warning("configuration for a plugin that is not loaded", plugin=name)
    return pm


def _load_ref(ref: str) -> Any:
    """`package.module` or `package.module:attribute`."""
    module_name, _, attribute = ref.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


# Calling hooks safely ---------------------------------------------------------------------------


def _impls(pm: PluginManager, hook_name: str) -> list[HookImpl]:
    """The hook's implementations in pluggy's call order: wrappers first, then tryfirst ones,
    the others (later registered before earlier) and trylast ones last."""
    return list(reversed(getattr(pm.hook, hook_name).get_hookimpls()))


def _is_firstresult(pm: PluginManager, hook_name: str) -> bool:
    spec = getattr(pm.hook, hook_name).spec
    return bool(spec is not None and spec.opts.get("firstresult"))


async def _call_one(pm: PluginManager, impl: HookImpl, hook_name: str, kwargs: dict[str, Any],
                    *, sync: bool = False) -> tuple[bool, Any]:
    """(True, result) when the implementation answered; (False, None) when it raised or took too
    long (or, `sync`, answered an awaitable), which is logged with the plugin's name."""
    try:
        args = [kwargs[name] for name in impl.argnames]
    except KeyError as exc:
        raise TypeError(f"{hook_name} called without argument {exc.args[0]!r}") from None
    if sync:
        try:
            value = impl.function(*args)
        except Exception:
            _log.exception("plugin failed; skipped", plugin=impl.plugin_name, hook=hook_name)
            return False, None
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            _log.error("plugin answered an awaitable from a synchronous hook; skipped",
                       plugin=impl.plugin_name, hook=hook_name)
            return False, None
        return True, value
    timeout = pm.settings.hook_timeout_s
    try:
        with trio.move_on_after(timeout) as scope:
            result = impl.function(*args)
            if inspect.isawaitable(result):
                result = await result
            return True, result
    except Exception:
        _log.exception("plugin failed; skipped", plugin=impl.plugin_name, hook=hook_name)
        _report_error(pm, impl.plugin_name, hook_name)
        return False, None
    if scope.cancelled_caught:
        _log.warning("plugin took too long; skipped", plugin=impl.plugin_name, hook=hook_name,
                     timeout_s=timeout)
        _report_error(pm, impl.plugin_name, hook_name)
    return False, None


def _report_error(pm: PluginManager, plugin: str, hook: str) -> None:
    for listener in pm.on_error:
        try:
            listener(plugin, hook)
        except Exception:
            _log.exception("plugin error listener failed")


def _kwargs(pm: PluginManager, kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.setdefault("ctx", pm.context)
    return kwargs


Accept = Callable[[str, Any], Any]
"""`accept(plugin, answer)`: the answer as the caller takes it, None to pass it over; raises
`msgspec.ValidationError` or `TypeError` for an answer of the wrong shape."""


def _take(accept: Accept, plugin: str, value: Any, invalid: str) -> Answer | None:
    try:
        taken = accept(plugin, value)
    except (msgspec.ValidationError, TypeError) as exc:
        _log.warning(invalid, plugin=plugin, error=str(exc))
        return None
    return None if taken is None else Answer(plugin, taken)


def _start_wrapper(pm: PluginManager, impl: HookImpl, hook_name: str, kwargs: dict[str, Any]
                   ) -> Generator[Any, Any, Any] | None:
    """Run a wrapper up to its `yield`; None (logged) when it fails before."""
    try:
        gen = impl.function(*[kwargs[name] for name in impl.argnames])
        if not inspect.isgenerator(gen):
            raise TypeError("a hook wrapper must be a generator function (one `yield`)")
        next(gen)
    except KeyError as exc:
        raise TypeError(f"{hook_name} called without argument {exc.args[0]!r}") from None
    except Exception:
        _log.exception("plugin wrapper failed; skipped", plugin=impl.plugin_name, hook=hook_name)
        _report_error(pm, impl.plugin_name, hook_name)
        return None
    return cast(Generator[Any, Any, Any], gen)


def _finish_wrapper(pm: PluginManager, impl: HookImpl, gen: Generator[Any, Any, Any],
                    hook_name: str, answers: list[Answer], *, first: bool, accept: Accept,
                    invalid: str) -> list[Answer]:
    """Give a wrapper the result (the first answer for a `firstresult` hook, else the list) and
    take what it returns instead, as the wrapper plugin's answer. A wrapper that fails after its
    `yield` is logged and leaves the result as it was."""
    seen: Any = (answers[0].value if answers else None) if first else [a.value for a in answers]
    try:
        if impl.hookwrapper:  # old style: `outcome = yield`, `outcome.force_result(...)`
            outcome = pluggy.Result(seen, None)
            try:
                gen.send(outcome)
            except StopIteration:
                pass
            else:
                raise RuntimeError("a hook wrapper must yield once")
            result = outcome.get_result()
        else:  # `result = yield`, then `return result` (or another)
            try:
                gen.send(seen)
            except StopIteration as stop:
                result = stop.value
            else:
                raise RuntimeError("a hook wrapper must yield once")
    except Exception:
        gen.close()
        _log.exception("plugin wrapper failed; result kept", plugin=impl.plugin_name,
                       hook=hook_name)
        _report_error(pm, impl.plugin_name, hook_name)
        return answers
    if result is seen:
        return answers
    if first:
        taken = None if result is None else _take(accept, impl.plugin_name, result, invalid)
        return [] if taken is None else [taken]
    if not isinstance(result, list):
        _log.warning(invalid, plugin=impl.plugin_name, error="a wrapper must return a list")
        return answers
    kept = {id(a.value): a for a in answers}
    replaced = [kept.get(id(v)) or _take(accept, impl.plugin_name, v, invalid)
                for v in result if v is not None]
    return [a for a in replaced if a is not None]


async def _call_hook(pm: PluginManager, hook_name: str, kwargs: dict[str, Any], *,
                     accept: Accept, invalid: str = "plugin answered something invalid; skipped",
                     sync: bool = False) -> list[Answer]:
    """Call a hook as pluggy would, one isolated implementation at a time: in pluggy's order,
    skipping None answers and those `accept` passes over; for a `firstresult` hook, stopping at
    the first accepted answer. Hook wrappers (`wrapper=True`, or old-style `hookwrapper=True`)
    run around the call and may replace the result. Answers the accepted answers (at most one
    for a `firstresult` hook)."""
    kwargs = _kwargs(pm, kwargs)
    first = _is_firstresult(pm, hook_name)
    answers: list[Answer] = []
    wrappers: list[tuple[HookImpl, Generator[Any, Any, Any]]] = []
    for impl in _impls(pm, hook_name):
        if impl.wrapper or impl.hookwrapper:
            gen = _start_wrapper(pm, impl, hook_name, kwargs)
            if gen is not None:
                wrappers.append((impl, gen))
            continue
        ok, value = await _call_one(pm, impl, hook_name, kwargs, sync=sync)
        if not ok or value is None:
            continue
        taken = _take(accept, impl.plugin_name, value, invalid)
        if taken is not None:
            answers.append(taken)
            if first:
                break
    for impl, gen in reversed(wrappers):
        answers = _finish_wrapper(pm, impl, gen, hook_name, answers, first=first, accept=accept,
                                  invalid=invalid)
    return answers


def _as_is(plugin: str, value: Any) -> Any:
    return value


async def call_all(pm: PluginManager, hook_name: str, /, **kwargs: Any) -> list[Answer]:
    """Call every implementation of an async hook in order and answer the non-None results
    (only the first for a `firstresult` hook). A failing implementation is logged and skipped.
    `ctx` is supplied when not given."""
    return await _call_hook(pm, hook_name, kwargs, accept=_as_is)


async def _first_accepted(pm: PluginManager, hook_name: str, kwargs: dict[str, Any], *,
                          accept: Callable[[str, Any], R | None],
                          invalid: str = "plugin answered something invalid; skipped") -> R | None:
    """The first answer of a `firstresult` hook that `accept(plugin, answer)` takes (see
    `_call_hook`); None when no implementation gives one."""
    if not _is_firstresult(pm, hook_name):
        raise TypeError(f"{hook_name} is not a firstresult hook")
    answers = await _call_hook(pm, hook_name, kwargs, accept=accept, invalid=invalid)
    return cast("R", answers[0].value) if answers else None


async def call_first(pm: PluginManager, hook_name: str, /, **kwargs: Any) -> Answer | None:
    """The first non-None answer of a `firstresult` hook, with its plugin's name."""
    return await _first_accepted(pm, hook_name, kwargs, accept=Answer)


def call_all_sync(pm: PluginManager, hook_name: str, /, **kwargs: Any) -> list[Answer]:
    """`call_all` for the synchronous hooks (setup and importing). An implementation that
    raises, or answers an awaitable, is logged and skipped."""
    return _run_to_end(_call_hook(pm, hook_name, kwargs, accept=_as_is, sync=True))


def _run_to_end(coro: Coroutine[Any, Any, R]) -> R:
    """The value of a coroutine that never suspends: `_call_hook(sync=True)` awaits nothing that
    waits, so the synchronous hooks share its order, wrappers and isolation without Trio."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(R, done.value)
    coro.close()
    raise RuntimeError("a synchronous hook call suspended")


def _as(model: type[T], value: Any) -> T:
    """`value` (a `model`, or a dict of its fields) validated as `model`."""
    raw = msgspec.to_builtins(value) if isinstance(value, msgspec.Struct) else value
    return msgspec.convert(raw, model)


# Typed helpers for the pipeline ---------------------------------------------------------------


async def notify(pm: PluginManager, hook_name: str, /, **kwargs: Any) -> None:
    """Send a notification (`wad_message_received`, ...) to every plugin; errors stay inside."""
    if hook_name not in hookspecs.NOTIFICATION_HOOKS:
        raise ValueError(f"{hook_name} is not a notification hook")
    await call_all(pm, hook_name, **kwargs)


async def detect_status(
    pm: PluginManager,
    *,
    client: Client,
    messages: Sequence[Message],
    current_status: ClientStatus | None,
    min_confidence: float | None = None,
) -> StatusDecision | None:
    """The first status decision, in hook order, whose confidence reaches `min_confidence`
    (default `plugins.status_min_confidence`), with `detector` filled in; None when no detector
    is sure enough. An answer that is not a valid decision is logged and skipped."""
    threshold = pm.settings.status_min_confidence if min_confidence is None else min_confidence

    def accept(plugin: str, value: Any) -> StatusDecision | None:
        decision = _as(StatusDecision, value)
        if not decision.detector:
            decision = msgspec.structs.replace(decision, detector=plugin)
        if decision.confidence >= threshold:
            return decision
        _log.debug("status decision below the threshold", plugin=plugin,
                   status=decision.status, confidence=decision.confidence)
        return None

    return await _first_accepted(
        pm, "wad_detect_status", {"client": client, "messages": list(messages),
                                  "current_status": current_status},
        invalid="plugin answered an invalid status decision; skipped", accept=accept)


def has_agents(pm: PluginManager) -> bool:
    """Whether any plugin implements `wad_agent_reply` (else nothing needs asking)."""
    return bool(pm.hook.wad_agent_reply.get_hookimpls())


async def agent_reply(
    pm: PluginManager, *, message: Message, client: Client, conversation: Sequence[Message]
) -> AgentReply | None:
    """The first agent reply, in hook order, with `agent` filled in; None when every agent stays
    silent. A blank or invalid reply is logged and skipped."""

    def accept(plugin: str, value: Any) -> AgentReply | None:
        if isinstance(value, str):
            if not value.strip():
                return None
            value = {"text": value.strip()}
        reply = _as(AgentReply, value)
        return reply if reply.agent else msgspec.structs.replace(reply, agent=plugin)

    return await _first_accepted(
        pm, "wad_agent_reply", {"message": message, "client": client,
                                "conversation": list(conversation)},
        invalid="plugin answered an invalid agent reply; skipped", accept=accept)


async def detect_languages(
    pm: PluginManager, texts: Sequence[str], *, languages: Sequence[str]
) -> list[LanguageGuess]:
    """One guess per text from the first language plugin that answers properly (one guess per
    text); a guess outside `languages` counts as unknown. All unknown when no plugin answers."""
    texts = list(texts)
    allowed = set(languages)

    def accept(plugin: str, value: Any) -> list[LanguageGuess] | None:
        guesses = [_as(LanguageGuess, g) for g in value]
        if len(guesses) != len(texts):
            _log.warning("plugin answered a guess count that does not match the texts; skipped",
                         plugin=plugin, texts=len(texts), guesses=len(guesses))
            return None
        return [g if g.language is None or g.language in allowed
                else LanguageGuess(language=None) for g in guesses]

    found = await _first_accepted(
        pm, "wad_detect_language", {"texts": texts, "languages": list(languages)},
        invalid="plugin answered invalid language guesses; skipped", accept=accept)
    return found if found is not None else [LanguageGuess(language=None) for _ in texts]


def import_sources(pm: PluginManager) -> dict[str, ImportSource]:
    """Every import source by name; a duplicate or malformed one is logged and ignored."""
    sources: dict[str, ImportSource] = {}
    for answer in call_all_sync(pm, "wad_import_sources"):
        for source in answer.value:
            if not isinstance(source, ImportSource) or not callable(source.chats):
                _log.warning("plugin answered something that is not an ImportSource; ignored",
                             plugin=answer.plugin)
                continue
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", source.name):
                _log.warning("import source name must be lower case letters, digits, - and _;"
                             " ignored", plugin=answer.plugin, source=source.name)
                continue
            if source.name in sources:
                _log.warning("import source name already taken; ignored", plugin=answer.plugin,
                             source=source.name)
                continue
            sources[source.name] = source
    return sources


def background_tasks(pm: PluginManager) -> list[tuple[str, BackgroundTask]]:
    """Every plugin's background tasks, as (plugin name, task)."""
    tasks = []
    for answer in call_all_sync(pm, "wad_background_tasks"):
        for task in answer.value:
            if isinstance(task, BackgroundTask):
                tasks.append((answer.plugin, task))
            else:
                _log.warning("plugin answered something that is not a BackgroundTask; ignored",
                             plugin=answer.plugin)
    return tasks


TASK_BACKOFF = Backoff(initial=1.0, max=60.0)
"""Waits before a plugin task that raised is started again: 1 s, 2 s, 4 s ... 60 s."""


def task_policy(name: str, children: list[ChildSpec], settings: PluginSettings) -> Supervisor:
    """The supervisor of one plugin task: restarts after `TASK_BACKOFF`, and gives up after
    more than `task_max_restarts` restarts within `task_restart_period_s`."""
    return Supervisor(name, children, intensity=settings.task_max_restarts,
                      period=settings.task_restart_period_s, backoff=TASK_BACKOFF)


def task_supervisor(pm: PluginManager, *, grace: float = 2.0) -> Supervisor:
    """Every plugin's background tasks under one supervisor, `plugins`, each task its own child
    `PLUGIN:TASK` (shown by that name, with its restarts, in `wad status --tree`).

    Each child is a one-task supervisor, so that a task's crashes count against it alone: the
    task is restarted after it raises (not after it returns, which means it is done), waiting
    per `TASK_BACKOFF`; more than `plugins.task_max_restarts` restarts within
    `plugins.task_restart_period_s` and that supervisor gives up: the task stays `failed` (the
    child is temporary) and every other task and the rest of the daemon run on. The tasks stop
    all at once, so `grace` bounds each task's stop and the whole."""
    settings = pm.settings
    children = []
    for plugin, task in background_tasks(pm):
        name = f"{plugin}:{task.name}"
        one = task_policy(name, [ChildSpec("run", partial(_run_task, plugin, task),
                                           restart=Restart.TRANSIENT, shutdown=grace)],
                          settings)
        children.append(ChildSpec(name, one.run, restart=Restart.TEMPORARY, shutdown=grace))
    return Supervisor("plugins", children, strategy=Strategy.SIMPLE_ONE_FOR_ONE)


async def _run_task(plugin: str, task: BackgroundTask, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """One run of a plugin's task; a failure is logged with the plugin's name and raised to
    the task's supervisor."""
    try:
        await task.run(task_status=task_status)
    except Exception as exc:
        _log.error("plugin task failed", plugin=plugin, task=task.name, error=describe(exc),
                   exc_info=exc)
        raise
    _log.info("plugin task finished", plugin=plugin, task=task.name)


async def run_background_tasks(
    pm: PluginManager, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run every plugin's background tasks (`task_supervisor`) until cancelled;
    `task_status.started` gets their names (`PLUGIN:TASK`) once the supervisor is ready, and
    with no tasks at all it returns at once. The daemon runs the same supervisor as a child of
    its tree."""
    supervisor = task_supervisor(pm)
    names = [spec.id for spec in supervisor.specs()]
    if not names:  # nothing to run: done
        task_status.started(names)
        return
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        task_status.started(names)


def registered_names(pm: PluginManager) -> list[str]:
    """The names of the registered plugins, sorted (for logs and `wad status`)."""
    return sorted(name for name, _ in pm.list_name_plugin())

