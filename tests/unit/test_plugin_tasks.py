"""Plugins' background tasks in the supervision tree: each task its own child, named
`PLUGIN:TASK`, restarted by its own supervisor after a crash (its restarts counted in the tree)
and given up alone when it keeps crashing, while the other tasks and the rest of the tree run
on. On Trio's mock clock."""

from __future__ import annotations

from typing import Any

import trio
from structlog.testing import capture_logs

from tests.support.plugin_helpers import empty_pm
from wad import hookimpl
from wad.cli.control import render_tree
from wad.payloads import BackgroundTask
from wad.plugins import PluginManager, task_supervisor
from wad.supervise import ChildSpec, Supervisor


class Tasks:
    """A plugin whose tasks are given as `name -> run`."""

    def __init__(self, **runs: Any) -> None:
        self.runs = runs

    @hookimpl
    def wad_background_tasks(self, ctx: Any) -> list[BackgroundTask]:
        return [BackgroundTask(name=name, run=run) for name, run in self.runs.items()]


def crashing(starts: list[float], crashes: int | None) -> Any:
    """A task that raises right after it is ready, the first `crashes` times (None: always),
    then ticks."""

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        task_status.started()
        if crashes is None or len(starts) <= crashes:
            raise RuntimeError("lost the connection")
        await trio.sleep_forever()

    return run


def ticking(ticks: list[float]) -> Any:
    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            ticks.append(trio.current_time())
            await trio.sleep(10)

    return run


async def idle(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


def daemon_like(pm: PluginManager) -> Supervisor:
    """The daemon's tree in small: the plugins' supervisor beside another service."""
    return Supervisor("wad", [ChildSpec("metrics", idle),
                              ChildSpec("plugins", task_supervisor(pm).run)],
                      intensity=3, period=60.0)


def child(tree: dict[str, Any], *path: str) -> dict[str, Any]:
    """The entry of a nested child, following child ids through nested supervisors."""
    node: dict[str, Any] = {"supervisor": tree}
    for child_id in path:
        node = next(c for c in node["supervisor"]["children"] if c["id"] == child_id)
    return node


async def test_each_plugin_task_is_a_named_child_restarted_with_its_count(
        autojump_clock: Any) -> None:
    starts: list[float] = []
    ticks: list[float] = []
    pm = empty_pm()
    pm.register(Tasks(flaky=crashing(starts, crashes=2), steady=ticking(ticks)), "crm")
    root = daemon_like(pm)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await trio.sleep(30)
        tree = root.tree()
        nursery.cancel_scope.cancel()

    assert [c["id"] for c in child(tree, "plugins")["supervisor"]["children"]] == [
        "crm:flaky", "crm:steady"]
    flaky = child(tree, "plugins", "crm:flaky", "run")
    assert (flaky["state"], flaky["restarts"]) == ("running", 2)
    assert flaky["lastRestartReason"] == "RuntimeError: lost the connection"
    assert [t - starts[0] for t in starts] == [0, 1, 3]  # after 1 s, then 2 s
    assert child(tree, "plugins", "crm:steady", "run")["restarts"] == 0
    assert len(ticks) >= 3
    assert child(tree, "plugins")["restarts"] == 0  # the crashes stayed with the task
    assert tree["restarts"] == 0

    text = "\n".join(render_tree(tree))
    assert "crm:flaky  running  restarts 0" in text  # its supervisor, never restarted itself
    assert "crm:flaky [one_for_one] restarts 2" in text
    assert "run  running  restarts 2  last: RuntimeError: lost the connection" in text
    assert "crm:steady [one_for_one] restarts 0" in text


async def test_a_plugin_task_that_keeps_crashing_is_given_up_alone(autojump_clock: Any) -> None:
    starts: list[float] = []
    ticks: list[float] = []
    pm = empty_pm(task_max_restarts=3, task_restart_period_s=600.0)
    pm.register(Tasks(broken=crashing(starts, crashes=None), steady=ticking(ticks)), "crm")
    root = daemon_like(pm)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            await trio.sleep(60)
            tree = root.tree()
            ticks_then = len(ticks)
            await trio.sleep(60)
            later = root.tree()
            nursery.cancel_scope.cancel()

    # Started, then restarted three times (after 1, 2, 4 s); the fourth crash is one too many.
    assert [t - starts[0] for t in starts] == [0, 1, 3, 7]
    broken = child(tree, "plugins", "crm:broken")
    assert broken["state"] == "failed"  # given up, and not restarted (a temporary child)
    assert broken["restarts"] == 0
    assert child(tree, "plugins")["state"] == "running"
    assert child(tree, "plugins", "crm:steady")["state"] == "running"
    assert child(tree, "metrics")["state"] == "running"
    assert tree["restarts"] == 0 and child(tree, "plugins")["restarts"] == 0
    assert len(ticks) > ticks_then  # the other task went on ticking after the give-up
    assert child(later, "plugins", "crm:broken")["state"] == "failed"
    assert len(starts) == 4
    gave_up = [line for line in logs if line["event"] == "supervisor gave up"]
    assert [line["supervisor"] for line in gave_up] == ["crm:broken"]
    assert [line["task"] for line in logs if line["event"] == "plugin task failed"] == [
        "broken"] * 4


async def test_no_plugin_tasks_is_an_empty_supervisor_that_just_waits(
        autojump_clock: Any) -> None:
    root = daemon_like(empty_pm())
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await trio.sleep(10)
        tree = root.tree()
        nursery.cancel_scope.cancel()
    assert child(tree, "plugins")["state"] == "running"
    assert child(tree, "plugins")["supervisor"]["children"] == []
