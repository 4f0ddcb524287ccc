"""The reconnect schedule of a browser session, on Trio's mock clock."""

import trio
import trio.testing

from wad.org.session import BrowserFailure, Outcome, reconnect_delay, run_with_reconnect


def test_delay_doubles_from_one_second_and_caps_at_thirty() -> None:
    delays = [reconnect_delay(n, initial=1.0, maximum=30.0) for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


async def test_failures_are_retried_on_schedule_then_error(
        autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []

    async def always_fails() -> Outcome:
        starts.append(trio.current_time())
        raise BrowserFailure("page did not load")

    outcome = await run_with_reconnect(always_fails, initial=1.0, maximum=30.0, max_attempts=6)
    gaps = [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert len(starts) == 7  # the first try and six reconnect attempts
    assert outcome.final and outcome.state == "ERROR"
    assert "6 reconnect attempts" in (outcome.reason or "")
    assert "page did not load" in (outcome.reason or "")


async def test_a_connected_run_resets_the_count(autojump_clock: trio.testing.MockClock) -> None:
    plan = ["fail", "fail", "connected-then-drop", "fail", "final"]
    starts: list[float] = []

    async def attempt() -> Outcome:
        starts.append(trio.current_time())
        step = plan.pop(0)
        if step == "fail":
            return Outcome(final=False, state="CONNECTING", reason="crash")
        if step == "connected-then-drop":
            await trio.sleep(100)
            return Outcome(final=False, state="CONNECTING", reason="drop", connected=True)
        return Outcome(final=True, state="BANNED", reason="banned")

    outcome = await run_with_reconnect(attempt, initial=1.0, maximum=30.0, max_attempts=3)
    gaps = [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)]
    # 1 s, 2 s, then a run of 100 s that had connected, so the next delay is 1 s again.
    assert gaps == [1.0, 2.0, 101.0, 2.0]
    assert outcome.state == "BANNED"


async def test_final_outcome_is_never_retried(autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    async def banned() -> Outcome:
        nonlocal calls
        calls += 1
        return Outcome(final=True, state="BANNED", reason="account banned (TOS_BLOCK)")

    outcome = await run_with_reconnect(banned, initial=1.0, maximum=30.0, max_attempts=5)
    assert calls == 1 and outcome.state == "BANNED"
