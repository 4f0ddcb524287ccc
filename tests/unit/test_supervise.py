"""The supervision core: strategies, restart types, ordering, intensity, backoff, run-time control.

Everything runs on Trio's mock clock (`autojump_clock`), so the times asserted are exact.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import pytest
import structlog
import trio
from trio.testing import MockClock

from wad import log as wadlog
from wad import supervise
from wad.supervise import Backoff, ChildSpec, Restart, Strategy, Supervisor, SupervisorGaveUp

NO_BACKOFF = Backoff(initial=0.0)


class Actors:
    """Test children that record what happens to them and obey commands sent by the test."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, float]] = []  # (event, child id, trio time)
        self.tasks: dict[str, trio.lowlevel.Task] = {}
        self._send: dict[str, trio.MemorySendChannel[str]] = {}
        self._recv: dict[str, trio.MemoryReceiveChannel[str]] = {}

    def starts(self, cid: str) -> list[float]:
        return [t for event, c, t in self.log if event == "start" and c == cid]

    def events(self, since: int = 0) -> list[tuple[str, str]]:
        return [(event, c) for event, c, _ in self.log[since:]]

    def tell(self, cid: str, command: str) -> None:
        """`raise` makes the running instance fail, `return` makes it exit normally."""
        self._send[cid].send_nowait(command)

    def spec(self, cid: str, *, restart: Restart = Restart.PERMANENT, ready_delay: float = 0.0,
             stop_delay: float = 0.0, shutdown: float = 5.0, fail_before_ready: int = 0,
             crash_after: float | None = None) -> ChildSpec:
        self._send[cid], self._recv[cid] = trio.open_memory_channel[str](16)
        recv = self._recv[cid]

        async def start(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            attempt = len(self.starts(cid))
            self.log.append(("start", cid, trio.current_time()))
            self.tasks[cid] = trio.lowlevel.current_task()
            await trio.sleep(ready_delay)
            if attempt < fail_before_ready:
                raise RuntimeError(f"{cid} failed to start")
            task_status.started(f"handle-{cid}")
            try:
                if crash_after is not None:
                    await trio.sleep(crash_after)
                    command = "raise"
                else:
                    command = await recv.receive()
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    await trio.sleep(stop_delay)  # a slow cleanup
                self.log.append(("stopped", cid, trio.current_time()))
                raise
            self.log.append((command, cid, trio.current_time()))
            if command == "raise":
                raise RuntimeError(f"{cid} crashed")

        return ChildSpec(cid, start, restart=restart, shutdown=shutdown)


def last_reason(sup: Supervisor, cid: str) -> str:
    last = sup.last_restart(cid)
    assert last is not None, f"{cid} was never restarted"
    return last[0]


async def wait_until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(300):  # virtual seconds
        while not predicate():
            await trio.sleep(0.01)


@asynccontextmanager
async def running(sup: Supervisor) -> AsyncIterator[None]:
    """`sup` runs for the block, which begins once all its children are ready; then it is
    cancelled."""
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        yield
        nursery.cancel_scope.cancel()


async def crash(actors: Actors, cid: str, *, restarted: str) -> list[tuple[str, str]]:
    """Makes `cid` raise, waits until `restarted` has started a second time and one second
    more, and answers the events since the crash."""
    mark = len(actors.log)
    actors.tell(cid, "raise")
    await wait_until(lambda: len(actors.starts(restarted)) == 2)
    await trio.sleep(1)
    return actors.events(mark)


# -- strategies ------------------------------------------------------------------------------


def lettered(children: str, strategy: Strategy = Strategy.ONE_FOR_ONE
             ) -> tuple[Actors, Supervisor]:
    """Permanent test children named by the letters of `children`, under a supervisor of
    `strategy` that restarts without backoff."""
    actors = Actors()
    return actors, Supervisor("s", [actors.spec(c) for c in children], strategy=strategy,
                              backoff=NO_BACKOFF)


async def test_one_for_one_restarts_only_the_failed_child(autojump_clock: MockClock) -> None:
    actors, sup = lettered("abc")
    async with running(sup):
        assert await crash(actors, "b", restarted="b") == [("raise", "b"), ("start", "b")]
        assert [len(actors.starts(c)) for c in "abc"] == [1, 2, 1]
        assert sup.restart_count("b") == 1 and sup.restart_count("a") == 0


async def test_one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order(
    autojump_clock: MockClock,
) -> None:
    actors, sup = lettered("abc", Strategy.ONE_FOR_ALL)
    async with running(sup):
        assert await crash(actors, "b", restarted="c") == [
            ("raise", "b"), ("stopped", "c"), ("stopped", "a"),
            ("start", "a"), ("start", "b"), ("start", "c"),
        ]
        assert [sup.restart_count(c) for c in "abc"] == [1, 1, 1]
        assert last_reason(sup, "a") == "sibling b: RuntimeError: b crashed"


async def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it(
    autojump_clock: MockClock,
) -> None:
    actors, sup = lettered("abcd", Strategy.REST_FOR_ONE)
    async with running(sup):
        a_task = actors.tasks["a"]
        assert await crash(actors, "b", restarted="d") == [
            ("raise", "b"), ("stopped", "d"), ("stopped", "c"),
            ("start", "b"), ("start", "c"), ("start", "d"),
        ]
        assert actors.tasks["a"] is a_task and len(actors.starts("a")) == 1


async def test_a_failing_child_leaves_its_one_for_one_siblings_running_and_untouched(
    autojump_clock: MockClock,
) -> None:
    actors = Actors()
    ticks: list[float] = []
    ticker_tasks: list[trio.lowlevel.Task] = []

    async def ticker(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        ticker_tasks.append(trio.lowlevel.current_task())
        task_status.started()
        while True:
            await trio.sleep(0.1)
            ticks.append(trio.current_time())

    sup = Supervisor("s", [ChildSpec("ticker", ticker), actors.spec("crasher")], intensity=10)
    async with running(sup):
        for n in range(2, 5):
            actors.tell("crasher", "raise")
            await wait_until(lambda n=n: len(actors.starts("crasher")) == n)  # type: ignore[misc]
        before = len(ticks)
        await trio.sleep(1)
        assert len(ticks) >= before + 9  # still ticking every 0.1 s
        assert len(ticker_tasks) == 1  # never restarted: the same task all along
        assert ticker_tasks[0].coro.cr_frame is not None  # that task is still alive
        assert sup.restart_count("ticker") == 0 and sup.restart_count("crasher") == 3
        assert [c["state"] for c in sup.tree()["children"]] == ["running", "running"]


# -- restart types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "command", "restarted", "state"),
    [
        (Restart.PERMANENT, "raise", True, "running"),
        (Restart.PERMANENT, "return", True, "running"),
        (Restart.TRANSIENT, "raise", True, "running"),
        (Restart.TRANSIENT, "return", False, "stopped"),
        (Restart.TEMPORARY, "raise", False, "failed"),
        (Restart.TEMPORARY, "return", False, "stopped"),
    ],
)
async def test_restart_types(
    autojump_clock: MockClock, restart: Restart, command: str, restarted: bool, state: str,
) -> None:
    actors = Actors()
    sup = Supervisor("s", [actors.spec("x", restart=restart)])
    async with running(sup):
        actors.tell("x", command)
        await trio.sleep(10)
        assert len(actors.starts("x")) == (2 if restarted else 1)
        assert sup.restart_count("x") == (1 if restarted else 0)
        assert sup.tree()["children"][0]["state"] == state


async def test_a_temporary_child_is_not_restarted_with_its_group(autojump_clock: MockClock) -> None:
    actors = Actors()
    specs = [actors.spec("a"), actors.spec("t", restart=Restart.TEMPORARY), actors.spec("c")]
    sup = Supervisor("s", specs, strategy=Strategy.ONE_FOR_ALL, backoff=NO_BACKOFF)
    async with running(sup):
        await crash(actors, "c", restarted="c")
        assert [len(actors.starts(c)) for c in "atc"] == [2, 1, 2]
        assert [c["state"] for c in sup.tree()["children"]] == ["running", "stopped", "running"]


# -- ordering --------------------------------------------------------------------------------


async def test_children_start_in_order_once_ready_and_stop_in_reverse(
    autojump_clock: MockClock,
) -> None:
    actors = Actors()
    specs = [actors.spec("a", ready_delay=2.0, stop_delay=1.0),
             actors.spec("b", ready_delay=1.0, stop_delay=1.0),
             actors.spec("c", stop_delay=1.0)]
    sup = Supervisor("s", specs)
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        assert await nursery.start(sup.run) is sup
        assert trio.current_time() - t0 == pytest.approx(3.0)  # ready when the last is ready
        assert [actors.starts(c)[0] - t0 for c in "abc"] == pytest.approx([0.0, 2.0, 3.0])
        mark = len(actors.log)
        stop_at = trio.current_time()
        nursery.cancel_scope.cancel()
    # One at a time, last started first: each waits for the previous one's cleanup.
    assert actors.events(mark) == [("stopped", "c"), ("stopped", "b"), ("stopped", "a")]
    assert [t - stop_at for _, _, t in actors.log[mark:]] == pytest.approx([1.0, 2.0, 3.0])
    assert [c["state"] for c in sup.tree()["children"]] == ["stopped"] * 3


async def test_a_failure_before_ready_counts_and_the_next_child_waits(
    autojump_clock: MockClock,
) -> None:
    actors = Actors()
    sup = Supervisor("s", [actors.spec("a", fail_before_ready=2), actors.spec("b")])
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        await nursery.start(sup.run)
        assert [t - t0 for t in actors.starts("a")] == pytest.approx([0.0, 0.5, 1.5])
        assert [t - t0 for t in actors.starts("b")] == pytest.approx([1.5])
        assert sup.restart_count("a") == 2
        assert last_reason(sup, "a") == "RuntimeError: a failed to start"
        nursery.cancel_scope.cancel()


async def test_a_child_that_ignores_cancellation_is_abandoned_after_its_grace(
    autojump_clock: MockClock,
) -> None:
    actors = Actors()
    sup = Supervisor("s", [actors.spec("slow", stop_delay=10.0, shutdown=1.0)])
    async with running(sup):
        t0 = trio.current_time()
        with structlog.testing.capture_logs() as logs:
            await sup.terminate_child("slow")
        assert trio.current_time() - t0 == pytest.approx(1.0)
        assert any(e["event"].startswith("actor did not stop") and e["child"] == "slow"
                   for e in logs)
        assert sup.tree()["children"][0]["state"] == "stopped"
        await wait_until(lambda: ("stopped", "slow") in actors.events())
        assert trio.current_time() - t0 == pytest.approx(10.0, abs=0.02)


# -- intensity -------------------------------------------------------------------------------


async def test_too_many_restarts_stop_everything_and_raise(autojump_clock: MockClock) -> None:
    actors = Actors()
    specs = [actors.spec("a"), actors.spec("boom", crash_after=0.0), actors.spec("c")]
    sup = Supervisor("s", specs, intensity=2, period=5.0, backoff=NO_BACKOFF)
    with pytest.raises(SupervisorGaveUp) as caught:
        await sup.run()
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert str(caught.value.__cause__) == "boom crashed"
    assert len(actors.starts("boom")) == 3  # the first start and two restarts
    assert actors.events()[-2:] == [("stopped", "c"), ("stopped", "a")]
    assert [c["state"] for c in sup.tree()["children"]] == ["stopped", "failed", "stopped"]


async def test_backoff_does_not_hide_a_crash_loop_from_the_intensity(
    autojump_clock: MockClock,
) -> None:
    actors = Actors()
    sup = Supervisor("s", [actors.spec("boom", crash_after=0.0)])  # defaults: 3 in 5 s
    t0 = trio.current_time()
    with pytest.raises(SupervisorGaveUp):
        await sup.run()
    # Exits at 0, 0.5, 1.5, 3.5: the fourth restart within 5 s is one too many.
    assert [t - t0 for t in actors.starts("boom")] == pytest.approx([0.0, 0.5, 1.5, 3.5])
    assert trio.current_time() - t0 == pytest.approx(3.5)


async def test_failures_spread_over_time_do_not_escalate_and_reset_the_backoff(
    autojump_clock: MockClock,
) -> None:
    actors = Actors()
    sup = Supervisor("s", [actors.spec("flaky", crash_after=6.0)], intensity=1, period=5.0)
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        await nursery.start(sup.run)
        await trio.sleep(60)
        starts = [t - t0 for t in actors.starts("flaky")]
        # It ran 6 s (>= period) each time, so every restart waits the initial 0.5 s.
        assert starts == pytest.approx([6.5 * n for n in range(len(starts))])
        assert len(starts) == 10 and sup.restart_count("flaky") == 9
        nursery.cancel_scope.cancel()


async def test_a_nested_supervisor_that_gives_up_escalates_to_its_parent(
    autojump_clock: MockClock,
) -> None:
    actors = Actors()
    inner = Supervisor("inner", [actors.spec("leaf", crash_after=1.0)], intensity=0)
    outer = Supervisor("outer", [actors.spec("peer"), ChildSpec("inner", inner.run)],
                       intensity=0)
    with pytest.raises(SupervisorGaveUp) as caught:
        await outer.run()
    assert "outer" in str(caught.value)
    inner_error = caught.value.__cause__
    assert isinstance(inner_error, SupervisorGaveUp) and "inner" in str(inner_error)
    assert str(inner_error.__cause__) == "leaf crashed"
    assert actors.events()[-1] == ("stopped", "peer")


async def test_a_parent_restarts_a_nested_supervisor_that_gave_up(
    autojump_clock: MockClock,
) -> None:
    actors = Actors()
    inner = Supervisor("inner", [actors.spec("leaf")], intensity=0)
    outer = Supervisor("outer", [ChildSpec("inner", inner.run, shutdown=30.0)],
                       backoff=NO_BACKOFF)
    async with running(outer):
        assert outer.handle("inner") is inner
        await crash(actors, "leaf", restarted="leaf")
        assert outer.restart_count("inner") == 1
        assert last_reason(outer, "inner").startswith("SupervisorGaveUp")
        nested = outer.tree()["children"][0]["supervisor"]
        assert nested["children"][0]["state"] == "running"
    assert actors.events()[-1] == ("stopped", "leaf")  # stopping the parent stopped the leaf


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_delay_formula() -> None:
    backoff = Backoff(initial=0.5, factor=2.0, max=30.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


async def test_the_backoff_schedule_between_restarts(autojump_clock: MockClock) -> None:
    actors = Actors()
    sup = Supervisor("s", [actors.spec("boom", crash_after=0.0)], intensity=100,
                     backoff=Backoff(initial=0.5, factor=2.0, max=30.0))
    async with running(sup):
        await wait_until(lambda: len(actors.starts("boom")) == 9)
        starts = actors.starts("boom")
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        assert gaps == pytest.approx([0.5, 1, 2, 4, 8, 16, 30, 30])


# -- run-time control, introspection, logging ------------------------------------------------


async def test_start_and_terminate_children_at_run_time(autojump_clock: MockClock) -> None:
    actors = Actors()
    sup = Supervisor("s", [actors.spec("a")])
    async with running(sup):
        assert await sup.start_child(actors.spec("b", ready_delay=1.0)) == "handle-b"
        assert [(c["id"], c["state"]) for c in sup.tree()["children"]] == [
            ("a", "running"), ("b", "running")]
        with pytest.raises(ValueError, match="already has a child 'b'"):
            await sup.start_child(actors.spec("b"))
        with pytest.raises(RuntimeError, match="bad failed to start"):
            await sup.start_child(actors.spec("bad", fail_before_ready=1))
        assert [c["id"] for c in sup.tree()["children"]] == ["a", "b"]

        await sup.terminate_child("b")
        assert actors.events()[-1] == ("stopped", "b")
        await trio.sleep(10)
        assert len(actors.starts("b")) == 1 and sup.restart_count("b") == 0
        assert sup.tree()["children"][1]["state"] == "stopped" and sup.handle("b") is None

        await sup.remove_child("b")
        assert [c["id"] for c in sup.tree()["children"]] == ["a"]
        with pytest.raises(KeyError):
            await sup.terminate_child("b")
        assert len(actors.starts("a")) == 1  # untouched throughout


async def test_remove_children_stops_them_all_at_once(autojump_clock: MockClock) -> None:
    actors = Actors()
    sup = Supervisor("s", [actors.spec("a")], strategy=Strategy.SIMPLE_ONE_FOR_ONE)
    async with running(sup):
        for cid in ("b", "c"):
            await sup.start_child(actors.spec(cid, stop_delay=2.0, restart=Restart.TEMPORARY))
        began = trio.current_time()
        await sup.remove_children(["b", "c", "not-there"])
        assert trio.current_time() - began == 2.0  # together, not one after the other
        assert [c["id"] for c in sup.tree()["children"]] == ["a"]
        assert {e for e in actors.events() if e[0] == "stopped"} == {("stopped", "b"),
                                                                      ("stopped", "c")}


async def test_a_start_child_in_progress_when_the_supervisor_stops(
    autojump_clock: MockClock,
) -> None:
    actors = Actors()
    sup = Supervisor("s", [actors.spec("a")])
    sup_scope = trio.CancelScope()
    outcome: list[str] = []

    async def run_supervisor(task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
                             ) -> None:
        with sup_scope:
            await sup.run(task_status=task_status)

    async def add_late_child() -> None:
        try:
            await sup.start_child(actors.spec("late", ready_delay=5.0))
        except RuntimeError as exc:
            outcome.append(str(exc))

    t0 = trio.current_time()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_supervisor)
            nursery.start_soon(add_late_child)
            await trio.sleep(1)
            sup_scope.cancel()
    assert outcome == ["supervisor s is stopping"]
    # The half-started child was cancelled at once rather than awaited for 5 s, and removed.
    assert trio.current_time() - t0 == pytest.approx(1.0)
    assert actors.events()[-1] == ("stopped", "a")
    assert len(actors.starts("late")) == 1 and [c["id"] for c in sup.tree()["children"]] == ["a"]


async def test_tree_is_a_json_able_live_view(autojump_clock: MockClock) -> None:
    actors = Actors()
    inner = Supervisor("org-1", [actors.spec("browser"), actors.spec("inbound")],
                       strategy=Strategy.REST_FOR_ONE, backoff=NO_BACKOFF)
    outer = Supervisor("wad", [actors.spec("api"), ChildSpec("org-1", inner.run)])
    async with running(outer):
        actors.tell("inbound", "raise")
        await wait_until(lambda: len(actors.starts("inbound")) == 2)
        tree = json.loads(json.dumps(outer.tree()))
        assert tree["name"] == "wad" and tree["strategy"] == "one_for_one"
        assert [c["id"] for c in tree["children"]] == ["api", "org-1"]
        assert "supervisor" not in tree["children"][0]
        nested = tree["children"][1]["supervisor"]
        assert nested["name"] == "org-1" and nested["strategy"] == "rest_for_one"
        assert nested["restarts"] == 1
        inbound = nested["children"][1]
        assert inbound["state"] == "running" and inbound["restarts"] == 1
        assert inbound["lastRestartReason"] == "RuntimeError: inbound crashed"
        assert datetime.fromisoformat(inbound["lastRestartAt"]).tzinfo is not None
        assert nested["children"][0] == {
            "id": "browser", "state": "running", "restart": "permanent", "restarts": 0,
            "lastRestartReason": None, "lastRestartAt": None}


async def test_a_restart_logs_one_line_bumps_the_counter_and_calls_the_hooks(
    autojump_clock: MockClock,
) -> None:
    actors = Actors()
    seen: list[tuple[str, str, str]] = []
    supervise.on_restart.append(lambda *args: seen.append(args))
    try:
        sup = Supervisor("org-sup", [actors.spec("inbound")],
                         log=wadlog.get("org", org="org-7"))
        with structlog.testing.capture_logs() as logs:
            async with running(sup):
                actors.tell("inbound", "raise")
                await trio.sleep(0.25)  # within the 0.5 s backoff
                assert sup.tree()["children"][0]["state"] == "restarting"
                assert sup.handle("inbound") is None
                await wait_until(lambda: len(actors.starts("inbound")) == 2)
                assert sup.handle("inbound") == "handle-inbound"
    finally:
        supervise.on_restart.pop()
    restarted = [e for e in logs if e["event"] == "actor restarted"]
    assert len(restarted) == 1
    assert {k: restarted[0][k] for k in ("supervisor", "child", "reason", "count", "delay_s",
                                         "org")} == {
        "supervisor": "org-sup", "child": "inbound", "reason": "RuntimeError: inbound crashed",
        "count": 1, "delay_s": 0.5, "org": "org-7"}
    failed = [e for e in logs if e["event"] == "actor failed"]
    assert len(failed) == 1 and failed[0]["org"] == "org-7" and failed[0]["child"] == "inbound"
    assert isinstance(failed[0]["exc_info"], RuntimeError)
    assert seen == [("org-sup", "inbound", "RuntimeError: inbound crashed")]
    assert sup.restart_count("inbound") == 1 and sup.total_restarts == 1


async def test_a_launch_stops_within_its_grace_or_says_it_did_not(autojump_clock: MockClock
                                                                   ) -> None:
    async def task(launch: supervise.Launch, cleanup_s: float) -> None:
        try:
            with launch.scope:
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(cleanup_s)  # what it does once cancelled
            launch.done.set()

    async with trio.open_nursery() as nursery:
        quick, slow = supervise.Launch(), supervise.Launch()
        nursery.start_soon(task, quick, 1.0)
        nursery.start_soon(task, slow, 10.0)
        assert quick.running and slow.running
        assert not await quick.ended(5.0)  # not asked to stop: still running after 5 s
        start = trio.current_time()
        assert await quick.stop(5.0) and not quick.running
        assert trio.current_time() - start == 1.0
        assert not await slow.stop(5.0) and slow.running  # left running past its grace
        assert await slow.ended(10.0) and trio.current_time() - start == 11.0
