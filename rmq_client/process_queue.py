"""ProcessQueue: what a consumer holds of one message queue (Java ``ProcessQueue``).

Pulled messages wait here until the listener has consumed them. The queue answers the questions the
consumer asks on every pull and every commit:

* **flow control** — ``msg_count`` and ``msg_size`` (body bytes) of the cached messages; the pull loop stops
  pulling while they exceed the thresholds, and (concurrent consumption) while ``max_span()`` — last cached
  offset minus first — exceeds ``consume_concurrently_max_span``;
* **the commit offset** — ``remove_messages`` returns the smallest offset still cached (or the last offset + 1
  when nothing is left): everything below it was consumed, whatever order concurrent consumers finished in;
* **orderly consumption** — ``take_messages`` moves the next messages into a consuming set, ``commit``
  forgets them and returns the offset to commit, ``make_messages_to_consume_again`` puts them back in front;
* **liveness** — ``dropped`` (the queue went to another consumer, or its offset was illegal), the broker
  lock of orderly consumers (``locked``, renewed every 20 s, considered lost 30 s after the last renewal),
  and the last pull time (a queue not pulled for 120 s is rebuilt by the rebalance).

Offsets arrive in increasing order (one pull loop per queue), so the cache is a dict in offset order plus a
deque of its keys with lazy deletion at both ends: first and last key are amortised O(1), as are put and
remove. The lite pull consumer's fast path caches whole ``PullBatch`` objects and counts them with
``add_counts``/``remove_counts`` instead.

Times are ``trio.current_time()`` seconds (monotonic; a MockClock drives them in tests).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import trio

from rmq_common.properties import PropertyKey

__all__ = ["ProcessQueue", "REBALANCE_LOCK_MAX_LIVE_TIME_S", "REBALANCE_LOCK_INTERVAL_S", "PULL_MAX_IDLE_TIME_S"]

#: A broker lock not renewed for this long is considered lost (``rocketmq.client.rebalance.lockMaxLiveTime``).
REBALANCE_LOCK_MAX_LIVE_TIME_S = 30.0
#: Period of the lock renewal of orderly consumers (``rocketmq.client.rebalance.lockInterval``).
REBALANCE_LOCK_INTERVAL_S = 20.0
#: A queue not pulled for this long is dropped and rebuilt by the rebalance (``rocketmq.client.pull.pullMaxIdleTime``).
PULL_MAX_IDLE_TIME_S = 120.0


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:                    # outside a trio run (unit tests of the data structure)
        import time
        return time.monotonic()


class ProcessQueue:
    """The cached messages of one message queue and the consumer's state for it."""

    __slots__ = ("_tree", "_order", "_consuming", "msg_count", "msg_size", "queue_offset_max", "consuming",
                 "msg_acc_cnt", "dropped", "last_pull_timestamp", "last_consume_timestamp", "locked",
                 "last_lock_timestamp", "try_unlock_times", "consume_lock", "pull_scope", "lock_max_live_time_s",
                 "pull_max_idle_time_s", "__weakref__")

    def __init__(self, *, lock_max_live_time_s: float = REBALANCE_LOCK_MAX_LIVE_TIME_S,
                 pull_max_idle_time_s: float = PULL_MAX_IDLE_TIME_S) -> None:
        self._tree: dict[int, Any] = {}
        self._order: deque[int] = deque()
        self._consuming: dict[int, Any] = {}         # orderly: taken, not yet committed (consumingMsgOrderlyTreeMap)
        self.msg_count = 0
        self.msg_size = 0
        self.queue_offset_max = 0
        self.consuming = False
        self.msg_acc_cnt = 0
        self.dropped = False
        now = _now()
        self.last_pull_timestamp = now
        self.last_consume_timestamp = now
        self.locked = False
        self.last_lock_timestamp = now
        self.try_unlock_times = 0
        #: Held while the orderly listener runs on this queue; a rebalance waits for it before unlocking.
        self.consume_lock = trio.Lock()
        #: Cancels the queue's pull loop (and its pull in flight) when the queue is dropped.
        self.pull_scope = trio.CancelScope()
        self.lock_max_live_time_s = lock_max_live_time_s
        self.pull_max_idle_time_s = pull_max_idle_time_s

    # -- state ------------------------------------------------------------------------------------

    def drop(self) -> None:
        """Mark the queue dropped and stop its pull loop."""
        self.dropped = True
        self.pull_scope.cancel()

    def is_lock_expired(self) -> bool:
        return _now() - self.last_lock_timestamp > self.lock_max_live_time_s

    def is_pull_expired(self) -> bool:
        return _now() - self.last_pull_timestamp > self.pull_max_idle_time_s

    def set_locked(self, locked: bool) -> None:
        self.locked = locked
        if locked:
            self.last_lock_timestamp = _now()

    # -- ordered keys -----------------------------------------------------------------------------

    def _first_key(self) -> int | None:
        order, tree = self._order, self._tree
        while order and order[0] not in tree:
            order.popleft()
        return order[0] if order else None

    def _last_key(self) -> int | None:
        order, tree = self._order, self._tree
        while order and order[-1] not in tree:
            order.pop()
        return order[-1] if order else None

    def cached_offsets(self) -> list[int]:
        """The offsets cached and not taken, ascending (for tests and running info)."""
        return sorted(self._tree)

    # -- messages ---------------------------------------------------------------------------------

    def put_messages(self, msgs: list[Any]) -> bool:
        """Cache pulled messages; True when a consume task must be started (nothing was consuming)."""
        tree, order = self._tree, self._order
        valid = 0
        size = 0
        last = self._last_key()
        for msg in msgs:
            offset = msg.queue_offset
            if offset in tree:
                continue
            tree[offset] = msg
            if last is not None and offset < last:
                self._order = order = deque(sorted(tree))        # out of order: rebuild (never on the hot path)
            else:
                order.append(offset)
            last = max(offset, last) if last is not None else offset
            valid += 1
            self.queue_offset_max = offset
            size += len(msg.body)
        self.msg_count += valid
        self.msg_size += size
        dispatch = False
        if tree and not self.consuming:
            dispatch = True
            self.consuming = True
        if msgs:
            tail = msgs[-1]
            max_offset = tail.properties.get(PropertyKey.MAX_OFFSET)
            if max_offset:
                acc = int(max_offset) - tail.queue_offset
                if acc > 0:
                    self.msg_acc_cnt = acc
        return dispatch

    def max_span(self) -> int:
        first = self._first_key()
        if first is None:
            return 0
        last = self._last_key()
        return (last or first) - first

    def remove_messages(self, msgs: Iterable[Any]) -> int:
        """Forget consumed messages; the offset to commit: the first cached one, or the last pulled + 1 when
        nothing is left; -1 when nothing was cached."""
        tree = self._tree
        self.last_consume_timestamp = _now()
        if not tree:
            return -1
        result = self.queue_offset_max + 1
        removed = 0
        size = 0
        for msg in msgs:
            prev = tree.pop(msg.queue_offset, None)
            if prev is not None:
                removed += 1
                size += len(prev.body)
        self.msg_count -= removed
        self.msg_size -= size
        first = self._first_key()
        if first is not None:
            result = first
        return result

    def has_temp_message(self) -> bool:
        return bool(self._tree)

    def clear(self) -> None:
        self._tree.clear()
        self._order.clear()
        self._consuming.clear()
        self.msg_count = 0
        self.msg_size = 0
        self.queue_offset_max = 0

    # -- batches (lite pull fast path) --------------------------------------------------------------

    def add_counts(self, count: int, size: int, last_offset: int) -> None:
        self.msg_count += count
        self.msg_size += size
        self.queue_offset_max = last_offset

    def remove_counts(self, count: int, size: int) -> None:
        self.msg_count -= count
        self.msg_size -= size
        self.last_consume_timestamp = _now()

    # -- orderly ----------------------------------------------------------------------------------

    def take_messages(self, batch_size: int) -> list[Any]:
        """Move up to ``batch_size`` of the first cached messages to the consuming set (in offset order)."""
        out: list[Any] = []
        self.last_consume_timestamp = _now()
        tree = self._tree
        while len(out) < batch_size:
            first = self._first_key()
            if first is None:
                break
            self._order.popleft()
            msg = tree.pop(first)
            self._consuming[first] = msg
            out.append(msg)
        if not out:
            self.consuming = False
        return out

    def commit(self) -> int:
        """Forget the consuming set; the offset to commit (its last offset + 1), or -1 when it was empty."""
        consuming = self._consuming
        if not consuming:
            return -1
        offset = max(consuming)
        self.msg_count -= len(consuming)
        self.msg_size -= sum(len(m.body) for m in consuming.values())
        consuming.clear()
        return offset + 1

    def make_messages_to_consume_again(self, msgs: list[Any]) -> None:
        """Put taken messages back in front of the cache (SUSPEND_CURRENT_QUEUE_A_MOMENT)."""
        for msg in sorted(msgs, key=lambda m: m.queue_offset, reverse=True):
            offset = msg.queue_offset
            if self._consuming.pop(offset, None) is None and offset in self._tree:
                continue
            self._tree[offset] = msg
            self._order.appendleft(offset)

    def rollback(self) -> None:
        """Put the whole consuming set back (ROLLBACK)."""
        self.make_messages_to_consume_again(list(self._consuming.values()))

    def info(self) -> dict[str, Any]:
        """Java's ``ProcessQueueInfo`` fields, for GET_CONSUMER_RUNNING_INFO."""
        first = self._first_key()
        last = self._last_key()
        return {"cachedMsgCount": self.msg_count, "cachedMsgMinOffset": first if first is not None else 0,
                "cachedMsgMaxOffset": last if last is not None else 0, "cachedMsgSizeInMiB": self.msg_size >> 20,
                "commitOffset": 0, "droped": self.dropped, "locked": self.locked,
                "transactionMsgCount": len(self._consuming), "tryUnlockTimes": self.try_unlock_times}

    def __repr__(self) -> str:
        return (f"<ProcessQueue count={self.msg_count} size={self.msg_size} dropped={self.dropped} "
                f"locked={self.locked} consuming={self.consuming}>")
