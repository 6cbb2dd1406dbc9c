"""A blocking facade over the trio-native client, for plain scripts and threaded programs (no asyncio).

    from rmq_client.blocking import Producer
    from rmq_client import make_message

    with Producer("PG_orders", namesrv_addr="127.0.0.1:9876") as producer:
        result = producer.send(make_message("Orders", b"hello"))
        future = producer.send_async(make_message("Orders", b"later"), callback=lambda r, e: print(r, e))
        future.result(timeout=5)

Each facade object runs a trio loop (``trio.run``) in a background thread of its own and calls into it with
``trio.from_thread.run`` and the loop's token; every method may be called from any thread except that loop's
own. The underlying trio object is ``.aio`` (share its ``instance`` with other trio code running in the same
loop through ``.portal``).

* ``send_async`` returns a ``concurrent.futures.Future``; its callback ``callback(result, error)`` runs on the
  facade's callback thread (one thread, in completion order, as Java's callback executor), never on the loop.
* ``TransactionProducer(group, listener, ...)``: ``send_message_in_transaction`` runs the listener's
  ``execute_local_transaction`` in the calling thread (as Java does); ``check_local_transaction`` for the
  broker's check-backs runs in a worker thread (``trio.to_thread``), so a slow check never stalls sends.
* ``shutdown()`` (or leaving the ``with``) finishes the async sends in flight, unregisters from the brokers,
  stops the loop and joins both threads. A facade is also shut down at interpreter exit.

Consumers:

    from rmq_client.blocking import PushConsumer, LitePullConsumer

    consumer = PushConsumer("CG_orders", namesrv_addr="127.0.0.1:9876")
    consumer.subscribe("Orders", "created || paid")
    consumer.register_message_listener(lambda msgs, context: print(msgs))   # runs in a worker thread
    consumer.start()
    ...
    consumer.shutdown()

    with LitePullConsumer("CG_etl", namesrv_addr=addr) as lite:
        lite.subscribe("Orders")
        msgs = lite.poll(timeout_ms=1000)

* ``PushConsumer``: the listener (concurrent or orderly) is a plain function called in worker threads, at
  most ``consume_thread_max`` at a time (``trio.to_thread`` with a limiter of that size); its return value and
  exceptions count as for the trio consumer. Shutdown lets running calls finish (bounded by
  ``await_termination_ms_when_shutdown``) before committing offsets.
* ``LitePullConsumer``: every method of the trio consumer, blocking (``poll``, ``poll_batch``, ``seek``,
  ``commit_sync`` ...).
* ``Admin``: every coroutine method of ``rmq_client.Admin``, blocking.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import functools
import logging
import queue
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import trio

from rmq_client import admin as _admin
from rmq_client import lite_pull_consumer as _lite
from rmq_client import producer as _aio
from rmq_client import push_consumer as _push
from rmq_client.config import ProducerConfig
from rmq_client.consumer_config import LitePullConsumerConfig, PushConsumerConfig
from rmq_client.errors import ClientError
from rmq_client.instance import ClientInstance
from rmq_client.message import Message, MessageExt
from rmq_client.producer import LocalTransactionState, SendResult, TransactionSendResult
from rmq_client.routing import MessageQueue, SelectorLike

__all__ = ["Producer", "TransactionProducer", "PushConsumer", "LitePullConsumer", "Admin", "Portal"]

log = logging.getLogger("rmq_client")

T = TypeVar("T")

#: How long ``shutdown`` waits for the loop thread after asking it to stop.
JOIN_TIMEOUT_S = 30.0

_live: weakref.WeakSet[_Facade] = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    for facade in list(_live):
        try:
            facade.shutdown()
        except Exception:                  # interpreter exit: nothing left to report to
            pass


class Portal:
    """A trio loop in a background thread, and calls into it from other threads."""

    def __init__(self, name: str = "rmq-client") -> None:
        self._name = name
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            trio.run(self._amain)
        except BaseException as exc:       # reported to start() or logged
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.error("%s: the trio loop ended with %r", self._name, exc)

    async def _amain(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._token is not None

    def _check_thread(self) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking rmq_client calls cannot be made from the client's own trio thread")
        if not self.alive:
            raise ClientError("the client's trio loop is not running (shut down?)")

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await afn(*args)`` in the loop and return its result (exceptions propagate)."""
        self._check_thread()
        return trio.from_thread.run(afn, *args, trio_token=self._token)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_thread()
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """End the loop (cancelling whatever still runs in it) and join its thread."""
        if self._token is not None and self._thread.is_alive() and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class _CallbackThread:
    """Runs ``send_async`` callbacks one at a time, in completion order, off the trio loop."""

    _STOP = object()

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.put((fn, args))

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:
                log.exception("rmq_client: send_async callback failed")

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        self._queue.put(self._STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class _Facade:
    """Owns a Portal and keeps one trio object entered (``async with``) inside it until shutdown."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.portal = Portal(name)
        self._close: trio.Event | None = None
        self._closed: trio.Event | None = None
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()

    def _make(self) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        """Start the loop thread and the client inside it (connects lazily, on first use)."""
        with self._lock:
            if self._started:
                raise ClientError(f"{self._name} was started already")
            self._started = True
            self.portal.start()
            try:
                self.portal.run(self.portal.nursery.start, self._hold)
            except BaseException:
                self.portal.stop()
                self._stopped = True
                raise
            _live.add(self)

    async def _hold(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._close = trio.Event()
        self._closed = trio.Event()
        try:
            async with self._make():
                task_status.started()
                await self._close.wait()
        finally:
            self._closed.set()

    async def _request_close(self) -> None:
        assert self._close is not None and self._closed is not None
        self._close.set()
        await self._closed.wait()

    def shutdown(self) -> None:
        """Close the client (bounded), stop the loop, join the threads; idempotent."""
        with self._lock:
            if self._stopped or not self._started:
                self._stopped = True
                return
            self._stopped = True
            _live.discard(self)
            try:
                if self.portal.alive:
                    self.portal.run(self._request_close)
            except Exception as exc:
                log.warning("%s: closing failed: %r", self._name, exc)
            finally:
                self.portal.stop()
                self._after_stop()

    def _after_stop(self) -> None:
        pass

    close = shutdown

    def __enter__(self: T) -> T:
        self.start()          # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class Producer(_Facade):
    """Blocking ``rmq_client.Producer``: same arguments, same results, calls block until done."""

    def __init__(self, group: str | None = None, namesrv_addr: str | None = None, *,
                 config: ProducerConfig | None = None, **options: Any) -> None:
        self.aio = self._build(group, namesrv_addr, config, options)
        super().__init__(f"rmq-producer-{self.aio.group}")
        self._callbacks: _CallbackThread | None = None

    def _build(self, group: str | None, namesrv_addr: str | None, config: ProducerConfig | None,
               options: dict[str, Any]) -> _aio.Producer:
        return _aio.Producer(group, namesrv_addr, config=config, **options)

    def _make(self) -> Any:
        return self.aio

    @property
    def config(self) -> ProducerConfig:
        return self.aio.config

    @property
    def instance(self) -> ClientInstance:
        return self.aio.instance

    @property
    def stats(self) -> _aio.ProducerStats:
        return self.aio.stats

    def send(self, msg: Message, *, queue: MessageQueue | None = None, selector: SelectorLike | None = None,
             arg: Any = None, timeout_ms: float | None = None) -> SendResult:
        return self.portal.run(functools.partial(self.aio.send, msg, queue=queue, selector=selector, arg=arg,
                                                 timeout_ms=timeout_ms))

    def send_async(self, msg: Message, callback: Callable[[SendResult | None, BaseException | None], Any] | None = None,
                   *, queue: MessageQueue | None = None, selector: SelectorLike | None = None, arg: Any = None,
                   timeout_ms: float | None = None) -> concurrent.futures.Future[SendResult]:
        """Start a send; returns a Future at once (blocks only under backpressure). The callback runs on the
        callback thread with ``(result, error)``."""
        future: concurrent.futures.Future[SendResult] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        if callback is not None:
            callbacks = self._callback_thread()

            def relay(done: concurrent.futures.Future[SendResult]) -> None:
                error = done.exception()
                callbacks.submit(callback, None if error is not None else done.result(), error)
            future.add_done_callback(relay)

        def complete(result: SendResult | None, error: BaseException | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)              # type: ignore[arg-type]

        self.portal.run(functools.partial(self.aio.send_async, msg, complete, queue=queue, selector=selector,
                                          arg=arg, timeout_ms=timeout_ms))
        return future

    def send_oneway(self, msg: Message, *, queue: MessageQueue | None = None, selector: SelectorLike | None = None,
                    arg: Any = None) -> None:
        self.portal.run(functools.partial(self.aio.send_oneway, msg, queue=queue, selector=selector, arg=arg))

    def send_batch(self, msgs: Iterable[Message], *, queue: MessageQueue | None = None,
                   selector: SelectorLike | None = None, arg: Any = None,
                   timeout_ms: float | None = None) -> SendResult:
        return self.portal.run(functools.partial(self.aio.send_batch, list(msgs), queue=queue, selector=selector,
                                                 arg=arg, timeout_ms=timeout_ms))

    def publish_queues(self, topic: str) -> list[MessageQueue]:
        return self.portal.run(self.aio.publish_queues, topic)

    def _callback_thread(self) -> _CallbackThread:
        with self._lock:
            if self._callbacks is None:
                self._callbacks = _CallbackThread(f"{self._name}-callbacks")
            return self._callbacks

    def _after_stop(self) -> None:
        if self._callbacks is not None:
            self._callbacks.stop()


class _ThreadedChecks:
    """The trio producer's listener: check-backs run the user's (blocking) method in a worker thread."""

    def __init__(self, listener: Any) -> None:
        self.listener = listener

    async def execute_local_transaction(self, msg: Message, arg: Any) -> Any:
        return await trio.to_thread.run_sync(self.listener.execute_local_transaction, msg, arg)

    async def check_local_transaction(self, msg: MessageExt) -> Any:
        return await trio.to_thread.run_sync(self.listener.check_local_transaction, msg)


class TransactionProducer(Producer):
    """Blocking ``rmq_client.TransactionProducer``; the listener's methods are plain (blocking) functions."""

    def __init__(self, group: str | None = None, listener: Any = None, namesrv_addr: str | None = None, *,
                 config: ProducerConfig | None = None, **options: Any) -> None:
        if listener is None:
            raise ValueError("a TransactionProducer needs a listener with execute_local_transaction and "
                             "check_local_transaction")
        self.listener = listener
        super().__init__(group, namesrv_addr, config=config, **options)

    def _build(self, group: str | None, namesrv_addr: str | None, config: ProducerConfig | None,
               options: dict[str, Any]) -> _aio.Producer:
        return _aio.TransactionProducer(group, _ThreadedChecks(self.listener), namesrv_addr, config=config,
                                        **options)

    def send_message_in_transaction(self, msg: Message, arg: Any = None) -> TransactionSendResult:
        """Half message, then ``execute_local_transaction(msg, arg)`` in this thread, then END_TRANSACTION."""
        aio = self.aio
        assert isinstance(aio, _aio.TransactionProducer)
        sent = self.portal.run(aio.send_half, msg)
        state = LocalTransactionState.UNKNOW
        local_error: BaseException | None = None
        if sent.status is _aio.SendStatus.SEND_OK:
            try:
                state = _aio._state_of(self.listener.execute_local_transaction(msg, arg))
            except Exception as exc:
                log.warning("producer %s: local transaction of %s failed: %r", aio.group, sent.msg_id, exc)
                local_error = exc
        else:
            state = LocalTransactionState.ROLLBACK_MESSAGE
        try:
            self.portal.run(aio.end_transaction, sent, state, local_error)
        except Exception as exc:
            log.warning("producer %s: END_TRANSACTION of %s failed (the broker will check back): %r", aio.group,
                        sent.msg_id, exc)
        return TransactionSendResult(sent.status, sent.msg_id, sent.offset_msg_id, sent.message_queue,
                                     sent.queue_offset, sent.transaction_id or sent.msg_id, sent.region_id,
                                     sent.trace_on, local_transaction_state=state)


class PushConsumer(_Facade):
    """Blocking ``rmq_client.PushConsumer``: the listener runs in worker threads; ``start``/``shutdown`` block."""

    def __init__(self, group: str | None = None, namesrv_addr: str | None = None, *,
                 config: PushConsumerConfig | None = None, **options: Any) -> None:
        self.aio = _push.PushConsumer(group, namesrv_addr, config=config, **options)
        super().__init__(f"rmq-consumer-{self.aio.group}")
        self._limiter: trio.CapacityLimiter | None = None

    def _make(self) -> Any:
        return self.aio

    @property
    def config(self) -> PushConsumerConfig:
        return self.aio.config

    @property
    def stats(self) -> _push.PushConsumerStats:
        return self.aio.stats

    def subscribe(self, topic: str, expression: str = "*", *, expression_type: str = "TAG") -> None:
        if self._started and self.portal.alive:
            self.portal.run_sync(functools.partial(self.aio.subscribe, topic, expression,
                                                   expression_type=expression_type))
        else:
            self.aio.subscribe(topic, expression, expression_type=expression_type)

    def unsubscribe(self, topic: str) -> None:
        if self._started and self.portal.alive:
            self.portal.run_sync(self.aio.unsubscribe, topic)
        else:
            self.aio.unsubscribe(topic)

    def register_message_listener(self, listener: Any, *, orderly: bool = False) -> None:
        """``listener(msgs, context)`` (or an object with ``consume_message``), called in a worker thread."""
        fn = _push._listener_function(listener)
        limit = self.aio.config.consume_thread_max

        async def in_thread(msgs: list[MessageExt], context: Any) -> Any:
            if self._limiter is None:
                self._limiter = trio.CapacityLimiter(limit)
            return await trio.to_thread.run_sync(fn, msgs, context, limiter=self._limiter)

        self.aio.register_message_listener(in_thread, orderly=orderly)

    def register_concurrent_listener(self, listener: Any) -> None:
        self.register_message_listener(listener, orderly=False)

    def register_orderly_listener(self, listener: Any) -> None:
        self.register_message_listener(listener, orderly=True)

    def suspend(self) -> None:
        self.portal.run_sync(self.aio.suspend)

    def resume(self) -> None:
        self.portal.run_sync(self.aio.resume)

    def assigned_queues(self) -> list[MessageQueue]:
        return self.portal.run_sync(self.aio.assigned_queues)

    def fetch_subscribe_message_queues(self, topic: str) -> list[MessageQueue]:
        return self.portal.run(self.aio.fetch_subscribe_message_queues, topic)

    def persist_consumer_offsets(self) -> None:
        self.portal.run(self.aio.persist_consumer_offsets)


class LitePullConsumer(_Facade):
    """Blocking ``rmq_client.LitePullConsumer``."""

    def __init__(self, group: str | None = None, namesrv_addr: str | None = None, *,
                 config: LitePullConsumerConfig | None = None, **options: Any) -> None:
        self.aio = _lite.LitePullConsumer(group, namesrv_addr, config=config, **options)
        super().__init__(f"rmq-lite-consumer-{self.aio.group}")

    def _make(self) -> Any:
        return self.aio

    @property
    def config(self) -> LitePullConsumerConfig:
        return self.aio.config

    @property
    def stats(self) -> _lite.LitePullConsumerStats:
        return self.aio.stats

    def _call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        if self._started and self.portal.alive:
            return self.portal.run_sync(fn, *args)
        return fn(*args)

    def subscribe(self, topic: str, expression: str = "*", *, expression_type: str = "TAG") -> None:
        self._call_sync(functools.partial(self.aio.subscribe, topic, expression, expression_type=expression_type))

    def unsubscribe(self, topic: str) -> None:
        self._call_sync(self.aio.unsubscribe, topic)

    def assign(self, queues: Iterable[MessageQueue]) -> None:
        self._call_sync(self.aio.assign, list(queues))

    def set_sub_expression_for_assign(self, topic: str, expression: str, *, expression_type: str = "TAG") -> None:
        self._call_sync(functools.partial(self.aio.set_sub_expression_for_assign, topic, expression,
                                          expression_type=expression_type))

    def assignment(self) -> set[MessageQueue]:
        return self.portal.run_sync(self.aio.assignment)

    def poll(self, timeout_ms: float | None = None) -> list[MessageExt]:
        return self.portal.run(self.aio.poll, timeout_ms)

    def poll_batch(self, timeout_ms: float | None = None) -> _lite.PolledBatch | None:
        return self.portal.run(self.aio.poll_batch, timeout_ms)

    def seek(self, mq: MessageQueue, offset: int) -> None:
        self.portal.run(self.aio.seek, mq, offset)

    def seek_to_begin(self, mq: MessageQueue) -> None:
        self.portal.run(self.aio.seek_to_begin, mq)

    def seek_to_end(self, mq: MessageQueue) -> None:
        self.portal.run(self.aio.seek_to_end, mq)

    def offset_for_timestamp(self, mq: MessageQueue, timestamp_ms: int) -> int:
        return self.portal.run(self.aio.offset_for_timestamp, mq, timestamp_ms)

    def seek_by_timestamp(self, mq: MessageQueue, timestamp_ms: int) -> int:
        return self.portal.run(self.aio.seek_by_timestamp, mq, timestamp_ms)

    def pause(self, queues: Iterable[MessageQueue]) -> None:
        self.portal.run_sync(self.aio.pause, list(queues))

    def resume(self, queues: Iterable[MessageQueue]) -> None:
        self.portal.run_sync(self.aio.resume, list(queues))

    def commit(self, offsets: dict[MessageQueue, int] | None = None) -> None:
        self.portal.run_sync(self.aio.commit, offsets)

    def commit_sync(self, offsets: dict[MessageQueue, int] | None = None) -> None:
        self.portal.run(self.aio.commit_sync, offsets)

    def committed(self, mq: MessageQueue) -> int:
        return self.portal.run(self.aio.committed, mq)

    def fetch_message_queues(self, topic: str) -> list[MessageQueue]:
        return self.portal.run(self.aio.fetch_message_queues, topic)


class Admin(_Facade):
    """Blocking ``rmq_client.Admin``: each of its coroutine methods, called and waited for."""

    def __init__(self, namesrv_addr: str | None = None, **options: Any) -> None:
        self.aio = _admin.Admin(namesrv_addr, **options)
        super().__init__("rmq-admin")

    def _make(self) -> Any:
        return self.aio

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("aio", "portal"):
            raise AttributeError(name)
        attr = getattr(self.aio, name)
        if not callable(attr) or name in ("start", "aclose"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.portal.run(functools.partial(attr, *args, **kwargs))
        call.__name__ = name
        call.__doc__ = attr.__doc__
        return call
