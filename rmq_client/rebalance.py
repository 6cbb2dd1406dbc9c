"""Rebalancing: which consumer of a group reads which queue (Java ``RebalanceImpl`` and the allocation strategies).

Allocation strategies (``allocate(group, current_cid, mq_all, cid_all) -> list[MessageQueue]``), each giving
exactly Java's answer for the same sorted inputs (PROTOCOL.md §9.2):

* ``AllocateMessageQueueAveragely`` (the default): contiguous blocks, the first ``n % c`` consumers one more;
* ``AllocateMessageQueueAveragelyByCircle``: queue ``i`` to consumer ``i % c``;
* ``AllocateMessageQueueConsistentHash``: a hash ring of ``virtual_node_cnt`` (10) virtual nodes per client id
  (``"<cid>-<i>"``), keyed by the first 4 bytes of MD5 as an unsigned big-endian number; each queue goes to
  the first node at or after the hash of its ``str()`` (``MessageQueue [topic=…, brokerName=…, queueId=…]``),
  wrapping around; a later node with the same hash replaces an earlier one, as in Java's TreeMap;
* ``AllocateMessageQueueByConfig``: a fixed list of queues.

A consumer not in ``cid_all`` gets nothing; an empty ``current_cid``, ``mq_all`` or ``cid_all`` raises
ValueError (Java's IllegalArgumentException). Any object with ``name`` and that ``allocate`` method works.

``RebalanceImpl`` keeps the consumer's process-queue table. One ``do_rebalance()`` goes over the subscribed
topics: broadcasting takes every readable queue; clustering asks one broker of the topic for the group's
client ids (GET_CONSUMER_LIST_BY_GROUP), sorts queues and ids, and keeps what the strategy allocates. Queues
no longer allocated are dropped (their pull loop stops; the consumer decides whether they may go:
``remove_unnecessary_message_queue``); new ones get a ProcessQueue, locked first on the broker for orderly
consumers, starting at ``compute_pull_from_where`` — the committed offset, else per ConsumeFromWhere. What a
push or lite-pull consumer does with the changes are the hooks ``dispatch_pull_requests`` and
``message_queue_changed``.

Orderly consumers also use ``lock``/``lock_all``/``unlock``/``unlock_all`` (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ
to each queue's master).
"""
from __future__ import annotations

import hashlib
import logging
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import trio

from rmq_client import consumer_api as api
from rmq_client.instance import ConsumeFromWhere, ConsumeType, MessageModel
from rmq_client.offset_store import ReadOffsetType
from rmq_client.process_queue import ProcessQueue
from rmq_client.routing import MessageQueue
from rmq_common.topic import is_retry_topic
from rmq_nameserver.bodies import MASTER_ID

if TYPE_CHECKING:
    from rmq_client.consumer_base import ConsumerBase

__all__ = [
    "AllocateStrategy", "AllocateMessageQueueAveragely", "AllocateMessageQueueAveragelyByCircle",
    "AllocateMessageQueueConsistentHash", "AllocateMessageQueueByConfig", "RebalanceImpl", "PullRequest",
    "parse_consume_timestamp",
]

log = logging.getLogger("rmq_client")


# ---------------------------------------------------------------------------------------------------
# Allocation strategies
# ---------------------------------------------------------------------------------------------------

@runtime_checkable
class AllocateStrategy(Protocol):
    name: str

    def allocate(self, consumer_group: str, current_cid: str, mq_all: Sequence[MessageQueue],
                 cid_all: Sequence[str]) -> list[MessageQueue]: ...


def _check_args(current_cid: str, mq_all: Sequence[MessageQueue], cid_all: Sequence[str]) -> bool:
    if not current_cid:
        raise ValueError("currentCID is empty")
    if not mq_all:
        raise ValueError("mqAll is null or mqAll empty")
    if not cid_all:
        raise ValueError("cidAll is null or cidAll empty")
    if current_cid not in cid_all:
        log.info("[BUG] the consumer id %s is not in cidAll %s", current_cid, list(cid_all))
        return False
    return True


class AllocateMessageQueueAveragely:
    """Contiguous blocks of ``n / c`` queues, the first ``n % c`` consumers one more (the default)."""

    name = "AVG"

    def allocate(self, consumer_group: str, current_cid: str, mq_all: Sequence[MessageQueue],
                 cid_all: Sequence[str]) -> list[MessageQueue]:
        if not _check_args(current_cid, mq_all, cid_all):
            return []
        index = list(cid_all).index(current_cid)
        n, c = len(mq_all), len(cid_all)
        mod = n % c
        if n <= c:
            average = 1
        elif mod > 0 and index < mod:
            average = n // c + 1
        else:
            average = n // c
        start = index * average if mod > 0 and index < mod else index * average + mod
        rng = min(average, n - start)
        return [mq_all[(start + i) % n] for i in range(max(rng, 0))]


class AllocateMessageQueueAveragelyByCircle:
    """Queue ``i`` to the consumer at index ``i % c``."""

    name = "AVG_BY_CIRCLE"

    def allocate(self, consumer_group: str, current_cid: str, mq_all: Sequence[MessageQueue],
                 cid_all: Sequence[str]) -> list[MessageQueue]:
        if not _check_args(current_cid, mq_all, cid_all):
            return []
        index = list(cid_all).index(current_cid)
        c = len(cid_all)
        return [mq_all[i] for i in range(index, len(mq_all)) if i % c == index]


def md5_hash(key: str) -> int:
    """Java ``ConsistentHashRouter.MD5Hash``: the first 4 MD5 bytes, big-endian, unsigned."""
    return int.from_bytes(hashlib.md5(key.encode("utf-8")).digest()[:4], "big")


class AllocateMessageQueueConsistentHash:
    """A consistent-hash ring of the client ids (``virtual_node_cnt`` virtual nodes each)."""

    name = "CONSISTENT_HASH"

    def __init__(self, virtual_node_cnt: int = 10, hash_function: Any = None) -> None:
        if virtual_node_cnt < 0:
            raise ValueError(f"illegal virtualNodeCnt :{virtual_node_cnt}")
        self.virtual_node_cnt = virtual_node_cnt
        self.hash_function = hash_function or md5_hash

    def allocate(self, consumer_group: str, current_cid: str, mq_all: Sequence[MessageQueue],
                 cid_all: Sequence[str]) -> list[MessageQueue]:
        if not _check_args(current_cid, mq_all, cid_all):
            return []
        ring: dict[int, str] = {}
        replicas: dict[str, int] = {}
        for cid in cid_all:
            existing = replicas.get(cid, 0)                 # a repeated id continues its replica numbering
            for i in range(self.virtual_node_cnt):
                ring[self.hash_function(f"{cid}-{i + existing}")] = cid
            replicas[cid] = existing + self.virtual_node_cnt
        if not ring:
            return []
        keys = sorted(ring)
        out = []
        for mq in mq_all:
            pos = bisect_left(keys, self.hash_function(str(mq)))
            node = ring[keys[pos] if pos < len(keys) else keys[0]]
            if node == current_cid:
                out.append(mq)
        return out


class AllocateMessageQueueByConfig:
    """Always the configured queues (whatever the group looks like)."""

    name = "CONFIG"

    def __init__(self, queues: Iterable[MessageQueue]) -> None:
        self.queues = list(queues)

    def allocate(self, consumer_group: str, current_cid: str, mq_all: Sequence[MessageQueue],
                 cid_all: Sequence[str]) -> list[MessageQueue]:
        return list(self.queues)


# ---------------------------------------------------------------------------------------------------
# RebalanceImpl
# ---------------------------------------------------------------------------------------------------

def parse_consume_timestamp(value: str) -> int:
    """``yyyyMMddHHmmss`` (local time, as Java's ``UtilAll.parseDate``) → epoch milliseconds."""
    return int(datetime.strptime(value, "%Y%m%d%H%M%S").timestamp() * 1000)


def default_consume_timestamp() -> str:
    """Half an hour ago as ``yyyyMMddHHmmss`` (Java's default consumeTimestamp)."""
    return time.strftime("%Y%m%d%H%M%S", time.localtime(time.time() - 1800))


@dataclass(eq=False)
class PullRequest:
    """A queue to pull and where to start (Java ``PullRequest``)."""

    consumer_group: str
    message_queue: MessageQueue
    process_queue: ProcessQueue
    next_offset: int
    previously_locked: bool = False


class RebalanceImpl:
    """The process-queue table of one consumer and the rebalance that keeps it (see the module docstring)."""

    def __init__(self, consumer: ConsumerBase) -> None:
        self.consumer = consumer
        self.process_queue_table: dict[MessageQueue, ProcessQueue] = {}
        self._lock = trio.Lock()
        #: Topics the last round could not settle — no readable queue yet (the retry topic of a new group before
        #: its broker registered it) or a broker lock held by the previous owner: the loop retries sooner.
        self.retry_soon: set[str] = set()

    # -- hooks -----------------------------------------------------------------------------------

    @property
    def consume_type(self) -> ConsumeType:
        return self.consumer.consume_type

    async def remove_unnecessary_message_queue(self, mq: MessageQueue, pq: ProcessQueue) -> bool:
        """May the dropped queue go? Persists and forgets its offset (push and lite pull alike)."""
        store = self.consumer.offset_store
        await store.persist(mq)
        store.remove_offset(mq)
        return True

    async def message_queue_changed(self, topic: str, mq_all: list[MessageQueue],
                                    mq_divided: list[MessageQueue]) -> None:
        pass

    def dispatch_pull_requests(self, requests: list[PullRequest]) -> None:
        pass

    def create_process_queue(self) -> ProcessQueue:
        cfg = self.consumer.config
        return ProcessQueue(lock_max_live_time_s=cfg.lock_max_live_time_ms / 1000.0,
                            pull_max_idle_time_s=cfg.pull_max_idle_time_ms / 1000.0)

    # -- offsets -------------------------------------------------------------------------------------

    async def compute_pull_from_where(self, mq: MessageQueue) -> int:
        """Where a newly assigned queue starts: the stored offset, else per ConsumeFromWhere; -1 to skip it
        this round (the store could not be asked). Raises when the broker cannot answer a needed offset."""
        consumer = self.consumer
        cfw = consumer.config.consume_from_where
        last = await consumer.offset_store.read_offset(mq, ReadOffsetType.STORE)
        if last >= 0:
            return last
        if last != -1:
            return -1
        instance = consumer.instance
        if cfw is ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET:
            return 0
        if cfw is ConsumeFromWhere.CONSUME_FROM_TIMESTAMP:
            if is_retry_topic(mq.topic):
                return await api.max_offset(instance, mq)
            ts = parse_consume_timestamp(consumer.config.consume_timestamp)
            return await api.search_offset(instance, mq, ts)
        # LAST_OFFSET and the deprecated LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST, MIN_OFFSET, MAX_OFFSET
        if is_retry_topic(mq.topic):
            return 0
        return await api.max_offset(instance, mq)

    # -- rebalance -----------------------------------------------------------------------------------

    async def do_rebalance(self, is_order: bool) -> None:
        async with self._lock:
            subs = dict(self.consumer.subscriptions)
            self.retry_soon = set()
            for topic in subs:
                try:
                    await self._rebalance_by_topic(topic, is_order)
                except Exception as exc:
                    self.retry_soon.add(topic)
                    if not is_retry_topic(topic):
                        log.warning("consumer %s: rebalance of %s failed: %r", self.consumer.group, topic, exc)
            await self._truncate_not_my_topic(subs)

    async def _rebalance_by_topic(self, topic: str, is_order: bool) -> None:
        consumer = self.consumer
        instance = consumer.instance
        mq_set = instance.subscribe_queues(topic)
        if not mq_set:
            await instance.update_route(topic)
            mq_set = instance.subscribe_queues(topic)
        if not mq_set:
            self.retry_soon.add(topic)
            if not is_retry_topic(topic):
                log.warning("consumer %s: no readable queue of topic %s", consumer.group, topic)
            return
        if consumer.config.message_model is MessageModel.BROADCASTING:
            allocated = set(mq_set)
        else:
            cid_all = await api.consumer_id_list(instance, topic, consumer.group)
            if not cid_all:
                self.retry_soon.add(topic)
                log.warning("consumer %s: no consumer id of the group for topic %s", consumer.group, topic)
                return
            mq_all = sorted(mq_set)
            cid_all = sorted(cid_all)
            try:
                allocated = set(consumer.config.allocate_strategy.allocate(consumer.group, instance.client_id,
                                                                           mq_all, cid_all))
            except Exception as exc:
                log.error("consumer %s: allocation by %s failed: %r", consumer.group,
                          getattr(consumer.config.allocate_strategy, "name", "?"), exc)
                return
        changed, requests = await self._update_process_queue_table(topic, allocated, is_order)
        if changed:
            log.info("consumer %s: rebalance of %s: %d queues now %s", consumer.group, topic, len(allocated),
                     sorted(allocated))
            await self.message_queue_changed(topic, sorted(mq_set), sorted(allocated))
        if requests:
            self.dispatch_pull_requests(requests)

    async def _update_process_queue_table(self, topic: str, mq_set: set[MessageQueue],
                                          is_order: bool) -> tuple[bool, list[PullRequest]]:
        changed = False
        table = self.process_queue_table
        for mq, pq in list(table.items()):
            if mq.topic != topic:
                continue
            if mq not in mq_set:
                pq.drop()
                if await self.remove_unnecessary_message_queue(mq, pq):
                    table.pop(mq, None)
                    changed = True
                    log.info("consumer %s: queue %s no longer ours", self.consumer.group, mq)
            elif pq.is_pull_expired() and self.consume_type is ConsumeType.CONSUME_PASSIVELY:
                pq.drop()
                if await self.remove_unnecessary_message_queue(mq, pq):
                    table.pop(mq, None)
                    changed = True
                    log.warning("consumer %s: queue %s was not pulled for too long, rebuilt", self.consumer.group, mq)
        requests: list[PullRequest] = []
        for mq in sorted(mq_set):
            if mq in table:
                continue
            if is_order and not await self.lock(mq):
                log.warning("consumer %s: new queue %s not taken: its broker lock is held elsewhere",
                            self.consumer.group, mq)
                self.retry_soon.add(topic)
                continue
            self.consumer.offset_store.remove_offset(mq)          # removeDirtyOffset
            pq = self.create_process_queue()
            if is_order:
                pq.set_locked(True)
            try:
                next_offset = await self.compute_pull_from_where(mq)
            except Exception as exc:
                log.warning("consumer %s: start offset of %s unknown: %r", self.consumer.group, mq, exc)
                next_offset = -1
            if next_offset < 0:
                self.retry_soon.add(topic)
                if is_order:
                    await self.unlock(mq, oneway=True)
                continue
            table[mq] = pq
            requests.append(PullRequest(self.consumer.group, mq, pq, next_offset))
            changed = True
            log.info("consumer %s: queue %s is ours from offset %d", self.consumer.group, mq, next_offset)
        return changed, requests

    async def _truncate_not_my_topic(self, subs: dict[str, Any]) -> None:
        for mq, pq in list(self.process_queue_table.items()):
            if mq.topic not in subs:
                pq.drop()
                self.process_queue_table.pop(mq, None)
                log.info("consumer %s: queue %s dropped: topic unsubscribed", self.consumer.group, mq)

    async def remove_process_queue(self, mq: MessageQueue) -> None:
        pq = self.process_queue_table.pop(mq, None)
        if pq is not None:
            pq.drop()
            await self.remove_unnecessary_message_queue(mq, pq)

    async def destroy(self) -> None:
        for pq in self.process_queue_table.values():
            pq.drop()
        self.process_queue_table.clear()

    # -- broker locks (orderly) ---------------------------------------------------------------------

    async def lock(self, mq: MessageQueue) -> bool:
        consumer = self.consumer
        try:
            addr, _ = await api.find_broker_in_subscribe(consumer.instance, mq.broker_name, MASTER_ID, True, mq.topic)
            locked = await api.lock_batch_mq(consumer.instance, addr, consumer.group, [mq])
        except Exception as exc:
            log.warning("consumer %s: locking %s failed: %r", consumer.group, mq, exc)
            return False
        for q in locked:
            pq = self.process_queue_table.get(q)
            if pq is not None:
                pq.set_locked(True)
        return mq in locked

    def _by_broker(self) -> dict[str, list[MessageQueue]]:
        out: dict[str, list[MessageQueue]] = {}
        for mq in self.process_queue_table:
            out.setdefault(mq.broker_name, []).append(mq)
        return out

    async def lock_all(self) -> None:
        consumer = self.consumer
        for broker_name, mqs in self._by_broker().items():
            try:
                addr, _ = await api.find_broker_in_subscribe(consumer.instance, broker_name, MASTER_ID, True)
                locked = await api.lock_batch_mq(consumer.instance, addr, consumer.group, mqs)
            except Exception as exc:
                log.warning("consumer %s: renewing the locks on %s failed: %r", consumer.group, broker_name, exc)
                continue
            for mq in mqs:
                pq = self.process_queue_table.get(mq)
                if pq is None:
                    continue
                if mq in locked:
                    if not pq.locked:
                        log.info("consumer %s: queue %s locked again", consumer.group, mq)
                    pq.set_locked(True)
                else:
                    if pq.locked:
                        log.warning("consumer %s: the lock of %s was lost", consumer.group, mq)
                    pq.locked = False

    async def unlock(self, mq: MessageQueue, oneway: bool = False) -> None:
        consumer = self.consumer
        addr = consumer.instance.master_addr(mq.broker_name)
        if addr is None:
            return
        try:
            await api.unlock_batch_mq(consumer.instance, addr, consumer.group, [mq], oneway=oneway)
        except Exception as exc:
            log.warning("consumer %s: unlocking %s failed: %r", consumer.group, mq, exc)

    async def unlock_all(self, oneway: bool = False) -> None:
        consumer = self.consumer
        for broker_name, mqs in self._by_broker().items():
            addr = consumer.instance.master_addr(broker_name)
            if addr is None:
                continue
            try:
                await api.unlock_batch_mq(consumer.instance, addr, consumer.group, mqs, oneway=oneway)
            except Exception as exc:
                log.warning("consumer %s: unlocking on %s failed: %r", consumer.group, broker_name, exc)
            for mq in mqs:
                pq = self.process_queue_table.get(mq)
                if pq is not None:
                    pq.locked = False
