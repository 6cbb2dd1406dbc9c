"""Admin: topics, clusters, routes, consumer progress, message lookup and offset resets (Java ``DefaultMQAdminExt``).

    async with Admin(namesrv_addr="127.0.0.1:9876") as admin:
        await admin.create_topic("Orders", queue_nums=8)              # on every master of the cluster
        info = await admin.cluster_info()
        stats = await admin.consume_stats("CG_orders")                # per queue: broker / consumer offset
        print(stats.diff_total())                                     # the group's lag
        msgs = await admin.query_messages_by_key("Orders", "order-42")
        msg = await admin.view_message(msg_id, topic="Orders")
        await admin.reset_offset_by_timestamp("CG_orders", "Orders", timestamp_ms)

Requests (PROTOCOL.md §2.1) — to the nameservers: GET_BROKER_CLUSTER_INFO (106), GET_ROUTEINFO_BY_TOPIC (105),
GET_ALL_TOPIC_LIST_FROM_NAMESERVER (206), DELETE_TOPIC_IN_NAMESRV (216, to every nameserver); to the brokers:
UPDATE_AND_CREATE_TOPIC (17) and DELETE_TOPIC_IN_BROKER (215) on every master of the cluster (or the named
brokers), GET_TOPIC_STATS_INFO (202), GET_CONSUME_STATS (208), GET_CONSUMER_CONNECTION_LIST (203),
QUERY_MESSAGE (12; by business key, or by UNIQ_KEY with ``_UNIQUE_KEY_QUERY``), VIEW_MESSAGE_BY_ID (33; by
offset message id), SEARCH_OFFSET_BY_TIMESTAMP (29), UPDATE_CONSUMER_OFFSET (15).

``reset_offset_by_timestamp`` is Java's ``resetOffsetByTimestampOld``: each queue's offset at the timestamp is
written to the broker with UPDATE_CONSUMER_OFFSET (with ``force=False`` only where it moves the group back).
Members of the group that are running keep their own offsets in memory and would overwrite it: stop them first
(the broker-mediated reset of online consumers, INVOKE_BROKER_TO_RESET_OFFSET, is not implemented by rmq brokers).

``view_message(msg_id, topic=...)``: the msgId producers and consumers show is usually the UNIQ_KEY; with a topic
it is looked up as such first; otherwise (or when not found) it is decoded as an offset message id (store host
+ commitlog offset) and read from that broker, if it is one of the cluster's.
"""
from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import trio

from rmq_client import consumer_api as api
from rmq_client.config import ClientConfig
from rmq_client.errors import BrokerError, ClientError
from rmq_client.instance import ClientInstance
from rmq_client.lifecycle import AsyncLifecycle
from rmq_client.routing import MessageQueue, subscribe_queues
from rmq_common._record import decode_records
from rmq_common.message import MessageExt
from rmq_common.msgid import decode_offset_msg_id
from rmq_common.topic import retry_topic, validate_topic
from rmq_nameserver.bodies import MASTER_ID, ClusterInfo, TopicList, TopicRouteData
from rmq_remoting import RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h

__all__ = ["Admin", "ConsumeStats", "OffsetWrapper", "TopicOffset"]

log = logging.getLogger("rmq_client")

#: extFields key of a QUERY_MESSAGE by UNIQ_KEY (Java ``MixAll.UNIQUE_MSG_QUERY_FLAG``).
UNIQUE_MSG_QUERY_FLAG = "_UNIQUE_KEY_QUERY"


@dataclass(frozen=True)
class TopicOffset:
    min_offset: int
    max_offset: int
    last_update_timestamp: int


@dataclass(frozen=True)
class OffsetWrapper:
    broker_offset: int
    consumer_offset: int
    last_timestamp: int

    @property
    def lag(self) -> int:
        return max(0, self.broker_offset - max(self.consumer_offset, 0))


@dataclass
class ConsumeStats:
    """A group's progress per queue (Java ``ConsumeStats``)."""

    offset_table: dict[MessageQueue, OffsetWrapper] = field(default_factory=dict)
    consume_tps: float = 0.0

    def diff_total(self) -> int:
        """Messages stored but not yet consumed by the group (its lag), over every queue."""
        return sum(w.lag for w in self.offset_table.values())

    def lag_by_topic(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for mq, w in self.offset_table.items():
            out[mq.topic] = out.get(mq.topic, 0) + w.lag
        return out


def _mq_of(key: Any) -> MessageQueue:
    if isinstance(key, str):
        key = fastjson.loads(key)
    return api.queue_from_wire(key)


class Admin(AsyncLifecycle):
    """Administration of a cluster through its nameservers (see the module docstring)."""

    def __init__(self, namesrv_addr: str | None = None, *, config: ClientConfig | None = None,
                 instance: ClientInstance | None = None, **options: Any) -> None:
        base = config if config is not None else ClientConfig()
        if namesrv_addr is not None:
            options["namesrv_addr"] = namesrv_addr
        self.config = base.updated(**options) if options else base
        self._shared_instance = instance
        self._instance = instance
        self._stack: AsyncExitStack | None = None

    @property
    def instance(self) -> ClientInstance:
        if self._instance is None:
            raise ClientError("the admin client is not started: use 'async with Admin(...)'")
        return self._instance

    async def _open(self, stack: AsyncExitStack) -> None:
        if self._shared_instance is None:
            self._instance = ClientInstance(self.config.with_unique_instance_name())
            await stack.enter_async_context(self._instance)

    # -- helpers ----------------------------------------------------------------------------------

    async def _call(self, addr: str, code: int, ext: dict[str, str] | None = None, body: Any = None,
                    ok: tuple[int, ...] = (ResponseCode.SUCCESS,), timeout_ms: float | None = None) -> Any:
        resp = await self.instance.invoke(addr, self.instance.request(code, ext, body), timeout_ms)
        if resp.code not in ok:
            raise BrokerError(resp.code, resp.remark, addr)
        return resp

    async def _namesrv(self, code: int, ext: dict[str, str] | None = None) -> Any:
        resp = await self.instance.invoke_namesrv(self.instance.request(code, ext))
        if resp.code != ResponseCode.SUCCESS:
            raise BrokerError(resp.code, resp.remark, self.instance.current_namesrv)
        return resp

    async def _route_or_fail(self, topic: str) -> TopicRouteData:
        route = await self.topic_route(topic)
        if route is None:
            raise ClientError(f"No route info of this topic: {topic}")
        return route

    @staticmethod
    def _addr_of(broker_addrs: dict[int, str]) -> str | None:
        return broker_addrs.get(MASTER_ID) or next(iter(sorted(broker_addrs.items())), (None, None))[1]

    # -- cluster, routes, topics --------------------------------------------------------------------

    async def cluster_info(self) -> ClusterInfo:
        """GET_BROKER_CLUSTER_INFO: every broker group and the clusters they belong to."""
        resp = await self._namesrv(RequestCode.GET_BROKER_CLUSTER_INFO)
        return ClusterInfo.decode(bytes(resp.body or b"{}"))

    async def master_addrs(self, cluster: str | None = None) -> dict[str, str]:
        """Broker name → master address, of one cluster or of all."""
        info = await self.cluster_info()
        names = set(info.cluster_addr_table.get(cluster, [])) if cluster else set(info.broker_addr_table)
        out = {}
        for name in sorted(names):
            bd = info.broker_addr_table.get(name)
            if bd is not None and MASTER_ID in bd.broker_addrs:
                out[name] = bd.broker_addrs[MASTER_ID]
        return out

    async def topic_route(self, topic: str) -> TopicRouteData | None:
        """GET_ROUTEINFO_BY_TOPIC; None when no nameserver knows the topic."""
        return await self.instance.fetch_route(topic)

    async def topic_list(self) -> list[str]:
        resp = await self._namesrv(RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)
        return sorted(TopicList.decode(bytes(resp.body or b"{}")).topic_list)

    async def create_topic(self, topic: str, queue_nums: int = 8, *, read_queue_nums: int | None = None,
                           write_queue_nums: int | None = None, perm: int = 6, order: bool = False,
                           cluster: str | None = None, broker_names: list[str] | None = None,
                           wait_route_s: float = 10.0) -> list[str]:
        """UPDATE_AND_CREATE_TOPIC on every master of ``cluster`` (default: all), or of ``broker_names``; then
        waits (up to ``wait_route_s``) until a nameserver routes it on them. Returns the broker names."""
        validate_topic(topic)
        masters = await self.master_addrs(cluster)
        if broker_names is not None:
            masters = {n: a for n, a in masters.items() if n in set(broker_names)}
        if not masters:
            raise ClientError(f"no master broker to create {topic} on (cluster {cluster!r}, brokers {broker_names})")
        header = h.CreateTopicRequestHeader(
            topic=topic, default_topic="TBW102", read_queue_nums=read_queue_nums or queue_nums,
            write_queue_nums=write_queue_nums or queue_nums, perm=perm, topic_filter_type="SINGLE_TAG",
            topic_sys_flag=0, order=order)
        for addr in masters.values():
            await self._call(addr, RequestCode.UPDATE_AND_CREATE_TOPIC, header.to_ext())
        if wait_route_s > 0:
            with trio.move_on_after(wait_route_s):
                while True:
                    route = await self.topic_route(topic)
                    if route is not None and set(masters) <= {q.broker_name for q in route.queue_datas}:
                        break
                    await trio.sleep(0.05)
        return sorted(masters)

    async def delete_topic(self, topic: str, *, cluster: str | None = None) -> None:
        """DELETE_TOPIC_IN_BROKER on the masters of ``cluster`` (default: all), then DELETE_TOPIC_IN_NAMESRV on
        every nameserver."""
        for addr in (await self.master_addrs(cluster)).values():
            await self._call(addr, RequestCode.DELETE_TOPIC_IN_BROKER, {"topic": topic})
        ext = {"topic": topic}
        if cluster:
            ext["clusterName"] = cluster
        for addr in self.instance.namesrv_addrs:
            await self._call(addr, RequestCode.DELETE_TOPIC_IN_NAMESRV, ext)

    async def topic_stats(self, topic: str) -> dict[MessageQueue, TopicOffset]:
        """GET_TOPIC_STATS_INFO from every broker of the topic: min/max offset and last store time per queue."""
        route = await self._route_or_fail(topic)
        out: dict[MessageQueue, TopicOffset] = {}
        for bd in route.broker_datas:
            addr = self._addr_of(bd.broker_addrs)
            if addr is None:
                continue
            resp = await self._call(addr, RequestCode.GET_TOPIC_STATS_INFO, {"topic": topic})
            for key, value in (fastjson.loads(bytes(resp.body)).get("offsetTable") or {}).items():
                out[_mq_of(key)] = TopicOffset(int(value.get("minOffset", 0)), int(value.get("maxOffset", 0)),
                                               int(value.get("lastUpdateTimestamp", 0)))
        return dict(sorted(out.items()))

    # -- consumer groups ----------------------------------------------------------------------------

    async def _group_brokers(self, group: str, topic: str | None) -> list[str]:
        route = await self.topic_route(topic) if topic else None
        if route is None:
            route = await self.topic_route(retry_topic(group))
        if route is None:
            return list((await self.master_addrs()).values())
        return [a for a in (self._addr_of(bd.broker_addrs) for bd in route.broker_datas) if a]

    async def consume_stats(self, group: str, topic: str | None = None) -> ConsumeStats:
        """GET_CONSUME_STATS from the brokers of ``topic`` (or of the group's retry topic): per queue the broker's
        max offset, the group's committed offset and the store time of the last consumed message."""
        stats = ConsumeStats()
        ext = {"consumerGroup": group}
        if topic:
            ext["topic"] = topic
        for addr in await self._group_brokers(group, topic):
            resp = await self._call(addr, RequestCode.GET_CONSUME_STATS, ext)
            doc = fastjson.loads(bytes(resp.body or b"{}"))
            stats.consume_tps += float(doc.get("consumeTps") or 0)
            for key, value in (doc.get("offsetTable") or {}).items():
                stats.offset_table[_mq_of(key)] = OffsetWrapper(int(value.get("brokerOffset", 0)),
                                                                int(value.get("consumerOffset", -1)),
                                                                int(value.get("lastTimestamp", 0)))
        stats.offset_table = dict(sorted(stats.offset_table.items()))
        return stats

    async def consumer_lag(self, group: str, topic: str | None = None) -> int:
        return (await self.consume_stats(group, topic)).diff_total()

    async def consumer_connections(self, group: str) -> dict[str, Any]:
        """GET_CONSUMER_CONNECTION_LIST: the group's live members, subscriptions and settings (one broker's view)."""
        last: Exception | None = None
        for addr in await self._group_brokers(group, None):
            try:
                resp = await self._call(addr, RequestCode.GET_CONSUMER_CONNECTION_LIST, {"consumerGroup": group})
                return fastjson.loads(bytes(resp.body or b"{}"))
            except BrokerError as exc:
                last = exc
        raise last or ClientError(f"the consumer group[{group}] not online")

    async def update_consumer_offset(self, group: str, mq: MessageQueue, offset: int) -> None:
        await api.update_consumer_offset(self.instance, group, mq, offset)

    async def reset_offset_by_timestamp(self, group: str, topic: str, timestamp_ms: int, *,
                                        force: bool = True) -> dict[MessageQueue, int]:
        """Set the group's offset of every queue of ``topic`` to the first message stored at ``timestamp_ms``
        (``force=False``: only where that moves the group back). Returns the offsets written."""
        route = await self._route_or_fail(topic)
        await self.instance.update_route(topic)
        current = (await self.consume_stats(group, topic)).offset_table
        out: dict[MessageQueue, int] = {}
        for mq in subscribe_queues(topic, route):
            offset = await api.search_offset(self.instance, mq, timestamp_ms)
            consumer = current.get(mq)
            if not force and consumer is not None and consumer.consumer_offset >= 0 and \
                    offset >= consumer.consumer_offset:
                continue
            await api.update_consumer_offset(self.instance, group, mq, offset)
            out[mq] = offset
        return out

    # -- queues -------------------------------------------------------------------------------------

    async def max_offset(self, mq: MessageQueue) -> int:
        await self.instance.update_route(mq.topic)
        return await api.max_offset(self.instance, mq)

    async def min_offset(self, mq: MessageQueue) -> int:
        await self.instance.update_route(mq.topic)
        return await api.min_offset(self.instance, mq)

    async def search_offset(self, mq: MessageQueue, timestamp_ms: int) -> int:
        await self.instance.update_route(mq.topic)
        return await api.search_offset(self.instance, mq, timestamp_ms)

    # -- messages -----------------------------------------------------------------------------------

    async def _query(self, topic: str, key: str, max_num: int, begin_ms: int, end_ms: int,
                     unique: bool) -> list[MessageExt]:
        route = await self._route_or_fail(topic)
        header = h.QueryMessageRequestHeader(topic=topic, key=key, max_num=max_num, begin_timestamp=begin_ms,
                                             end_timestamp=end_ms)
        ext = header.to_ext()
        if unique:
            ext[UNIQUE_MSG_QUERY_FLAG] = "true"
        out: list[MessageExt] = []
        for bd in route.broker_datas:
            addr = self._addr_of(bd.broker_addrs)
            if addr is None:
                continue
            resp = await self._call(addr, RequestCode.QUERY_MESSAGE, ext,
                                    ok=(ResponseCode.SUCCESS, ResponseCode.QUERY_NOT_FOUND))
            if resp.code == ResponseCode.SUCCESS and resp.body:
                out.extend(decode_records(bytes(resp.body)))
        if unique:
            return [m for m in out if m.unique_key == key]
        return [m for m in out if key in m.keys and m.topic == topic]

    async def query_messages_by_key(self, topic: str, key: str, *, max_num: int = 32, begin_ms: int = 0,
                                    end_ms: int | None = None) -> list[MessageExt]:
        """Messages of ``topic`` whose KEYS include ``key`` (the brokers' hash index), stored in [begin, end]."""
        end = int(time.time() * 1000) if end_ms is None else end_ms
        msgs = await self._query(topic, key, max_num, begin_ms, end, unique=False)
        return sorted(msgs, key=lambda m: (m.store_timestamp, m.queue_id, m.queue_offset))[:max_num]

    async def query_message_by_unique_key(self, topic: str, msg_id: str) -> MessageExt | None:
        """The message of ``topic`` whose UNIQ_KEY (the msgId clients show) is ``msg_id``."""
        msgs = await self._query(topic, msg_id, 32, 0, int(time.time() * 1000) + 60_000, unique=True)
        return min(msgs, key=lambda m: m.store_timestamp) if msgs else None

    async def view_message(self, msg_id: str, topic: str | None = None) -> MessageExt:
        """A message by its msgId: the UNIQ_KEY (with ``topic``) or the offset message id (VIEW_MESSAGE_BY_ID)."""
        if topic is not None:
            found = await self.query_message_by_unique_key(topic, msg_id)
            if found is not None:
                return found
        try:
            host, port, offset = decode_offset_msg_id(msg_id)
        except ValueError:
            raise ClientError(f"message {msg_id} not found") from None
        addr = f"{host}:{port}"
        info = await self.cluster_info()
        known = {a for bd in info.broker_addr_table.values() for a in bd.broker_addrs.values()}
        if addr not in known:
            raise ClientError(f"message {msg_id} not found (not an offset message id of this cluster's brokers)")
        resp = await self._call(addr, RequestCode.VIEW_MESSAGE_BY_ID, {"offset": str(offset)})
        [msg] = decode_records(bytes(resp.body))
        return msg
