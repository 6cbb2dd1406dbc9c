"""Orderly-consumption queue locks (LOCK_BATCH_MQ 41 / UNLOCK_BATCH_MQ 42; PROTOCOL.md §9.3).

An orderly consumer may only consume a queue it holds the broker's lock on, so that during a rebalance
two members never process one queue at once. Upstream ``RebalanceLockManager``: per consumer group,
message queue (topic, brokerName, queueId) → (client id, last lock time).

* A lock is granted when the queue is free, when the current holder's lock expired (no lock call for
  ``lock_max_live_time_ms``, 60 s = ``rocketmq.broker.rebalance.lockMaxLiveTime``), or when the caller
  already holds it; granting refreshes the timestamp. Clients renew every 20 s and consider a lock older
  than 30 s lost, so the broker's 60 s keeps a live holder's lock.
* ``try_lock_batch`` answers the subset granted; the reply lists only those.
* ``unlock_batch`` releases the queues the caller holds (expired or not) and ignores the rest.
* Locks are not released when a connection closes: they expire, as upstream.

Time comes from the injected ``clock_ms`` so tests drive expiry without sleeping. Single-threaded use on
the broker's trio thread; no locking.

Bounds (upstream has none): at most ``max_groups`` groups and ``max_locks_per_group`` queues per group.
When a new entry would exceed either, expired entries are purged first; if there is still no room the
queue is simply not granted (logged) — the client retries at its next renewal. ``purge_expired`` can also
be run periodically.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

__all__ = ["LOCK_MAX_LIVE_TIME_MS", "MessageQueue", "RebalanceLockManager"]

log = logging.getLogger("rmq_broker.lock")

LOCK_MAX_LIVE_TIME_MS = 60_000
DEFAULT_MAX_GROUPS = 100_000
DEFAULT_MAX_LOCKS_PER_GROUP = 100_000


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


class MessageQueue(NamedTuple):
    """``COM/message/MessageQueue``: the identity of one queue on one broker."""

    topic: str
    broker_name: str
    queue_id: int

    def to_json(self) -> dict[str, Any]:
        return {"brokerName": self.broker_name, "queueId": self.queue_id, "topic": self.topic}

    @classmethod
    def from_json(cls, obj: Any) -> MessageQueue:
        """From ``{"brokerName":…,"queueId":…,"topic":…}``; ValueError naming the bad field."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"a MessageQueue must be an object, got {obj!r:.80}")
        topic, broker, queue_id = obj.get("topic"), obj.get("brokerName"), obj.get("queueId")
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"MessageQueue.topic must be a non-empty string, got {topic!r:.80}")
        if not isinstance(broker, str):
            raise ValueError(f"MessageQueue.brokerName must be a string, got {broker!r:.80}")
        if isinstance(queue_id, str) and queue_id.strip().lstrip("-").isdigit():
            queue_id = int(queue_id)
        if isinstance(queue_id, bool) or not isinstance(queue_id, int) or not -(1 << 31) <= queue_id < (1 << 31):
            raise ValueError(f"MessageQueue.queueId must be an int, got {queue_id!r:.80}")
        return cls(topic, broker, queue_id)


class _LockEntry:
    __slots__ = ("client_id", "last_update_ms")

    def __init__(self, client_id: str, now_ms: int) -> None:
        self.client_id = client_id
        self.last_update_ms = now_ms


class RebalanceLockManager:
    """Per-group queue locks with expiry."""

    def __init__(self, *, clock_ms: Callable[[], int] = _wall_clock_ms,
                 lock_max_live_time_ms: int = LOCK_MAX_LIVE_TIME_MS, max_groups: int = DEFAULT_MAX_GROUPS,
                 max_locks_per_group: int = DEFAULT_MAX_LOCKS_PER_GROUP) -> None:
        self.clock_ms = clock_ms
        self.lock_max_live_time_ms = lock_max_live_time_ms
        self.max_groups = max_groups
        self.max_locks_per_group = max_locks_per_group
        self._table: dict[str, dict[MessageQueue, _LockEntry]] = {}

    def _expired(self, entry: _LockEntry, now: int) -> bool:
        return now - entry.last_update_ms > self.lock_max_live_time_ms

    def try_lock(self, group: str, mq: MessageQueue, client_id: str) -> bool:
        return mq in self.try_lock_batch(group, (mq,), client_id)

    def try_lock_batch(self, group: str, mqs: Iterable[MessageQueue], client_id: str) -> set[MessageQueue]:
        """Lock what can be locked for ``client_id``; returns the queues it now holds."""
        now = self.clock_ms()
        locked: set[MessageQueue] = set()
        table = self._table.get(group)
        for mq in mqs:
            if table is None:
                if len(self._table) >= self.max_groups:
                    self._purge_groups(now)
                    if len(self._table) >= self.max_groups:
                        log.warning("lock: too many groups (limit %d), %s of group %s not locked for %s",
                                    self.max_groups, mq, group, client_id)
                        continue
                table = self._table[group] = {}
            entry = table.get(mq)
            if entry is None:
                if len(table) >= self.max_locks_per_group:
                    self._purge_table(table, now)
                    if len(table) >= self.max_locks_per_group:
                        log.warning("lock: group %s holds %d locks (limit), %s not locked for %s",
                                    group, len(table), mq, client_id)
                        continue
                table[mq] = _LockEntry(client_id, now)
                locked.add(mq)
                log.info("lock: %s not locked, granted. group %s client %s", mq, group, client_id)
                continue
            if entry.client_id == client_id:
                entry.last_update_ms = now
                locked.add(mq)
                continue
            if self._expired(entry, now):
                log.warning("lock: %s lock of %s expired, granted. group %s client %s",
                            mq, entry.client_id, group, client_id)
                entry.client_id = client_id
                entry.last_update_ms = now
                locked.add(mq)
                continue
            log.warning("lock: %s locked by other client %s. group %s client %s", mq, entry.client_id, group, client_id)
        if table is not None and not table:
            self._table.pop(group, None)
        return locked

    def unlock_batch(self, group: str, mqs: Iterable[MessageQueue], client_id: str) -> set[MessageQueue]:
        """Release the queues ``client_id`` holds among ``mqs``; returns those released."""
        table = self._table.get(group)
        released: set[MessageQueue] = set()
        if table is None:
            log.warning("lock: unlock batch, group %s has no locks (client %s)", group, client_id)
            return released
        for mq in mqs:
            entry = table.get(mq)
            if entry is None:
                log.warning("lock: unlock %s, but it is not locked. group %s client %s", mq, group, client_id)
            elif entry.client_id == client_id:
                del table[mq]
                released.add(mq)
                log.info("lock: unlocked %s. group %s client %s", mq, group, client_id)
            else:
                log.warning("lock: unlock %s, but it is locked by other client %s. group %s client %s",
                            mq, entry.client_id, group, client_id)
        if not table:
            del self._table[group]
        return released

    def holder(self, group: str, mq: MessageQueue) -> str | None:
        """The client id holding a live lock on ``mq`` in ``group`` (no refresh), else None."""
        entry = self._table.get(group, {}).get(mq)
        if entry is None or self._expired(entry, self.clock_ms()):
            return None
        return entry.client_id

    def locked_queues(self, group: str, client_id: str | None = None) -> set[MessageQueue]:
        """Queues with a live lock in ``group`` (held by ``client_id`` when given)."""
        now = self.clock_ms()
        return {mq for mq, e in self._table.get(group, {}).items()
                if not self._expired(e, now) and (client_id is None or e.client_id == client_id)}

    def purge_expired(self, now_ms: int | None = None) -> int:
        """Drop every expired entry; returns how many."""
        now = self.clock_ms() if now_ms is None else now_ms
        count = 0
        for group, table in list(self._table.items()):
            count += self._purge_table(table, now)
            if not table:
                del self._table[group]
        return count

    def _purge_table(self, table: dict[MessageQueue, _LockEntry], now: int) -> int:
        dead = [mq for mq, e in table.items() if self._expired(e, now)]
        for mq in dead:
            del table[mq]
        return len(dead)

    def _purge_groups(self, now: int) -> None:
        for group, table in list(self._table.items()):
            self._purge_table(table, now)
            if not table:
                del self._table[group]

    def __len__(self) -> int:
        return sum(len(t) for t in self._table.values())
