"""What the push and the lite pull consumer share: lifecycle, subscriptions, offsets, the rebalance loop.

``ConsumerBase`` implements ``instance.ConsumerHooks`` (heartbeat ConsumerData, subscribed topics, route and
membership notifications) and runs, in its own nursery:

* the **rebalance loop** — at start, every ``rebalance_interval_ms`` (20 s) and at once when a broker sends
  NOTIFY_CONSUMER_IDS_CHANGED or a route changes; a round that could not settle a topic (no readable queue
  yet — the retry topic of a new group before its broker registered it —, a queue whose broker lock the
  previous owner still holds, a start offset the broker did not answer) is repeated after 1, 2, 4 ... s
  instead of a full period;
* the **offset persistence loop** — every ``persist_consumer_offset_interval_ms`` (5 s) the offsets of the
  assigned queues go to the brokers (clustering) or the local file (broadcasting).

Start (Java ``DefaultMQPushConsumerImpl.start``): a client instance of its own unless one is shared (the
instance name ``DEFAULT`` becomes ``pid#nanotime`` for clustering consumers only, so a broadcasting consumer
keeps a stable client id and finds its offsets file again), the offset store (loaded from the file when
broadcasting), registration with the instance, the routes of the subscribed topics, CHECK_CLIENT_CONFIG for
SQL92 subscriptions, a heartbeat to every broker, then the first rebalance. Shutdown stops pulling, lets the
subclass drain its consumption, commits the offsets of every assigned queue, unregisters the group and closes.
"""
from __future__ import annotations

import logging
from collections.abc import Collection
from contextlib import AsyncExitStack
from typing import Any

import trio

from rmq_client import consumer_api as api
from rmq_client.consumer_config import ConsumerConfig, check_consumer_group
from rmq_client.errors import ClientError
from rmq_client.instance import ClientInstance, ConsumeType, MessageModel, consumer_data, subscription_data
from rmq_client.lifecycle import AsyncLifecycle
from rmq_client.offset_store import LocalFileOffsetStore, OffsetStore, RemoteBrokerOffsetStore
from rmq_client.rebalance import RebalanceImpl
from rmq_client.routing import MessageQueue

__all__ = ["ConsumerBase", "ExpressionType"]

log = logging.getLogger("rmq_client")

_MISSING_ROUTE_FIRST_RETRY_S = 1.0


class ExpressionType:
    TAG = "TAG"
    SQL92 = "SQL92"


class ConsumerBase(AsyncLifecycle):
    """Lifecycle and the ConsumerHooks of a consumer (see the module docstring)."""

    consume_type: ConsumeType = ConsumeType.CONSUME_PASSIVELY
    config_class: type[ConsumerConfig] = ConsumerConfig

    def __init__(self, group: str | None = None, namesrv_addr: str | None = None, *,
                 config: ConsumerConfig | None = None, instance: ClientInstance | None = None,
                 **options: Any) -> None:
        base = config if config is not None else self.config_class()
        if group is not None:
            options["group"] = group
        if namesrv_addr is not None:
            options["namesrv_addr"] = namesrv_addr
        self.config = base.updated(**options) if options else base      # type: ignore[assignment]
        check_consumer_group(self.config.group)
        self._shared_instance = instance
        self._instance: ClientInstance | None = instance
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._loops = trio.CancelScope()
        self._running = False
        self._closing = False
        #: topic → SubscriptionData in wire form (Java's subscriptionInner), retry topic included.
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self._offset_store: OffsetStore | None = None
        self.rebalance: RebalanceImpl = self._make_rebalance()
        self._rebalance_wake = trio.Event()
        self.rebalance_count = 0

    # -- to override ------------------------------------------------------------------------------

    def _make_rebalance(self) -> RebalanceImpl:
        return RebalanceImpl(self)

    def _prepare_start(self) -> None:
        """Checks and subscriptions to add before anything starts."""

    async def _start_services(self, nursery: trio.Nursery) -> None:
        """Consume services, lock renewal: whatever runs beside the loops."""

    async def _stop_services(self) -> None:
        """Stop pulling and consuming (bounded); offsets are persisted right after."""

    async def _after_persist(self) -> None:
        """After the final commit, before unregistering (orderly: release the broker locks)."""

    def is_order(self) -> bool:
        return False

    # -- properties -------------------------------------------------------------------------------

    @property
    def group(self) -> str:
        return self.config.group

    @property
    def instance(self) -> ClientInstance:
        if self._instance is None:
            raise ClientError("the consumer is not started")
        return self._instance

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise ClientError("the consumer is not started")
        return self._nursery

    @property
    def offset_store(self) -> OffsetStore:
        if self._offset_store is None:
            raise ClientError("the consumer is not started")
        return self._offset_store

    @property
    def running(self) -> bool:
        return self._running and not self._closing

    @property
    def message_model(self) -> MessageModel:
        return self.config.message_model

    @property
    def clustering(self) -> bool:
        return self.config.message_model is MessageModel.CLUSTERING

    def assigned_queues(self) -> list[MessageQueue]:
        """The queues this consumer holds now (sorted)."""
        return sorted(self.rebalance.process_queue_table)

    def _check_running(self) -> None:
        if not self._running or self._closing:
            raise ClientError(f"the consumer {self.group} is not running")

    async def _readable_queues(self, topic: str) -> list[MessageQueue]:
        """The readable queues of ``topic``, its route fetched once more when none are known (may stay [])."""
        self._check_running()
        queues = self.instance.subscribe_queues(topic)
        if not queues:
            await self.instance.update_route(topic)
            queues = self.instance.subscribe_queues(topic)
        return queues

    # -- subscriptions --------------------------------------------------------------------------------

    def _put_subscription(self, topic: str, expression: str, expression_type: str) -> dict[str, Any]:
        try:
            sub = subscription_data(topic, expression, expression_type=expression_type)
        except ValueError as exc:
            raise ClientError(f"subscription exception: {exc}") from None
        self.subscriptions[topic] = sub
        return sub

    async def _subscription_changed(self, topic: str | None = None) -> None:
        """After start: the new route, a heartbeat, a rebalance."""
        if not self.running:
            return
        if topic is not None:
            await self.instance.update_route(topic)
        await self.instance.send_heartbeat_to_all_brokers()
        self.wake_rebalance()

    # -- lifecycle ------------------------------------------------------------------------------------

    def _describe(self) -> str:
        return f"consumer {self.group}"

    def _begin_start(self) -> None:
        if self._running or self._stack is not None:
            raise ClientError("the consumer was started already")
        self._prepare_start()

    async def _open(self, stack: AsyncExitStack) -> None:
        """Start consuming (see the module docstring)."""
        if self._shared_instance is None:
            cfg = self.config if not self.clustering else self.config.with_unique_instance_name()
            self._instance = ClientInstance(cfg)
            await stack.enter_async_context(self._instance)
        instance = self.instance
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        if self.clustering:
            self._offset_store = RemoteBrokerOffsetStore(instance, self.group)
        else:
            self._offset_store = LocalFileOffsetStore(self.config.local_offset_store_dir, instance.client_id,
                                                      self.group)
        await self._offset_store.load()
        instance.register_consumer(self.group, self)
        self._running = True
        await self._start_services(self._nursery)
        for topic in list(self.subscriptions):
            await instance.update_route(topic)
        for sub in list(self.subscriptions.values()):
            if sub.get("expressionType", "TAG") != ExpressionType.TAG:
                await api.check_client_in_broker(instance, self.group, sub)
        await instance.send_heartbeat_to_all_brokers()
        self._nursery.start_soon(self._run_loops)

    async def _abort_start(self) -> None:
        self._running = False
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        if self._instance is not None and self._instance.consumer(self.group) is self:
            with trio.CancelScope(shield=True), trio.move_on_after(self.config.rpc_timeout_ms / 1000.0):
                await self._instance.unregister_consumer(self.group)

    async def _shutdown(self) -> None:
        """Stop pulling, finish consuming (bounded), commit offsets, unregister."""
        self._closing = True
        self._loops.cancel()
        timeout = self.config.rpc_timeout_ms / 1000.0 + 1
        for pq in self.rebalance.process_queue_table.values():
            pq.pull_scope.cancel()
        await self._stop_services()
        with trio.move_on_after(timeout):
            await self.persist_consumer_offsets()
        with trio.move_on_after(timeout):
            await self._after_persist()
        instance = self._instance
        if instance is not None and instance.consumer(self.group) is self:
            with trio.move_on_after(timeout):
                await instance.unregister_consumer(self.group)
        await self.rebalance.destroy()

    def _stopping(self) -> None:
        super()._stopping()
        self._running = False

    async def persist_consumer_offsets(self) -> None:
        """Commit the offsets of every assigned queue now (what the 5 s loop does)."""
        if self._offset_store is None:
            return
        await self._offset_store.persist_all(list(self.rebalance.process_queue_table))

    # -- loops ----------------------------------------------------------------------------------------

    def wake_rebalance(self) -> None:
        self._rebalance_wake.set()

    async def _run_loops(self) -> None:
        with self._loops:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._rebalance_loop)
                nursery.start_soon(self._persist_loop)

    async def do_rebalance(self) -> None:
        await self.rebalance.do_rebalance(self.is_order())
        self.rebalance_count += 1

    async def _rebalance_loop(self) -> None:
        interval = self.config.rebalance_interval_ms / 1000.0
        retry = _MISSING_ROUTE_FIRST_RETRY_S
        while True:
            self._rebalance_wake = trio.Event()
            try:
                await self.do_rebalance()
            except Exception:
                log.exception("consumer %s: rebalance failed", self.group)
            if self.rebalance.retry_soon:
                delay = min(retry, interval)
                retry *= 2
            else:
                delay = interval
                retry = _MISSING_ROUTE_FIRST_RETRY_S
            with trio.move_on_after(delay):
                await self._rebalance_wake.wait()

    async def _persist_loop(self) -> None:
        interval = self.config.persist_consumer_offset_interval_ms / 1000.0
        while True:
            await trio.sleep(interval)
            try:
                await self.persist_consumer_offsets()
            except Exception:
                log.exception("consumer %s: persisting offsets failed", self.group)

    # -- ConsumerHooks ----------------------------------------------------------------------------------

    def consumer_data(self) -> dict[str, Any]:
        cfg = self.config
        return consumer_data(self.group, list(self.subscriptions.values()), consume_type=self.consume_type,
                             message_model=cfg.message_model, consume_from_where=cfg.consume_from_where,
                             unit_mode=cfg.unit_mode)

    def subscribed_topics(self) -> Collection[str]:
        return list(self.subscriptions)

    def on_subscribe_info_changed(self, topic: str, queues: list[MessageQueue]) -> None:
        if self.running:
            self.wake_rebalance()

    async def on_consumer_ids_changed(self) -> None:
        if self.running:
            log.info("consumer %s: the group changed, rebalancing now", self.group)
            self.wake_rebalance()

    def __repr__(self) -> str:
        state = "running" if self.running else ("closing" if self._closing else "stopped")
        return f"<{type(self).__name__} {self.group} {self.config.message_model.value} {state}>"
