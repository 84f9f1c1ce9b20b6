"""The timer queue of one scheduler: a binary heap of deadlines.

Only its scheduler's thread touches it, so it takes no lock.  A cancelled entry is marked dead
and counted; the heap is rebuilt once dead entries are more than half of it, so a timer that
lost a choice does not linger until it would have expired (Guile Fibers issue #109) and a loop
of a million cancelled timeouts keeps the heap small.  This is asyncio's scheme.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

_COMPACT_MIN = 64


class TimerQueue:
    __slots__ = ("_heap", "_dead", "_seq")

    def __init__(self) -> None:
        # Entries are lists [deadline, seq, callback]; callback None marks a cancelled entry.
        self._heap: list[list] = []
        self._dead = 0
        self._seq = itertools.count()

    def __len__(self) -> int:
        """The number of live (not cancelled, not fired) timers."""
        return len(self._heap) - self._dead

    def add(self, deadline: float, callback: Callable[[], object]) -> list:
        entry = [deadline, next(self._seq), callback]
        heapq.heappush(self._heap, entry)
        return entry

    def cancel(self, entry: list) -> None:
        if entry[2] is None:
            return
        entry[2] = None
        heap = self._heap
        if heap[0] is entry:
            heapq.heappop(heap)
            return
        self._dead += 1
        if self._dead > _COMPACT_MIN and self._dead * 2 > len(heap):
            heap[:] = [e for e in heap if e[2] is not None]  # in place: fire_due holds it
            heapq.heapify(heap)
            self._dead = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            if heap[0][2] is not None:
                return heap[0][0]
            heapq.heappop(heap)
            self._dead -= 1
        return None

    def fire_due(self, now: float) -> None:
        """Run the callback of every timer whose deadline is at or before ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            callback = entry[2]
            if callback is None:
                self._dead -= 1
            else:
                entry[2] = None
                callback()

    def clear(self) -> None:
        for entry in self._heap:
            entry[2] = None
        self._heap.clear()
        self._dead = 0


# The compiled copy of this module replaces it, unless FIBERNET_PURE_PYTHON (see _accel).
from fibernet.runtime._accel import import_c_accel  # noqa: E402

import_c_accel(globals(), "fibernet.runtime._c_timers")
