"""The route registry: which brokers exist, which topics they serve, and which of them are alive.

This is RocketMQ's RouteInfoManager (PROTOCOL.md §3.3, §8) as a plain synchronous object: no sockets,
no trio, no threads. The server calls it from its request handlers and its liveness timer, both on one
trio loop, so no lock is needed (Java needs a read-write lock because Netty handlers run on a pool).
Time comes from an injected ``clock_ms`` callable so the expiry rules can be tested without waiting.

Tables (RocketMQ's names):

* ``topic_queue_table``   topic → brokerName → QueueData       what clients route by
* ``broker_addr_table``   brokerName → BrokerData              the members of each broker group
* ``cluster_addr_table``  clusterName → {brokerName}
* ``broker_live_table``   brokerAddr → BrokerLiveInfo          last registration, DataVersion, connection
* ``filter_server_table`` brokerAddr → [filter server addr]

Invariants kept by every operation: a BrokerData has at least one address (an empty one is removed,
together with its name in the cluster table and its QueueData in every topic), and a topic has at least
one QueueData (an empty topic is removed). A master that dies leaves its slaves in the BrokerData, so
the topic stays routable for reads from the slaves.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from rmq_nameserver.bodies import (MASTER_ID, PERM_READ, PERM_WRITE, TOPIC_SYS_FLAG_UNIT, TOPIC_SYS_FLAG_UNIT_SUB,
                                   BrokerData, ClusterInfo, DataVersion, QueueData, RegisterBrokerBody, TopicList,
                                   TopicRouteData)

__all__ = ["RouteInfoManager", "BrokerLiveInfo", "RegisterBrokerResult", "ExpiredBroker",
           "DEFAULT_BROKER_CHANNEL_EXPIRED_TIME_MS"]

log = logging.getLogger("rmq.nameserver.routes")

#: RocketMQ's BROKER_CHANNEL_EXPIRED_TIME: two minutes without a registration and a broker is gone.
DEFAULT_BROKER_CHANNEL_EXPIRED_TIME_MS = 120_000


@dataclass
class BrokerLiveInfo:
    """What the nameserver knows about one registered broker address."""

    last_update_timestamp_ms: int
    data_version: DataVersion
    #: The connection the broker registered over (opaque here; the server compares by identity).
    channel: object | None
    ha_server_addr: str


@dataclass
class RegisterBrokerResult:
    """For a slave whose master is alive: where to replicate from. Both None otherwise."""

    ha_server_addr: str | None = None
    master_addr: str | None = None


@dataclass
class ExpiredBroker:
    """A broker dropped by the liveness scan; the server closes its connection, as RocketMQ does."""

    broker_addr: str
    channel: object | None
    silent_for_ms: int


@dataclass
class RouteInfoManager:
    """The nameserver's state; every method is synchronous and leaves the invariants above intact."""

    clock_ms: Callable[[], int]
    #: A callable so a live configuration change applies to the next scan.
    expired_time_ms: Callable[[], int] = lambda: DEFAULT_BROKER_CHANNEL_EXPIRED_TIME_MS
    topic_queue_table: dict[str, dict[str, QueueData]] = field(default_factory=dict)
    broker_addr_table: dict[str, BrokerData] = field(default_factory=dict)
    cluster_addr_table: dict[str, set[str]] = field(default_factory=dict)
    broker_live_table: dict[str, BrokerLiveInfo] = field(default_factory=dict)
    filter_server_table: dict[str, list[str]] = field(default_factory=dict)

    # -- registration -------------------------------------------------------------------------------

    def register_broker(self, cluster_name: str, broker_addr: str, broker_name: str, broker_id: int,
                        ha_server_addr: str, body: RegisterBrokerBody | None = None,
                        channel: object | None = None) -> RegisterBrokerResult:
        """Record (or refresh) a broker, RocketMQ's ``registerBroker``.

        Topic data is taken only from a master (brokerId 0), and only when its DataVersion differs from
        the one it last registered with or when this address is new to its group; the liveness timestamp
        is refreshed on every call. An address already listed under another brokerId of the group is
        moved (a slave promoted to master registers as id 0 from the same address). ``body`` None means
        no body: DataVersion 0/0, no topics, no filter servers.
        """
        if body is None:
            body = RegisterBrokerBody()
        self.cluster_addr_table.setdefault(cluster_name, set()).add(broker_name)

        broker_data = self.broker_addr_table.get(broker_name)
        register_first = broker_data is None
        if broker_data is None:
            broker_data = BrokerData(cluster_name, broker_name, {})
            self.broker_addr_table[broker_name] = broker_data
        addrs = broker_data.broker_addrs
        for other_id in [i for i, addr in addrs.items() if addr == broker_addr and i != broker_id]:
            log.info("broker %s of %s moves from id %d to id %d", broker_addr, broker_name, other_id, broker_id)
            del addrs[other_id]
        old_addr = addrs.get(broker_id)
        addrs[broker_id] = broker_addr
        if broker_id == MASTER_ID and old_addr != broker_addr:
            log.info("cluster [%s] brokerName [%s] master address change from %s to %s",
                     broker_data.cluster, broker_name, old_addr, broker_addr)
        register_first = register_first or old_addr is None

        if broker_id == MASTER_ID and (register_first or self.is_broker_topic_config_changed(
                broker_addr, body.data_version)):
            for tc in body.topic_config_table.values():
                self._create_or_update_queue_data(tc.topic_name, QueueData.from_topic_config(broker_name, tc))

        previous = self.broker_live_table.get(broker_addr)
        self.broker_live_table[broker_addr] = BrokerLiveInfo(self.clock_ms(), body.data_version, channel,
                                                             ha_server_addr)
        if previous is None:
            log.info("new broker registered, %s HAServer: %s", broker_addr, ha_server_addr)

        if body.filter_server_list:
            self.filter_server_table[broker_addr] = list(body.filter_server_list)
        else:
            self.filter_server_table.pop(broker_addr, None)

        result = RegisterBrokerResult()
        if broker_id != MASTER_ID:
            master_addr = addrs.get(MASTER_ID)
            master = self.broker_live_table.get(master_addr) if master_addr is not None else None
            if master is not None:
                result.ha_server_addr = master.ha_server_addr
                result.master_addr = master_addr
        return result

    def _create_or_update_queue_data(self, topic: str, queue_data: QueueData) -> None:
        queue_datas = self.topic_queue_table.get(topic)
        if queue_datas is None:
            self.topic_queue_table[topic] = {queue_data.broker_name: queue_data}
            log.info("new topic registered, %s %s", topic, queue_data)
            return
        old = queue_datas.get(queue_data.broker_name)
        queue_datas[queue_data.broker_name] = queue_data
        if old is not None and old != queue_data:
            log.info("topic changed, %s OLD: %s NEW: %s", topic, old, queue_data)

    def unregister_broker(self, cluster_name: str, broker_addr: str, broker_name: str, broker_id: int) -> None:
        """A broker's clean goodbye (UNREGISTER_BROKER): forget it now instead of after the expiry."""
        self.broker_live_table.pop(broker_addr, None)
        self.filter_server_table.pop(broker_addr, None)
        broker_data = self.broker_addr_table.get(broker_name)
        if broker_data is None:
            return
        removed = broker_data.broker_addrs.pop(broker_id, None)
        log.info("unregisterBroker %s (%s id %d): %s", broker_addr, broker_name, broker_id,
                 "removed" if removed is not None else "was not listed")
        if not broker_data.broker_addrs:
            self._remove_broker_name(broker_name, cluster_name)

    # -- data version -------------------------------------------------------------------------------

    def query_broker_topic_config(self, broker_addr: str) -> DataVersion | None:
        """The DataVersion a broker last registered with, None for an unknown address."""
        live = self.broker_live_table.get(broker_addr)
        return live.data_version if live is not None else None

    def is_broker_topic_config_changed(self, broker_addr: str, data_version: DataVersion) -> bool:
        return self.query_broker_topic_config(broker_addr) != data_version

    def update_broker_info_update_timestamp(self, broker_addr: str) -> None:
        live = self.broker_live_table.get(broker_addr)
        if live is not None:
            live.last_update_timestamp_ms = self.clock_ms()

    def query_data_version(self, broker_addr: str, data_version: DataVersion) -> tuple[bool, DataVersion | None]:
        """QUERY_DATA_VERSION: (changed?, the stored version). Unchanged counts as a sign of life."""
        changed = self.is_broker_topic_config_changed(broker_addr, data_version)
        if not changed:
            self.update_broker_info_update_timestamp(broker_addr)
        return changed, self.query_broker_topic_config(broker_addr)

    # -- liveness -----------------------------------------------------------------------------------

    def scan_not_active_broker(self) -> list[ExpiredBroker]:
        """Drop every broker silent for longer than the expiry time; returns them so the caller can
        close their connections (RocketMQ closes the channel too)."""
        now = self.clock_ms()
        limit = self.expired_time_ms()
        expired = [(addr, live) for addr, live in self.broker_live_table.items()
                   if live.last_update_timestamp_ms + limit < now]
        dropped = []
        for addr, live in expired:
            silent = now - live.last_update_timestamp_ms
            log.warning("The broker channel expired, %s %dms (silent for %d ms)", addr, limit, silent)
            self._remove_broker_addr(addr)
            dropped.append(ExpiredBroker(addr, live.channel, silent))
        return dropped

    def on_channel_destroy(self, channel: object) -> list[str]:
        """A connection ended: drop at once every broker that registered over it; returns their addresses."""
        addrs = [addr for addr, live in self.broker_live_table.items() if live.channel is channel]
        for addr in addrs:
            log.info("the broker's channel destroyed, %s, clean its data structure at once", addr)
            self._remove_broker_addr(addr)
        return addrs

    def _remove_broker_addr(self, broker_addr: str) -> None:
        """Forget one address and cascade: empty BrokerData → cluster entry → QueueData → empty topics."""
        self.broker_live_table.pop(broker_addr, None)
        self.filter_server_table.pop(broker_addr, None)
        for broker_name, broker_data in list(self.broker_addr_table.items()):
            ids = [i for i, addr in broker_data.broker_addrs.items() if addr == broker_addr]
            if not ids:
                continue
            for broker_id in ids:
                del broker_data.broker_addrs[broker_id]
                log.info("remove brokerAddr[%d, %s] from brokerAddrTable", broker_id, broker_addr)
            if not broker_data.broker_addrs:
                self._remove_broker_name(broker_name, None)

    def _remove_broker_name(self, broker_name: str, cluster_name: str | None) -> None:
        """A broker group lost its last member: remove it from the cluster table and from every topic.

        ``cluster_name`` None searches every cluster (a dead connection does not say which it was).
        """
        self.broker_addr_table.pop(broker_name, None)
        clusters = [cluster_name] if cluster_name is not None else list(self.cluster_addr_table)
        for cluster in clusters:
            names = self.cluster_addr_table.get(cluster)
            if names is not None and broker_name in names:
                names.discard(broker_name)
                log.info("remove brokerName[%s] from clusterAddrTable[%s]", broker_name, cluster)
                if not names:
                    del self.cluster_addr_table[cluster]
                    log.info("remove the clusterName[%s] from clusterAddrTable: no broker left", cluster)
        self._remove_topics_of(broker_name)

    def _remove_topics_of(self, broker_name: str) -> None:
        for topic, queue_datas in list(self.topic_queue_table.items()):
            if queue_datas.pop(broker_name, None) is not None:
                log.info("remove topic[%s] of broker %s", topic, broker_name)
            if not queue_datas:
                del self.topic_queue_table[topic]
                log.info("remove topic[%s]: no broker serves it any more", topic)

    # -- reads --------------------------------------------------------------------------------------

    def pickup_topic_route_data(self, topic: str) -> TopicRouteData | None:
        """The topic's QueueData and a copy of each named BrokerData; None when either is missing."""
        queue_datas = self.topic_queue_table.get(topic)
        if not queue_datas:
            return None
        route = TopicRouteData(queue_datas=[qd.copy() for _, qd in sorted(queue_datas.items())])
        for broker_name in sorted(queue_datas):
            broker_data = self.broker_addr_table.get(broker_name)
            if broker_data is None:
                continue
            copy = broker_data.copy()
            route.broker_datas.append(copy)
            for addr in copy.broker_addrs.values():
                servers = self.filter_server_table.get(addr)
                if servers is not None:
                    route.filter_server_table[addr] = list(servers)
        return route if route.broker_datas else None

    def get_all_cluster_info(self) -> ClusterInfo:
        return ClusterInfo({name: bd.copy() for name, bd in sorted(self.broker_addr_table.items())},
                           {cluster: sorted(names) for cluster, names in sorted(self.cluster_addr_table.items())})

    def get_all_topic_list(self) -> TopicList:
        return TopicList(sorted(self.topic_queue_table))

    def get_topics_by_cluster(self, cluster: str) -> TopicList:
        """Topics served by any broker of ``cluster``; an unknown cluster has none."""
        names = self.cluster_addr_table.get(cluster, set())
        return TopicList(sorted(topic for topic, queue_datas in self.topic_queue_table.items()
                                if not names.isdisjoint(queue_datas)))

    def get_system_topic_list(self) -> TopicList:
        """RocketMQ's getSystemTopicList: every cluster name and broker name (a broker auto-creates a topic
        named after each), with the address of a broker to ask about them (a master where there is one)."""
        topics: set[str] = set()
        for cluster, names in self.cluster_addr_table.items():
            topics.add(cluster)
            topics.update(names)
        groups = [bd.broker_addrs for _, bd in sorted(self.broker_addr_table.items()) if bd.broker_addrs]
        masters = [addrs[MASTER_ID] for addrs in groups if MASTER_ID in addrs]
        anyone = [addrs[min(addrs)] for addrs in groups]
        broker_addr = (masters or anyone or [None])[0]
        return TopicList(sorted(topics), broker_addr)

    def _topics_whose_first_queue(self, predicate: Callable[[int], bool]) -> TopicList:
        """Unit topic lists: RocketMQ looks at one QueueData per topic (they agree in practice)."""
        out = []
        for topic, queue_datas in self.topic_queue_table.items():
            first = queue_datas[min(queue_datas)]
            if predicate(first.topic_sys_flag):
                out.append(topic)
        return TopicList(sorted(out))

    def get_unit_topics(self) -> TopicList:
        return self._topics_whose_first_queue(lambda flag: bool(flag & TOPIC_SYS_FLAG_UNIT))

    def get_has_unit_sub_topic_list(self) -> TopicList:
        return self._topics_whose_first_queue(lambda flag: bool(flag & TOPIC_SYS_FLAG_UNIT_SUB))

    def get_has_unit_sub_un_unit_topic_list(self) -> TopicList:
        return self._topics_whose_first_queue(
            lambda flag: not flag & TOPIC_SYS_FLAG_UNIT and bool(flag & TOPIC_SYS_FLAG_UNIT_SUB))

    # -- admin writes -------------------------------------------------------------------------------

    def delete_topic(self, topic: str, cluster_name: str | None = None) -> None:
        """Forget a topic's routes, everywhere or only on the brokers of ``cluster_name``.

        A live master re-adds it with its next registration whose DataVersion changed, exactly as in RocketMQ:
        deleting the topic on the brokers first is the admin tool's job.
        """
        if not cluster_name:
            self.topic_queue_table.pop(topic, None)
            return
        queue_datas = self.topic_queue_table.get(topic)
        names = self.cluster_addr_table.get(cluster_name)
        if queue_datas is None or not names:
            return
        for broker_name in names:
            if queue_datas.pop(broker_name, None) is not None:
                log.info("deleteTopic, remove one broker's topic %s %s", broker_name, topic)
        if not queue_datas:
            del self.topic_queue_table[topic]

    def wipe_write_perm_of_broker(self, broker_name: str) -> int:
        """Clear PERM_WRITE of every topic on ``broker_name`` (before taking it down); returns the count."""
        return self._operate_write_perm(broker_name, lambda perm: perm & ~PERM_WRITE)

    def add_write_perm_of_broker(self, broker_name: str) -> int:
        """Set every topic of ``broker_name`` to read+write (RocketMQ drops INHERIT/PRIORITY); returns the count."""
        return self._operate_write_perm(broker_name, lambda perm: PERM_READ | PERM_WRITE)

    def _operate_write_perm(self, broker_name: str, change: Callable[[int], int]) -> int:
        count = 0
        for queue_datas in self.topic_queue_table.values():
            queue_data = queue_datas.get(broker_name)
            if queue_data is not None:
                queue_data.perm = change(queue_data.perm)
                count += 1
        return count
