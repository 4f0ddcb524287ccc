"""The supervision tree's static promises: shutdown graces nest up to systemd's stop timeout,
and no exception-group mistake can hide around a nursery (no plain `except` around one, no
hand-written group walker)."""

from __future__ import annotations

import ast
import re
import uuid
from pathlib import Path

import pytest
import trio

from tests.support.plugin_helpers import empty_pm
from wad import config
from wad.api.context import AppContext
from wad.bus import EventBus
from wad.daemon import Daemon, grace_problems, restart_problems
from wad.feed import ChangeFeed
from wad.importer.service import ImportService
from wad.observe.metrics import Metrics
from wad.org.context import OrgContext
from wad.org.manager import OrgManager
from wad.supervise import ChildSpec, Strategy, Supervisor, SupervisorGaveUp

ROOT = Path(__file__).resolve().parent.parent.parent
_GROUPS = {"ExceptionGroup", "BaseExceptionGroup"}


def _timeout_stop_sec() -> float:
    unit = (ROOT / "systemd" / "wad.service").read_text()
    found = re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.MULTILINE)
    assert found, "systemd/wad.service sets no TimeoutStopSec"
    return float(found.group(1))


async def test_graces_nest_from_an_actor_up_to_systemds_stop_timeout() -> None:
    """sum of a supervisor's children's graces <= its own grace <= TimeoutStopSec, for the
    shipped configuration and the tree the daemon really builds."""
    settings = config.load(ROOT / "config" / "wad.toml", env={})
    assert settings.daemon.shutdown_grace_s <= _timeout_stop_sec()
    daemon = Daemon(settings)
    daemon.notifier.watchdog_interval = 30.0  # under systemd the watchdog child is there too
    manager = OrgManager(settings=settings, db=None, driver=None, bus=EventBus())  # type: ignore[arg-type]
    bus = EventBus()
    ctx = AppContext(settings=settings, db=None,  # type: ignore[arg-type]
                     feed=ChangeFeed(None, settings.feed),  # type: ignore[arg-type]
                     metrics=Metrics(db=None, bus=bus, manager=manager,  # type: ignore[arg-type]
                                     node="n", pool_max=1, state_dir=None),
                     imports=ImportService(settings=settings, db=None))  # type: ignore[arg-type]
    root = daemon.tree(ctx, manager, empty_pm(), bus, None)  # type: ignore[arg-type]
    assert [s.id for s in root.specs()][-1] == "orgs"
    assert grace_problems(settings, root, manager) == []
    assert root.stop_budget <= settings.daemon.shutdown_grace_s


async def test_graces_that_do_not_nest_are_reported_by_name() -> None:
    settings = config.parse("[graces]\norganization_s = 50.0\n", source="test")
    manager = OrgManager(settings=settings, db=None, driver=None, bus=EventBus())  # type: ignore[arg-type]
    problems = grace_problems(settings, Supervisor("wad", []), manager)
    assert len(problems) == 1
    assert problems[0].startswith("graces.organizations_s = 42 s is less than")
    settings = config.parse("[graces]\nsession_s = 39.0\n", source="test")
    problems = grace_problems(settings, Supervisor("wad", []), OrgManager(
        settings=settings, db=None, driver=None, bus=EventBus()))  # type: ignore[arg-type]
    assert problems and problems[0].startswith("graces.organization_s = 40 s"), problems
    assert "session 39" in problems[0]


class _SlowCrash:
    """A session whose browser takes 30 s to start, then crashes: a slow machine's loop."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        await trio.sleep(30)
        raise RuntimeError("browser crashed")


async def test_the_shipped_restart_intensities_give_a_crash_loop_up(autojump_clock: object
                                                                    ) -> None:
    """The organization's supervisor, with the shipped settings, gives up a session that
    crashes 30 s after each start, within one period; the plugin tasks' policy can give up
    too (its backoff fits in its period)."""
    settings = config.load(ROOT / "config" / "wad.toml", env={})
    manager = OrgManager(settings=settings, db=None, driver=None, bus=EventBus(),  # type: ignore[arg-type]
                         actors=[])
    assert restart_problems(settings, manager) == []
    _, receive = trio.open_memory_channel[object](0)
    ctx = OrgContext(org_id=uuid.UUID(int=1), settings=settings, db=manager.db, bus=manager.bus,
                     session=_SlowCrash(), inbound_events=receive)  # type: ignore[arg-type]
    supervisor = manager.org_supervisor(ctx)
    began = trio.current_time()
    with trio.fail_after(3600), pytest.raises(SupervisorGaveUp, match="more than 5 restarts"):
        await supervisor.run()  # with a 60 s period it restarted the session for ever
    assert trio.current_time() - began < settings.daemon.org_restart_period_s
    assert supervisor.restart_count("session") == settings.daemon.org_max_restarts


async def test_an_intensity_the_backoff_cannot_reach_is_reported_by_name() -> None:
    settings = config.parse("[daemon]\norg_restart_period_s = 15.0\n\n"
                            "[plugins]\ntask_max_restarts = 20\n", source="test")
    manager = OrgManager(settings=settings, db=None, driver=None, bus=EventBus())  # type: ignore[arg-type]
    problems = restart_problems(settings, manager)
    assert [p.split(" = ")[0] for p in problems] == ["daemon.org_max_restarts",
                                                     "plugins.task_max_restarts"]
    assert "wait 15.5 s in backoff, not less than daemon.org_restart_period_s = 15 s" in (
        problems[0])


def _opens_a_nursery(statements: list[ast.stmt]) -> bool:
    for statement in statements:
        for node in ast.walk(statement):
            if isinstance(node, ast.Attribute) and node.attr == "open_nursery":
                return True
            if isinstance(node, ast.Name) and node.id == "open_nursery":
                return True
            if (isinstance(node, ast.Attribute) and node.attr == "run"
                    and "supervisor" in ast.unparse(node.value).lower()):
                return True
    return False


def plain_excepts_around_nurseries(source: str, name: str) -> list[str]:
    """`except SomeError` clauses of a `try` whose body opens a nursery (or runs a
    supervisor): anything leaving a nursery is an exception group, so only `except*` (or an
    `except` of the group types themselves) can match what the code meant."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Try) and _opens_a_nursery(node.body):
            for handler in node.handlers:
                caught = ast.unparse(handler.type) if handler.type is not None else "(bare)"
                if caught not in _GROUPS:
                    found.append(f"{name}:{handler.lineno}: except {caught}")
    return found


def test_no_plain_except_around_a_nursery_anywhere_in_wad() -> None:
    found = []
    for path in sorted((ROOT / "wad").rglob("*.py")):
        found += plain_excepts_around_nurseries(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


def test_the_nursery_rule_finds_the_mistake_it_is_for() -> None:
    """The bug of issue 15, in miniature: the rule flags it, and passes its `except*` fix."""
    wrong = ("async def f():\n    try:\n        async with trio.open_nursery() as n:\n"
             "            await n.start(supervisor.run)\n    except SupervisorGaveUp:\n"
             "        pass\n")
    right = wrong.replace("except SupervisorGaveUp", "except* SupervisorGaveUp")
    assert plain_excepts_around_nurseries(wrong, "x") == ["x:5: except SupervisorGaveUp"]
    assert plain_excepts_around_nurseries(right, "x") == []
    via_run = "try:\n    await self.supervisor.run()\nexcept Exception:\n    pass\n"
    assert plain_excepts_around_nurseries(via_run, "x") == ["x:3: except Exception"]


# Exception groups are taken apart with `except*`. The few helpers that must look inside one
# (to unwrap what a context manager's nursery wrapped, or to describe it in a log line) live in
# wad/supervise.py; a hand-written walker anywhere else is the mistake of issue 15 waiting.
WALKERS_ALLOWED = {("wad/supervise.py", "first_leaf"), ("wad/supervise.py", "sole"),
                   ("wad/supervise.py", "describe")}


def _mentions_exceptions(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "exceptions" for n in ast.walk(node))


def _tests_for_a_group(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
               and n.func.id == "isinstance" and len(n.args) == 2
               and any(group in ast.unparse(n.args[1]) for group in _GROUPS)
               for n in ast.walk(node))


def group_walkers(source: str, name: str) -> list[str]:
    """Functions that walk exception groups by hand: a loop or comprehension over an
    `.exceptions`, a `while` that goes on while something is a group, or a function that reads
    an `.exceptions` and calls itself."""
    found = []
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        walks = False
        for node in ast.walk(func):
            if isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
                walks |= _mentions_exceptions(node.iter)
            elif isinstance(node, ast.While):
                walks |= _tests_for_a_group(node.test)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id == func.name):
                walks |= _mentions_exceptions(func)
        if walks and (name, func.name) not in WALKERS_ALLOWED:
            found.append(f"{name}:{func.lineno}: {func.name}")
    return found


def test_no_hand_written_exception_group_walker_outside_supervise() -> None:
    found = []
    for path in sorted((ROOT / "wad").rglob("*.py")):
        found += group_walkers(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


def test_the_walker_rule_finds_the_walkers_it_is_for() -> None:
    """The walkers issue 15 removed, in miniature: recursive, looping, comprehending."""
    recursive = ("def sole(group):\n    if len(group.exceptions) != 1:\n        return None\n"
                 "    inner = group.exceptions[0]\n"
                 "    if isinstance(inner, BaseExceptionGroup):\n        return sole(inner)\n"
                 "    return inner\n")
    looping = ("def alone(group):\n    found = group\n"
               "    while isinstance(found, BaseExceptionGroup) and len(found.exceptions) == 1:\n"
               "        found = found.exceptions[0]\n    return found\n")
    comprehending = ("def crashed(group):\n"
                     "    return any(isinstance(e, Crash) for e in group.exceptions)\n")
    for source in (recursive, looping, comprehending):
        assert len(group_walkers(source, "wad/x.py")) == 1, source
    assert group_walkers(looping.replace("alone", "sole"), "wad/supervise.py") == []
    indexing = "def first(group):\n    return group.exceptions[0]\n"
    assert group_walkers(indexing, "wad/x.py") == []  # what an except* caught, taken as is


def test_organizations_stop_at_once_so_their_budget_is_the_largest_grace() -> None:
    async def idle() -> None:
        await trio.sleep_forever()

    specs = [ChildSpec("a", idle, shutdown=3.0), ChildSpec("b", idle, shutdown=4.0)]
    assert Supervisor("s", specs).stop_budget == 7.0
    assert Supervisor("s", specs, strategy=Strategy.SIMPLE_ONE_FOR_ONE).stop_budget == 4.0


async def test_a_dynamic_supervisor_stops_its_children_at_once(autojump_clock: object) -> None:
    async def slow_to_stop(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                           ) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(3)

    for strategy, took in ((Strategy.ONE_FOR_ONE, 6.0), (Strategy.SIMPLE_ONE_FOR_ONE, 3.0)):
        specs = [ChildSpec("a", slow_to_stop, shutdown=5.0),
                 ChildSpec("b", slow_to_stop, shutdown=5.0)]
        async with trio.open_nursery() as nursery:
            await nursery.start(Supervisor("s", specs, strategy=strategy).run)
            began = trio.current_time()
            nursery.cancel_scope.cancel()
        assert trio.current_time() - began == took, strategy


def test_no_task_runs_in_the_apps_nursery() -> None:
    """Long-lived tasks are children of the tree (or of `run_services`), never started in
    Quart's app nursery, where nothing restarts them and `wad status --tree` cannot see them."""
    pattern = re.compile(r"current_app\)?\.nursery|getattr\(\s*current_app\s*,\s*['\"]nursery")
    found = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "wad").rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []
    assert pattern.search("cast(QuartTrio, current_app).nursery.start_soon(run)")
    assert pattern.search('nursery = getattr(current_app, "nursery", None)')
