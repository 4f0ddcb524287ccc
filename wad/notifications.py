"""Bridges from the event bus to the plugins' notification hooks, for events that actors only
publish on the bus (session status changes)."""

from __future__ import annotations

from datetime import UTC, datetime

import trio

from wad import plugins
from wad.bus import EventBus, SessionStatus
from wad.payloads import SessionStatusChange


async def forward_session_status(bus: EventBus, pm: plugins.PluginManager, *,
                                 task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                                 ) -> None:
    """Call `wad_session_status_changed` for every change of a session's state."""
    with bus.subscribe(kinds={SessionStatus}, buffer=10_000) as events:
        task_status.started()
        async for event in events:
            if (not isinstance(event, SessionStatus) or event.org_id is None
                    or event.previous == event.state):
                continue
            change = SessionStatusChange(
                organization_id=event.org_id,
                from_state=event.previous,
                to_state=event.state,
                reason=event.last_error,
                at=datetime.fromtimestamp(event.at, UTC),
            )
            await plugins.notify(pm, "wad_session_status_changed", change=change)
