"""Calls that many tasks make at about the same time, run as one batch.

The inbound actor processes many chats at once, each chat's messages one after another; every
step of processing is a database round trip. The control API answers status requests that
arrive together. A `Coalesced` step takes the calls that arrive while its previous batch is
under way and makes them one call of the batched form (one statement for many messages, or many
organizations), so the round trips are shared without changing what each task sees: every call
is answered by a batch that started after it was made, so a change committed before the call is
always seen.

A batch that fails is run again one call at a time, so a call that cannot succeed fails alone;
when the database is unreachable every call of the batch gets that error at once (each caller
then does what it does when the database is down).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import trio

from wad.db.pool import database_unavailable

A = TypeVar("A")
R = TypeVar("R")


class _Call(Generic[A, R]):
    __slots__ = ("arg", "done", "error", "result")

    def __init__(self, arg: A) -> None:
        self.arg = arg
        self.done = trio.Event()
        self.result: R | None = None
        self.error: BaseException | None = None


class Coalesced(Generic[A, R]):
    """`await step(arg)` answers what `run_many([arg, ...])` answered for `arg`: the calls made
    while a batch runs go together into the next one. `run_many` answers one result per
    argument, in order. Start `run` in a nursery first."""

    def __init__(self, run_many: Callable[[Sequence[A]], Awaitable[Sequence[R]]], *,
                 max_batch: int = 500) -> None:
        self._run_many = run_many
        self._max_batch = max_batch
        self._waiting: list[_Call[A, R]] = []
        self._wakeup = trio.Event()
        self.batches = 0
        """How many batches ran (for tests and benchmarks)."""

    async def __call__(self, arg: A) -> R:
        call: _Call[A, R] = _Call(arg)
        self._waiting.append(call)
        self._wakeup.set()
        await call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the batches until cancelled."""
        task_status.started()
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            await trio.lowlevel.checkpoint()  # the callers woken with this one join it
            while self._waiting:
                batch = self._waiting[:self._max_batch]
                del self._waiting[:len(batch)]
                self.batches += 1
                await self._run(batch)

    async def _run(self, batch: list[_Call[A, R]]) -> None:
        try:
            results = await self._run_many([call.arg for call in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} calls")
        except Exception as exc:
            if len(batch) == 1 or database_unavailable(exc):
                for call in batch:
                    call.error = exc
                    call.done.set()
                return
            for call in batch:  # find the call that fails: the others still succeed
                await self._run([call])
            return
        for call, result in zip(batch, results, strict=True):
            call.result = result
            call.done.set()
