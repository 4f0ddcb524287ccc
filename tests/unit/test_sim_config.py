"""The simulator's knobs (`GET/POST /_sim/config`): a value the simulator cannot run with is
refused with 400 and what was set before stays."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from wad.sim.client import SimClient, SimClientError
from wad.sim.server import serve


@pytest.mark.parametrize(("field", "bad"), [
    ("page_size", 0),  # loadEarlierMsgs would never reach older history
    ("qr_rotate_s", 0),  # the QR would rotate in a busy loop
    ("max_devices", 0),
    ("sync_delay_s", -1),
    ("ack_delays_s", [0.5, -1, 3]),
    ("version", ""),
    ("recent_msgs", "20"),
])
async def test_a_knob_out_of_range_is_refused_and_nothing_changes(
        nursery: trio.Nursery, field: str, bad: object) -> None:
    handle = await nursery.start(partial(serve, seed=1))
    async with SimClient(handle.url) as simc:
        before = await simc.config(page_size=7, qr_rotate_s=2)
        with pytest.raises(SimClientError) as refused:
            await simc.config(**{"peer_request_delay_s": 9, field: bad})
        assert refused.value.status == 400
        assert field in str(refused.value)
        assert await simc.config() == before
        assert (before["page_size"], before["qr_rotate_s"], before["peer_request_delay_s"]) == (7, 2, 0.3)
