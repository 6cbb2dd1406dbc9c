"""The producer (trio-native): ``Producer`` and ``TransactionProducer``.

    async with Producer("PG_orders", namesrv_addr="127.0.0.1:9876") as producer:
        result = await producer.send(make_message("Orders", b"...", tags="created", keys=["order-42"]))
        future = await producer.send_async(msg, callback=on_done)   # started; ``await future`` for the result
        await producer.send_oneway(msg)
        batch = await producer.send_batch([m1, m2, m3])               # one SEND_BATCH_MESSAGE
        ordered = await producer.send(msg, selector=SelectMessageQueueByHash(), arg=order_id)

What a send does, as the RocketMQ 4.9 Java producer (``DefaultMQProducerImpl.sendDefaultImpl`` /
``sendKernelImpl``, ``MQClientAPIImpl.sendMessage``; PROTOCOL.md §2.1, §4, §9.1):

1. **Checks** the message (legal topic, not a broker-only topic, non-empty body ≤ ``max_message_size``) and
   gives it a ``UNIQ_KEY`` (``rmq_common.msgid``) unless it has one; the message object keeps it, so
   ``SendResult.msg_id`` and retries carry the same id.
2. **Finds the route**: the topic's publish queues from the client instance, fetched from a nameserver on first
   use. A topic without a route is sent with TBW102's route (at most ``default_topic_queue_nums`` queues per
   broker) and the broker creates it (``autoCreateTopicEnable``).
3. **Chooses a queue**: round robin from a random start; with ``send_latency_fault_enable`` (default on) brokers
   that were slow or failed recently are skipped for a while (``routing.FaultStrategy``). A retry goes to
   another broker when there is one.
4. **Sends** SEND_MESSAGE_V2 (310) with the one-letter header, the body compressed when it has at least
   ``compress_msg_body_over`` bytes (ZLIB by default, flagged ``0x1 | codec`` in sysFlag as RocketMQ 5.x does),
   TRAN_MSG messages flagged PREPARED.
5. **Retries** a sync or awaited async send on another broker, up to ``retry_times_when_send_failed`` (2) more
   times within ``send_timeout_ms`` in all, after a connection failure, a timeout, or one of the response codes
   17, 14, 1, 16, 204, 205 (not SYSTEM_BUSY 2). Any other code raises ``BrokerError`` at once. FLUSH_DISK_TIMEOUT,
   FLUSH_SLAVE_TIMEOUT and SLAVE_NOT_AVAILABLE (stored, not yet durable) are results with that ``status``.
   Oneway sends and sends to an explicit queue or through a selector are tried once (order must hold).

``SendResult.msg_id`` is the UNIQ_KEY (what consumers see as msgId); ``offset_msg_id`` the broker's id
(store host + commitlog offset); ``message_queue`` and ``queue_offset`` where it was stored.

Automatic batching (``auto_batch=True``; off by default because it changes how sends travel: no
compression, and a failed batch fails every message in it): concurrent ``send``/``send_async`` calls to the
same topic — and the same explicit or selected queue, and the same WAIT setting — are collected for at most
``batch_linger_ms`` (or until ``batch_max_bytes`` / ``batch_max_messages``) and sent as one SEND_BATCH_MESSAGE;
each caller still gets its own ``SendResult`` (its own UNIQ_KEY, offset id and queue offset). Messages with a
delay level, timer properties or a transaction flag, bodies over the compression threshold and oneway sends
are never batched. A batch that holds one message when it leaves is sent as a plain SEND_MESSAGE_V2.

Transactions (``TransactionProducer``): the half message (TRAN_MSG=true, PGROUP) is sent with retries; on
SEND_OK the listener's ``execute_local_transaction`` runs, and END_TRANSACTION (37, oneway) tells the broker
COMMIT, ROLLBACK or UNKNOW. A broker asking back (CHECK_TRANSACTION_STATE 39) gets the listener's
``check_local_transaction`` answer as END_TRANSACTION with ``fromTransactionCheck=true``. Listener methods
may be plain functions or coroutines; plain ones run on the trio thread, so they must not block (the
blocking facade runs them in worker threads).
"""
from __future__ import annotations

import enum
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import trio

from rmq_client.compression import compress
from rmq_client.config import ProducerConfig
from rmq_client.errors import BrokerError, ClientError, NoRouteError
from rmq_client.instance import ClientInstance
from rmq_client.lifecycle import AsyncLifecycle
from rmq_client.routing import FaultStrategy, MessageQueue, SelectorLike, TopicPublishInfo, apply_selector
from rmq_common import sysflag
from rmq_common._record import encode_batch_body
from rmq_common.message import Message, MessageExt
from rmq_common.msgid import create_unique_id, create_unique_ids, decode_offset_msg_id
from rmq_common.properties import NAME_VALUE_SEPARATOR, PropertyKey, encode_properties
from rmq_common.topic import (DEFAULT_PRODUCER_GROUP, InvalidTopicError, is_not_allowed_send_topic, is_retry_topic,
                              validate_topic)
from rmq_remoting import RequestCode, ResponseCode
from rmq_remoting.connection import Connection
from rmq_remoting.errors import RemotingError, RemotingTimeoutError
from rmq_remoting.headers import CheckTransactionStateRequestHeader, EndTransactionRequestHeader

__all__ = [
    "Producer", "TransactionProducer", "SendResult", "TransactionSendResult", "SendStatus", "SendFuture",
    "SendCallback", "LocalTransactionState", "TransactionListener", "ProducerStats",
]

log = logging.getLogger("rmq_client")

_GROUP_CHARS = frozenset("%|abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_GROUP_MAX_LENGTH = 255
_TIMER_KEYS = (PropertyKey.TIMER_DELIVER_MS, PropertyKey.TIMER_DELAY_MS, PropertyKey.TIMER_DELAY_SEC)
#: Bound of one send_async callback run while the producer closes.
CALLBACK_TIMEOUT_S = 10.0
#: The encoded properties of a message whose only property is its unique key, before the key's hex.
_UNIQ_KEY_PREFIX = f"{PropertyKey.UNIQ_KEY}{NAME_VALUE_SEPARATOR}".encode()
_BATCH_ITEM_OVERHEAD = 22          # TOTALSIZE, MAGIC, BODYCRC, FLAG, body length (4 each) + property length (2)


class SendStatus(enum.StrEnum):
    """Outcome of a stored send (Java ``SendStatus``): only SEND_OK means durable as the broker promises."""

    SEND_OK = "SEND_OK"
    FLUSH_DISK_TIMEOUT = "FLUSH_DISK_TIMEOUT"
    FLUSH_SLAVE_TIMEOUT = "FLUSH_SLAVE_TIMEOUT"
    SLAVE_NOT_AVAILABLE = "SLAVE_NOT_AVAILABLE"


_STATUS_BY_CODE = {
    ResponseCode.SUCCESS: SendStatus.SEND_OK,
    ResponseCode.FLUSH_DISK_TIMEOUT: SendStatus.FLUSH_DISK_TIMEOUT,
    ResponseCode.FLUSH_SLAVE_TIMEOUT: SendStatus.FLUSH_SLAVE_TIMEOUT,
    ResponseCode.SLAVE_NOT_AVAILABLE: SendStatus.SLAVE_NOT_AVAILABLE,
}


@dataclass(slots=True)
class SendResult:
    """Where a message (or batch) was stored."""

    status: SendStatus
    #: The UNIQ_KEY the message carries (comma-joined for ``send_batch``): the msgId consumers see.
    msg_id: str
    #: The broker's offset message id (store host + commitlog offset; comma-joined for a batch).
    offset_msg_id: str
    message_queue: MessageQueue
    #: Queue offset of the message (of the first message of a batch).
    queue_offset: int
    transaction_id: str | None = None
    region_id: str | None = None
    trace_on: bool = True

    @property
    def msg_ids(self) -> list[str]:
        """Per message UNIQ_KEYs (one element for a single send)."""
        return self.msg_id.split(",")

    @property
    def offset_msg_ids(self) -> list[str]:
        return self.offset_msg_id.split(",")


class LocalTransactionState(enum.Enum):
    """What a local transaction decided (Java's names, including ``UNKNOW``; ``UNKNOWN`` is an alias)."""

    COMMIT_MESSAGE = "COMMIT_MESSAGE"
    ROLLBACK_MESSAGE = "ROLLBACK_MESSAGE"
    UNKNOW = "UNKNOW"
    UNKNOWN = "UNKNOW"


_TX_TYPE = {
    LocalTransactionState.COMMIT_MESSAGE: sysflag.TRANSACTION_COMMIT_TYPE,
    LocalTransactionState.ROLLBACK_MESSAGE: sysflag.TRANSACTION_ROLLBACK_TYPE,
    LocalTransactionState.UNKNOW: sysflag.TRANSACTION_NOT_TYPE,
}


@dataclass(slots=True)
class TransactionSendResult(SendResult):
    """A half message's SendResult and what the local transaction decided."""

    local_transaction_state: LocalTransactionState = LocalTransactionState.UNKNOW


@runtime_checkable
class TransactionListener(Protocol):
    """The application side of transactional messages (Java's ``TransactionListener``).

    Either method may be a coroutine function. ``None`` or an exception counts as UNKNOW: the broker will
    ask again later (every ``transactionCheckInterval``, at most ``transactionCheckMax`` times).
    """

    def execute_local_transaction(self, msg: Message, arg: Any) -> Any: ...

    def check_local_transaction(self, msg: MessageExt) -> Any: ...


#: ``callback(result, error)`` of ``send_async``: exactly one of the two is not None. May be a coroutine function.
SendCallback = Callable[[SendResult | None, BaseException | None], Any]


@dataclass
class ProducerStats:
    """Counters of one producer (cumulative)."""

    sent: int = 0               #: messages a broker acknowledged
    failed: int = 0             #: sends that raised after their last attempt
    retries: int = 0            #: attempts after the first one
    batches: int = 0            #: SEND_BATCH_MESSAGE requests acknowledged (send_batch and automatic ones)
    auto_batched: int = 0       #: messages that travelled in an automatic batch of two or more


class SendFuture:
    """The eventual result of ``send_async``: ``await future`` returns the SendResult or raises."""

    __slots__ = ("_event", "_result", "_error")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._result: SendResult | None = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._event.is_set()

    def result(self) -> SendResult:
        """The result of a finished send (raises its error; RuntimeError while it runs)."""
        if not self._event.is_set():
            raise RuntimeError("the send has not finished")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def exception(self) -> BaseException | None:
        if not self._event.is_set():
            raise RuntimeError("the send has not finished")
        return self._error

    async def wait(self) -> SendResult:
        await self._event.wait()
        return self.result()

    def __await__(self) -> Any:
        return self.wait().__await__()

    def _set(self, result: SendResult | None, error: BaseException | None) -> None:
        self._result, self._error = result, error
        self._event.set()


class _Mode(enum.Enum):
    SYNC = 0
    ASYNC = 1
    ONEWAY = 2


@dataclass(slots=True)
class _Prepared:
    """A message (or batch) as it goes on the wire, computed once for all attempts."""

    code: int
    topic: str
    body: bytes
    sys_flag: int
    flag: int
    properties: str
    msg_id: str                                 # UNIQ_KEY, comma-joined for a batch
    batch: bool = False
    count: int = 1
    reconsume_times: str | None = None
    max_reconsume_times: str | None = None
    uniq_keys: list[str] = field(default_factory=list)


def _check_group(group: str) -> None:
    if not group:
        raise ValueError("the producer group is empty: Producer(group=...)")
    if len(group) > _GROUP_MAX_LENGTH or not set(group) <= _GROUP_CHARS:
        raise ValueError(f"the producer group {group!r} is not legal: at most 255 characters of %|a-zA-Z0-9_-")
    if group == DEFAULT_PRODUCER_GROUP:
        raise ValueError(f"the producer group can not be {DEFAULT_PRODUCER_GROUP}, please specify another one")


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _state_of(value: Any) -> LocalTransactionState:
    if value is None:
        return LocalTransactionState.UNKNOW
    if isinstance(value, LocalTransactionState):
        return value
    if isinstance(value, str):
        return LocalTransactionState(value.upper() if value.upper() != "UNKNOWN" else "UNKNOW")
    raise TypeError(f"a transaction listener must return a LocalTransactionState, got {value!r}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Producer(AsyncLifecycle):
    """Sends messages to RocketMQ-compatible brokers; ``async with`` starts and stops it.

    ``Producer(group, namesrv_addr, **options)``: options are ``ProducerConfig`` fields
    (``send_timeout_ms=5000``, ``compress_type="lz4"``, ``auto_batch=True`` ...) applied over ``config``.
    ``instance``: share an already running ``ClientInstance`` (and its client id, connections and routes)
    instead of starting one of its own.
    """

    def __init__(self, group: str | None = None, namesrv_addr: str | None = None, *,
                 config: ProducerConfig | None = None, instance: ClientInstance | None = None,
                 **options: Any) -> None:
        base = config if config is not None else ProducerConfig()
        if group is not None:
            options["group"] = group
        if namesrv_addr is not None:
            options["namesrv_addr"] = namesrv_addr
        self.config: ProducerConfig = base.updated(**options) if options else base      # type: ignore[assignment]
        _check_group(self.config.group)
        self._shared_instance = instance
        self._instance: ClientInstance | None = instance
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._running = False
        self._closing = False
        self.fault = FaultStrategy(self.config.send_latency_fault_enable, self.config.latency_max_ms,
                                   self.config.not_available_duration_ms)
        self.stats = ProducerStats()
        self._async_slots = trio.Semaphore(self.config.max_async_inflight)
        self._async_inflight = 0
        self._async_idle = trio.Event()
        self._async_idle.set()
        self._batcher: _AutoBatcher | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def group(self) -> str:
        return self.config.group

    @property
    def instance(self) -> ClientInstance:
        if self._instance is None:
            raise ClientError("the producer is not started")
        return self._instance

    @property
    def running(self) -> bool:
        return self._running and not self._closing

    def _describe(self) -> str:
        return f"producer {self.group}"

    def _begin_start(self) -> None:
        if self._running or self._stack is not None:
            raise ClientError("the producer was started already")

    async def _open(self, stack: AsyncExitStack) -> None:
        """Start the client instance (unless shared), register the group, heartbeat the known brokers."""
        if self._shared_instance is None:
            self._instance = ClientInstance(self.config.with_unique_instance_name())
            await stack.enter_async_context(self._instance)
        instance = self.instance
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        instance.register_producer(self.group, self)
        if self.config.auto_batch:
            self._batcher = _AutoBatcher(self, self._nursery)
        await instance.send_heartbeat_to_all_brokers()

    def _opened(self) -> None:
        self._running = True

    async def _shutdown(self) -> None:
        """Finish the async sends in flight (bounded by the send timeout), unregister."""
        self._closing = True
        with trio.move_on_after(self.config.send_timeout_ms / 1000.0 + 1):
            if self._batcher is not None:
                self._batcher.flush_all()
            await self._async_idle.wait()
        if self._instance is not None and self._instance.producer(self.group) is self:
            await self._instance.unregister_producer(self.group)

    def _stopping(self) -> None:
        super()._stopping()
        self._running = False

    def _check_running(self) -> None:
        if not self._running or self._closing:
            raise ClientError(f"the producer {self.group} is not running (use 'async with Producer(...)')")

    # -- public API -----------------------------------------------------------------------------

    async def send(self, msg: Message, *, queue: MessageQueue | None = None, selector: SelectorLike | None = None,
                   arg: Any = None, timeout_ms: float | None = None) -> SendResult:
        """Send and wait for the broker's answer (retries on another broker for retriable failures).

        ``queue``: send to this queue only; ``selector`` (with ``arg``): the selector picks the queue among the
        topic's write queues (ordered messages). Raises ``BrokerError``, ``NoRouteError``, ``ClientError``
        (invalid message) or a ``RemotingError`` (connection, timeout) of the last attempt.
        """
        self._check_running()
        timeout = float(self.config.send_timeout_ms if timeout_ms is None else timeout_ms)
        if queue is not None and selector is not None:
            raise ValueError("pass either queue or selector, not both")
        self._check_message(msg)
        self._set_unique_key(msg)
        return await self._send_message(msg, queue, selector, arg, _Mode.SYNC, timeout)   # type: ignore[return-value]

    async def _send_message(self, msg: Message, queue: MessageQueue | None, selector: SelectorLike | None,
                            arg: Any, mode: _Mode, timeout_ms: float) -> SendResult | None:
        if selector is not None:
            queue = await self._select_queue(msg, selector, arg)
        if mode is not _Mode.ONEWAY and self._batcher is not None and self._batchable(msg):
            return await self._batcher.submit(msg, queue, timeout_ms)
        return await self._dispatch(self._prepare(msg), queue, mode, timeout_ms)

    async def send_async(self, msg: Message, callback: SendCallback | None = None, *,
                         queue: MessageQueue | None = None, selector: SelectorLike | None = None, arg: Any = None,
                         timeout_ms: float | None = None) -> SendFuture:
        """Start a send in the producer's nursery and return its ``SendFuture`` at once.

        Waits only while ``max_async_inflight`` sends are in flight (backpressure). ``callback(result, error)``
        runs when the send finished; ``await future`` gives the result (or raises). Retries as ``send``.
        """
        self._check_running()
        if queue is not None and selector is not None:
            raise ValueError("pass either queue or selector, not both")
        self._check_message(msg)
        self._set_unique_key(msg)
        await self._async_slots.acquire()
        future = SendFuture()
        self._async_inflight += 1
        self._async_idle = trio.Event() if self._async_inflight == 1 else self._async_idle
        assert self._nursery is not None
        self._nursery.start_soon(self._run_async, msg, callback, future, queue, selector, arg, timeout_ms)
        return future

    async def _run_async(self, msg: Message, callback: SendCallback | None, future: SendFuture,
                         queue: MessageQueue | None, selector: SelectorLike | None, arg: Any,
                         timeout_ms: float | None) -> None:
        result: SendResult | None = None
        error: BaseException | None = None
        try:
            timeout = float(self.config.send_timeout_ms if timeout_ms is None else timeout_ms)
            result = await self._send_message(msg, queue, selector, arg, _Mode.ASYNC, timeout)
        except trio.Cancelled:
            error = ClientError("the producer closed before the send finished")
            raise
        except Exception as exc:                      # handed to the future / callback
            error = exc
        finally:
            future._set(result, error)
            self._async_slots.release()
            self._async_inflight -= 1
            if self._async_inflight == 0:
                self._async_idle.set()
            if callback is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(CALLBACK_TIMEOUT_S):
                    try:
                        await _maybe_await(callback(result, error))
                    except Exception:
                        log.exception("producer %s: send callback failed", self.group)

    async def send_oneway(self, msg: Message, *, queue: MessageQueue | None = None,
                          selector: SelectorLike | None = None, arg: Any = None) -> None:
        """Send without waiting for an answer: returns once the request is queued; one attempt, no result."""
        self._check_running()
        if queue is not None and selector is not None:
            raise ValueError("pass either queue or selector, not both")
        self._check_message(msg)
        self._set_unique_key(msg)
        await self._send_message(msg, queue, selector, arg, _Mode.ONEWAY, float(self.config.send_timeout_ms))

    async def send_batch(self, msgs: Iterable[Message], *, queue: MessageQueue | None = None,
                         selector: SelectorLike | None = None, arg: Any = None,
                         timeout_ms: float | None = None) -> SendResult:
        """Send messages of one topic as one SEND_BATCH_MESSAGE (stored in one queue, consecutive offsets).

        No delay level, timer, transaction or retry topic; batches are not compressed. The result's ``msg_id``
        and ``offset_msg_id`` are comma-joined per message (``result.msg_ids``); ``queue_offset`` is the first's.
        """
        self._check_running()
        if queue is not None and selector is not None:
            raise ValueError("pass either queue or selector, not both")
        timeout = float(self.config.send_timeout_ms if timeout_ms is None else timeout_ms)
        batch = list(msgs)
        prepared = self._prepare_batch(batch)
        if selector is not None:
            queue = await self._select_queue(batch[0], selector, arg)
        return await self._dispatch(prepared, queue, _Mode.SYNC, timeout)  # type: ignore[return-value]

    async def publish_queues(self, topic: str) -> list[MessageQueue]:
        """The topic's write queues (Java ``fetchPublishMessageQueues``); fetches the route if needed."""
        self._check_running()
        info = await self._publish_info(topic)
        return list(info.queues)

    # -- message preparation ----------------------------------------------------------------------

    def _check_message(self, msg: Message) -> None:
        """Java's ``Validators.checkMessage``."""
        if not isinstance(msg, Message):
            raise TypeError(f"expected an rmq_common Message, got {type(msg).__name__}")
        self._check_topic(msg.topic)
        self._check_body(msg)

    @staticmethod
    def _check_topic(topic: str) -> None:
        try:
            validate_topic(topic)
        except InvalidTopicError as exc:
            raise ClientError(f"the topic is not legal: {exc}") from None
        if is_not_allowed_send_topic(topic):
            raise ClientError(f"Sending message to topic[{topic}] is forbidden.")

    def _check_body(self, msg: Message) -> None:
        if not msg.body:
            raise ClientError("the message body length is zero")
        if len(msg.body) > self.config.max_message_size:
            raise ClientError(f"the message body size over max value, MAX: {self.config.max_message_size}")

    @staticmethod
    def _set_unique_key(msg: Message) -> None:
        if not msg.properties.get(PropertyKey.UNIQ_KEY):
            msg.properties[PropertyKey.UNIQ_KEY] = create_unique_id()

    def _batchable(self, msg: Message) -> bool:
        props = msg.properties
        return (not props.get(PropertyKey.DELAY, "0").strip("0") and not any(k in props for k in _TIMER_KEYS)
                and props.get(PropertyKey.TRAN_MSG) != "true" and not is_retry_topic(msg.topic)
                and len(msg.body) < self.config.compress_msg_body_over)

    def _prepare(self, msg: Message) -> _Prepared:
        props = msg.properties
        reconsume = max_reconsume = None
        if is_retry_topic(msg.topic) and (PropertyKey.RECONSUME_TIME in props
                                          or PropertyKey.MAX_RECONSUME_TIMES in props):
            props = dict(props)
            reconsume = props.pop(PropertyKey.RECONSUME_TIME, None)
            max_reconsume = props.pop(PropertyKey.MAX_RECONSUME_TIMES, None)
        try:
            properties = encode_properties(props).decode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ClientError(f"the message properties are not valid: {exc}") from None
        body = msg.body
        flag_bits = 0
        if len(body) >= self.config.compress_msg_body_over:
            body, flag_bits = compress(body, self.config.compress_type, self.config.compress_level)
        if props.get(PropertyKey.TRAN_MSG) == "true":
            flag_bits |= sysflag.TRANSACTION_PREPARED_TYPE
        return _Prepared(RequestCode.SEND_MESSAGE_V2, msg.topic, body, flag_bits, msg.flag, properties,
                         props.get(PropertyKey.UNIQ_KEY, ""), reconsume_times=reconsume,
                         max_reconsume_times=max_reconsume)

    def _prepare_batch(self, msgs: list[Message], *, checked: bool = False) -> _Prepared:
        """Java's ``MessageBatch.generateFromList`` + ``batch()`` checks, then the batch body."""
        if not msgs:
            raise ClientError("the batch is empty")
        first = msgs[0]
        if not checked:
            self._check_message(first)
        topic = first.topic
        # One topic for the whole batch (checked per message below), so its checks run once.
        if is_retry_topic(topic):
            raise ClientError("Retry Group is not supported for batching")
        wait = first.wait_store_msg_ok
        without_key: list[dict[str, str]] = []
        # Per message: are its properties only the unique key assigned below (encoded without the general path)?
        key_only: list[bool] = []
        max_size = self.config.max_message_size
        for msg in msgs:
            if not checked:
                if not isinstance(msg, Message):
                    raise TypeError(f"expected an rmq_common Message, got {type(msg).__name__}")
                if not 0 < len(msg.body) <= max_size:       # _check_body, inline: it runs per message
                    self._check_body(msg)
            if msg.topic != topic:
                raise ClientError("The topic of the messages in one batch should be the same")
            props = msg.properties
            if not props:
                # The common case (fresh messages): nothing to check, WAIT absent means true.
                if not wait:
                    raise ClientError("The waitStoreMsgOK of the messages in one batch should the same")
                without_key.append(props)
                key_only.append(True)
                continue
            if props.get(PropertyKey.DELAY, "0").strip("0"):
                raise ClientError("TimeDelayLevel is not supported for batching")
            if any(k in props for k in _TIMER_KEYS):
                raise ClientError("timer properties are not supported for batching")
            if props.get(PropertyKey.TRAN_MSG) == "true":
                raise ClientError("transactional messages cannot be batched")
            if msg.wait_store_msg_ok != wait:
                raise ClientError("The waitStoreMsgOK of the messages in one batch should the same")
            if not props.get(PropertyKey.UNIQ_KEY):
                without_key.append(props)
            key_only.append(False)
        # The unique keys of a batch come from one generator call (one lock, one clock reading).
        for props, key in zip(without_key, create_unique_ids(len(without_key))):
            props[PropertyKey.UNIQ_KEY] = key
        try:
            props_bytes = [_UNIQ_KEY_PREFIX + m.properties[PropertyKey.UNIQ_KEY].encode() if only
                           else encode_properties(m.properties) for m, only in zip(msgs, key_only)]
        except (TypeError, ValueError) as exc:
            raise ClientError(f"the batch cannot be encoded: {exc}") from None
        try:
            body = encode_batch_body([m.body for m in msgs], props_bytes, [m.flag for m in msgs])
        except (TypeError, ValueError) as exc:
            raise ClientError(f"the batch cannot be encoded: {exc}") from None
        if len(body) > self.config.max_message_size:
            raise ClientError(f"the batch body size {len(body)} is over max value, MAX: {self.config.max_message_size}")
        keys = [m.properties[PropertyKey.UNIQ_KEY] for m in msgs]
        batch_props = "" if wait else encode_properties({PropertyKey.WAIT: "false"}).decode()
        return _Prepared(RequestCode.SEND_BATCH_MESSAGE, first.topic, body, 0, 0, batch_props, ",".join(keys),
                         batch=True, count=len(msgs), uniq_keys=keys)

    # -- routing --------------------------------------------------------------------------------

    async def _publish_info(self, topic: str) -> TopicPublishInfo:
        info = await self.instance.find_publish_info(topic, self.config.create_topic_key,
                                                     self.config.default_topic_queue_nums)
        if not info.ok():
            raise NoRouteError(topic, "no nameserver knows it and no broker offers "
                                      f"{self.config.create_topic_key} for auto-creation")
        return info

    async def _select_queue(self, msg: Message, selector: SelectorLike, arg: Any) -> MessageQueue:
        info = await self._publish_info(msg.topic)
        return apply_selector(selector, list(info.queues), msg, arg)

    # -- sending --------------------------------------------------------------------------------

    async def _dispatch(self, prepared: _Prepared, queue: MessageQueue | None, mode: _Mode,
                        timeout_ms: float) -> SendResult | None:
        """One queue given (explicit or selected): one attempt; else ``_send_default`` with its retries."""
        try:
            if queue is not None:
                if queue.topic != prepared.topic:
                    raise ClientError(f"message's topic {prepared.topic} not equal mq's topic {queue.topic}")
                result = await self._send_once(prepared, queue, mode, timeout_ms)
            else:
                result = await self._send_default(prepared, mode, timeout_ms)
        except BaseException:
            self.stats.failed += 1
            raise
        if result is not None:
            self.stats.sent += prepared.count
            if prepared.batch:
                self.stats.batches += 1
        elif mode is _Mode.ONEWAY:
            self.stats.sent += prepared.count
        return result

    async def _send_once(self, prepared: _Prepared, mq: MessageQueue, mode: _Mode,
                         timeout_ms: float) -> SendResult | None:
        if not self.instance.master_addr(mq.broker_name):
            await self._publish_info(prepared.topic)
        return await self._send_kernel(prepared, mq, mode, timeout_ms)

    async def _send_default(self, prepared: _Prepared, mode: _Mode, timeout_ms: float) -> SendResult | None:
        """``sendDefaultImpl``: choose a queue, send, retry on another broker for retriable failures."""
        begin = trio.current_time()
        info = await self._publish_info(prepared.topic)
        times_total = 1 + self.config.retry_times_when_send_failed if mode is not _Mode.ONEWAY else 1
        last_broker: str | None = None
        result: SendResult | None = None
        last_error: BaseException | None = None
        attempts: list[str] = []
        for times in range(times_total):
            started = trio.current_time()
            spent = (started - begin) * 1000.0
            if spent >= timeout_ms:
                last_error = RemotingTimeoutError(f"sendDefaultImpl call timeout: {spent:.0f} ms spent of "
                                                  f"{timeout_ms:g} ms after {times} attempt(s)")
                break
            mq = self.fault.select(info, last_broker)
            last_broker = mq.broker_name
            attempts.append(mq.broker_name)
            if times > 0:
                self.stats.retries += 1
            try:
                result = await self._send_kernel(prepared, mq, mode, timeout_ms - spent)
            except RemotingError as exc:
                self.fault.update_fault_item(mq.broker_name, (trio.current_time() - started) * 1000.0, True)
                log.info("producer %s: send to %s failed (%s)%s", self.group, mq, exc,
                         ", trying another broker" if times + 1 < times_total else "")
                last_error = exc
                continue
            except BrokerError as exc:
                self.fault.update_fault_item(mq.broker_name, (trio.current_time() - started) * 1000.0, True)
                last_error = exc
                if exc.code in self.config.retry_response_codes:
                    log.info("producer %s: %s refused the send (%s)%s", self.group, mq, exc,
                             ", trying another broker" if times + 1 < times_total else "")
                    continue
                raise
            except ClientError as exc:               # e.g. the broker of the chosen queue has no address any more
                self.fault.update_fault_item(mq.broker_name, (trio.current_time() - started) * 1000.0, True)
                last_error = exc
                continue
            self.fault.update_fault_item(mq.broker_name, (trio.current_time() - started) * 1000.0, False)
            if (mode is _Mode.SYNC and result is not None and result.status is not SendStatus.SEND_OK
                    and self.config.retry_another_broker_when_not_store_ok and times + 1 < times_total):
                continue
            return result
        if result is not None:
            return result
        assert last_error is not None
        last_error.add_note(f"rmq_client: send of {prepared.topic} failed after {len(attempts)} attempt(s) "
                            f"to {attempts} in {(trio.current_time() - begin) * 1000.0:.0f} ms")
        raise last_error

    async def _send_kernel(self, prepared: _Prepared, mq: MessageQueue, mode: _Mode,
                           timeout_ms: float) -> SendResult | None:
        """``sendKernelImpl`` + ``MQClientAPIImpl.sendMessage``: one request to the queue's master."""
        instance = self.instance
        addr = instance.master_addr(mq.broker_name)
        if addr is None:
            raise ClientError(f"The broker[{mq.broker_name}] not exist")
        ext = {"a": self.group, "b": prepared.topic, "c": self.config.create_topic_key,
               "d": str(self.config.default_topic_queue_nums), "e": str(mq.queue_id), "f": str(prepared.sys_flag),
               "g": str(_now_ms()), "h": str(prepared.flag), "i": prepared.properties,
               "j": prepared.reconsume_times or "0", "k": "false", "m": "true" if prepared.batch else "false"}
        if prepared.max_reconsume_times is not None:
            ext["l"] = prepared.max_reconsume_times
        cmd = instance.request(prepared.code, ext, prepared.body)
        if mode is _Mode.ONEWAY:
            await instance.invoke_oneway(addr, cmd, timeout_ms)
            return None
        resp = await instance.invoke(addr, cmd, timeout_ms)
        status = _STATUS_BY_CODE.get(resp.code)
        if status is None:
            raise BrokerError(resp.code, resp.remark, addr)
        rext = resp.ext_fields
        try:
            queue_id = int(rext.get("queueId", mq.queue_id))
            queue_offset = int(rext.get("queueOffset", -1))
        except ValueError:
            raise BrokerError(resp.code, f"malformed send response header {rext!r}", addr) from None
        return SendResult(status, prepared.msg_id, rext.get("msgId", ""),
                          MessageQueue(prepared.topic, mq.broker_name, queue_id), queue_offset,
                          rext.get("transactionId"), rext.get("MSG_REGION"), rext.get("TRACE_ON", "true") != "false")

    # -- transactions (used by TransactionProducer) ---------------------------------------------------

    async def check_transaction_state(self, conn: Connection, msg: MessageExt,
                                      header: CheckTransactionStateRequestHeader) -> None:
        """A plain producer has no transaction listener: the check is ignored (logged)."""
        log.warning("producer %s: CHECK_TRANSACTION_STATE for %s ignored: not a TransactionProducer", self.group,
                    header.transaction_id)

    def __repr__(self) -> str:
        state = "running" if self.running else ("closing" if self._closing else "stopped")
        return f"<{type(self).__name__} {self.group} {state}>"


class _Batch:
    __slots__ = ("key", "queue", "msgs", "nbytes", "done", "results", "error", "closed", "timeout_ms")

    def __init__(self, key: tuple[Any, ...], queue: MessageQueue | None, timeout_ms: float) -> None:
        self.key = key
        self.queue = queue
        self.msgs: list[Message] = []
        self.nbytes = 0
        self.done = trio.Event()
        self.results: list[SendResult] = []
        self.error: BaseException | None = None
        self.closed = False
        self.timeout_ms = timeout_ms


class _AutoBatcher:
    """Coalesces concurrent sends into SEND_BATCH_MESSAGE requests (see the module docstring)."""

    def __init__(self, producer: Producer, nursery: trio.Nursery) -> None:
        self.producer = producer
        self.nursery = nursery
        cfg = producer.config
        self.linger_s = cfg.batch_linger_ms / 1000.0
        self.max_bytes = cfg.batch_max_bytes
        self.max_messages = cfg.batch_max_messages
        self._open: dict[tuple[Any, ...], _Batch] = {}

    async def submit(self, msg: Message, queue: MessageQueue | None, timeout_ms: float) -> SendResult:
        size = _BATCH_ITEM_OVERHEAD + len(msg.body) + len(encode_properties(msg.properties))
        if size >= self.max_bytes:                   # would fill a batch alone: send it as it is
            return await self.producer._dispatch(self.producer._prepare(msg), queue, _Mode.SYNC,
                                                 timeout_ms)                                    # type: ignore
        key = (msg.topic, queue, msg.wait_store_msg_ok)
        batch = self._open.get(key)
        if batch is not None and batch.nbytes + size > self.max_bytes:
            self._close(batch)
            batch = None
        if batch is None:
            batch = self._open[key] = _Batch(key, queue, timeout_ms)
            self.nursery.start_soon(self._linger, batch)
        index = len(batch.msgs)
        batch.msgs.append(msg)
        batch.nbytes += size
        batch.timeout_ms = min(batch.timeout_ms, timeout_ms)
        if batch.nbytes >= self.max_bytes or len(batch.msgs) >= self.max_messages:
            self._close(batch)
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.results[index]

    def flush_all(self) -> None:
        for batch in list(self._open.values()):
            self._close(batch)

    def _close(self, batch: _Batch) -> None:
        if batch.closed:
            return
        batch.closed = True
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
        self.nursery.start_soon(self._flush, batch)

    async def _linger(self, batch: _Batch) -> None:
        if self.linger_s > 0:
            await trio.sleep(self.linger_s)
        else:
            await trio.lowlevel.checkpoint()
        self._close(batch)

    async def _flush(self, batch: _Batch) -> None:
        producer = self.producer
        try:
            if len(batch.msgs) == 1:
                result = await producer._dispatch(producer._prepare(batch.msgs[0]), batch.queue, _Mode.SYNC,
                                                  batch.timeout_ms)
                assert result is not None
                batch.results = [result]
            else:
                prepared = producer._prepare_batch(batch.msgs, checked=True)
                result = await producer._dispatch(prepared, batch.queue, _Mode.SYNC, batch.timeout_ms)
                assert result is not None
                producer.stats.auto_batched += len(batch.msgs)
                batch.results = _split_batch_result(result, prepared.uniq_keys)
        except trio.Cancelled:
            batch.error = ClientError("the producer closed before the batch was sent")
            raise
        except Exception as exc:
            batch.error = exc
        finally:
            batch.done.set()


def _split_batch_result(result: SendResult, keys: Sequence[str]) -> list[SendResult]:
    """Per-message results of a batch: own UNIQ_KEY and offset id, consecutive queue offsets."""
    offset_ids = result.offset_msg_ids
    out = []
    for i, key in enumerate(keys):
        out.append(SendResult(result.status, key, offset_ids[min(i, len(offset_ids) - 1)], result.message_queue,
                              result.queue_offset + i, result.transaction_id, result.region_id, result.trace_on))
    return out


class TransactionProducer(Producer):
    """A producer of transactional messages; ``listener`` decides commit or rollback (see the module docstring)."""

    def __init__(self, group: str | None = None, listener: TransactionListener | None = None,
                 namesrv_addr: str | None = None, **options: Any) -> None:
        if listener is None:
            raise ValueError("a TransactionProducer needs a listener with execute_local_transaction and "
                             "check_local_transaction")
        super().__init__(group, namesrv_addr, **options)
        self.listener = listener
        self._checks = trio.CapacityLimiter(self.config.check_concurrency)

    async def send_message_in_transaction(self, msg: Message, arg: Any = None) -> TransactionSendResult:
        """Send the half message, run ``execute_local_transaction(msg, arg)``, end the transaction."""
        sent = await self.send_half(msg)
        state = LocalTransactionState.UNKNOW
        local_error: BaseException | None = None
        if sent.status is SendStatus.SEND_OK:
            try:
                state = _state_of(await _maybe_await(self.listener.execute_local_transaction(msg, arg)))
            except Exception as exc:
                log.warning("producer %s: local transaction of %s failed: %r", self.group, sent.msg_id, exc)
                local_error = exc
        else:
            state = LocalTransactionState.ROLLBACK_MESSAGE
        try:
            await self.end_transaction(sent, state, local_error)
        except Exception as exc:
            log.warning("producer %s: END_TRANSACTION of %s failed (the broker will check back): %r", self.group,
                        sent.msg_id, exc)
        return TransactionSendResult(sent.status, sent.msg_id, sent.offset_msg_id, sent.message_queue,
                                     sent.queue_offset, sent.transaction_id or sent.msg_id, sent.region_id,
                                     sent.trace_on, local_transaction_state=state)

    async def send_half(self, msg: Message) -> SendResult:
        """The first step alone: the half (prepared) message, sent with retries. Its delay level is dropped."""
        self._check_running()
        self._check_message(msg)
        msg.properties.pop(PropertyKey.DELAY, None)
        msg.properties[PropertyKey.TRAN_MSG] = "true"
        msg.properties[PropertyKey.PGROUP] = self.group
        self._set_unique_key(msg)
        result = await self._dispatch(self._prepare(msg), None, _Mode.SYNC, float(self.config.send_timeout_ms))
        assert result is not None
        return result

    async def end_transaction(self, sent: SendResult, state: LocalTransactionState,
                              local_error: BaseException | None = None) -> None:
        """The last step alone: END_TRANSACTION (oneway) for the half message ``sent``."""
        addr = self.instance.master_addr(sent.message_queue.broker_name)
        if addr is None:
            raise ClientError(f"The broker[{sent.message_queue.broker_name}] not exist")
        commit_log_offset = decode_offset_msg_id(sent.offset_msg_ids[0] if sent.offset_msg_id else sent.msg_id)[2]
        header = EndTransactionRequestHeader(
            producer_group=self.group, tran_state_table_offset=sent.queue_offset,
            commit_log_offset=commit_log_offset, commit_or_rollback=_TX_TYPE[_state_of(state)],
            from_transaction_check=False, msg_id=sent.msg_id, transaction_id=sent.transaction_id or sent.msg_id)
        cmd = self.instance.request(RequestCode.END_TRANSACTION, header.to_ext())
        if local_error is not None:
            cmd.remark = f"executeLocalTransactionBranch exception: {local_error!r}"
        await self.instance.invoke_oneway(addr, cmd, self.config.send_timeout_ms)

    async def check_transaction_state(self, conn: Connection, msg: MessageExt,
                                      header: CheckTransactionStateRequestHeader) -> None:
        """Answer a broker's CHECK_TRANSACTION_STATE: ask the listener, send END_TRANSACTION on ``conn``."""
        remark = None
        async with self._checks:
            try:
                state = _state_of(await _maybe_await(self.listener.check_local_transaction(msg)))
            except Exception as exc:
                log.warning("producer %s: check_local_transaction of %s failed: %r", self.group,
                            header.transaction_id, exc)
                state = LocalTransactionState.UNKNOW
                remark = f"checkLocalTransactionState Exception: {exc!r}"
        uniq = msg.properties.get(PropertyKey.UNIQ_KEY) or msg.msg_id
        end = EndTransactionRequestHeader(
            producer_group=self.group, tran_state_table_offset=header.tran_state_table_offset,
            commit_log_offset=header.commit_log_offset, commit_or_rollback=_TX_TYPE[state],
            from_transaction_check=True, msg_id=uniq, transaction_id=header.transaction_id)
        cmd = self.instance.request(RequestCode.END_TRANSACTION, end.to_ext())
        cmd.remark = remark
        try:
            await conn.send_oneway(cmd, self.config.send_timeout_ms)
        except RemotingError as exc:
            log.warning("producer %s: answering the check of %s to %s failed: %s", self.group,
                        header.transaction_id, conn.remote_addr, exc)

