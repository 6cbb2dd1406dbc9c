"""The broker calls consumers make (Java's ``PullAPIWrapper``, the consumer half of ``MQClientAPIImpl`` and
``MQAdminImpl``), over a ``ClientInstance``.

* ``PullAPI.pull`` — PULL_MESSAGE (11) to the broker the last answer suggested (the master unless a broker
  said otherwise), the commit-offset bit cleared when that broker is a slave; the response code mapped to
  ``PullStatus`` as Java's ``processPullResponse`` does (0 FOUND, 19 NO_NEW_MSG, 20 NO_MATCHED_MSG,
  21 OFFSET_ILLEGAL, anything else raises ``BrokerError``). ``PullAPI.messages`` decodes a FOUND body, drops
  messages whose tag is not subscribed (the broker matched hash codes only) and stamps ``MIN_OFFSET`` /
  ``MAX_OFFSET`` as ``processPullResult`` does; ``PullAPI.batch`` is the columnar fast path (no stamping, no
  per-message objects).
* Offsets: QUERY_CONSUMER_OFFSET (14; 22 → ``OffsetNotFoundError``) and UPDATE_CONSUMER_OFFSET (15) to the
  master, or to a slave of the group while the route has no master (Java ``RemoteBrokerOffsetStore``);
  GET_MAX_OFFSET (30), GET_MIN_OFFSET (31), SEARCH_OFFSET_BY_TIMESTAMP (29), GET_EARLIEST_MSG_STORETIME (32) to
  the master only, as Java's ``MQAdminImpl``.
* Groups: GET_CONSUMER_LIST_BY_GROUP (38) from one broker of the topic, LOCK_BATCH_MQ (41) /
  UNLOCK_BATCH_MQ (42), CONSUMER_SEND_MSG_BACK (36), CHECK_CLIENT_CONFIG (46).

Broker addresses come from the instance's routes; a broker the routes do not know yet triggers one route
refresh of the queue's topic before ``ClientError`` ("The broker[...] not exist").
"""
from __future__ import annotations

import enum
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rmq_client.codec import PullBatch, PulledMessage, decode_pull_batch, decode_pull_body
from rmq_client.errors import BrokerError, ClientError
from rmq_client.instance import ClientInstance
from rmq_client.routing import MessageQueue
from rmq_common.message import MessageExt
from rmq_common.properties import PropertyKey
from rmq_nameserver.bodies import MASTER_ID
from rmq_remoting import RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h

__all__ = [
    "PullStatus", "PullResult", "PullSysFlag", "PullAPI", "OffsetNotFoundError", "CHECK_CLIENT_CONFIG",
    "query_consumer_offset", "update_consumer_offset", "max_offset", "min_offset", "search_offset",
    "earliest_msg_store_time", "consumer_id_list", "lock_batch_mq", "unlock_batch_mq", "send_message_back",
    "check_client_in_broker", "find_broker_in_subscribe", "queue_from_wire", "stamp_offset_range",
]

log = logging.getLogger("rmq_client")

#: ``RequestCode.CHECK_CLIENT_CONFIG``: can the broker filter with this (non-TAG) subscription?
CHECK_CLIENT_CONFIG = 46
#: Timeout of CONSUMER_SEND_MSG_BACK (Java's ``sendMessageBack`` passes 5000 ms).
SEND_BACK_TIMEOUT_MS = 5000
#: Timeout of LOCK/UNLOCK_BATCH_MQ (Java: 1000 ms).
LOCK_TIMEOUT_MS = 1000


class PullSysFlag(enum.IntFlag):
    """Bits of the pull request's sysFlag (``PullSysFlag``)."""

    COMMIT_OFFSET = 0x1
    SUSPEND = 0x2
    SUBSCRIPTION = 0x4
    CLASS_FILTER = 0x8
    LITE_PULL = 0x10

    @staticmethod
    def build(commit_offset: bool, suspend: bool, subscription: bool, class_filter: bool = False) -> int:
        flag = 0
        if commit_offset:
            flag |= 0x1
        if suspend:
            flag |= 0x2
        if subscription:
            flag |= 0x4
        if class_filter:
            flag |= 0x8
        return flag


class PullStatus(enum.Enum):
    FOUND = "FOUND"
    NO_NEW_MSG = "NO_NEW_MSG"
    NO_MATCHED_MSG = "NO_MATCHED_MSG"
    OFFSET_ILLEGAL = "OFFSET_ILLEGAL"


_STATUS_BY_CODE = {
    ResponseCode.SUCCESS: PullStatus.FOUND,
    ResponseCode.PULL_NOT_FOUND: PullStatus.NO_NEW_MSG,
    ResponseCode.PULL_RETRY_IMMEDIATELY: PullStatus.NO_MATCHED_MSG,
    ResponseCode.PULL_OFFSET_MOVED: PullStatus.OFFSET_ILLEGAL,
}


@dataclass(slots=True)
class PullResult:
    """One PULL_MESSAGE answer; ``body`` is the raw records (FOUND only), decoded by ``PullAPI``."""

    status: PullStatus
    next_begin_offset: int
    min_offset: int
    max_offset: int
    suggest_which_broker_id: int
    body: Any = None

    @property
    def body_size(self) -> int:
        return len(self.body) if self.body is not None else 0


class OffsetNotFoundError(BrokerError):
    """QUERY_CONSUMER_OFFSET answered 22: the group has no offset on this queue (apply ConsumeFromWhere)."""


def queue_from_wire(obj: Mapping[str, Any]) -> MessageQueue:
    return MessageQueue(str(obj["topic"]), str(obj["brokerName"]), int(obj["queueId"]))


def stamp_offset_range(msgs: Iterable[MessageExt], min_offset: int, max_offset: int) -> None:
    """Give each pulled message its queue's MIN_OFFSET / MAX_OFFSET properties, as Java's processPullResult."""
    lo, hi = str(min_offset), str(max_offset)
    for msg in msgs:
        props = msg.properties
        props[PropertyKey.MIN_OFFSET] = lo
        props[PropertyKey.MAX_OFFSET] = hi


# ---------------------------------------------------------------------------------------------------
# Broker addresses
# ---------------------------------------------------------------------------------------------------

async def find_broker_in_subscribe(instance: ClientInstance, broker_name: str, broker_id: int = MASTER_ID,
                                   only_this_broker: bool = False, topic: str | None = None) -> tuple[str, bool]:
    """(address, is_slave) of ``broker_name`` (Java ``findBrokerAddressInSubscribe``).

    The asked-for broker id if known; for a slave id that is not, the next id (Java tries ``brokerId + 1``);
    else (unless ``only_this_broker``) the group's lowest id — the slave when the master has left the route.
    A group the routes do not know makes one route refresh of ``topic`` first; then ``ClientError``.
    """
    for attempt in range(2):
        addrs = instance.broker_addrs(broker_name)
        addr = addrs.get(broker_id)
        if addr is not None:
            return addr, broker_id != MASTER_ID
        if broker_id != MASTER_ID and addrs.get(broker_id + 1) is not None:
            return addrs[broker_id + 1], True
        if addrs and not only_this_broker:
            bid, addr = next(iter(sorted(addrs.items())))
            return addr, bid != MASTER_ID
        if attempt == 0 and topic is not None:
            await instance.update_route(topic)
    raise ClientError(f"The broker[{broker_name}] not exist")


async def _master(instance: ClientInstance, mq: MessageQueue) -> str:
    return (await find_broker_in_subscribe(instance, mq.broker_name, MASTER_ID, True, mq.topic))[0]


async def _offset_broker(instance: ClientInstance, mq: MessageQueue) -> str:
    """Where consumer offsets of ``mq`` are committed and queried (Java ``RemoteBrokerOffsetStore``): the
    master; when the routes have none, after one route refresh, any broker of the group — a slave keeps the
    offsets while its master is down, and the consumer's next periodic commit gives them back to the master
    once it is in the route again."""
    addr = instance.broker_addrs(mq.broker_name).get(MASTER_ID)
    if addr is not None:
        return addr
    await instance.update_route(mq.topic)
    return (await find_broker_in_subscribe(instance, mq.broker_name, MASTER_ID, False))[0]


def _check(resp: Any, addr: str) -> None:
    if resp.code != ResponseCode.SUCCESS:
        raise BrokerError(resp.code, resp.remark, addr)


# ---------------------------------------------------------------------------------------------------
# Pulls
# ---------------------------------------------------------------------------------------------------

class PullAPI:
    """Pulls of one consumer group (Java ``PullAPIWrapper``): which broker to ask, and what came back."""

    def __init__(self, instance: ClientInstance, group: str) -> None:
        self.instance = instance
        self.group = group
        #: Queue → the broker id the last answer suggested (``pullFromWhichNodeTable``).
        self.pull_from_which_node: dict[MessageQueue, int] = {}

    async def pull(self, mq: MessageQueue, *, offset: int, max_nums: int, sys_flag: int, commit_offset: int,
                   sub_version: int, subscription: str | None, expression_type: str,
                   suspend_timeout_ms: int, timeout_ms: float) -> PullResult:
        """One PULL_MESSAGE (``pullKernelImpl`` + ``processPullResponse``)."""
        broker_id = self.pull_from_which_node.get(mq, MASTER_ID)
        addr, slave = await find_broker_in_subscribe(self.instance, mq.broker_name, broker_id, False, mq.topic)
        if slave:
            sys_flag &= ~PullSysFlag.COMMIT_OFFSET
        ext = {"consumerGroup": self.group, "topic": mq.topic, "queueId": str(mq.queue_id),
               "queueOffset": str(offset), "maxMsgNums": str(max_nums), "sysFlag": str(int(sys_flag)),
               "commitOffset": str(commit_offset), "suspendTimeoutMillis": str(suspend_timeout_ms),
               "subVersion": str(sub_version), "expressionType": expression_type}
        if subscription is not None:
            ext["subscription"] = subscription
        instance = self.instance
        resp = await instance.remoting.invoke(addr, instance.request(RequestCode.PULL_MESSAGE, ext), timeout_ms)
        status = _STATUS_BY_CODE.get(resp.code)
        if status is None:
            raise BrokerError(resp.code, resp.remark, addr)
        rext = resp.ext_fields or {}
        try:
            result = PullResult(status, int(rext["nextBeginOffset"]), int(rext.get("minOffset", 0)),
                                int(rext.get("maxOffset", 0)), int(rext.get("suggestWhichBrokerId", MASTER_ID)),
                                resp.body if status is PullStatus.FOUND else None)
        except (KeyError, ValueError):
            raise BrokerError(resp.code, f"malformed pull response header {rext!r}", addr) from None
        self.pull_from_which_node[mq] = result.suggest_which_broker_id
        return result

    @staticmethod
    def messages(mq: MessageQueue, result: PullResult, tags: Iterable[str] | None,
                 stamp: bool = True) -> list[PulledMessage]:
        """A FOUND body as messages (``processPullResult``): tag re-filter, MIN/MAX_OFFSET stamped."""
        if result.body is None:
            return []
        msgs = decode_pull_body(result.body, tags=tags or None)
        if stamp:
            stamp_offset_range(msgs, result.min_offset, result.max_offset)
        return msgs

    @staticmethod
    def batch(result: PullResult, tags: Iterable[str] | None) -> PullBatch:
        """A FOUND body as a ``PullBatch`` (bodies decoded, everything else on demand)."""
        return decode_pull_batch(result.body, tags=tags or None)


# ---------------------------------------------------------------------------------------------------
# Offsets and queue bounds
# ---------------------------------------------------------------------------------------------------

async def query_consumer_offset(instance: ClientInstance, group: str, mq: MessageQueue) -> int:
    """The group's committed offset on ``mq``; ``OffsetNotFoundError`` when there is none (code 22)."""
    addr = await _offset_broker(instance, mq)
    header = h.QueryConsumerOffsetRequestHeader(consumer_group=group, topic=mq.topic, queue_id=mq.queue_id)
    resp = await instance.invoke(addr, instance.request(RequestCode.QUERY_CONSUMER_OFFSET, header.to_ext()))
    if resp.code == ResponseCode.QUERY_NOT_FOUND:
        raise OffsetNotFoundError(resp.code, resp.remark, addr)
    _check(resp, addr)
    return int((resp.ext_fields or {})["offset"])


async def update_consumer_offset(instance: ClientInstance, group: str, mq: MessageQueue, offset: int, *,
                                 oneway: bool = False) -> None:
    addr = await _offset_broker(instance, mq)
    header = h.UpdateConsumerOffsetRequestHeader(consumer_group=group, topic=mq.topic, queue_id=mq.queue_id,
                                                 commit_offset=offset)
    cmd = instance.request(RequestCode.UPDATE_CONSUMER_OFFSET, header.to_ext())
    if oneway:
        await instance.invoke_oneway(addr, cmd)
        return
    _check(await instance.invoke(addr, cmd), addr)


async def _offset_call(instance: ClientInstance, mq: MessageQueue, code: int, ext: dict[str, str],
                       field: str = "offset") -> int:
    addr = await _master(instance, mq)
    resp = await instance.invoke(addr, instance.request(code, ext))
    _check(resp, addr)
    return int((resp.ext_fields or {})[field])


async def max_offset(instance: ClientInstance, mq: MessageQueue) -> int:
    """GET_MAX_OFFSET: the offset the next message of ``mq`` will get."""
    return await _offset_call(instance, mq, RequestCode.GET_MAX_OFFSET,
                              {"topic": mq.topic, "queueId": str(mq.queue_id)})


async def min_offset(instance: ClientInstance, mq: MessageQueue) -> int:
    return await _offset_call(instance, mq, RequestCode.GET_MIN_OFFSET,
                              {"topic": mq.topic, "queueId": str(mq.queue_id)})


async def search_offset(instance: ClientInstance, mq: MessageQueue, timestamp_ms: int) -> int:
    """SEARCH_OFFSET_BY_TIMESTAMP: the first offset stored at or after ``timestamp_ms``."""
    return await _offset_call(instance, mq, RequestCode.SEARCH_OFFSET_BY_TIMESTAMP,
                              {"topic": mq.topic, "queueId": str(mq.queue_id), "timestamp": str(int(timestamp_ms))})


async def earliest_msg_store_time(instance: ClientInstance, mq: MessageQueue) -> int:
    return await _offset_call(instance, mq, RequestCode.GET_EARLIEST_MSG_STORETIME,
                              {"topic": mq.topic, "queueId": str(mq.queue_id)}, "timestamp")


# ---------------------------------------------------------------------------------------------------
# Groups, locks, send-back
# ---------------------------------------------------------------------------------------------------

def _any_broker_of(instance: ClientInstance, topic: str) -> str | None:
    """A random broker group of the topic's route, its master preferred (``findBrokerAddrByTopic``)."""
    route = instance.route(topic)
    if route is None or not route.broker_datas:
        return None
    bd = route.broker_datas[random.randrange(len(route.broker_datas))]
    addr = bd.broker_addrs.get(MASTER_ID)
    if addr is None and bd.broker_addrs:
        addr = random.choice(list(bd.broker_addrs.values()))
    return addr


async def consumer_id_list(instance: ClientInstance, topic: str, group: str) -> list[str] | None:
    """The client ids of ``group`` as one broker of ``topic`` knows them; None when none could be asked."""
    addr = _any_broker_of(instance, topic)
    if addr is None:
        await instance.update_route(topic)
        addr = _any_broker_of(instance, topic)
    if addr is None:
        return None
    header = h.GetConsumerListByGroupRequestHeader(consumer_group=group)
    resp = await instance.invoke(addr, instance.request(RequestCode.GET_CONSUMER_LIST_BY_GROUP, header.to_ext()))
    if resp.code != ResponseCode.SUCCESS or not resp.body:
        log.debug("client %s: consumer list of %s from %s: %d %s", instance.client_id, group, addr, resp.code,
                  resp.remark)
        return None
    ids = fastjson.loads(bytes(resp.body)).get("consumerIdList") or []
    return [str(i) for i in ids]


def _lock_body(client_id: str, group: str, mqs: Iterable[MessageQueue]) -> bytes:
    return fastjson.dumps({"clientId": client_id, "consumerGroup": group,
                           "mqSet": [mq.to_wire() for mq in sorted(set(mqs))]})


async def lock_batch_mq(instance: ClientInstance, addr: str, group: str, mqs: Iterable[MessageQueue],
                        timeout_ms: float = LOCK_TIMEOUT_MS) -> set[MessageQueue]:
    """LOCK_BATCH_MQ: the queues the broker granted this client."""
    body = _lock_body(instance.client_id, group, mqs)
    resp = await instance.invoke(addr, instance.request(RequestCode.LOCK_BATCH_MQ, None, body), timeout_ms)
    _check(resp, addr)
    doc = fastjson.loads(bytes(resp.body)) if resp.body else {}
    return {queue_from_wire(q) for q in doc.get("lockOKMQSet") or []}


async def unlock_batch_mq(instance: ClientInstance, addr: str, group: str, mqs: Iterable[MessageQueue], *,
                          oneway: bool = False, timeout_ms: float = LOCK_TIMEOUT_MS) -> None:
    cmd = instance.request(RequestCode.UNLOCK_BATCH_MQ, None, _lock_body(instance.client_id, group, mqs))
    if oneway:
        await instance.invoke_oneway(addr, cmd, timeout_ms)
        return
    _check(await instance.invoke(addr, cmd, timeout_ms), addr)


async def send_message_back(instance: ClientInstance, broker_name: str | None, msg: MessageExt, group: str,
                            delay_level: int, max_reconsume_times: int) -> None:
    """CONSUMER_SEND_MSG_BACK (36) to the master of ``broker_name`` (else the message's store host)."""
    addr = instance.master_addr(broker_name) if broker_name else None
    if addr is None:
        host, port = msg.store_host
        addr = f"{host}:{port}"
    header = h.ConsumerSendMsgBackRequestHeader(
        offset=msg.commit_log_offset, group=group, delay_level=delay_level, origin_msg_id=msg.msg_id,
        origin_topic=msg.topic, unit_mode=False, max_reconsume_times=max_reconsume_times)
    resp = await instance.invoke(addr, instance.request(RequestCode.CONSUMER_SEND_MSG_BACK, header.to_ext()),
                                 SEND_BACK_TIMEOUT_MS)
    _check(resp, addr)


async def check_client_in_broker(instance: ClientInstance, group: str, subscription: Mapping[str, Any]) -> None:
    """CHECK_CLIENT_CONFIG to every master known: can it filter with this (SQL92) subscription?"""
    body = fastjson.dumps({"clientId": instance.client_id, "group": group, "subscriptionData": dict(subscription)})
    for name in instance.broker_names():
        addr = instance.master_addr(name)
        if addr is None:
            continue
        resp = await instance.invoke(addr, instance.request(CHECK_CLIENT_CONFIG, None, body))
        if resp.code != ResponseCode.SUCCESS:
            kind = subscription.get("expressionType")
            raise ClientError(f"Check client in broker error, maybe because you use {kind} to filter message, "
                              f"but server has not been upgraded to support! This error would "
                              f"not affect the launch of consumer, but may has impact on message receiving if you "
                              f"have use the new features which are not supported by server, please check the log! "
                              f"({addr}: {resp.code} {resp.remark})")
