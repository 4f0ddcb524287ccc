"""Supervision trees for Trio, with Erlang/OTP supervisor semantics plus restart backoff.

A `Supervisor` starts its children in order (each must be ready, i.e. call
`task_status.started()`, before the next starts), watches them, restarts them according to
their restart type and the supervisor's strategy, and stops them in reverse order. Too many
restarts in a short time and it stops everything and raises `SupervisorGaveUp` to its parent,
which may itself be a supervisor (`Supervisor.run` works as a child's start function).

Cancellation in Trio is cooperative, so "stopping" a child means cancelling its cancel scope and
waiting up to `ChildSpec.shutdown` seconds for it to finish. A child that has not finished by
then is abandoned: the supervisor logs it and carries on (restarting, or stopping the next
child), but Trio cannot kill a task, so the stuck task stays in the supervisor's nursery and
`run()` returns only once it has finished.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import trio

from wad import log as wadlog
from wad.errors import WadError


class Restart(enum.Enum):
    """When a child that has exited is started again."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit (an exception)
    TEMPORARY = "temporary"  # never, not even when a sibling's failure stops it


class Strategy(enum.Enum):
    """Which children are restarted when one of them exits and must be restarted."""

    ONE_FOR_ONE = "one_for_one"  # only that child
    ONE_FOR_ALL = "one_for_all"  # every live child
    REST_FOR_ONE = "rest_for_one"  # that child and the live children started after it
    # OTP's simple_one_for_one: a dynamic supervisor of like children added with `start_child`
    # (e.g. one per organization). Restarts as one_for_one; at shutdown its children stop all
    # at once, not one after another, so its grace need only cover the slowest child.
    SIMPLE_ONE_FOR_ONE = "simple_one_for_one"


class SupervisorGaveUp(WadError):
    """More than `intensity` restarts happened within `period` seconds; the children are stopped.

    `__cause__` is the last abnormal exit seen, if any."""


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child: `await start(task_status=...)`, ready once it calls `started()`."""

    id: str
    start: Callable[..., Awaitable[object]]
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0  # grace seconds after cancelling it; give nested supervisors more


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: the one rule for how long anything in wad waits before trying again.

    The Nth consecutive attempt waits `min(initial * factor**(n-1), max)` seconds: with the
    defaults 0.5 s, 1 s, 2 s, 4 s ... up to 30 s. A supervisor uses it before restarting a child
    (wad's addition to OTP, which restarts at once; the count starts over once the child has run
    for the supervisor's `period` without exiting); retry loops outside the tree (the lock
    connection, the session's reconnects, webhook deliveries, the spool) use it with their own
    numbers and reset their count after a success."""

    initial: float = 0.5
    factor: float = 2.0
    max: float = 30.0

    def delay(self, n: int) -> float:
        """Seconds to wait before attempt `n` (1-based) of a run of consecutive failures."""
        return float(min(self.initial * self.factor ** (max(n, 1) - 1), self.max))


# The only code in wad that looks inside exception groups (tests/unit/test_supervision_tree.py
# keeps it so): everywhere else groups are taken apart with `except*`.


def first_leaf(error: BaseException) -> BaseException:
    """The first exception that is not a group: what an `except*` clause caught, unwrapped
    from the (possibly nested) groups of nurseries."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def sole(error: BaseException) -> BaseException:
    """The one exception that (possibly nested) groups hold, unwrapped; the error itself when
    it is not a group or a group holds several. For a boundary that must hand on what its body
    raised as it was raised, such as a context manager whose nursery only runs helpers."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def describe(error: BaseException | None) -> str:
    """One line for an error, looking through the groups that nurseries wrap errors in."""
    if error is None:
        return "normal exit"
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in error.exceptions)
    return f"{type(error).__name__}: {error}"


# Called as hook(supervisor_name, child_id, reason) on every restart, e.g. by metrics.
on_restart: list[Callable[[str, str, str], None]] = []


@dataclass(eq=False, kw_only=True)
class Launch:
    """One run of a long-lived task this daemon started (a supervisor's child, an organization,
    an import): the task runs inside `scope` and sets `done` once it has ended, however."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def running(self) -> bool:
        """Whether the task has not ended yet."""
        return not self.done.is_set()

    async def ended(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the task to end; whether it has."""
        with trio.move_on_after(timeout):
            await self.done.wait()
        return self.done.is_set()

    async def stop(self, grace: float) -> bool:
        """Cancel the task and wait out its grace; whether it ended within it (Trio cannot kill
        a task that ignores cancellation: one that did not end is left running)."""
        self.scope.cancel()
        return await self.ended(grace)


@dataclass(eq=False)
class _Child:
    spec: ChildSpec
    state: str = "starting"  # starting, running, restarting, stopped, failed
    handle: object = None
    run: Launch | None = None  # the current launch, None while not running
    due: float | None = None  # trio time of a pending (re)start
    ready_at: float = 0.0
    consecutive: int = 0  # consecutive restarts, for the backoff
    restarts: int = 0
    last_reason: str | None = None
    last_at: datetime | None = None


class _Status:
    """The `task_status` handed to a child: records its readiness, then tells the nursery."""

    def __init__(self, child: _Child, run: Launch, outer: trio.TaskStatus[Any]) -> None:
        self._child, self._run, self._outer = child, run, outer
        self.is_started = False

    def started(self, value: object = None) -> None:
        if self.is_started:
            raise RuntimeError("started() called twice")
        self.is_started = True
        self._child.handle, self._child.state = value, "running"
        self._child.ready_at = trio.current_time()
        # From now on only the supervisor may cancel the child, so that it can stop children
        # one by one in reverse order even when the supervisor itself is being cancelled.
        self._run.scope.shield = True
        self._outer.started(value)


_INDEPENDENT = (Strategy.ONE_FOR_ONE, Strategy.SIMPLE_ONE_FOR_ONE)


class Supervisor:
    """Runs `children` under a restart policy; see the module docstring."""

    def __init__(self, name: str, children: list[ChildSpec], *,
                 strategy: Strategy = Strategy.ONE_FOR_ONE, intensity: int = 3,
                 period: float = 5.0, backoff: Backoff | None = None, log: Any = None) -> None:
        self.name, self.strategy, self.intensity, self.period = name, strategy, intensity, period
        self.backoff = backoff or Backoff()
        self.total_restarts = 0
        self._children = [_Child(spec) for spec in children]
        if len({c.spec.id for c in self._children}) != len(self._children):
            raise ValueError(f"supervisor {name}: duplicate child ids")
        self._log = (log or wadlog.get("supervise")).bind(supervisor=name)
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._exits: deque[tuple[_Child, Launch, Exception | None]] = deque()
        self._wakeup = trio.Event()
        self._lock = trio.Lock()
        self._restart_times: deque[float] = deque()
        self._last_error: Exception | None = None

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Start the children in order, report ready, supervise until cancelled, stop them in
        reverse order. Raises `SupervisorGaveUp` when restarts exceed the intensity.

        May run again after it returned (a parent restarting it): it then starts every child it
        holds, including those added with `start_child` and not removed."""
        if self._nursery is not None:
            raise RuntimeError(f"supervisor {self.name} is already running")
        self._exits.clear()
        self._restart_times.clear()
        self._wakeup, self._lock, self._last_error = trio.Event(), trio.Lock(), None
        self._closing = False
        now = trio.current_time()
        for child in self._children:
            child.state, child.due, child.consecutive, child.handle = "starting", now, 0, None
        gave_up: SupervisorGaveUp | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._supervise(task_status)
            except SupervisorGaveUp as exc:
                gave_up = exc
            finally:
                self._closing = True
                with trio.CancelScope(shield=True):
                    await self._stop_all()
                self._nursery = None
        if gave_up is not None:
            raise gave_up

    async def _supervise(self, task_status: trio.TaskStatus[Supervisor]) -> None:
        ready = False
        while True:
            async with self._lock:
                while self._exits:
                    child, run, error = self._exits.popleft()
                    if child.run is run:  # else stale: that launch was stopped or replaced
                        await self._handle_exit(child, error, was_ready=True)
                # At first start, and for the group strategies, children start strictly in
                # order; one_for_one restarts each child when its own backoff has elapsed.
                ordered = not ready or self.strategy not in _INDEPENDENT
                deadline = await self._start_due(ordered=ordered)
                if not ready and all(c.due is None for c in self._children):
                    ready = True
                    task_status.started(self)
            with trio.move_on_at(deadline):
                await self._wakeup.wait()
            self._wakeup = trio.Event()

    async def _start_due(self, *, ordered: bool) -> float:
        """Start the children whose time has come; return when to look again."""
        later = math.inf
        for child in list(self._children):
            if child.due is None:
                continue
            if child.due > trio.current_time():
                if ordered:  # the children after it wait for it
                    return child.due
                later = min(later, child.due)
                continue
            error = await self._launch(child)
            if error is not None:
                await self._handle_exit(child, error, was_ready=False)
                return -math.inf  # the strategy may have rescheduled others: look again now
        return later

    async def _launch(self, child: _Child) -> Exception | None:
        """Start one child and wait until it is ready; return the error if it failed first."""
        assert self._nursery is not None
        run = Launch()
        child.run, child.due, child.state = run, None, "starting"
        try:
            await self._nursery.start(self._child_task, child, run)
        except Exception as exc:
            child.run = None
            return exc
        if self._closing:  # a start_child that finished after the final stop: stop it too
            with trio.CancelScope(shield=True):
                await self._stop(child)
            return RuntimeError(f"supervisor {self.name} is stopping")
        return None

    async def _child_task(self, child: _Child, run: Launch, *,
                          task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        status = _Status(child, run, task_status)
        error: Exception | None = None
        try:
            with run.scope:
                await child.spec.start(task_status=status)
        except Exception as exc:
            error = exc
        finally:
            run.done.set()
        if run.scope.cancel_called:  # stopped by its supervisor: a shutdown, not an exit
            if error is not None:
                self._log.warning("actor raised while stopping", child=child.spec.id,
                                  error=describe(error), exc_info=error)
            if not status.is_started:
                task_status.started(None)
            return
        if not status.is_started:  # surfaces from nursery.start() in _launch
            raise error or RuntimeError(f"child {child.spec.id} returned before it was ready")
        self._exits.append((child, run, error))
        self._wakeup.set()

    # -- policy ----------------------------------------------------------------------------

    async def _handle_exit(self, child: _Child, error: Exception | None, *, was_ready: bool
                           ) -> None:
        now = trio.current_time()
        child.run, child.handle = None, None
        reason = describe(error)
        if error is not None:
            self._last_error = error
            self._log.error("actor failed", child=child.spec.id, error=reason, exc_info=error)
        else:
            self._log.info("actor exited", child=child.spec.id)
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and error is None):
            child.state = "stopped" if error is None else "failed"
            return
        # Counted when the exit is seen, before the backoff, so backoff cannot hide a crash loop.
        self._restart_times.append(now)
        while self._restart_times and self._restart_times[0] <= now - self.period:
            self._restart_times.popleft()
        if len(self._restart_times) > self.intensity:
            child.state = "failed"
            self._log.error("supervisor gave up", child=child.spec.id, intensity=self.intensity,
                            period=self.period)
            raise SupervisorGaveUp(
                f"supervisor {self.name}: more than {self.intensity} restarts in {self.period}s"
                f" (last: {child.spec.id}, {reason})") from self._last_error
        if was_ready and now - child.ready_at >= self.period:
            child.consecutive = 0
        child.consecutive += 1
        delay = self.backoff.delay(child.consecutive)
        group = self._affected(child)
        for other in reversed(group):
            if other is not child:
                await self._stop(other)
        for member in group:
            if member is not child and member.spec.restart is Restart.TEMPORARY:
                continue
            member.due, member.state = now + delay, "restarting"
            why = reason if member is child else f"sibling {child.spec.id}: {reason}"
            self._note_restart(member, why, delay)

    def _affected(self, child: _Child) -> list[_Child]:
        """The children restarted with `child`, in start order."""
        def live(c: _Child) -> bool:
            return c is child or c.run is not None or c.due is not None
        if self.strategy is Strategy.ONE_FOR_ALL:
            return [c for c in self._children if live(c)]
        if self.strategy is Strategy.REST_FOR_ONE:
            return [c for c in self._children[self._children.index(child):] if live(c)]
        return [child]

    def _note_restart(self, child: _Child, reason: str, delay: float) -> None:
        child.restarts += 1
        self.total_restarts += 1
        child.last_reason, child.last_at = reason, datetime.now(UTC)
        self._log.warning("actor restarted", child=child.spec.id, reason=reason,
                          count=child.restarts, delay_s=delay)
        for hook in list(on_restart):
            try:
                hook(self.name, child.spec.id, reason)
            except Exception:  # a broken metrics hook must not break supervision
                self._log.exception("on_restart hook failed", hook=repr(hook))

    async def _stop(self, child: _Child) -> None:
        """Cancel a child and wait out its grace; it ends up `stopped` and not scheduled."""
        child.due = None
        run = child.run
        if run is not None:
            if not await run.stop(child.spec.shutdown):
                self._log.warning("actor did not stop within its grace; abandoned",
                                  child=child.spec.id, grace_s=child.spec.shutdown)
            child.run = None
        if child.state != "failed":
            child.state = "stopped"
        child.handle = None

    async def _stop_all(self) -> None:
        if self.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
            async with trio.open_nursery() as nursery:
                for child in self._children:
                    nursery.start_soon(self._stop, child)
            return
        for child in reversed(self._children):
            await self._stop(child)

    @property
    def stop_budget(self) -> float:
        """The longest this supervisor's children may take to stop: the sum of their graces,
        or for `SIMPLE_ONE_FOR_ONE` (children stop at once) the largest."""
        graces = [c.spec.shutdown for c in self._children]
        if self.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
            return max(graces, default=0.0)
        return sum(graces)

    @property
    def quickest_give_up(self) -> float:
        """Seconds from a child's first failure until this supervisor gives up, when the child
        fails again as soon as each restart starts it: the backoff before each of `intensity`
        restarts. Only when this is less than `period` can a crash loop end in a give-up (each
        later failure must fall within `period` of the first); the difference is the time the
        child's `intensity + 1` runs may take together."""
        return sum(self.backoff.delay(n) for n in range(1, self.intensity + 1))

    # -- run-time control ------------------------------------------------------------------

    async def start_child(self, spec: ChildSpec) -> object:
        """Add a child at the end and start it; returns its handle. If it fails before it is
        ready, the error is raised and the child is not added. Not to be awaited by a child of
        this supervisor before that child is ready (the supervisor is busy starting it)."""
        async with self._lock:
            if self._nursery is None or self._closing:
                raise RuntimeError(f"supervisor {self.name} is not running")
            if any(c.spec.id == spec.id for c in self._children):
                raise ValueError(f"supervisor {self.name} already has a child {spec.id!r}")
            child = _Child(spec)
            self._children.append(child)
            error = await self._launch(child)
            if error is not None:
                self._children.remove(child)
                raise error
            return child.handle

    async def terminate_child(self, child_id: str) -> None:
        """Stop a child (reverse of start); it stays listed as `stopped` and is not restarted."""
        async with self._lock:
            await self._stop(self._find(child_id))

    async def remove_child(self, child_id: str) -> None:
        """Stop a child if it runs and forget it."""
        async with self._lock:
            child = self._find(child_id)
            await self._stop(child)
            self._children.remove(child)

    async def remove_children(self, child_ids: list[str]) -> None:
        """Stop those of these children that exist, all at once, and forget them."""
        async with self._lock:
            children = [c for c in self._children if c.spec.id in child_ids]
            async with trio.open_nursery() as nursery:
                for child in children:
                    nursery.start_soon(self._stop, child)
            for child in children:
                self._children.remove(child)

    # -- introspection ---------------------------------------------------------------------

    def _find(self, child_id: str) -> _Child:
        for child in self._children:
            if child.spec.id == child_id:
                return child
        raise KeyError(f"supervisor {self.name} has no child {child_id!r}")

    def has_child(self, child_id: str) -> bool:
        return any(c.spec.id == child_id for c in self._children)

    def specs(self) -> list[ChildSpec]:
        """The child specs, in start order."""
        return [c.spec for c in self._children]

    def handle(self, child_id: str) -> object:
        """What the child passed to `started()`, or None while it is not running."""
        return self._find(child_id).handle

    def restart_count(self, child_id: str) -> int:
        return self._find(child_id).restarts

    def last_restart(self, child_id: str) -> tuple[str, datetime] | None:
        """Reason and wall-clock time (UTC) of the child's last restart, if any."""
        child = self._find(child_id)
        return None if child.last_at is None else (child.last_reason or "", child.last_at)

    def tree(self) -> dict[str, Any]:
        """A JSON-able live view of this supervisor and, recursively, nested supervisors (keys
        in camelCase, as `GET /api/tree` answers it)."""
        children = []
        for c in self._children:
            entry: dict[str, Any] = {
                "id": c.spec.id, "state": c.state, "restart": c.spec.restart.value,
                "restarts": c.restarts, "lastRestartReason": c.last_reason,
                "lastRestartAt": c.last_at.isoformat() if c.last_at else None,
            }
            nested = getattr(c.handle, "supervisor", c.handle)  # an organization's handle has one
            if isinstance(nested, Supervisor):
                entry["supervisor"] = nested.tree()
            children.append(entry)
        return {"name": self.name, "strategy": self.strategy.value,
                "restarts": self.total_restarts, "children": children}
