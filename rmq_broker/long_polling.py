"""Held pulls: a PULL_MESSAGE that found nothing waits here until its queue grows or its time is up.

RocketMQ parks the request in PullRequestHoldService and re-runs it from a thread that rescans every
5 s and from the reput thread after each dispatch (PROTOCOL.md §5.3). Here the pull handler's own
task waits: ``await holds.wait(topic, queue_id, offset, timeout_s)`` returns True as soon as the
store reports (through its arrival listener) that the queue's max offset passed ``offset``, or False
at the timeout; the handler then re-runs the pull once without suspending. No rescan is needed
because every append notifies synchronously, in the same trio thread, before the send is answered. A notify
that wakes a pull also asks the reader handling the send to let the pull answer first
(``rmq_remoting.connection.let_woken_tasks_reply_first``): the consumer's answer is written before the
producer's acknowledgement, which saves the end-to-end path one write and one wake-up.

Invariants and limits:
* ``notify`` runs on the trio thread that owns this object (store puts happen on the broker's loop);
  it only sets events, never awaits, so an append pays one dict lookup when nobody waits.
* At most ``max_held`` pulls wait at once across all connections; beyond it ``wait`` returns at once
  (False) and the client simply pulls again — memory stays bounded whatever the clients do.
* A waiter is removed from the table on every exit path (woken, timed out, cancelled).
"""
from __future__ import annotations

import trio

from rmq_remoting.connection import let_woken_tasks_reply_first

__all__ = ["PullHoldService", "DEFAULT_MAX_HELD_PULLS"]

DEFAULT_MAX_HELD_PULLS = 100_000


class _Waiter:
    __slots__ = ("offset", "event")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.event = trio.Event()


class PullHoldService:
    """Waiting pulls keyed by (topic, queue id); woken by ``notify`` from the store's arrival listener."""

    def __init__(self, max_held: int = DEFAULT_MAX_HELD_PULLS) -> None:
        if max_held < 0:
            raise ValueError("max_held must be >= 0")
        self.max_held = max_held
        self._waiters: dict[tuple[str, int], list[_Waiter]] = {}
        self._held = 0
        self.woken_total = 0
        self.expired_total = 0
        self.refused_total = 0
        self.closed = False

    @property
    def held(self) -> int:
        """Pulls waiting right now."""
        return self._held

    def notify(self, topic: str, queue_id: int, max_offset: int) -> None:
        """The queue now ends at ``max_offset``: wake every pull waiting for an offset below it."""
        waiters = self._waiters.get((topic, queue_id))
        if not waiters:
            return
        keep = []
        for w in waiters:
            if w.offset < max_offset:
                w.event.set()
            else:
                keep.append(w)
        if len(keep) < len(waiters):
            # The put that notified us is being handled inline by a connection's reader: let the woken pulls
            # answer before that reader writes the send's acknowledgement (end-to-end latency, docs/client.md).
            let_woken_tasks_reply_first()
        if keep:
            self._waiters[(topic, queue_id)] = keep
        else:
            del self._waiters[(topic, queue_id)]

    async def wait(self, topic: str, queue_id: int, offset: int, timeout_s: float) -> bool:
        """Wait until the queue holds a message at ``offset`` or later; False on timeout, when full or
        closed."""
        if self.closed:
            return False
        if self._held >= self.max_held:
            self.refused_total += 1
            return False
        key = (topic, queue_id)
        waiter = _Waiter(offset)
        self._waiters.setdefault(key, []).append(waiter)
        self._held += 1
        try:
            with trio.move_on_after(max(0.0, timeout_s)):
                await waiter.event.wait()
        finally:
            self._held -= 1
            if not waiter.event.is_set():
                self._remove(key, waiter)
        if waiter.event.is_set():
            self.woken_total += 1
            return True
        self.expired_total += 1
        return False

    def _remove(self, key: tuple[str, int], waiter: _Waiter) -> None:
        waiters = self._waiters.get(key)
        if waiters is None:
            return
        try:
            waiters.remove(waiter)
        except ValueError:
            return
        if not waiters:
            del self._waiters[key]

    def close(self) -> None:
        """Shutdown: answer every held pull now and hold no new one (``wait`` returns False at once)."""
        self.closed = True
        self.wake_all()

    def wake_all(self) -> None:
        """Answer every held pull now (shutdown: they re-run once and reply PULL_NOT_FOUND)."""
        for waiters in self._waiters.values():
            for w in waiters:
                w.event.set()
        self._waiters.clear()
