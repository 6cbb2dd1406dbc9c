"""Which clients are connected: consumer groups with their channels and subscriptions, producer groups.

Upstream's ``ConsumerManager``/``ConsumerGroupInfo``/``ProducerManager`` (BRK/client/), fed by HEART_BEAT,
UNREGISTER_CLIENT, connection close and a periodic expiry scan. A "channel" is the remoting ``Connection``
the client opened; the broker calls clients back on it (NOTIFY_CONSUMER_IDS_CHANGED, transaction checks).

Consumer groups, as upstream:

* ``register_consumer`` adds or refreshes the channel (new channel = changed) and replaces the group's
  subscription table from the heartbeat's set: a topic seen for the first time is added (changed), a newer
  ``subVersion`` replaces the stored entry (not counted as a change, as in 4.9.x), topics absent from the
  set are removed (changed). Consume type, message model and consume-from-where follow the latest heartbeat.
* A group with no channel left is removed.
* After a change, ``on_ids_changed(group, connections)`` is called with every member's connection — the
  broker turns that into NOTIFY_CONSUMER_IDS_CHANGED (code 40, oneway) to each, so consumers rebalance at
  once instead of at their next 20 s tick. A plain refresh (same channel, no subscription change) notifies
  nobody. Whether a group is notified at all is decided per call (``notify=``) or by the
  ``notify_enabled(group)`` predicate (the subscription group's ``notifyConsumerIdsChangedEnable``); the
  listener is never called with an empty list. Unlike 4.9.x, unregistering a channel that was not
  registered notifies nobody, and channels removed by the expiry scan notify the remaining members.
* Expiry: a channel not refreshed for ``channel_expired_timeout_ms`` (120 s, upstream's
  CHANNEL_EXPIRED_TIMEOUT) is removed by ``scan_not_active`` and, as upstream does, its connection is closed
  (``close_expired``).

Producer groups: channel per group with the same expiry; ``available_channel(group)`` picks a live
producer round-robin for transaction checks, ``find_channel(client_id)`` finds a client's connection.

Everything runs on the broker's trio thread: no locks, and every method is synchronous except the
notification sender. Listener exceptions are logged, never propagated into a heartbeat.

Bounds: at most ``max_groups`` groups and ``max_channels_per_group`` channels per group in each manager
(generous defaults); a registration beyond either raises ``ClientLimitError`` and changes nothing. A reverse
index connection → groups makes closing a connection cost O(its groups), not O(all groups). The
notification sender (``IdsChangedNotifier``) runs at most ``max_pending`` notification rounds at once and
drops (with a log line) beyond that — clients still rebalance on their own timer.
"""
from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from rmq_broker.heartbeat import ConsumeFromWhere, ConsumeType, MessageModel, SubscriptionData
from rmq_remoting import RemotingCommand, RequestCode
from rmq_remoting.headers import NotifyConsumerIdsChangedRequestHeader

__all__ = [
    "CHANNEL_EXPIRED_TIMEOUT_MS",
    "DEFAULT_MAX_CHANNELS_PER_GROUP",
    "DEFAULT_MAX_GROUPS",
    "ClientChannelInfo",
    "ClientLimitError",
    "ConsumerGroupInfo",
    "ConsumerManager",
    "IdsChangedNotifier",
    "ProducerManager",
    "notify_consumer_ids_changed",
    "wall_clock_ms",
]

log = logging.getLogger("rmq_broker.client")

CHANNEL_EXPIRED_TIMEOUT_MS = 120_000
DEFAULT_MAX_GROUPS = 100_000
DEFAULT_MAX_CHANNELS_PER_GROUP = 10_000
DEFAULT_MAX_PENDING_NOTIFICATIONS = 1_024
NOTIFY_TIMEOUT_MS = 3_000

IdsChangedListener = Callable[[str, list[Any]], Any]


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class ClientLimitError(RuntimeError):
    """A registration that would exceed the group or per-group channel bound."""


@dataclass(slots=True, eq=False)
class ClientChannelInfo:
    """One client connection in one group (upstream ClientChannelInfo)."""

    conn: Any                     # rmq_remoting.Connection (anything hashable with remote_addr in tests)
    client_id: str
    language: str = "JAVA"
    version: int = 0
    last_update_ms: int = 0

    @property
    def remote_addr(self) -> str:
        return getattr(self.conn, "remote_addr", "<unknown>")


def _close(conn: Any, reason: str) -> None:
    close = getattr(conn, "close", None)
    if close is None:
        return
    try:
        close(reason)
    except Exception:
        log.debug("client: closing %r failed", conn, exc_info=True)


class ConsumerGroupInfo:
    """Members and subscriptions of one consumer group."""

    __slots__ = (
        "channels",
        "consume_from_where",
        "consume_type",
        "group",
        "last_update_ms",
        "message_model",
        "subscriptions",
    )

    def __init__(self, group: str, consume_type: ConsumeType | None, message_model: MessageModel | None,
                 consume_from_where: ConsumeFromWhere | None, now_ms: int) -> None:
        self.group = group
        self.channels: dict[Any, ClientChannelInfo] = {}
        self.subscriptions: dict[str, SubscriptionData] = {}
        self.consume_type = consume_type
        self.message_model = message_model
        self.consume_from_where = consume_from_where
        self.last_update_ms = now_ms

    def all_channels(self) -> list[Any]:
        return list(self.channels)

    def all_client_ids(self) -> list[str]:
        return [info.client_id for info in self.channels.values()]

    def find_channel(self, client_id: str) -> ClientChannelInfo | None:
        for info in self.channels.values():
            if info.client_id == client_id:
                return info
        return None

    def find_subscription(self, topic: str) -> SubscriptionData | None:
        return self.subscriptions.get(topic)

    def subscribed_topics(self) -> list[str]:
        return list(self.subscriptions)

    def update_channel(self, new: ClientChannelInfo, consume_type: ConsumeType | None,
                       message_model: MessageModel | None, consume_from_where: ConsumeFromWhere | None,
                       now_ms: int) -> bool:
        """Add or refresh ``new.conn``; True when the channel is new to the group."""
        self.consume_type = consume_type
        self.message_model = message_model
        self.consume_from_where = consume_from_where
        self.last_update_ms = now_ms
        old = self.channels.get(new.conn)
        if old is None:
            new.last_update_ms = now_ms
            self.channels[new.conn] = new
            log.info("client: new consumer connected, group %s %s %s %s client %s",
                     self.group, _name(consume_type), _name(message_model), new.remote_addr, new.client_id)
            return True
        if old.client_id != new.client_id:
            log.error("client: consumer channel %s of group %s changed client id %s -> %s",
                      new.remote_addr, self.group, old.client_id, new.client_id)
            old.client_id = new.client_id
        old.language = new.language
        old.version = new.version
        old.last_update_ms = now_ms
        return False

    def update_subscription(self, subscriptions: Iterable[SubscriptionData], now_ms: int) -> bool:
        """Apply a heartbeat's subscription set; True when a topic was added or removed."""
        changed = False
        seen: set[str] = set()
        for sub in subscriptions:
            seen.add(sub.topic)
            old = self.subscriptions.get(sub.topic)
            if old is None:
                self.subscriptions[sub.topic] = sub
                changed = True
                log.info("client: subscription changed, group %s adds %r", self.group, sub)
            elif sub.sub_version > old.sub_version:
                if self.consume_type == ConsumeType.CONSUME_PASSIVELY:
                    log.info("client: subscription changed, group %s old %r new %r", self.group, old, sub)
                self.subscriptions[sub.topic] = sub
        for topic in [t for t in self.subscriptions if t not in seen]:
            log.warning("client: subscription changed, group %s removes topic %s", self.group, topic)
            del self.subscriptions[topic]
            changed = True
        self.last_update_ms = now_ms
        return changed

    def __repr__(self) -> str:
        return (f"<ConsumerGroupInfo {self.group} channels={len(self.channels)} "
                f"topics={list(self.subscriptions)} {_name(self.message_model)}>")


def _name(value: Any) -> str:
    return "None" if value is None else getattr(value, "name", str(value))


class ConsumerManager:
    """Consumer groups of this broker (upstream ConsumerManager)."""

    def __init__(self, *, on_ids_changed: IdsChangedListener | None = None,
                 notify_enabled: Callable[[str], bool] | None = None,
                 clock_ms: Callable[[], int] = wall_clock_ms,
                 channel_expired_timeout_ms: int = CHANNEL_EXPIRED_TIMEOUT_MS,
                 max_groups: int = DEFAULT_MAX_GROUPS,
                 max_channels_per_group: int = DEFAULT_MAX_CHANNELS_PER_GROUP,
                 close_expired: bool = True) -> None:
        #: ``on_ids_changed(group, connections)``; may be set after construction (the broker's nursery).
        self.on_ids_changed = on_ids_changed
        self.notify_enabled = notify_enabled
        self.clock_ms = clock_ms
        self.channel_expired_timeout_ms = channel_expired_timeout_ms
        self.max_groups = max_groups
        self.max_channels_per_group = max_channels_per_group
        self.close_expired = close_expired
        self._groups: dict[str, ConsumerGroupInfo] = {}
        self._by_conn: dict[Any, set[str]] = {}

    # -- queries -------------------------------------------------------------------------------

    def consumer_group_info(self, group: str) -> ConsumerGroupInfo | None:
        return self._groups.get(group)

    def find_subscription(self, group: str, topic: str) -> SubscriptionData | None:
        info = self._groups.get(group)
        return None if info is None else info.subscriptions.get(topic)

    def find_channel(self, group: str, client_id: str) -> ClientChannelInfo | None:
        info = self._groups.get(group)
        return None if info is None else info.find_channel(client_id)

    def all_client_ids(self, group: str) -> list[str]:
        """Client ids of the group's members (GET_CONSUMER_LIST_BY_GROUP); [] for an unknown group."""
        info = self._groups.get(group)
        return [] if info is None else info.all_client_ids()

    def groups(self) -> list[str]:
        return list(self._groups)

    def groups_of_topic(self, topic: str) -> set[str]:
        """Groups subscribing ``topic`` (upstream queryTopicConsumeByWho)."""
        return {group for group, info in self._groups.items() if topic in info.subscriptions}

    def groups_of_connection(self, conn: Any) -> set[str]:
        return set(self._by_conn.get(conn, ()))

    def __len__(self) -> int:
        return len(self._groups)

    # -- changes -------------------------------------------------------------------------------

    def register_consumer(self, group: str, conn: Any, client_id: str,
                          consume_type: ConsumeType | None, message_model: MessageModel | None,
                          consume_from_where: ConsumeFromWhere | None,
                          subscriptions: Iterable[SubscriptionData], *, language: str = "JAVA", version: int = 0,
                          notify: bool | None = None) -> bool:
        """Add or refresh a consumer from a heartbeat; True when membership or the topic set changed.

        Raises ClientLimitError (changing nothing) when the group or channel bound would be exceeded.
        """
        info = self._groups.get(group)
        if info is None:
            if len(self._groups) >= self.max_groups:
                raise ClientLimitError(f"too many consumer groups on this broker (limit {self.max_groups}), "
                                       f"group {group} refused")
        elif conn not in info.channels and len(info.channels) >= self.max_channels_per_group:
            raise ClientLimitError(f"too many consumers in group {group} (limit {self.max_channels_per_group}), "
                                   f"client {client_id} refused")
        now = self.clock_ms()
        if info is None:
            info = ConsumerGroupInfo(group, consume_type, message_model, consume_from_where, now)
            self._groups[group] = info
        channel = ClientChannelInfo(conn, client_id, language, version, now)
        r1 = info.update_channel(channel, consume_type, message_model, consume_from_where, now)
        r2 = info.update_subscription(subscriptions, now)
        if r1:
            self._by_conn.setdefault(conn, set()).add(group)
        if r1 or r2:
            self._notify(group, info, notify)
        return r1 or r2

    def unregister_consumer(self, group: str, conn: Any, *, notify: bool | None = None) -> bool:
        """Remove ``conn`` from ``group`` (UNREGISTER_CLIENT); True when it was a member."""
        info = self._groups.get(group)
        if info is None or info.channels.pop(conn, None) is None:
            return False
        log.info("client: unregister consumer %s from group %s", getattr(conn, "remote_addr", conn), group)
        self._forget(conn, group)
        if not info.channels:
            del self._groups[group]
            log.info("client: consumer group %s has no connection left, removed", group)
        self._notify(group, info, notify)
        return True

    def do_channel_close(self, conn: Any) -> list[str]:
        """The connection ended: remove it from every group, notify the remaining members."""
        groups = self._by_conn.pop(conn, None)
        if not groups:
            return []
        affected = []
        for group in groups:
            info = self._groups.get(group)
            if info is None or info.channels.pop(conn, None) is None:
                continue
            affected.append(group)
            log.warning("client: consumer channel %s closed, removed from group %s",
                        getattr(conn, "remote_addr", conn), group)
            if not info.channels:
                del self._groups[group]
                log.info("client: consumer group %s has no connection left, removed", group)
            self._notify(group, info, None)
        return affected

    def scan_not_active(self, now_ms: int | None = None) -> list[tuple[str, ClientChannelInfo]]:
        """Remove channels idle longer than the expiry timeout; returns what was removed."""
        now = self.clock_ms() if now_ms is None else now_ms
        removed: list[tuple[str, ClientChannelInfo]] = []
        for group, info in list(self._groups.items()):
            expired = [c for c in info.channels.values() if now - c.last_update_ms > self.channel_expired_timeout_ms]
            if not expired:
                continue
            for channel in expired:
                del info.channels[channel.conn]
                self._forget(channel.conn, group)
                removed.append((group, channel))
                log.warning("client: SCAN: remove expired consumer channel %s (client %s) from group %s",
                            channel.remote_addr, channel.client_id, group)
            if not info.channels:
                del self._groups[group]
                log.warning("client: SCAN: consumer group %s has no channel left, removed", group)
            self._notify(group, info, None)
        if self.close_expired:
            for conn in {channel.conn for _, channel in removed}:
                _close(conn, "consumer heartbeat expired")
        return removed

    # -- internals -----------------------------------------------------------------------------

    def _forget(self, conn: Any, group: str) -> None:
        groups = self._by_conn.get(conn)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._by_conn[conn]

    def _notify(self, group: str, info: ConsumerGroupInfo, notify: bool | None) -> None:
        listener = self.on_ids_changed
        if listener is None or not info.channels:
            return
        if notify is None:
            try:
                notify = True if self.notify_enabled is None else bool(self.notify_enabled(group))
            except Exception:
                log.exception("client: notify_enabled(%s) failed; notifying", group)
                notify = True
        if not notify:
            return
        try:
            listener(group, info.all_channels())
        except Exception:
            log.exception("client: ids-changed listener failed for group %s", group)


class ProducerManager:
    """Producer groups of this broker (upstream ProducerManager)."""

    def __init__(self, *, clock_ms: Callable[[], int] = wall_clock_ms,
                 channel_expired_timeout_ms: int = CHANNEL_EXPIRED_TIMEOUT_MS,
                 max_groups: int = DEFAULT_MAX_GROUPS,
                 max_channels_per_group: int = DEFAULT_MAX_CHANNELS_PER_GROUP,
                 close_expired: bool = True) -> None:
        self.clock_ms = clock_ms
        self.channel_expired_timeout_ms = channel_expired_timeout_ms
        self.max_groups = max_groups
        self.max_channels_per_group = max_channels_per_group
        self.close_expired = close_expired
        self._groups: dict[str, dict[Any, ClientChannelInfo]] = {}
        self._by_conn: dict[Any, set[str]] = {}
        self._by_client: dict[str, Any] = {}
        self._round_robin = itertools.count()

    def register_producer(self, group: str, conn: Any, client_id: str, *, language: str = "JAVA",
                          version: int = 0) -> bool:
        """Add or refresh a producer channel; True when it is new. ClientLimitError beyond the bounds."""
        channels = self._groups.get(group)
        if channels is None:
            if len(self._groups) >= self.max_groups:
                raise ClientLimitError(f"too many producer groups on this broker (limit {self.max_groups}), "
                                       f"group {group} refused")
        elif conn not in channels and len(channels) >= self.max_channels_per_group:
            raise ClientLimitError(f"too many producers in group {group} (limit {self.max_channels_per_group}), "
                                   f"client {client_id} refused")
        now = self.clock_ms()
        if channels is None:
            channels = self._groups[group] = {}
        self._by_client[client_id] = conn
        info = channels.get(conn)
        if info is not None:
            info.client_id = client_id
            info.language = language
            info.version = version
            info.last_update_ms = now
            return False
        channels[conn] = ClientChannelInfo(conn, client_id, language, version, now)
        self._by_conn.setdefault(conn, set()).add(group)
        log.info("client: new producer connected, group %s %s client %s",
                 group, getattr(conn, "remote_addr", conn), client_id)
        return True

    def unregister_producer(self, group: str, conn: Any) -> bool:
        channels = self._groups.get(group)
        if channels is None:
            return False
        info = channels.pop(conn, None)
        if info is None:
            return False
        self._drop(group, channels, info)
        log.info("client: unregister producer %s (client %s) from group %s", info.remote_addr, info.client_id, group)
        return True

    def do_channel_close(self, conn: Any) -> list[str]:
        groups = list(self._by_conn.get(conn, ()))
        for group in groups:
            channels = self._groups.get(group)
            info = None if channels is None else channels.pop(conn, None)
            if info is not None:
                self._drop(group, channels, info)
                log.info("client: producer channel %s closed, removed from group %s", info.remote_addr, group)
        return groups

    def scan_not_active(self, now_ms: int | None = None) -> list[tuple[str, ClientChannelInfo]]:
        now = self.clock_ms() if now_ms is None else now_ms
        removed: list[tuple[str, ClientChannelInfo]] = []
        for group, channels in list(self._groups.items()):
            for info in [c for c in channels.values() if now - c.last_update_ms > self.channel_expired_timeout_ms]:
                del channels[info.conn]
                self._drop(group, channels, info)
                removed.append((group, info))
                log.warning("client: SCAN: remove expired producer channel %s (client %s) from group %s",
                            info.remote_addr, info.client_id, group)
        if self.close_expired:
            for conn in {info.conn for _, info in removed}:
                _close(conn, "producer heartbeat expired")
        return removed

    def _drop(self, group: str, channels: dict[Any, ClientChannelInfo], info: ClientChannelInfo) -> None:
        """Bookkeeping after ``info`` left ``channels`` (already removed from it)."""
        groups = self._by_conn.get(info.conn)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._by_conn[info.conn]
                if self._by_client.get(info.client_id) is info.conn:
                    del self._by_client[info.client_id]
        if not channels:
            self._groups.pop(group, None)
            log.info("client: producer group %s has no connection left, removed", group)

    # -- queries -------------------------------------------------------------------------------

    def groups(self) -> list[str]:
        return list(self._groups)

    def group_channels(self, group: str) -> list[ClientChannelInfo]:
        return list(self._groups.get(group, {}).values())

    def available_channel(self, group: str) -> Any | None:
        """A live producer connection of ``group``, round-robin (transaction state checks)."""
        channels = self._groups.get(group)
        if not channels:
            return None
        conns = list(channels)
        start = next(self._round_robin)
        for i in range(len(conns)):
            conn = conns[(start + i) % len(conns)]
            if not getattr(conn, "closed", False):
                return conn
        return None

    def find_channel(self, client_id: str) -> Any | None:
        return self._by_client.get(client_id)

    def __len__(self) -> int:
        return len(self._groups)


# -- NOTIFY_CONSUMER_IDS_CHANGED --------------------------------------------------------------------

async def notify_consumer_ids_changed(group: str, connections: Iterable[Any], *,
                                      timeout_ms: float = NOTIFY_TIMEOUT_MS) -> int:
    """Send NOTIFY_CONSUMER_IDS_CHANGED (40, oneway, header consumerGroup) to each connection.

    Connections are served concurrently so one stalled peer cannot delay the others; a closed or failing
    connection is logged at debug and skipped. Returns how many notifications were queued. Never raises
    (except cancellation).
    """
    ext = NotifyConsumerIdsChangedRequestHeader(consumer_group=group).to_ext()
    sent = 0

    async def one(conn: Any) -> None:
        nonlocal sent
        if getattr(conn, "closed", False):
            return
        try:
            await conn.send_oneway(RemotingCommand.request(RequestCode.NOTIFY_CONSUMER_IDS_CHANGED, dict(ext)),
                                   timeout_ms)
            sent += 1
        except Exception as exc:
            log.debug("client: notify consumer ids changed, group %s, to %s failed: %r",
                      group, getattr(conn, "remote_addr", conn), exc)

    async with trio.open_nursery() as nursery:
        for conn in connections:
            nursery.start_soon(one, conn)
    return sent


class IdsChangedNotifier:
    """``on_ids_changed`` listener that sends the notifications from tasks in ``nursery``.

    At most ``max_pending`` notification rounds run at once; beyond that a round is dropped with a log
    line (consumers still rebalance on their own 20 s timer), so churn cannot grow tasks without bound.
    """

    def __init__(self, nursery: trio.Nursery, *, max_pending: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
                 timeout_ms: float = NOTIFY_TIMEOUT_MS) -> None:
        self.nursery = nursery
        self.max_pending = max_pending
        self.timeout_ms = timeout_ms
        self.pending = 0
        self.dropped = 0

    def __call__(self, group: str, connections: list[Any]) -> None:
        if self.pending >= self.max_pending:
            self.dropped += 1
            log.warning("client: %d consumer-ids notifications in flight, dropping the one for group %s",
                        self.pending, group)
            return
        self.pending += 1
        self.nursery.start_soon(self._run, group, list(connections))

    async def _run(self, group: str, connections: list[Any]) -> None:
        try:
            await notify_consumer_ids_changed(group, connections, timeout_ms=self.timeout_ms)
        finally:
            self.pending -= 1

