"""The lite pull consumer (trio-native): the application polls (Java ``DefaultLitePullConsumer``).

    async with LitePullConsumer("CG_etl", namesrv_addr=addr, pull_batch_size=1024) as consumer:
        consumer.subscribe("Orders")                     # rebalanced among the group; or consumer.assign(queues)
        while True:
            msgs = await consumer.poll(timeout_ms=1000)  # a list of MessageExt (one pull result)
            ...

    # the batch-first fast path: no per-message objects
    batch = await consumer.poll_batch(timeout_ms=1000)   # a PolledBatch or None
    batch.bodies, batch.queue_offsets, batch.message_queue, batch.next_offset

**Queues.** ``subscribe(topic, expression)`` joins the group's rebalance (the allocation strategies of
``rmq_client.rebalance``); ``assign(queues)`` takes exactly those queues, without rebalancing. Each queue has
a pull loop: long-polling PULL_MESSAGE with the subscription in the request (sysFlag suspend + subscription;
the broker holds it ``broker_suspend_max_time_ms``, 20 s), ``pull_batch_size`` messages, starting from the
committed offset (else per ``consume_from_where``), or from where ``seek`` put it. Pulled results wait in one
cache for ``poll``; pulling pauses while the cache holds more than ``pull_threshold_for_all`` messages
(results × batch size, as Java counts), a queue more than ``pull_threshold_for_queue`` messages or
``pull_threshold_size_for_queue`` MiB (of records as received), or a queue's cached offsets span more than
``consume_max_span``.

**Polling.** ``poll(timeout_ms)`` returns the messages of one pull result, oldest first (an empty list after
the timeout); ``poll_batch`` the same result as a ``PolledBatch`` over ``codec.PullBatch`` — bodies as a list,
offsets and timestamps as numpy columns, everything else decoded only when asked, so a consumer that only
needs bodies does no per-message Python work (the throughput path; raise ``pull_batch_size`` and the broker's
``maxTransferCountOnMessageInMemory`` / ``maxTransferBytesOnMessageInMemory`` with it). Polling a result moves
its queue's consume offset past it.

**Offsets.** ``seek(mq, offset)`` (between the queue's min and max offsets), ``seek_to_begin``, ``seek_to_end``,
``seek_by_timestamp(mq, ms)`` (SEARCH_OFFSET_BY_TIMESTAMP): what is cached or in flight for the queue is
discarded and pulling restarts there at once. With ``auto_commit`` (default) ``poll`` commits the consume
offsets every ``auto_commit_interval_ms`` (5 s) — i.e. what earlier polls returned — and the persistence loop
sends them to the brokers every 5 s; ``commit_sync()`` commits and persists at once, ``committed(mq)`` asks the
broker. On shutdown the consume offsets are committed (with auto commit) and persisted.

``pause(queues)`` / ``resume(queues)`` stop and restart pulling those queues (a pause abandons the queue's pull
held by the broker at once; Java lets it finish).
"""
from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio

from rmq_client import consumer_api as api
from rmq_client.codec import PullBatch, PulledMessage
from rmq_client.consumer_api import PullAPI, PullStatus, PullSysFlag
from rmq_client.consumer_base import ConsumerBase, ExpressionType
from rmq_client.consumer_config import LitePullConsumerConfig
from rmq_client.errors import ClientError
from rmq_client.instance import ConsumeType, subscription_data
from rmq_client.offset_store import ReadOffsetType
from rmq_client.process_queue import ProcessQueue
from rmq_client.rebalance import PullRequest, RebalanceImpl
from rmq_client.routing import MessageQueue
from rmq_common.message import MessageExt

__all__ = ["LitePullConsumer", "PolledBatch", "LitePullConsumerStats", "SubscriptionType"]

log = logging.getLogger("rmq_client")


class SubscriptionType(enum.Enum):
    NONE = "NONE"
    SUBSCRIBE = "SUBSCRIBE"
    ASSIGN = "ASSIGN"


@dataclass
class LitePullConsumerStats:
    pulls: int = 0                  #: PULL_MESSAGE answers
    pull_errors: int = 0
    pulled: int = 0                 #: messages pulled (after the tag re-filter)
    polled: int = 0                 #: messages returned by poll / poll_batch
    discarded: int = 0              #: pulled messages dropped by a seek or a lost queue
    flow_control: int = 0           #: pull rounds skipped by a threshold


class _QueueState:
    """One assigned queue (Java ``AssignedMessageQueue.MessageQueueState``)."""

    __slots__ = ("mq", "pq", "pull_offset", "consume_offset", "seek_offset", "paused", "generation",
                 "pull_cancel", "wake")

    def __init__(self, mq: MessageQueue, pq: ProcessQueue, pull_offset: int = -1) -> None:
        self.mq = mq
        self.pq = pq
        self.pull_offset = pull_offset
        self.consume_offset = -1
        self.seek_offset = -1
        self.paused = False
        self.generation = 0
        self.pull_cancel: trio.CancelScope | None = None
        self.wake = trio.Event()


class PolledBatch:
    """One pull result of one queue, as ``poll_batch`` returns it (columnar, decoded on demand)."""

    __slots__ = ("message_queue", "batch", "next_offset", "min_offset", "max_offset", "nbytes")

    def __init__(self, message_queue: MessageQueue, batch: PullBatch, next_offset: int, min_offset: int,
                 max_offset: int, nbytes: int) -> None:
        self.message_queue = message_queue
        self.batch = batch
        #: The offset after this result (what polling it commits).
        self.next_offset = next_offset
        #: The queue's min and max offsets when it was pulled (Java stamps them as MIN_OFFSET / MAX_OFFSET).
        self.min_offset = min_offset
        self.max_offset = max_offset
        #: Size of the records as received.
        self.nbytes = nbytes

    def __len__(self) -> int:
        return len(self.batch)

    @property
    def bodies(self) -> list[bytes]:
        return self.batch.bodies

    @property
    def queue_offsets(self) -> np.ndarray:
        return self.batch.queue_offsets

    @property
    def store_timestamps(self) -> np.ndarray:
        return self.batch.store_timestamps

    def messages(self) -> list[PulledMessage]:
        """The messages as MessageExt objects, MIN_OFFSET / MAX_OFFSET stamped as Java does."""
        msgs = self.batch.messages()
        api.stamp_offset_range(msgs, self.min_offset, self.max_offset)
        return msgs

    def __repr__(self) -> str:
        return f"<PolledBatch {self.message_queue} {len(self)} messages, next {self.next_offset}>"


@dataclass(eq=False)
class _Cached:
    state: _QueueState
    generation: int
    polled: PolledBatch


class _LiteRebalance(RebalanceImpl):
    """``RebalanceLitePullImpl``: new queues get a pull loop; dropped ones persist their offset and go."""

    consumer: LitePullConsumer

    def dispatch_pull_requests(self, requests: list[PullRequest]) -> None:
        for request in requests:
            self.consumer._start_queue(request.message_queue, request.process_queue, request.next_offset)

    async def do_rebalance(self, is_order: bool) -> None:
        if self.consumer.subscription_type is SubscriptionType.SUBSCRIBE:
            await super().do_rebalance(is_order)

    async def remove_unnecessary_message_queue(self, mq: MessageQueue, pq: ProcessQueue) -> bool:
        self.consumer._commit_queue(mq)
        return await super().remove_unnecessary_message_queue(mq, pq)


class LitePullConsumer(ConsumerBase):
    """The application polls messages (see the module docstring); ``async with`` runs it.

    ``LitePullConsumer(group, namesrv_addr, **options)``: options are ``LitePullConsumerConfig`` fields.
    """

    consume_type = ConsumeType.CONSUME_ACTIVELY
    config_class = LitePullConsumerConfig
    config: LitePullConsumerConfig

    def __init__(self, group: str | None = None, namesrv_addr: str | None = None, *,
                 config: LitePullConsumerConfig | None = None, instance: Any = None, **options: Any) -> None:
        super().__init__(group, namesrv_addr, config=config, instance=instance, **options)
        self.subscription_type = SubscriptionType.NONE
        self._assigned: set[MessageQueue] = set()
        self._assign_subs: dict[str, dict[str, Any]] = {}
        self._states: dict[MessageQueue, _QueueState] = {}
        self._ready: deque[_Cached] = deque()
        self._ready_msgs = 0
        self._ready_event = trio.Event()
        self._pull_api: PullAPI | None = None
        self._next_auto_commit = 0.0
        self.stats = LitePullConsumerStats()

    def _make_rebalance(self) -> RebalanceImpl:
        return _LiteRebalance(self)

    # -- what to consume --------------------------------------------------------------------------

    def _set_type(self, kind: SubscriptionType) -> None:
        if self.subscription_type not in (SubscriptionType.NONE, kind):
            raise ClientError("Subscribe and assign are mutually exclusive.")
        self.subscription_type = kind

    def subscribe(self, topic: str, expression: str = "*", *, expression_type: str = ExpressionType.TAG) -> None:
        """Consume ``topic`` with the group's rebalancing (tags or, with ``expression_type="SQL92"``, SQL92)."""
        self._set_type(SubscriptionType.SUBSCRIBE)
        self._put_subscription(topic, expression, expression_type)
        if self.running:
            self.nursery.start_soon(self._subscription_changed, topic)

    def unsubscribe(self, topic: str) -> None:
        self.subscriptions.pop(topic, None)
        if self.running:
            self.nursery.start_soon(self._subscription_changed, None)

    def set_sub_expression_for_assign(self, topic: str, expression: str, *,
                                      expression_type: str = ExpressionType.TAG) -> None:
        """The filter of assigned queues of ``topic`` (default ``*``)."""
        self._assign_subs[topic] = subscription_data(topic, expression, expression_type=expression_type)

    def assign(self, queues: Iterable[MessageQueue]) -> None:
        """Consume exactly these queues (no rebalancing); replaces an earlier assignment."""
        queues = set(queues)
        if not queues:
            raise ClientError("Message queues can not be null or empty.")
        self._set_type(SubscriptionType.ASSIGN)
        self._assigned = queues
        if self.running:
            self.nursery.start_soon(self._apply_assignment)

    def assignment(self) -> set[MessageQueue]:
        """The queues consumed now (assigned, or allocated by the rebalance)."""
        return set(self._states)

    async def _apply_assignment(self) -> None:
        table = self.rebalance.process_queue_table
        for mq in [mq for mq in table if mq not in self._assigned]:
            await self.rebalance.remove_process_queue(mq)
        for mq in sorted(self._assigned):
            if mq not in table:
                pq = self.rebalance.create_process_queue()
                table[mq] = pq
                self._start_queue(mq, pq, -1)

    def subscribed_topics(self) -> list[str]:
        """Subscribed and assigned topics: the instance keeps their routes fresh."""
        return sorted(set(self.subscriptions) | {mq.topic for mq in self._assigned})

    def _subscription_of(self, topic: str) -> dict[str, Any]:
        if self.subscription_type is SubscriptionType.SUBSCRIBE:
            sub = self.subscriptions.get(topic)
            if sub is not None:
                return sub
        sub = self._assign_subs.get(topic)
        if sub is None:
            sub = self._assign_subs[topic] = subscription_data(topic, "*")
        return sub

    # -- lifecycle ----------------------------------------------------------------------------------

    async def _start_services(self, nursery: trio.Nursery) -> None:
        self._pull_api = PullAPI(self.instance, self.group)
        self._next_auto_commit = trio.current_time() + self.config.auto_commit_interval_ms / 1000.0
        if self.subscription_type is SubscriptionType.ASSIGN:
            await self._apply_assignment()

    async def _stop_services(self) -> None:
        if self.config.auto_commit:
            self.commit()
        for state in self._states.values():
            state.pq.pull_scope.cancel()

    # -- pulling ------------------------------------------------------------------------------------

    def _start_queue(self, mq: MessageQueue, pq: ProcessQueue, next_offset: int) -> None:
        old = self._states.get(mq)
        if old is not None:
            old.pq.drop()
        state = self._states[mq] = _QueueState(mq, pq, next_offset)
        self.nursery.start_soon(self._pull_loop, state)

    async def _pull_loop(self, state: _QueueState) -> None:
        pq = state.pq
        try:
            with pq.pull_scope:
                while not pq.dropped and self.running:
                    try:
                        delay = await self._pull_step(state)
                    except Exception:
                        log.exception("consumer %s: pulling %s failed", self.group, state.mq)
                        delay = self.config.pull_time_delay_ms_when_exception / 1000.0
                    if delay > 0:
                        state.wake = trio.Event()
                        with trio.move_on_after(delay):
                            await state.wake.wait()
                    else:
                        await trio.lowlevel.checkpoint()
        finally:
            if self._states.get(state.mq) is state and pq.dropped:
                del self._states[state.mq]

    def _flow_controlled(self, state: _QueueState) -> bool:
        cfg = self.config
        pq = state.pq
        if len(self._ready) * cfg.pull_batch_size > cfg.pull_threshold_for_all:
            return True
        if pq.msg_count > cfg.pull_threshold_for_queue:
            return True
        if pq.msg_size > cfg.pull_threshold_size_for_queue * 1024 * 1024:
            return True
        if pq.msg_count and 0 <= state.consume_offset < pq.queue_offset_max - cfg.consume_max_span:
            return True
        return False

    async def _next_pull_offset(self, state: _QueueState) -> int:
        if state.seek_offset != -1:
            offset = state.seek_offset
            state.seek_offset = -1
            state.consume_offset = offset
            state.pull_offset = offset
            return offset
        if state.pull_offset < 0:
            offset = await self.rebalance.compute_pull_from_where(state.mq)
            if offset >= 0:
                state.pull_offset = offset
            return offset
        return state.pull_offset

    async def _pull_step(self, state: _QueueState) -> float:
        cfg = self.config
        pq, mq = state.pq, state.mq
        pq.last_pull_timestamp = trio.current_time()
        if state.paused:
            return cfg.pull_time_delay_ms_when_pause / 1000.0
        if self._flow_controlled(state):
            self.stats.flow_control += 1
            return cfg.pull_time_delay_ms_when_flow_control / 1000.0
        offset = await self._next_pull_offset(state)
        if offset < 0:
            return cfg.pull_time_delay_ms_when_exception / 1000.0
        generation = state.generation
        sub = self._subscription_of(mq.topic)
        assert self._pull_api is not None
        result = None
        with trio.CancelScope() as scope:
            state.pull_cancel = scope
            try:
                result = await self._pull_api.pull(
                    mq, offset=offset, max_nums=cfg.pull_batch_size,
                    sys_flag=PullSysFlag.build(False, True, True), commit_offset=0,
                    sub_version=int(sub["subVersion"]), subscription=sub["subString"],
                    expression_type=sub.get("expressionType", ExpressionType.TAG),
                    suspend_timeout_ms=cfg.broker_suspend_max_time_ms,
                    timeout_ms=cfg.consumer_timeout_ms_when_suspend)
            except Exception as exc:
                self.stats.pull_errors += 1
                log.warning("consumer %s: pull of %s at %d failed: %s", self.group, mq, offset, exc)
                return cfg.pull_time_delay_ms_when_exception / 1000.0
            finally:
                state.pull_cancel = None
        if result is None or generation != state.generation or pq.dropped:
            return 0.0                                  # seeked (or dropped) while the pull was in flight
        self.stats.pulls += 1
        if result.status is PullStatus.FOUND:
            tags = sub.get("tagsSet") if sub.get("expressionType", "TAG") == ExpressionType.TAG else None
            batch = PullAPI.batch(result, tags)
            state.pull_offset = result.next_begin_offset
            n = len(batch)
            if n:
                self.stats.pulled += n
                nbytes = result.body_size
                pq.add_counts(n, nbytes, int(batch.last_queue_offset))
                polled = PolledBatch(mq, batch, result.next_begin_offset, result.min_offset, result.max_offset,
                                     nbytes)
                self._ready.append(_Cached(state, generation, polled))
                self._ready_msgs += n
                self._ready_event.set()
            return 0.0
        if result.status is PullStatus.OFFSET_ILLEGAL:
            log.warning("consumer %s: the pull offset %d of %s is illegal, next begin offset %d", self.group,
                        offset, mq, result.next_begin_offset)
        state.pull_offset = result.next_begin_offset
        return 0.0

    # -- polling ------------------------------------------------------------------------------------

    def _maybe_auto_commit(self) -> None:
        if self.config.auto_commit:
            now = trio.current_time()
            if now >= self._next_auto_commit:
                self.commit()
                self._next_auto_commit = now + self.config.auto_commit_interval_ms / 1000.0

    def _take(self) -> PolledBatch | None:
        ready = self._ready
        while ready:
            item = ready.popleft()
            polled = item.polled
            n = len(polled)
            self._ready_msgs -= n
            state = item.state
            if item.generation != state.generation or state.pq.dropped or self._states.get(state.mq) is not state:
                self.stats.discarded += n
                continue
            state.pq.remove_counts(n, polled.nbytes)
            state.consume_offset = polled.next_offset
            self.stats.polled += n
            if state.pq.msg_count <= self.config.pull_threshold_for_queue:
                state.wake.set()
            return polled
        return None

    async def poll_batch(self, timeout_ms: float | None = None) -> PolledBatch | None:
        """The next pull result as a ``PolledBatch``; None when nothing came within the timeout."""
        self._check_running()
        self._maybe_auto_commit()
        polled = self._take()
        if polled is not None:
            return polled
        timeout = (self.config.poll_timeout_ms if timeout_ms is None else timeout_ms) / 1000.0
        with trio.move_on_after(timeout):
            while True:
                self._ready_event = trio.Event()
                await self._ready_event.wait()
                polled = self._take()
                if polled is not None:
                    return polled
        return None

    def poll_ready(self) -> PolledBatch | None:
        """A pulled result if one is waiting, without blocking (None otherwise)."""
        self._check_running()
        self._maybe_auto_commit()
        return self._take()

    async def poll(self, timeout_ms: float | None = None) -> list[MessageExt]:
        """The messages of the next pull result (empty after ``timeout_ms``, default ``poll_timeout_ms``)."""
        polled = await self.poll_batch(timeout_ms)
        return polled.messages() if polled is not None else []  # type: ignore[return-value]

    @property
    def ready_messages(self) -> int:
        """Messages pulled and waiting for ``poll``."""
        return self._ready_msgs

    # -- seeking ------------------------------------------------------------------------------------

    def _state(self, mq: MessageQueue) -> _QueueState:
        state = self._states.get(mq)
        if state is None or state.pq.dropped:
            if self.subscription_type is SubscriptionType.SUBSCRIBE:
                raise ClientError(f"The message queue is not in assigned list, may be rebalancing, message queue: {mq}")
            raise ClientError(f"The message queue is not in assigned list, message queue: {mq}")
        return state

    def _discard(self, state: _QueueState) -> None:
        """Forget what is cached or in flight for the queue."""
        state.generation += 1
        state.pq.clear()
        if state.pull_cancel is not None:
            state.pull_cancel.cancel()
        state.wake.set()

    async def seek(self, mq: MessageQueue, offset: int) -> None:
        """Continue ``mq`` at ``offset`` (between its min and max offset): cached and in-flight results are
        discarded, the next pull starts there at once."""
        self._check_running()
        state = self._state(mq)
        lo = await api.min_offset(self.instance, mq)
        hi = await api.max_offset(self.instance, mq)
        if offset < lo or offset > hi:
            raise ClientError(f"Seek offset illegal, seek offset = {offset}, min offset = {lo}, max offset = {hi}")
        state = self._state(mq)
        self._discard(state)
        state.seek_offset = offset

    async def seek_to_begin(self, mq: MessageQueue) -> None:
        await self.seek(mq, await api.min_offset(self.instance, mq))

    async def seek_to_end(self, mq: MessageQueue) -> None:
        await self.seek(mq, await api.max_offset(self.instance, mq))

    async def offset_for_timestamp(self, mq: MessageQueue, timestamp_ms: int) -> int:
        """The first offset of ``mq`` stored at or after ``timestamp_ms`` (SEARCH_OFFSET_BY_TIMESTAMP)."""
        self._check_running()
        return await api.search_offset(self.instance, mq, timestamp_ms)

    async def seek_by_timestamp(self, mq: MessageQueue, timestamp_ms: int) -> int:
        """``seek`` to ``offset_for_timestamp``; returns the offset."""
        offset = await self.offset_for_timestamp(mq, timestamp_ms)
        await self.seek(mq, offset)
        return offset

    def pause(self, queues: Iterable[MessageQueue]) -> None:
        """Stop pulling these queues (a pull held by the broker is abandoned; what is cached stays)."""
        for mq in queues:
            state = self._states.get(mq)
            if state is not None:
                state.paused = True
                if state.pull_cancel is not None:
                    state.pull_cancel.cancel()

    def resume(self, queues: Iterable[MessageQueue]) -> None:
        for mq in queues:
            state = self._states.get(mq)
            if state is not None:
                state.paused = False
                state.wake.set()

    # -- offsets ------------------------------------------------------------------------------------

    def _commit_queue(self, mq: MessageQueue) -> None:
        state = self._states.get(mq)
        if state is not None and state.consume_offset >= 0:
            self.offset_store.update_offset(mq, state.consume_offset, False)

    def commit(self, offsets: dict[MessageQueue, int] | None = None) -> None:
        """Commit in memory: the consume offsets of every queue (what polls returned), or ``offsets``; the
        persistence loop sends them within ``persist_consumer_offset_interval_ms``."""
        if offsets is None:
            for mq, state in self._states.items():
                if state.consume_offset >= 0 and not state.pq.dropped:
                    self.offset_store.update_offset(mq, state.consume_offset, False)
        else:
            for mq, offset in offsets.items():
                self.offset_store.update_offset(mq, offset, False)

    async def commit_sync(self, offsets: dict[MessageQueue, int] | None = None) -> None:
        """``commit`` and persist to the brokers (or the offsets file) now."""
        self._check_running()
        self.commit(offsets)
        await self.persist_consumer_offsets()

    async def committed(self, mq: MessageQueue) -> int:
        """The offset the store holds for ``mq`` (the broker's, for clustering); -1 when there is none."""
        self._check_running()
        return await self.offset_store.read_offset(mq, ReadOffsetType.STORE)

    async def fetch_message_queues(self, topic: str) -> list[MessageQueue]:
        """The readable queues of ``topic``."""
        queues = await self._readable_queues(topic)
        if not queues:
            raise ClientError(f"The topic[{topic}] not exist")
        return queues

    def running_info(self) -> dict[str, Any]:
        props = {"consumeType": self.consume_type.value, "messageModel": self.config.message_model.value,
                 "pullBatchSize": str(self.config.pull_batch_size), "PROP_CLIENT_VERSION": "V4_9_7"}
        return {"properties": props, "subscriptionSet": list(self.subscriptions.values()), "mqTable": {},
                "statusTable": {}}
