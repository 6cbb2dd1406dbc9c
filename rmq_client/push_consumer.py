"""The push consumer (trio-native): ``PushConsumer`` with a concurrent or an orderly listener.

    async def on_messages(msgs, context):               # may also be a plain function
        for msg in msgs:
            print(msg.topic, msg.tags, msg.msg_id, msg.body)
        return ConsumeConcurrentlyStatus.CONSUME_SUCCESS  # None counts as success, an exception as RECONSUME_LATER

    consumer = PushConsumer("CG_orders", namesrv_addr="127.0.0.1:9876")
    consumer.subscribe("Orders", "created || paid")        # or ("Orders", "a > 5", expression_type="SQL92")
    consumer.register_message_listener(on_messages)        # register_orderly_listener(fn) for ordered queues
    async with consumer:
        await trio.sleep_forever()

What it does, as the RocketMQ 4.9 Java push consumer (``DefaultMQPushConsumerImpl``, PROTOCOL.md §5, §9.2-9.4):

**Queues.** The rebalance (``rmq_client.rebalance``) gives this member its share of every subscribed topic's
queues — and of ``%RETRY%<group>``, subscribed automatically in clustering mode — at start, every 20 s and at
once when the group changes. Each queue gets a ``ProcessQueue`` and a pull loop, starting from the committed
offset, or per ``consume_from_where`` when the group has none (QUERY_CONSUMER_OFFSET answered 22).

**Pulling.** One long-polling PULL_MESSAGE at a time per queue: sysFlag suspend (+ commit offset when this
member has one for the queue, + subscription with ``post_subscription_when_pull``), suspendTimeoutMillis 15000,
RPC timeout 30000, ``pull_batch_size`` (32) messages. FOUND → the messages (bodies inflated per sysFlag, tags
re-filtered exactly, MIN_OFFSET/MAX_OFFSET stamped) are cached and handed to the consume service, and the next
pull starts at once (``pull_interval_ms`` later if set), and once everything cached is consumed the commit
offset is that next pull offset (records the broker or the tag re-filter skipped at the end are committed too;
Java commits them only with its next empty pull); NO_NEW_MSG / NO_MATCHED_MSG → the next offset, also
committed when nothing is cached; OFFSET_ILLEGAL → the queue is dropped, and 10 s later its offset is set to
the broker's nextBeginOffset, persisted, and the queue rebuilt; an error → 3 s pause. Flow control: no pull
while the queue caches more than ``pull_threshold_for_queue`` (1000) messages or ``pull_threshold_size_for_queue``
(100) MiB of bodies, or (concurrent) its cached offsets span more than ``consume_concurrently_max_span``
(2000); then 50 ms pauses until it drains.

**Concurrent listener** (``fn(msgs, ConsumeConcurrentlyContext)``): ``consume_thread_max`` (20) calls at a time,
``consume_message_batch_max_size`` (1) messages each, in any order. CONSUME_SUCCESS commits up to the first
message still cached; RECONSUME_LATER (or an exception, or ``False``) sends the failed messages back
(CONSUMER_SEND_MSG_BACK, code 36, delay level ``context.delay_level_when_next_consume``: 0 lets the broker use
3 + reconsumeTimes) — if that fails, the client stores the retry itself: a message to ``%RETRY%<group>`` with
RETRY_TOPIC, RECONSUME_TIME, MAX_RECONSUME_TIMES, ORIGIN_MESSAGE_ID and DELAY 3 + reconsumeTimes through an
inner producer (group CLIENT_INNER_PRODUCER), and if even that fails the messages are consumed again here 5 s
later. ``context.ack_index`` acknowledges a prefix of a batch. Broadcasting drops failed messages (as Java).
Messages redelivered from the retry topic carry their original topic (restored from RETRY_TOPIC) and
``reconsume_times`` 1, 2, ...; after ``max_reconsume_times`` (16) the broker moves them to ``%DLQ%<group>``.

**Orderly listener** (``fn(msgs, ConsumeOrderlyContext)``): clustering consumers lock each queue on its master
(LOCK_BATCH_MQ) before taking it, renew every 20 s, and consume a queue only while its lock is fresh (30 s);
one call at a time per queue, in offset order. SUCCESS commits; SUSPEND_CURRENT_QUEUE_A_MOMENT (or an
exception) puts the messages back and pauses the queue ``suspend_current_queue_time_ms`` (1 s) — with
``max_reconsume_times`` set, a message over it goes to the retry topic with RECONSUME_TIME at the maximum, which
the broker turns into a DLQ message. When the rebalance takes a queue away, the running call finishes first,
then its offset is committed and the lock released (UNLOCK_BATCH_MQ), so the next owner continues exactly there.

**Offsets** are committed in memory as messages are consumed and persisted every 5 s, when a queue is dropped
and on shutdown (clustering: UPDATE_CONSUMER_OFFSET to the brokers; broadcasting: the local offsets file).

**Listeners** may be coroutine functions or plain ones; plain ones run on the trio thread, so they must not
block (``rmq_client.blocking.PushConsumer`` runs them in worker threads). ``None`` counts as success. The
messages are ``MessageExt`` objects (``rmq_client.codec.PulledMessage``): topic, body, tags, keys, msg_id
(UNIQ_KEY), queue_id, queue_offset, reconsume_times, store_timestamp, properties, ...
"""
from __future__ import annotations

import enum
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from rmq_client import consumer_api as api
from rmq_client.consumer_api import PullAPI, PullStatus, PullSysFlag
from rmq_client.consumer_base import ConsumerBase, ExpressionType
from rmq_client.consumer_config import PushConsumerConfig
from rmq_client.errors import ClientError
from rmq_client.instance import ConsumeType, MessageModel
from rmq_client.process_queue import ProcessQueue
from rmq_client.rebalance import PullRequest, RebalanceImpl
from rmq_client.routing import MessageQueue
from rmq_common.message import Message, MessageExt
from rmq_common.properties import PropertyKey
from rmq_common.topic import CLIENT_INNER_PRODUCER_GROUP, retry_topic
from rmq_remoting.fastjson import FrozenDict

__all__ = [
    "PushConsumer", "ConsumeConcurrentlyStatus", "ConsumeOrderlyStatus", "ConsumeConcurrentlyContext",
    "ConsumeOrderlyContext", "PushConsumerStats", "MessageListener",
]

log = logging.getLogger("rmq_client")

_JAVA_INT_MAX = 2 ** 31 - 1
#: OFFSET_ILLEGAL: the corrected offset is persisted and the queue rebuilt this long after (Java: 10 s).
OFFSET_ILLEGAL_FIX_DELAY_S = 10.0
#: Pause of a queue whose consumer is suspended (Java PULL_TIME_DELAY_MILLS_WHEN_SUSPEND).
PULL_DELAY_WHEN_SUSPENDED_S = 1.0
#: Orderly: a queue is handed on after consuming continuously this long (Java MAX_TIME_CONSUME_CONTINUOUSLY).
MAX_TIME_CONSUME_CONTINUOUSLY_S = 60.0
#: A rebalance waits this long for a running orderly call before keeping the queue one more round.
CONSUME_LOCK_WAIT_S = 1.0


class ConsumeConcurrentlyStatus(enum.Enum):
    CONSUME_SUCCESS = "CONSUME_SUCCESS"
    RECONSUME_LATER = "RECONSUME_LATER"


class ConsumeOrderlyStatus(enum.Enum):
    SUCCESS = "SUCCESS"
    ROLLBACK = "ROLLBACK"
    COMMIT = "COMMIT"
    SUSPEND_CURRENT_QUEUE_A_MOMENT = "SUSPEND_CURRENT_QUEUE_A_MOMENT"


@dataclass
class ConsumeConcurrentlyContext:
    """Given to a concurrent listener; it may set how a failure is retried and which prefix succeeded."""

    message_queue: MessageQueue
    #: Delay level of the send-back of failed messages (0: the broker uses 3 + reconsumeTimes; -1: DLQ now).
    delay_level_when_next_consume: int = 0
    #: With CONSUME_SUCCESS, messages after index ``ack_index`` of the batch count as failed.
    ack_index: int = _JAVA_INT_MAX


@dataclass
class ConsumeOrderlyContext:
    """Given to an orderly listener."""

    message_queue: MessageQueue
    #: False: only COMMIT commits, ROLLBACK puts the messages back (Java's transactional-style use).
    auto_commit: bool = True
    #: Pause after SUSPEND_CURRENT_QUEUE_A_MOMENT (-1: ``suspend_current_queue_time_ms``).
    suspend_current_queue_time_ms: int = -1


MessageListener = Callable[[list[MessageExt], Any], Any]


@dataclass
class PushConsumerStats:
    """Counters of one push consumer (cumulative)."""

    pulls: int = 0                  #: PULL_MESSAGE answers (any status)
    pull_errors: int = 0            #: pulls that failed (connection, timeout, error code)
    pulled: int = 0                 #: messages delivered by pulls, after the tag re-filter
    consumed: int = 0               #: messages whose listener call succeeded
    failed: int = 0                 #: messages whose listener call failed (RECONSUME_LATER, exception, SUSPEND)
    sent_back: int = 0              #: failed messages sent back with CONSUMER_SEND_MSG_BACK
    retried_by_client: int = 0      #: ... or stored in the retry topic by the inner producer instead
    flow_control_count: int = 0     #: pulls skipped for the cached message count
    flow_control_size: int = 0      #: ... for the cached body size
    flow_control_span: int = 0      #: ... for the cached offset span
    offset_illegal: int = 0         #: OFFSET_ILLEGAL answers


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _listener_function(listener: Any) -> Callable[..., Any]:
    fn = getattr(listener, "consume_message", None)
    if fn is not None:
        return fn
    if callable(listener):
        return listener
    raise TypeError("a message listener is a function (msgs, context) or has consume_message(msgs, context)")


def _concurrent_status(value: Any) -> ConsumeConcurrentlyStatus:
    if value is None or value is True:
        return ConsumeConcurrentlyStatus.CONSUME_SUCCESS
    if value is False:
        return ConsumeConcurrentlyStatus.RECONSUME_LATER
    if isinstance(value, ConsumeConcurrentlyStatus):
        return value
    if isinstance(value, str):
        return ConsumeConcurrentlyStatus(value.upper())
    if isinstance(value, enum.Enum) and isinstance(value.value, str):
        return ConsumeConcurrentlyStatus(value.name.upper())
    raise TypeError(f"a concurrent listener must return a ConsumeConcurrentlyStatus, got {value!r}")


def _orderly_status(value: Any) -> ConsumeOrderlyStatus:
    if value is None or value is True:
        return ConsumeOrderlyStatus.SUCCESS
    if value is False:
        return ConsumeOrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT
    if isinstance(value, ConsumeOrderlyStatus):
        return value
    if isinstance(value, str):
        return ConsumeOrderlyStatus(value.upper())
    if isinstance(value, enum.Enum):
        return ConsumeOrderlyStatus(value.name.upper())
    raise TypeError(f"an orderly listener must return a ConsumeOrderlyStatus, got {value!r}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Idle:
    """Counts running calls; ``wait`` returns when none runs."""

    def __init__(self) -> None:
        self.active = 0
        self._event = trio.Event()
        self._event.set()

    def enter(self) -> None:
        self.active += 1
        if self.active == 1:
            self._event = trio.Event()

    def exit(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


class _ServiceBase:
    """A consume service: its tasks live in a nursery of its own, cancelled after a bounded drain."""

    def __init__(self, consumer: PushConsumer, listener: Callable[..., Any]) -> None:
        self.consumer = consumer
        self.listener = listener
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self.stopped = False
        self.idle = _Idle()

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self._run)

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._started(nursery)
                task_status.started()
                await trio.sleep_forever()

    def _started(self, nursery: trio.Nursery) -> None:
        pass

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is not None and not self.stopped:
            self._nursery.start_soon(fn, *args)

    def later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        async def run() -> None:
            await trio.sleep(delay_s)
            if not self.stopped:
                fn(*args)
        self.spawn(run)

    async def shutdown(self, timeout_s: float) -> None:
        self.stopped = True
        with trio.move_on_after(timeout_s):
            await self.idle.wait()
        self._scope.cancel()

    async def call_listener(self, msgs: list[Any], context: Any) -> Any:
        return await _maybe_await(self.listener(msgs, context))


@dataclass(eq=False)
class _ConsumeRequest:
    msgs: list[Any]
    process_queue: ProcessQueue
    message_queue: MessageQueue


class _ConcurrentService(_ServiceBase):
    """Java ``ConsumeMessageConcurrentlyService``: ``consume_thread_max`` workers over one request channel."""

    def __init__(self, consumer: PushConsumer, listener: Callable[..., Any]) -> None:
        super().__init__(consumer, listener)
        self._send, self._recv = trio.open_memory_channel[_ConsumeRequest](math.inf)

    def _started(self, nursery: trio.Nursery) -> None:
        for _ in range(self.consumer.config.consume_thread_max):
            nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        async for request in self._recv:
            if self.stopped:
                continue
            self.idle.enter()
            try:
                await self._consume(request)
            except Exception:
                log.exception("consumer %s: consuming failed", self.consumer.group)
            finally:
                self.idle.exit()

    def submit(self, msgs: list[Any], pq: ProcessQueue, mq: MessageQueue, dispatch: bool) -> None:
        size = self.consumer.config.consume_message_batch_max_size
        for i in range(0, len(msgs), size):
            self._send.send_nowait(_ConsumeRequest(msgs[i:i + size], pq, mq))

    def submit_later(self, msgs: list[Any], pq: ProcessQueue, mq: MessageQueue) -> None:
        self.later(self.consumer.config.consume_later_delay_ms / 1000.0, self.submit, msgs, pq, mq, True)

    async def _consume(self, request: _ConsumeRequest) -> None:
        pq, mq = request.process_queue, request.message_queue
        if pq.dropped:
            return
        consumer = self.consumer
        msgs = request.msgs
        consumer.reset_retry_topic(msgs)
        start = str(_now_ms())
        for msg in msgs:
            msg.properties[PropertyKey.CONSUME_START_TIME] = start
        context = ConsumeConcurrentlyContext(mq)
        try:
            status = _concurrent_status(await self.call_listener(msgs, context))
        except Exception as exc:
            log.warning("consumer %s: the listener failed on %s: %r", consumer.group, [m.msg_id for m in msgs], exc)
            status = ConsumeConcurrentlyStatus.RECONSUME_LATER
        if not pq.dropped:
            await self.process_consume_result(status, context, request)
        else:
            log.info("consumer %s: %s was dropped while its messages were consumed", consumer.group, mq)

    async def process_consume_result(self, status: ConsumeConcurrentlyStatus, context: ConsumeConcurrentlyContext,
                                     request: _ConsumeRequest) -> None:
        consumer = self.consumer
        msgs = request.msgs
        if not msgs:
            return
        stats = consumer.stats
        if status is ConsumeConcurrentlyStatus.CONSUME_SUCCESS:
            ack_index = min(context.ack_index, len(msgs) - 1)
            stats.consumed += ack_index + 1
            stats.failed += len(msgs) - ack_index - 1
        else:
            ack_index = -1
            stats.failed += len(msgs)
        remaining = msgs
        if consumer.config.message_model is MessageModel.BROADCASTING:
            for msg in msgs[ack_index + 1:]:
                log.warning("consumer %s: BROADCASTING, the message consume failed, drop it, %s", consumer.group,
                            msg.msg_id)
        else:
            failed_back: list[Any] = []
            for msg in msgs[ack_index + 1:]:
                if not await consumer.send_message_back_safely(msg, context.delay_level_when_next_consume,
                                                               request.message_queue.broker_name):
                    msg.reconsume_times += 1
                    failed_back.append(msg)
            if failed_back:
                ids = {id(m) for m in failed_back}
                remaining = [m for m in msgs if id(m) not in ids]
                self.submit_later(failed_back, request.process_queue, request.message_queue)
        offset = request.process_queue.remove_messages(remaining)
        if offset >= 0 and not request.process_queue.dropped:
            consumer.offset_store.update_offset(request.message_queue, offset, True)

    async def consume_directly(self, msg: MessageExt, mq: MessageQueue) -> dict[str, Any]:
        context = ConsumeConcurrentlyContext(mq)
        self.consumer.reset_retry_topic([msg])
        begin = time.monotonic()
        remark = None
        try:
            value = await self.call_listener([msg], context)
            result = "CR_RETURN_NULL" if value is None else (
                "CR_SUCCESS" if _concurrent_status(value) is ConsumeConcurrentlyStatus.CONSUME_SUCCESS else "CR_LATER")
        except Exception as exc:
            result, remark = "CR_THROW_EXCEPTION", repr(exc)
        return {"order": False, "autoCommit": True, "consumeResult": result, "remark": remark,
                "spentTimeMills": int((time.monotonic() - begin) * 1000)}


class _OrderlyService(_ServiceBase):
    """Java ``ConsumeMessageOrderlyService``: one consume task per queue at a time, under the broker lock."""

    def __init__(self, consumer: PushConsumer, listener: Callable[..., Any]) -> None:
        super().__init__(consumer, listener)
        self._mq_locks: dict[MessageQueue, trio.Lock] = {}
        self._limiter = trio.CapacityLimiter(consumer.config.consume_thread_max)

    def _started(self, nursery: trio.Nursery) -> None:
        if self.consumer.clustering:
            nursery.start_soon(self._lock_loop)

    async def _lock_loop(self) -> None:
        await trio.sleep(1.0)
        interval = self.consumer.config.lock_interval_ms / 1000.0
        while not self.stopped:
            try:
                await self.consumer.rebalance.lock_all()
            except Exception:
                log.exception("consumer %s: lock renewal failed", self.consumer.group)
            await trio.sleep(interval)

    def submit(self, msgs: list[Any] | None, pq: ProcessQueue, mq: MessageQueue, dispatch: bool) -> None:
        if dispatch:
            self.spawn(self._consume_request, pq, mq)

    def submit_later(self, pq: ProcessQueue, mq: MessageQueue, suspend_ms: int) -> None:
        if suspend_ms == -1:
            suspend_ms = self.consumer.config.suspend_current_queue_time_ms
        suspend_ms = min(max(suspend_ms, 10), 30_000)
        self.later(suspend_ms / 1000.0, self.submit, None, pq, mq, True)

    def try_lock_later_and_reconsume(self, mq: MessageQueue, pq: ProcessQueue, delay_ms: int) -> None:
        async def run() -> None:
            await trio.sleep(delay_ms / 1000.0)
            if self.stopped:
                return
            if await self.consumer.rebalance.lock(mq):
                self.submit_later(pq, mq, 10)
            else:
                self.submit_later(pq, mq, 3000)
        self.spawn(run)

    def _lock_of(self, mq: MessageQueue) -> trio.Lock:
        lock = self._mq_locks.get(mq)
        if lock is None:
            lock = self._mq_locks[mq] = trio.Lock()
        return lock

    async def _consume_request(self, pq: ProcessQueue, mq: MessageQueue) -> None:
        if pq.dropped:
            return
        consumer = self.consumer
        clustering = consumer.clustering
        async with self._lock_of(mq):
            if not clustering or (pq.locked and not pq.is_lock_expired()):
                begin = trio.current_time()
                while True:
                    if pq.dropped or self.stopped:
                        break
                    if clustering and (not pq.locked or pq.is_lock_expired()):
                        self.try_lock_later_and_reconsume(mq, pq, 10)
                        break
                    if trio.current_time() - begin > MAX_TIME_CONSUME_CONTINUOUSLY_S:
                        self.submit_later(pq, mq, 10)
                        break
                    async with pq.consume_lock:
                        if pq.dropped:
                            break
                        msgs = pq.take_messages(consumer.config.consume_message_batch_max_size)
                        if not msgs:
                            break
                        go_on = await self._consume_batch(pq, mq, msgs)
                    if not go_on:
                        break
            else:
                if pq.dropped:
                    return
                self.try_lock_later_and_reconsume(mq, pq, 100)

    async def _consume_batch(self, pq: ProcessQueue, mq: MessageQueue, msgs: list[Any]) -> bool:
        consumer = self.consumer
        consumer.reset_retry_topic(msgs)
        context = ConsumeOrderlyContext(mq)
        self.idle.enter()
        try:
            async with self._limiter:
                try:
                    status = _orderly_status(await self.call_listener(msgs, context))
                except Exception as exc:
                    log.warning("consumer %s: the orderly listener failed on %s: %r", consumer.group,
                                [m.msg_id for m in msgs], exc)
                    status = ConsumeOrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT
            return await self.process_consume_result(msgs, status, context, pq, mq)
        finally:
            self.idle.exit()

    async def process_consume_result(self, msgs: list[Any], status: ConsumeOrderlyStatus,
                                     context: ConsumeOrderlyContext, pq: ProcessQueue, mq: MessageQueue) -> bool:
        consumer = self.consumer
        stats = consumer.stats
        go_on = True
        commit_offset = -1
        if status in (ConsumeOrderlyStatus.SUCCESS, ConsumeOrderlyStatus.COMMIT):
            stats.consumed += len(msgs)
        else:
            stats.failed += len(msgs)
        if context.auto_commit:
            if status in (ConsumeOrderlyStatus.COMMIT, ConsumeOrderlyStatus.ROLLBACK):
                log.warning("consumer %s: the orderly consume result %s is illegal with auto commit, we think you "
                            "want to ack these messages of %s", consumer.group, status.value, mq)
            if status is ConsumeOrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT:
                if await self.check_reconsume_times(msgs):
                    pq.make_messages_to_consume_again(msgs)
                    self.submit_later(pq, mq, context.suspend_current_queue_time_ms)
                    go_on = False
                else:
                    commit_offset = pq.commit()
            else:
                commit_offset = pq.commit()
        else:
            if status is ConsumeOrderlyStatus.COMMIT:
                commit_offset = pq.commit()
            elif status is ConsumeOrderlyStatus.ROLLBACK:
                pq.rollback()
                self.submit_later(pq, mq, context.suspend_current_queue_time_ms)
                go_on = False
            elif status is ConsumeOrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT:
                if await self.check_reconsume_times(msgs):
                    pq.make_messages_to_consume_again(msgs)
                    self.submit_later(pq, mq, context.suspend_current_queue_time_ms)
                    go_on = False
        if commit_offset >= 0:
            # Committed even when the queue was just dropped: the rebalance waits for this call (consume
            # lock) and persists right after, so the next owner starts behind what was consumed here.
            consumer.offset_store.update_offset(mq, commit_offset, False)
        return go_on

    async def check_reconsume_times(self, msgs: list[Any]) -> bool:
        """True: consume the messages here again (later); False: all went to the retry topic (at the limit)."""
        consumer = self.consumer
        maximum = consumer.max_reconsume_times()
        suspend = False
        for msg in msgs:
            if msg.reconsume_times >= maximum:
                msg.properties[PropertyKey.RECONSUME_TIME] = str(msg.reconsume_times)
                if not await consumer.send_to_retry_topic(msg, orderly=True):
                    suspend = True
                    msg.reconsume_times += 1
            else:
                suspend = True
                msg.reconsume_times += 1
        return suspend

    async def consume_directly(self, msg: MessageExt, mq: MessageQueue) -> dict[str, Any]:
        context = ConsumeOrderlyContext(mq)
        self.consumer.reset_retry_topic([msg])
        begin = time.monotonic()
        remark = None
        try:
            value = await self.call_listener([msg], context)
            status = _orderly_status(value)
            result = {ConsumeOrderlyStatus.SUCCESS: "CR_SUCCESS", ConsumeOrderlyStatus.COMMIT: "CR_COMMIT",
                      ConsumeOrderlyStatus.ROLLBACK: "CR_ROLLBACK"}.get(status, "CR_LATER")
            if value is None:
                result = "CR_RETURN_NULL"
        except Exception as exc:
            result, remark = "CR_THROW_EXCEPTION", repr(exc)
        return {"order": True, "autoCommit": context.auto_commit, "consumeResult": result, "remark": remark,
                "spentTimeMills": int((time.monotonic() - begin) * 1000)}


class _PushRebalance(RebalanceImpl):
    """``RebalancePushImpl``: pull loops for new queues, a heartbeat after changes, orderly lock hand-over."""

    consumer: PushConsumer

    async def remove_unnecessary_message_queue(self, mq: MessageQueue, pq: ProcessQueue) -> bool:
        consumer = self.consumer
        store = consumer.offset_store
        if consumer.is_order() and consumer.clustering:
            got = False
            with trio.move_on_after(CONSUME_LOCK_WAIT_S):
                await pq.consume_lock.acquire()
                got = True
            if not got:
                pq.try_unlock_times += 1
                log.warning("consumer %s: %s is being consumed, it is released in a later rebalance",
                            consumer.group, mq)
                return False
            try:
                await store.persist(mq)
                store.remove_offset(mq)
                await self.unlock(mq)
            finally:
                pq.consume_lock.release()
            return True
        await store.persist(mq)
        store.remove_offset(mq)
        return True

    async def message_queue_changed(self, topic: str, mq_all: list[MessageQueue],
                                    mq_divided: list[MessageQueue]) -> None:
        consumer = self.consumer
        sub = consumer.subscriptions.get(topic)
        if sub is not None:
            sub["subVersion"] = max(_now_ms(), int(sub.get("subVersion", 0)) + 1)
        cfg = consumer.config
        count = len(self.process_queue_table)
        if count:
            if cfg.pull_threshold_for_topic != -1:
                consumer.pull_threshold_for_queue = max(1, cfg.pull_threshold_for_topic // count)
            if cfg.pull_threshold_size_for_topic != -1:
                consumer.pull_threshold_size_for_queue = max(1, cfg.pull_threshold_size_for_topic // count)
        await consumer.instance.send_heartbeat_to_all_brokers()

    def dispatch_pull_requests(self, requests: list[PullRequest]) -> None:
        for request in requests:
            self.consumer.nursery.start_soon(self.consumer._pull_loop, request)


class PushConsumer(ConsumerBase):
    """Consumes subscribed topics through a listener (see the module docstring); ``async with`` runs it.

    ``PushConsumer(group, namesrv_addr, **options)``: options are ``PushConsumerConfig`` fields
    (``message_model=MessageModel.BROADCASTING``, ``consume_from_where=...``, ``pull_batch_size=...`` ...).
    ``instance``: share a running ``ClientInstance``.
    """

    consume_type = ConsumeType.CONSUME_PASSIVELY
    config_class = PushConsumerConfig
    config: PushConsumerConfig

    def __init__(self, group: str | None = None, namesrv_addr: str | None = None, *,
                 config: PushConsumerConfig | None = None, instance: Any = None, **options: Any) -> None:
        super().__init__(group, namesrv_addr, config=config, instance=instance, **options)
        self._listener: Callable[..., Any] | None = None
        self._orderly = False
        self._service: _ConcurrentService | _OrderlyService | None = None
        self._pull_api: PullAPI | None = None
        self._paused = False
        self.stats = PushConsumerStats()
        self.pull_threshold_for_queue = self.config.pull_threshold_for_queue
        self.pull_threshold_size_for_queue = self.config.pull_threshold_size_for_queue
        self._producer: Any = None
        self._producer_lock = trio.Lock()
        self._producer_close = trio.Event()
        self._producer_closed = trio.Event()

    def _make_rebalance(self) -> RebalanceImpl:
        return _PushRebalance(self)

    # -- configuration ------------------------------------------------------------------------------

    def subscribe(self, topic: str, expression: str = "*", *, expression_type: str = ExpressionType.TAG) -> None:
        """Subscribe ``topic``: tags ``"TagA || TagB"`` (``*`` = all) or, with ``expression_type="SQL92"``, a
        SQL92 filter on properties (the broker needs ``enablePropertyFilter``). After start, the change is
        announced and rebalanced at once (in a task of the consumer)."""
        self._put_subscription(topic, expression, expression_type)
        if self.running:
            self.nursery.start_soon(self._subscription_changed, topic)

    def unsubscribe(self, topic: str) -> None:
        self.subscriptions.pop(topic, None)
        if self.running:
            self.nursery.start_soon(self._subscription_changed, None)

    def register_message_listener(self, listener: MessageListener | Any, *, orderly: bool = False) -> None:
        """Set the listener: ``fn(msgs, context)`` or an object with ``consume_message(msgs, context)``."""
        if self._running:
            raise ClientError("register the listener before the consumer starts")
        self._listener = _listener_function(listener)
        self._orderly = orderly

    def register_concurrent_listener(self, listener: MessageListener | Any) -> None:
        self.register_message_listener(listener, orderly=False)

    def register_orderly_listener(self, listener: MessageListener | Any) -> None:
        self.register_message_listener(listener, orderly=True)

    def is_order(self) -> bool:
        return self._orderly

    def max_reconsume_times(self) -> int:
        value = self.config.max_reconsume_times
        if value == -1:
            return _JAVA_INT_MAX if self._orderly else 16
        return value

    def suspend(self) -> None:
        """Pause pulling (the queues stay assigned); ``resume`` continues."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self.wake_rebalance()

    @property
    def paused(self) -> bool:
        return self._paused

    def process_queue(self, mq: MessageQueue) -> ProcessQueue | None:
        return self.rebalance.process_queue_table.get(mq)

    # -- lifecycle hooks ----------------------------------------------------------------------------

    def _prepare_start(self) -> None:
        if self._listener is None:
            raise ClientError("no message listener: register_message_listener(fn) before starting")
        if not self.subscriptions:
            log.warning("consumer %s starts without a subscription", self.group)
        if self.clustering:
            self._put_subscription(retry_topic(self.group), "*", ExpressionType.TAG)

    async def _start_services(self, nursery: trio.Nursery) -> None:
        assert self._listener is not None
        self._pull_api = PullAPI(self.instance, self.group)
        service_cls = _OrderlyService if self._orderly else _ConcurrentService
        self._service = service_cls(self, self._listener)
        await self._service.start(nursery)

    async def _stop_services(self) -> None:
        if self._service is not None:
            await self._service.shutdown(self.config.await_termination_ms_when_shutdown / 1000.0)
        if self._producer is not None:
            self._producer_close.set()
            with trio.move_on_after(self.config.rpc_timeout_ms / 1000.0 + 2):
                await self._producer_closed.wait()

    async def _after_persist(self) -> None:
        if self._orderly and self.clustering:
            await self.rebalance.unlock_all(oneway=False)

    # -- pulling ------------------------------------------------------------------------------------

    async def _pull_loop(self, request: PullRequest) -> None:
        pq = request.process_queue
        with pq.pull_scope:
            while not pq.dropped and self.running:
                try:
                    delay = await self._pull_once(request)
                except Exception:
                    log.exception("consumer %s: pulling %s failed", self.group, request.message_queue)
                    delay = self.config.pull_time_delay_ms_when_exception / 1000.0
                if delay > 0:
                    await trio.sleep(delay)
                else:
                    await trio.lowlevel.checkpoint()

    async def _pull_once(self, request: PullRequest) -> float:
        """One step of Java's ``pullMessage``; returns the pause before the next one (seconds)."""
        cfg = self.config
        pq, mq = request.process_queue, request.message_queue
        pq.last_pull_timestamp = trio.current_time()
        if self._paused:
            return PULL_DELAY_WHEN_SUSPENDED_S
        flow_delay = cfg.pull_time_delay_ms_when_flow_control / 1000.0
        if pq.msg_count > self.pull_threshold_for_queue:
            self.stats.flow_control_count += 1
            if self.stats.flow_control_count % 1000 == 1:
                log.warning("consumer %s: flow control, %d messages cached on %s (threshold %d)", self.group,
                            pq.msg_count, mq, self.pull_threshold_for_queue)
            return flow_delay
        if pq.msg_size > self.pull_threshold_size_for_queue * 1024 * 1024:
            self.stats.flow_control_size += 1
            return flow_delay
        if not self._orderly:
            if pq.max_span() > cfg.consume_concurrently_max_span:
                self.stats.flow_control_span += 1
                return flow_delay
        else:
            if not pq.locked:
                return cfg.pull_time_delay_ms_when_exception / 1000.0
            if not request.previously_locked:
                offset = await self.rebalance.compute_pull_from_where(mq)
                if offset < 0:
                    return cfg.pull_time_delay_ms_when_exception / 1000.0
                request.previously_locked = True
                request.next_offset = offset
        sub = self.subscriptions.get(mq.topic)
        if sub is None:
            return cfg.pull_time_delay_ms_when_exception / 1000.0
        commit_offset = 0
        if self.clustering:
            commit_offset = max(self.offset_store.memory_offset(mq), 0)
        sub_expression = sub["subString"] if cfg.post_subscription_when_pull else None
        sys_flag = PullSysFlag.build(commit_offset > 0, True, sub_expression is not None)
        assert self._pull_api is not None
        try:
            result = await self._pull_api.pull(
                mq, offset=request.next_offset, max_nums=cfg.pull_batch_size, sys_flag=sys_flag,
                commit_offset=commit_offset, sub_version=int(sub["subVersion"]), subscription=sub_expression,
                expression_type=sub.get("expressionType", ExpressionType.TAG),
                suspend_timeout_ms=cfg.broker_suspend_max_time_ms, timeout_ms=cfg.consumer_timeout_ms_when_suspend)
        except Exception as exc:
            self.stats.pull_errors += 1
            log.warning("consumer %s: pull of %s at %d failed: %s", self.group, mq, request.next_offset, exc)
            return cfg.pull_time_delay_ms_when_exception / 1000.0
        self.stats.pulls += 1
        if pq.dropped:
            return 0.0
        status = result.status
        if status is PullStatus.FOUND:
            request.next_offset = result.next_begin_offset
            tags = sub.get("tagsSet") if sub.get("expressionType", "TAG") == ExpressionType.TAG else None
            msgs = PullAPI.messages(mq, result, tags)
            if not msgs:
                if pq.msg_count == 0:                               # all filtered out here: skip them
                    self.offset_store.update_offset(mq, request.next_offset, True)
                return 0.0
            self.stats.pulled += len(msgs)
            dispatch = pq.put_messages(msgs)
            # Records after the last delivered one were filtered (broker or client): once everything cached is
            # consumed, the commit offset is the next pull offset, not the last message + 1.
            pq.queue_offset_max = max(pq.queue_offset_max, request.next_offset - 1)
            assert self._service is not None
            self._service.submit(msgs, pq, mq, dispatch)
            return cfg.pull_interval_ms / 1000.0
        if status in (PullStatus.NO_NEW_MSG, PullStatus.NO_MATCHED_MSG):
            request.next_offset = result.next_begin_offset
            if pq.msg_count == 0:                                   # correctTagsOffset
                self.offset_store.update_offset(mq, request.next_offset, True)
            return 0.0
        # OFFSET_ILLEGAL
        self.stats.offset_illegal += 1
        log.warning("consumer %s: the pull offset of %s is illegal, next begin offset %d", self.group, mq,
                    result.next_begin_offset)
        request.next_offset = result.next_begin_offset
        pq.dropped = True
        self.nursery.start_soon(self._fix_illegal_offset, mq, result.next_begin_offset)
        return 0.0

    async def _fix_illegal_offset(self, mq: MessageQueue, offset: int) -> None:
        await trio.sleep(OFFSET_ILLEGAL_FIX_DELAY_S)
        if not self.running:
            return
        try:
            self.offset_store.update_offset(mq, offset, False)
            await self.offset_store.persist(mq)
            await self.rebalance.remove_process_queue(mq)
            log.warning("consumer %s: fixed the offset of %s to %d", self.group, mq, offset)
        except Exception:
            log.exception("consumer %s: fixing the offset of %s failed", self.group, mq)
        self.wake_rebalance()

    # -- messages -----------------------------------------------------------------------------------

    def reset_retry_topic(self, msgs: Sequence[Any]) -> None:
        """Messages from ``%RETRY%<group>`` get their original topic back (RETRY_TOPIC)."""
        retry = retry_topic(self.group)
        for msg in msgs:
            if msg.topic == retry:
                original = msg.properties.get(PropertyKey.RETRY_TOPIC)
                if original:
                    msg.topic = original

    async def send_message_back(self, msg: MessageExt, delay_level: int = 0, broker_name: str | None = None) -> None:
        """Java ``sendMessageBack``: CONSUMER_SEND_MSG_BACK to the broker; on failure the retry message is stored
        by the inner producer. Raises when both fail."""
        try:
            await api.send_message_back(self.instance, broker_name, msg, self.group, delay_level,
                                        self.max_reconsume_times())
            self.stats.sent_back += 1
            return
        except Exception as exc:
            log.warning("consumer %s: send back of %s failed (%r), storing the retry from the client", self.group,
                        msg.msg_id, exc)
        await self.send_to_retry_topic(msg, orderly=False, raise_errors=True)
        self.stats.retried_by_client += 1

    async def send_message_back_safely(self, msg: MessageExt, delay_level: int, broker_name: str | None) -> bool:
        try:
            await self.send_message_back(msg, delay_level, broker_name)
            return True
        except Exception as exc:
            log.warning("consumer %s: retry of %s failed, consuming it again later: %r", self.group, msg.msg_id, exc)
            return False

    async def send_to_retry_topic(self, msg: MessageExt, *, orderly: bool, raise_errors: bool = False) -> bool:
        """A copy of ``msg`` to ``%RETRY%<group>`` through the inner producer (RETRY_TOPIC, RECONSUME_TIME,
        MAX_RECONSUME_TIMES, ORIGIN_MESSAGE_ID; DELAY 3 + reconsumeTimes unless orderly)."""
        try:
            props = dict(msg.properties)
            props[PropertyKey.ORIGIN_MESSAGE_ID] = props.get(PropertyKey.ORIGIN_MESSAGE_ID) or msg.msg_id
            props[PropertyKey.RETRY_TOPIC] = msg.topic
            props[PropertyKey.RECONSUME_TIME] = str(msg.reconsume_times if orderly else msg.reconsume_times + 1)
            props[PropertyKey.MAX_RECONSUME_TIMES] = str(self.max_reconsume_times())
            props.pop(PropertyKey.TRAN_MSG, None)
            new = Message(retry_topic(self.group), msg.body, msg.flag, props)
            if not orderly:
                new.delay_time_level = 3 + msg.reconsume_times
            producer = await self._inner_producer()
            await producer.send(new)
            return True
        except Exception as exc:
            if raise_errors:
                raise
            log.warning("consumer %s: storing the retry of %s failed: %r", self.group, msg.msg_id, exc)
            return False

    async def _inner_producer(self) -> Any:
        """The CLIENT_INNER_PRODUCER producer on this consumer's instance (started on first use)."""
        if self._producer is not None:
            return self._producer
        async with self._producer_lock:
            if self._producer is None:
                existing = self.instance.producer(CLIENT_INNER_PRODUCER_GROUP)
                if existing is not None and hasattr(existing, "send"):
                    return existing
                self._producer = await self.nursery.start(self._hold_producer)
        return self._producer

    async def _hold_producer(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from rmq_client.config import ProducerConfig
        from rmq_client.producer import Producer
        try:
            cfg = ProducerConfig(namesrv_addr=self.config.namesrv_addr, group=CLIENT_INNER_PRODUCER_GROUP)
            async with Producer(config=cfg, instance=self.instance) as producer:
                task_status.started(producer)
                await self._producer_close.wait()
        finally:
            self._producer_closed.set()

    # -- broker → client ----------------------------------------------------------------------------

    def running_info(self) -> dict[str, Any]:
        """ConsumerRunningInfo for GET_CONSUMER_RUNNING_INFO (what ``mqadmin consumerStatus`` shows)."""
        cfg = self.config
        props = {"consumeType": self.consume_type.value, "messageModel": cfg.message_model.value,
                 "consumeFromWhere": cfg.consume_from_where.value, "consumeOrderly": str(self._orderly).lower(),
                 "consumeThreadMax": str(cfg.consume_thread_max), "pullBatchSize": str(cfg.pull_batch_size),
                 "pullThresholdForQueue": str(self.pull_threshold_for_queue),
                 "PROP_CLIENT_VERSION": "V4_9_7", "PROP_CONSUMER_START_TIMESTAMP": str(_now_ms())}
        mq_table = {}
        for mq, pq in self.rebalance.process_queue_table.items():
            info = pq.info()
            if self._offset_store is not None:
                info["commitOffset"] = self._offset_store.memory_offset(mq)
            mq_table[FrozenDict(mq.to_wire())] = info
        return {"properties": props, "subscriptionSet": list(self.subscriptions.values()), "mqTable": mq_table,
                "statusTable": {}}

    async def consume_message_directly(self, msg: MessageExt, broker_name: str | None) -> dict[str, Any]:
        if self._service is None:
            raise ClientError("the consumer is not running")
        mq = MessageQueue(msg.topic, broker_name or "", msg.queue_id)
        return await self._service.consume_directly(msg, mq)

    async def fetch_subscribe_message_queues(self, topic: str) -> list[MessageQueue]:
        """The readable queues of ``topic`` (Java ``fetchSubscribeMessageQueues``)."""
        queues = await self._readable_queues(topic)
        if not queues:
            raise ClientError(f"Can not find Message Queue for this topic, {topic}")
        return queues
