"""ClientInstance: what the producers and consumers of one client id share (Java's ``MQClientInstance``).

One instance owns one ``RemotingClient`` (one connection per nameserver or broker address, shared by
every producer and consumer on it) and keeps, for them all:

* **nameserver selection** — the ``;``-list of ``ClientConfig.namesrv_addr``; a random one first, kept
  while it answers; a call that cannot connect or times out moves on to the next one and is retried there
  (Java's NettyRemotingClient picks the same way but fails that one call);
* **routes** — ``TopicRouteData`` per topic in use, the master addresses of every broker group seen, each
  topic's publish queues (``TopicPublishInfo``: write queues of writable QueueDatas with a master) and
  subscribe queues (read queues of readable QueueDatas). Routes are refreshed every
  ``poll_name_server_interval_ms`` (30 s); brokers no route mentions any more are forgotten;
* **heartbeats** — HEART_BEAT (34) every ``heartbeat_interval_ms`` (30 s) to every master (to every broker
  when a consumer is registered), with a producerDataSet of the registered producer groups and a
  consumerDataSet from the registered consumers (PROTOCOL.md §3.4, enums by name as Java sends them). A
  broker that appears in a route for the first time gets one at once, so it knows the producer group
  before the first transaction check-back could be due;
* **broker → client requests** — CHECK_TRANSACTION_STATE (39) goes to the producer of the half message's
  PGROUP, NOTIFY_CONSUMER_IDS_CHANGED (40) to the consumer of the group, GET_CONSUMER_RUNNING_INFO (307)
  and CONSUME_MESSAGE_DIRECTLY (309) to consumers that implement them;
* **shutdown** — UNREGISTER_CLIENT (35) per producer and consumer group to every broker, then the
  connections are closed.

Lifecycle: ``async with ClientInstance(config) as instance:`` (background tasks live in the instance's own
nursery). A ``Producer`` creates its own instance unless given one with ``instance=``; several producers and
consumers may share one, each under its own group.

Plugging in a consumer
----------------------

A consumer implementation registers itself under its group with ``instance.register_consumer(group,
consumer)`` and leaves with ``await instance.unregister_consumer(group)``. The object implements
``ConsumerHooks``:

``consumer_data() -> dict``
    its ConsumerData for heartbeats, in wire form: build it with ``consumer_data(...)`` below (group,
    ConsumeType, MessageModel, ConsumeFromWhere, subscriptions made with ``subscription_data(...)``).
``subscribed_topics() -> Collection[str]``
    topics whose routes the instance must keep fresh (including ``%RETRY%<group>`` for clustering).
``on_subscribe_info_changed(topic, queues)``
    called (synchronously, on the trio thread) whenever a refreshed route changes ``topic``'s readable
    queues; ``instance.subscribe_queues(topic)`` returns the current list at any time. The consumer's
    rebalance reads it.
``async on_consumer_ids_changed()``
    called in a task of the instance when a broker sends NOTIFY_CONSUMER_IDS_CHANGED for the group: Java
    rebalances at once.

Optional: ``running_info() -> dict`` (the ConsumerRunningInfo body of GET_CONSUMER_RUNNING_INFO) and
``async consume_message_directly(msg: MessageExt, broker_name: str | None) -> dict`` (the
ConsumeMessageDirectlyResult body). Without them the instance answers SYSTEM_ERROR as Java does for an
unknown group. ``instance.invoke(addr, cmd)`` / ``invoke_oneway`` reach brokers; ``instance.request(code, ext,
body)`` builds a request stamped with this client's language; ``instance.master_addr(broker_name)`` and
``instance.broker_addrs(broker_name)`` resolve addresses; ``await instance.update_route(topic)`` forces a
refresh; ``await instance.send_heartbeat_to_all_brokers()`` announces a subscription change at once.
"""
from __future__ import annotations

import enum
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from contextlib import AsyncExitStack
from typing import Any, Protocol, runtime_checkable

import trio

from rmq_client.config import ClientConfig, parse_namesrv_addr
from rmq_client.errors import BrokerError, ClientError
from rmq_client.lifecycle import AsyncLifecycle
from rmq_client.routing import MessageQueue, TopicPublishInfo, subscribe_queues
from rmq_common._record import decode_record
from rmq_common.hashing import java_string_hash
from rmq_common.message import MessageExt
from rmq_common.properties import PropertyKey
from rmq_nameserver.bodies import MASTER_ID, TopicRouteData
from rmq_remoting import RemotingClient, RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_remoting.connection import Connection
from rmq_remoting.errors import RemotingConnectError, RemotingError, RemotingTimeoutError
from rmq_remoting.headers import (CheckTransactionStateRequestHeader, ConsumeMessageDirectlyResultRequestHeader,
                                  GetConsumerRunningInfoRequestHeader, NotifyConsumerIdsChangedRequestHeader)

__all__ = [
    "ClientInstance", "ConsumerHooks", "ProducerHooks", "ConsumeType", "MessageModel", "ConsumeFromWhere",
    "subscription_data", "consumer_data",
]

log = logging.getLogger("rmq_client")

#: Tags separator of a TAG subscription expression.
_TAG_SEPARATOR = "||"
_SUB_ALL = "*"


# ---------------------------------------------------------------------------------------------------
# Heartbeat data (PROTOCOL.md §3.4)
# ---------------------------------------------------------------------------------------------------

class ConsumeType(enum.StrEnum):
    """How a consumer fetches: pull (actively) or push (passively)."""

    CONSUME_ACTIVELY = "CONSUME_ACTIVELY"
    CONSUME_PASSIVELY = "CONSUME_PASSIVELY"


class MessageModel(enum.StrEnum):
    BROADCASTING = "BROADCASTING"
    CLUSTERING = "CLUSTERING"


class ConsumeFromWhere(enum.StrEnum):
    CONSUME_FROM_LAST_OFFSET = "CONSUME_FROM_LAST_OFFSET"
    CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST = "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST"
    CONSUME_FROM_MIN_OFFSET = "CONSUME_FROM_MIN_OFFSET"
    CONSUME_FROM_MAX_OFFSET = "CONSUME_FROM_MAX_OFFSET"
    CONSUME_FROM_FIRST_OFFSET = "CONSUME_FROM_FIRST_OFFSET"
    CONSUME_FROM_TIMESTAMP = "CONSUME_FROM_TIMESTAMP"


def subscription_data(topic: str, expression: str = _SUB_ALL, *, expression_type: str = "TAG",
                      sub_version: int | None = None) -> dict[str, Any]:
    """One SubscriptionData in wire form, as Java's ``FilterAPI.build`` makes it.

    TAG: ``*`` or empty = everything; otherwise tags split on ``||``, trimmed, empty ones dropped, ``codeSet``
    their Java ``hashCode``. SQL92: the expression as is, no tags.
    """
    expression = (expression or "").strip() if expression_type == "TAG" else expression
    tags: list[str] = []
    if expression_type == "TAG":
        if not expression or expression == _SUB_ALL:
            expression = _SUB_ALL
        else:
            for tag in expression.split(_TAG_SEPARATOR):
                tag = tag.strip()
                if tag and tag not in tags:
                    tags.append(tag)
            if not tags:
                raise ValueError(f"subscription expression {expression!r} names no tag")
    return {"classFilterMode": False, "codeSet": [java_string_hash(t) for t in tags],
            "expressionType": expression_type, "subString": expression,
            "subVersion": int(time.time() * 1000) if sub_version is None else sub_version,
            "tagsSet": tags, "topic": topic}


def consumer_data(group: str, subscriptions: Iterable[Mapping[str, Any]], *,
                  consume_type: ConsumeType = ConsumeType.CONSUME_PASSIVELY,
                  message_model: MessageModel = MessageModel.CLUSTERING,
                  consume_from_where: ConsumeFromWhere = ConsumeFromWhere.CONSUME_FROM_LAST_OFFSET,
                  unit_mode: bool = False) -> dict[str, Any]:
    """One ConsumerData in wire form (enums by name, as the Java client sends them)."""
    return {"consumeFromWhere": ConsumeFromWhere(consume_from_where).value,
            "consumeType": ConsumeType(consume_type).value, "groupName": group,
            "messageModel": MessageModel(message_model).value,
            "subscriptionDataSet": [dict(s) for s in subscriptions], "unitMode": unit_mode}


# ---------------------------------------------------------------------------------------------------
# What producers and consumers give the instance
# ---------------------------------------------------------------------------------------------------

@runtime_checkable
class ConsumerHooks(Protocol):
    """What a consumer registered with ``ClientInstance.register_consumer`` provides (module docstring)."""

    def consumer_data(self) -> dict[str, Any]: ...

    def subscribed_topics(self) -> Collection[str]: ...

    def on_subscribe_info_changed(self, topic: str, queues: list[MessageQueue]) -> None: ...

    async def on_consumer_ids_changed(self) -> None: ...


@runtime_checkable
class ProducerHooks(Protocol):
    """What a producer registered with ``ClientInstance.register_producer`` provides.

    ``check_transaction_state`` is called in a task of the instance for CHECK_TRANSACTION_STATE requests
    naming the producer's group; ``conn`` is the broker's connection (answer on it with END_TRANSACTION).
    A producer without transactions ignores them.
    """

    async def check_transaction_state(self, conn: Connection, msg: MessageExt,
                                      header: CheckTransactionStateRequestHeader) -> None: ...


def _route_key(route: TopicRouteData) -> Any:
    """A comparable normal form of a route (list orders do not matter)."""
    return (sorted((q.broker_name, q.read_queue_nums, q.write_queue_nums, q.perm, q.topic_sys_flag)
                   for q in route.queue_datas),
            sorted((b.broker_name, b.cluster, tuple(sorted(b.broker_addrs.items()))) for b in route.broker_datas),
            route.order_topic_conf)


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class ClientInstance(AsyncLifecycle):
    """Routes, heartbeats and broker callbacks for the producers and consumers of one client id."""

    def __init__(self, config: ClientConfig | None = None, *, client_id: str | None = None) -> None:
        self.config = config if config is not None else ClientConfig()
        self.client_id = client_id or self.config.build_client_id()
        self._ns_addrs = self.config.namesrv_list()
        self._ns_index = random.randrange(len(self._ns_addrs)) if self._ns_addrs else 0
        self._ns_chosen: str | None = None
        self._remoting: RemotingClient | None = None
        self._nursery: trio.Nursery | None = None
        self._stack: AsyncExitStack | None = None
        self._loops: trio.CancelScope | None = None
        self._producers: dict[str, Any] = {}
        self._consumers: dict[str, ConsumerHooks] = {}
        self._routes: dict[str, TopicRouteData] = {}
        self._publish: dict[str, TopicPublishInfo] = {}
        self._subscribe: dict[str, list[MessageQueue]] = {}
        self._broker_addrs: dict[str, dict[int, str]] = {}
        self._heartbeated: set[str] = set()
        self._route_locks: dict[str, trio.Lock] = {}
        self._heartbeat_lock = trio.Lock()
        self._hooks_running = 0
        self._hooks_idle = trio.Event()
        self._hooks_idle.set()
        self._started = False
        self._closing = False
        self._closed = False
        #: Broker address → the version the broker stamped on its last heartbeat answer.
        self.broker_versions: dict[str, int] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started and not self._closed

    @property
    def remoting(self) -> RemotingClient:
        if self._remoting is None:
            raise ClientError("the client instance is not started: use 'async with ClientInstance(...)'")
        return self._remoting

    @property
    def nursery(self) -> trio.Nursery:
        """The instance's nursery, for tasks that must end when it closes."""
        if self._nursery is None:
            raise ClientError("the client instance is not started")
        return self._nursery

    def _describe(self) -> str:
        return f"client {self.client_id}"

    def _begin_start(self) -> None:
        if self._started:
            raise ClientError("the client instance was started already")
        self._started = True

    async def _open(self, stack: AsyncExitStack) -> None:
        """Open the nursery and the remoting client and start the refresh and heartbeat loops."""
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._remoting = RemotingClient(self._nursery, connect_timeout_ms=self.config.connect_timeout_ms)
        self._remoting.register(RequestCode.CHECK_TRANSACTION_STATE, self._on_check_transaction_state)
        self._remoting.register(RequestCode.NOTIFY_CONSUMER_IDS_CHANGED, self._on_consumer_ids_changed)
        self._remoting.register(RequestCode.GET_CONSUMER_RUNNING_INFO, self._on_get_consumer_running_info)
        self._remoting.register(RequestCode.CONSUME_MESSAGE_DIRECTLY, self._on_consume_message_directly)
        self._loops = trio.CancelScope()
        self._nursery.start_soon(self._run_loops, self._loops)

    def _after_close(self) -> None:
        self._closed = True

    async def _shutdown(self) -> None:
        """Unregister whatever is still registered and close every connection."""
        self._closing = True
        if self._loops is not None:
            self._loops.cancel()
        with trio.move_on_after(self.config.rpc_timeout_ms / 1000.0):
            await self._hooks_idle.wait()           # check-backs being answered finish first
        with trio.move_on_after(self.config.rpc_timeout_ms / 1000.0 + 1):
            for group in list(self._producers):
                await self.unregister_producer(group)
            for group in list(self._consumers):
                await self.unregister_consumer(group)
        if self._remoting is not None:
            await self._remoting.aclose()

    def _check_open(self) -> None:
        if not self._started or self._closed or self._stack is None:
            raise ClientError("the client instance is not running")

    # -- requests -------------------------------------------------------------------------------

    def request(self, code: int, ext: dict[str, str] | None = None, body: Any = None) -> RemotingCommand:
        """A request stamped with this client's language and header encoding (opaque set when sent)."""
        return RemotingCommand(code, language=self.config.language, ext_fields=ext, body=body,
                               serialize_type=self.config.serialize_type)

    async def invoke(self, addr: str, cmd: RemotingCommand, timeout_ms: float | None = None) -> RemotingCommand:
        return await self.remoting.invoke(addr, cmd, self.config.rpc_timeout_ms if timeout_ms is None else timeout_ms)

    async def invoke_oneway(self, addr: str, cmd: RemotingCommand, timeout_ms: float | None = None) -> None:
        await self.remoting.invoke_oneway(addr, cmd,
                                          self.config.rpc_timeout_ms if timeout_ms is None else timeout_ms)

    # -- nameservers ----------------------------------------------------------------------------

    @property
    def namesrv_addrs(self) -> list[str]:
        return list(self._ns_addrs)

    @property
    def current_namesrv(self) -> str | None:
        """The nameserver used now (None until the first call)."""
        return self._ns_chosen

    def update_namesrv_addr(self, namesrv_addr: str) -> None:
        """Replace the nameserver list (Java ``updateNameServerAddressList``); a chosen one still listed stays."""
        addrs = parse_namesrv_addr(namesrv_addr)
        self._ns_addrs = addrs
        if self._ns_chosen not in addrs:
            self._ns_chosen = None

    def _choose_namesrv(self) -> str:
        chosen = self._ns_chosen
        if chosen is not None:
            return chosen
        self._ns_index = (self._ns_index + 1) % len(self._ns_addrs)
        chosen = self._ns_chosen = self._ns_addrs[self._ns_index]
        log.info("client %s: using nameserver %s", self.client_id, chosen)
        return chosen

    async def invoke_namesrv(self, cmd: RemotingCommand, timeout_ms: float | None = None) -> RemotingCommand:
        """Call the current nameserver; on a failed connect or a timeout, the next ones in turn."""
        if not self._ns_addrs:
            raise ClientError("no nameserver address: set namesrv_addr (or $NAMESRV_ADDR)")
        last: RemotingError | None = None
        for _ in range(len(self._ns_addrs)):
            addr = self._choose_namesrv()
            try:
                return await self.invoke(addr, cmd, timeout_ms)
            except (RemotingConnectError, RemotingTimeoutError) as exc:
                log.warning("client %s: nameserver %s failed (%s), trying the next one", self.client_id, addr, exc)
                last = exc
                if self._ns_chosen == addr:
                    self._ns_chosen = None
                if self._remoting is not None:
                    self._remoting.close_connection(addr)
        assert last is not None
        raise last

    # -- routes ---------------------------------------------------------------------------------

    async def fetch_route(self, topic: str, timeout_ms: float | None = None) -> TopicRouteData | None:
        """GET_ROUTEINFO_BY_TOPIC from a nameserver; None when it does not know the topic."""
        resp = await self.invoke_namesrv(self.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": topic}),
                                         timeout_ms)
        if resp.code == ResponseCode.TOPIC_NOT_EXIST:
            return None
        if resp.code != ResponseCode.SUCCESS:
            raise BrokerError(resp.code, resp.remark, self._ns_chosen)
        if resp.body is None:
            raise ClientError(f"the nameserver sent an empty route for {topic}")
        return TopicRouteData.decode(bytes(resp.body))

    def route(self, topic: str) -> TopicRouteData | None:
        """The last route applied for ``topic`` (TBW102's, adjusted, for a topic created by sending)."""
        return self._routes.get(topic)

    def publish_info(self, topic: str) -> TopicPublishInfo | None:
        return self._publish.get(topic)

    def subscribe_queues(self, topic: str) -> list[MessageQueue]:
        """The readable queues of ``topic`` from the last route (empty when unknown)."""
        queues = self._subscribe.get(topic)
        if queues is None:
            route = self._routes.get(topic)
            return subscribe_queues(topic, route) if route is not None else []
        return list(queues)

    def master_addr(self, broker_name: str) -> str | None:
        """The master address of a broker group, from the routes seen so far."""
        return self._broker_addrs.get(broker_name, {}).get(MASTER_ID)

    def broker_addrs(self, broker_name: str) -> dict[int, str]:
        """brokerId → address of a broker group (0 = master)."""
        return dict(self._broker_addrs.get(broker_name, {}))

    def broker_names(self) -> list[str]:
        return sorted(self._broker_addrs)

    def topics_in_use(self) -> set[str]:
        """Topics whose routes the refresh loop keeps fresh."""
        topics = set(self._publish)
        for consumer in self._consumers.values():
            try:
                topics.update(consumer.subscribed_topics())
            except Exception:
                log.exception("client %s: subscribed_topics() of a consumer failed", self.client_id)
        return topics

    def _lock_for(self, topic: str) -> trio.Lock:
        lock = self._route_locks.get(topic)
        if lock is None:
            lock = self._route_locks[topic] = trio.Lock()
        return lock

    async def update_route(self, topic: str) -> bool:
        """Fetch ``topic``'s route and apply it; True if anything changed. Failures are logged, not raised."""
        async with self._lock_for(topic):
            return await self._update_route_locked(topic)

    async def _update_route_locked(self, topic: str, default_from: str | None = None,
                                   default_queue_nums: int = 0) -> bool:
        try:
            route = await self.fetch_route(default_from or topic)
        except (RemotingError, ClientError, ValueError) as exc:
            log.warning("client %s: route of %s not updated: %s", self.client_id, default_from or topic, exc)
            return False
        if route is None:
            log.debug("client %s: no route for %s", self.client_id, default_from or topic)
            return False
        if default_from is not None:
            for qd in route.queue_datas:
                n = min(default_queue_nums, qd.read_queue_nums)
                qd.read_queue_nums = qd.write_queue_nums = n
        return self._apply_route(topic, route, from_default=default_from is not None)

    def _apply_route(self, topic: str, route: TopicRouteData, *, from_default: bool) -> bool:
        old = self._routes.get(topic)
        info = self._publish.get(topic)
        changed = old is None or _route_key(old) != _route_key(route) or (info is not None and not info.ok())
        if info is not None and info.from_default_route and not from_default:
            changed = True                      # the real route replaces TBW102's
        if not changed:
            return False
        self._routes[topic] = route
        new_addrs: list[str] = []
        for bd in route.broker_datas:
            self._broker_addrs[bd.broker_name] = dict(bd.broker_addrs)
            for broker_id, addr in bd.broker_addrs.items():
                if addr not in self._heartbeated and (broker_id == MASTER_ID or self._consumers):
                    new_addrs.append(addr)
        if topic in self._publish:
            self._publish[topic] = TopicPublishInfo.from_route(topic, route, from_default_route=from_default)
        if not from_default:
            queues = subscribe_queues(topic, route)
            if self._subscribe.get(topic) != queues:
                self._subscribe[topic] = queues
                for consumer in list(self._consumers.values()):
                    try:
                        if topic in consumer.subscribed_topics():
                            consumer.on_subscribe_info_changed(topic, list(queues))
                    except Exception:
                        log.exception("client %s: on_subscribe_info_changed(%s) failed", self.client_id, topic)
        log.info("client %s: route of %s is now %s", self.client_id, topic, route.to_wire())
        if new_addrs and not self._closing and self._nursery is not None:
            self._nursery.start_soon(self._heartbeat_addrs, new_addrs)
        return True

    async def find_publish_info(self, topic: str, create_topic_key: str | None = None,
                                default_topic_queue_nums: int = 4) -> TopicPublishInfo:
        """The topic's publish info, fetching the route on first use (``tryToFindTopicPublishInfo``).

        Without a route of its own, the route of ``create_topic_key`` (TBW102) with at most
        ``default_topic_queue_nums`` queues per broker is used, so the first send creates the topic. The
        returned info may have no queues (``ok()`` False): then neither route exists.
        """
        info = self._publish.get(topic)
        if info is not None and info.ok():
            return info
        async with self._lock_for(topic):
            info = self._publish.get(topic)
            if info is not None and info.ok():
                return info
            if info is None:
                self._publish[topic] = TopicPublishInfo(topic)          # in use from now on
            await self._update_route_locked(topic)
            info = self._publish[topic]
            if not info.ok() and create_topic_key:
                await self._update_route_locked(topic, create_topic_key, default_topic_queue_nums)
                info = self._publish[topic]
            return info

    def _clean_offline_brokers(self) -> None:
        """Forget broker addresses no route mentions any more (``cleanOfflineBroker``)."""
        live: set[str] = set()
        for route in self._routes.values():
            for bd in route.broker_datas:
                live.update(bd.broker_addrs.values())
        for name in list(self._broker_addrs):
            addrs = {i: a for i, a in self._broker_addrs[name].items() if a in live}
            if addrs:
                self._broker_addrs[name] = addrs
            else:
                del self._broker_addrs[name]
        self._heartbeated &= live

    async def refresh_routes(self) -> None:
        """One round of the refresh loop: every topic in use, then the offline-broker cleanup."""
        for topic in sorted(self.topics_in_use()):
            await self.update_route(topic)
        self._clean_offline_brokers()

    # -- background loops -----------------------------------------------------------------------

    async def _run_loops(self, scope: trio.CancelScope) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._route_loop)
                nursery.start_soon(self._heartbeat_loop)

    async def _route_loop(self) -> None:
        while True:
            await trio.sleep(self.config.poll_name_server_interval_ms / 1000.0)
            try:
                await self.refresh_routes()
            except Exception:
                log.exception("client %s: route refresh failed", self.client_id)

    async def _heartbeat_loop(self) -> None:
        while True:
            await trio.sleep(self.config.heartbeat_interval_ms / 1000.0)
            try:
                await self.send_heartbeat_to_all_brokers()
            except Exception:
                log.exception("client %s: heartbeat round failed", self.client_id)

    # -- registration and heartbeats ------------------------------------------------------------

    def register_producer(self, group: str, producer: Any) -> None:
        """Add a producer group (its heartbeats start with the next round). One producer per group."""
        self._check_open()
        if not group:
            raise ValueError("producer group must not be empty")
        if group in self._producers:
            raise ClientError(f"The producer group[{group}] has been created before, specify another name please.")
        self._producers[group] = producer

    def register_consumer(self, group: str, consumer: ConsumerHooks) -> None:
        """Add a consumer group (see the module docstring for what ``consumer`` provides)."""
        self._check_open()
        if not group:
            raise ValueError("consumer group must not be empty")
        if group in self._consumers:
            raise ClientError(f"The consumer group[{group}] has been created before, specify another name please.")
        self._consumers[group] = consumer

    def producer(self, group: str) -> Any | None:
        return self._producers.get(group)

    def consumer(self, group: str) -> ConsumerHooks | None:
        return self._consumers.get(group)

    async def unregister_producer(self, group: str) -> None:
        """Forget the group and send UNREGISTER_CLIENT for it to every broker."""
        if self._producers.pop(group, None) is not None:
            await self._unregister_client({"clientID": self.client_id, "producerGroup": group})

    async def unregister_consumer(self, group: str) -> None:
        if self._consumers.pop(group, None) is not None:
            await self._unregister_client({"clientID": self.client_id, "consumerGroup": group})

    async def _unregister_client(self, ext: dict[str, str]) -> None:
        if self._remoting is None:
            return
        addrs = sorted({a for addrs in self._broker_addrs.values() for a in addrs.values()} & self._heartbeated)

        async def one(addr: str) -> None:
            try:
                resp = await self.invoke(addr, self.request(RequestCode.UNREGISTER_CLIENT, dict(ext)))
                if resp.code != ResponseCode.SUCCESS:
                    log.warning("client %s: unregister at %s: code %d %s", self.client_id, addr, resp.code, resp.remark)
            except RemotingError as exc:
                log.info("client %s: unregister at %s failed: %s", self.client_id, addr, exc)

        with trio.move_on_after(self.config.rpc_timeout_ms / 1000.0 + 0.5):
            async with trio.open_nursery() as nursery:
                for addr in addrs:
                    nursery.start_soon(one, addr)

    def heartbeat_data(self) -> dict[str, Any] | None:
        """The HeartbeatData body in wire form; None when nothing is registered."""
        producers = [{"groupName": g} for g in sorted(self._producers)]
        consumers: list[dict[str, Any]] = []
        for group, consumer in sorted(self._consumers.items()):
            try:
                consumers.append(consumer.consumer_data())
            except Exception:
                log.exception("client %s: consumer_data() of %s failed", self.client_id, group)
        if not producers and not consumers:
            return None
        return {"clientID": self.client_id, "consumerDataSet": consumers, "producerDataSet": producers}

    def _heartbeat_targets(self) -> list[str]:
        with_slaves = bool(self._consumers)
        return sorted({addr for addrs in self._broker_addrs.values() for broker_id, addr in addrs.items()
                       if with_slaves or broker_id == MASTER_ID})

    async def send_heartbeat_to_all_brokers(self) -> None:
        """HEART_BEAT to every master (every broker when consumers are registered), in parallel."""
        await self._heartbeat_addrs(self._heartbeat_targets())

    async def _heartbeat_addrs(self, addrs: list[str]) -> None:
        if not addrs or self._closing:
            return
        async with self._heartbeat_lock:
            data = self.heartbeat_data()
            if data is None:
                return
            body = fastjson.dumps(data)
            async with trio.open_nursery() as nursery:
                for addr in addrs:
                    nursery.start_soon(self._heartbeat_one, addr, body)

    async def _heartbeat_one(self, addr: str, body: bytes) -> None:
        try:
            resp = await self.invoke(addr, self.request(RequestCode.HEART_BEAT, None, body))
        except RemotingError as exc:
            log.info("client %s: heartbeat to %s failed: %s", self.client_id, addr, exc)
            return
        if resp.code == ResponseCode.SUCCESS:
            self._heartbeated.add(addr)
            self.broker_versions[addr] = resp.version
        else:
            log.warning("client %s: heartbeat to %s answered %d %s", self.client_id, addr, resp.code, resp.remark)

    # -- broker → client requests ---------------------------------------------------------------

    async def _on_check_transaction_state(self, conn: Connection, cmd: RemotingCommand) -> None:
        try:
            header = CheckTransactionStateRequestHeader.decode(cmd.ext_fields)
            msg = decode_record(bytes(cmd.body or b""))
        except Exception as exc:
            log.warning("client %s: bad CHECK_TRANSACTION_STATE from %s: %s", self.client_id, conn.remote_addr, exc)
            return None
        group = msg.properties.get(PropertyKey.PGROUP)
        producer = self._producers.get(group) if group else None
        check = getattr(producer, "check_transaction_state", None)
        if check is None or self._nursery is None or self._closing:
            log.debug("client %s: check of %s for group %s ignored: no transaction producer", self.client_id,
                      header.transaction_id, group)
            return None
        self._nursery.start_soon(self._run_hook, "check_transaction_state", check, conn, msg, header)
        return None

    async def _run_hook(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._hooks_running += 1
        if self._hooks_running == 1:
            self._hooks_idle = trio.Event()
        try:
            await fn(*args)
        except Exception:
            log.exception("client %s: %s failed", self.client_id, what)
        finally:
            self._hooks_running -= 1
            if self._hooks_running == 0:
                self._hooks_idle.set()

    async def _on_consumer_ids_changed(self, conn: Connection, cmd: RemotingCommand) -> None:
        try:
            group = NotifyConsumerIdsChangedRequestHeader.decode(cmd.ext_fields).consumer_group
        except Exception as exc:
            log.warning("client %s: bad NOTIFY_CONSUMER_IDS_CHANGED: %s", self.client_id, exc)
            return None
        consumer = self._consumers.get(group)
        log.info("client %s: consumer ids of group %s changed (broker %s)", self.client_id, group, conn.remote_addr)
        if consumer is not None and self._nursery is not None and not self._closing:
            self._nursery.start_soon(self._run_hook, "on_consumer_ids_changed", consumer.on_consumer_ids_changed)
        return None

    async def _on_get_consumer_running_info(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = GetConsumerRunningInfoRequestHeader.decode(cmd.ext_fields)
        consumer = self._consumers.get(header.consumer_group)
        running_info = getattr(consumer, "running_info", None)
        if running_info is None:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                       f"The Consumer Group <{header.consumer_group}> not exist in this consumer")
        info = await _maybe_await(running_info())
        return cmd.create_response(ResponseCode.SUCCESS, body=fastjson.dumps(info))

    async def _on_consume_message_directly(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = ConsumeMessageDirectlyResultRequestHeader.decode(cmd.ext_fields)
        consumer = self._consumers.get(header.consumer_group)
        consume = getattr(consumer, "consume_message_directly", None)
        if consume is None:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                       f"The Consumer Group <{header.consumer_group}> not exist in this consumer")
        msg = decode_record(bytes(cmd.body or b""))
        result = await _maybe_await(consume(msg, header.broker_name))
        return cmd.create_response(ResponseCode.SUCCESS, body=fastjson.dumps(result))

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._started else "new")
        return (f"<ClientInstance {self.client_id} {state} producers={sorted(self._producers)} "
                f"consumers={sorted(self._consumers)}>")
