"""`freeze_heap`: garbage is collected first, then what is alive is frozen."""

from __future__ import annotations

import gc
import weakref

from wad.daemon import freeze_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_garbage_is_collected_before_what_is_alive_is_frozen() -> None:
    kept, dropped = _Node(), _Node()
    kept_ref, dropped_ref = weakref.ref(kept), weakref.ref(dropped)
    del dropped
    try:
        frozen = freeze_heap()
        assert frozen == gc.get_freeze_count() > 0
        assert dropped_ref() is None, "a dead cycle is collected, not frozen"
        assert kept_ref() is kept
        # Alive, and in none of the collector's generations any more: frozen.
        assert not any(o is kept for g in range(3) for o in gc.get_objects(generation=g))
    finally:
        gc.unfreeze()  # the test process's heap as it was
