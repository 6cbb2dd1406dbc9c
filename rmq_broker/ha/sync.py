"""SYNC_MASTER: sends waiting for the slaves' acknowledgement (Java ``HAService.GroupTransferService``).

A send that must be replicated before it is answered waits here until the acknowledged offset (the
highest commitlog offset any slave reported) reaches the end of its record. Waiters sit in a heap ordered
by that end offset, so one acknowledgement wakes every send it covers with one pass over the covered
waiters — no per-waiter polling — and a thousand concurrent sends cost one heap push and pop each.
"""
from __future__ import annotations

import heapq
import itertools

import trio

__all__ = ["ReplicaWaiters"]


class ReplicaWaiters:
    def __init__(self) -> None:
        self.acked_offset = 0
        self._heap: list[tuple[int, int, trio.Event]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        """Waiters in the heap (including ones whose wait timed out, dropped lazily)."""
        return len(self._heap)

    def on_ack(self, offset: int) -> None:
        """A slave acknowledged ``offset``: wake every waiter whose end offset it covers."""
        if offset <= self.acked_offset:
            return
        self.acked_offset = offset
        heap = self._heap
        while heap and heap[0][0] <= offset:
            heapq.heappop(heap)[2].set()

    async def wait(self, end_offset: int, timeout_ms: float) -> bool:
        """True once a slave acknowledged ``end_offset``; False after ``timeout_ms``."""
        if self.acked_offset >= end_offset:
            return True
        entry = (end_offset, next(self._seq), trio.Event())
        heapq.heappush(self._heap, entry)
        try:
            with trio.move_on_after(timeout_ms / 1000):
                await entry[2].wait()
        finally:
            if not entry[2].is_set():
                # Timed out or cancelled: take the entry out (O(n), only on this slow path) so a slave
                # that stopped acknowledging cannot make the heap grow without bound.
                try:
                    self._heap.remove(entry)
                    heapq.heapify(self._heap)
                except ValueError:
                    pass
        return self.acked_offset >= end_offset

    def clear(self) -> None:
        """Wake every waiter (shutdown); each then sees whether its offset was acknowledged."""
        for _, _, event in self._heap:
            event.set()
        self._heap.clear()
