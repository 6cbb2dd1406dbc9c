"""CONSUMER_SEND_MSG_BACK (36): a message a consumer failed to process goes to its group's retry topic,
and after too many attempts to its dead-letter topic (PROTOCOL.md §9.4).

Java ``SendMessageProcessor.asyncConsumerSendMsgBack`` (4.9.7), step by step:

    group config (auto-created as for a pull; none → SUBSCRIPTION_GROUP_NOT_EXIST) → broker writable →
    retryQueueNums ≤ 0: SUCCESS, nothing stored → ``%RETRY%<group>`` created (retryQueueNums queues, RW)
    and writable → the original read by its commitlog ``offset`` → reconsumeTimes ≥ maxReconsumeTimes or
    delayLevel < 0: ``%DLQ%<group>`` (1 queue) now; otherwise ``%RETRY%<group>`` after delay level
    ``delayLevel`` (0 → 3 + reconsumeTimes), i.e. parked in SCHEDULE_TOPIC_XXXX like any send with DELAY.

The new message is the original's body, flag, sysflag, born time and host, properties plus RETRY_TOPIC
(the original topic, unless already set), ORIGIN_MESSAGE_ID (the original's offset msgId, unless already
set), WAIT=false and DELAY; its reconsumeTimes is the original's + 1. maxReconsumeTimes is the group's
retryMaxTimes (16 by default), or the request's maxReconsumeTimes when the client is 3.4.9 or newer.

The send path's half (Java ``handleRetryAndDLQ``) lives in send.py and uses ``dlq_for_retry_send``:
a client that stores its own retry (its send-back failed) or an orderly consumer giving up sends to
``%RETRY%<group>`` with reconsumeTimes in the header; at the maximum the message goes to the DLQ.
"""
from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from rmq_common.msgid import create_offset_msg_id
from rmq_common.properties import PropertiesTooLongError, encode_properties
from rmq_common.topic import InvalidTopicError, dlq_topic, retry_topic
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode
from rmq_remoting.headers import ConsumerSendMsgBackRequestHeader
from rmq_store import DiskFullError, MessageTooLargeError, PutStatus, StoreError

from rmq_broker.perm import PermName
from rmq_broker.subscription_group import InvalidGroupError

if TYPE_CHECKING:
    from rmq_broker.broker import Broker
    from rmq_broker.subscription_group import SubscriptionGroupConfig
    from rmq_broker.topic_config import TopicConfig, TopicConfigManager
    from rmq_remoting import Connection

__all__ = ["ConsumerSendMsgBackProcessor", "DLQ_NUMS_PER_GROUP", "DLQ_PERM", "max_reconsume_times",
           "create_dlq_topic", "group_not_exist_remark"]

log = logging.getLogger("rmq_broker.send_back")

_FAQ = "\nSee http://rocketmq.apache.org/docs/faq/ for further details."

#: Queues of a %DLQ% topic (``AbstractSendMessageProcessor.DLQ_NUMS_PER_GROUP``).
DLQ_NUMS_PER_GROUP = 1
#: Perm of a %DLQ% topic created by the broker: READ|WRITE since RocketMQ 4.9.2 (commit "DLQ topic default
#: perm change"); 4.9.0/4.9.1 created it WRITE-only, so nobody could pull it without changing the perm first.
DLQ_PERM = int(PermName.READ | PermName.WRITE)
_RETRY_PERM = int(PermName.READ | PermName.WRITE)
#: ``MQVersion.Version.V3_4_9.ordinal()``: older clients' maxReconsumeTimes field is ignored.
V3_4_9 = 121
#: ``TopicSysFlag.buildSysFlag(false, true)``: the retry topic of a unit-mode consumer.
_UNIT_SUB_TOPIC_FLAG = 0x2


def max_reconsume_times(version: int, group_config: SubscriptionGroupConfig, requested: int | None) -> int:
    """How many reconsumptions a message gets before the DLQ: the group's retryMaxTimes, overridden by the
    request's maxReconsumeTimes when the client is 3.4.9 or newer and sent one."""
    if version >= V3_4_9 and requested is not None:
        return requested
    return group_config.retry_max_times


def create_dlq_topic(topics: TopicConfigManager, group: str) -> TopicConfig:
    """``%DLQ%<group>``, created with 1 queue and DLQ_PERM if it does not exist (an existing one is kept)."""
    return topics.create_in_send_back(dlq_topic(group), DLQ_NUMS_PER_GROUP, DLQ_PERM, 0)


def group_not_exist_remark(group: str) -> str:
    return f"subscription group not exist, {group} {_FAQ}"


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


class ConsumerSendMsgBackProcessor:
    CODES = (RequestCode.CONSUMER_SEND_MSG_BACK,)

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._random = random.Random()
        self.sent_back = 0                  # messages stored in a retry topic (via the schedule)
        self.dead_lettered = 0              # messages stored in a DLQ

    def handlers(self) -> dict[int, Any]:
        return {code: self.handle for code in self.CODES}

    async def handle(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = ConsumerSendMsgBackRequestHeader.decode(cmd.ext_fields)
        return self.send_back(cmd, header)

    def send_back(self, cmd: RemotingCommand, header: ConsumerSendMsgBackRequestHeader) -> RemotingCommand:
        broker = self.broker
        config = broker.config
        group = header.group
        try:
            group_config = broker.groups.find_or_auto_create(group)
        except InvalidGroupError as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, str(exc))
        if group_config is None:
            return cmd.create_response(ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST, group_not_exist_remark(group))
        if not config.broker_permission & PermName.WRITE:
            return cmd.create_response(ResponseCode.NO_PERMISSION,
                                       f"the broker[{config.broker_ip1}] sending message is forbidden")
        if not broker.writable:             # a slave, or shutting down: Java's store answers SERVICE_NOT_AVAILABLE
            return cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                       f"SERVICE_NOT_AVAILABLE: broker {config.broker_name} is not writable now "
                                       f"(role {config.broker_role})")
        if group_config.retry_queue_nums <= 0:
            return cmd.create_response(ResponseCode.SUCCESS)

        topic = retry_topic(group)
        queue_id = self._random.randrange(group_config.retry_queue_nums)
        try:
            topic_config = broker.topics.create_in_send_back(
                topic, group_config.retry_queue_nums, _RETRY_PERM, _UNIT_SUB_TOPIC_FLAG if header.unit_mode else 0)
        except (InvalidTopicError, ValueError) as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, f"topic[{topic}] not exist: {exc}")
        if not topic_config.perm & PermName.WRITE:
            return cmd.create_response(ResponseCode.NO_PERMISSION, f"the topic[{topic}] sending message is forbidden")

        try:
            msg = broker.store.read_message(header.offset)
        except ValueError as exc:           # RecordError: no valid record starts there
            log.warning("send-back of group %s: no record at offset %d: %s", group, header.offset, exc)
            msg = None
        if msg is None:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, f"look message by offset failed, {header.offset}")

        props = dict(msg.properties)
        props.setdefault("RETRY_TOPIC", msg.topic)
        props["WAIT"] = "false"
        delay_level = header.delay_level
        limit = max_reconsume_times(cmd.version, group_config, header.max_reconsume_times)
        to_dlq = msg.reconsume_times >= limit or delay_level < 0
        if to_dlq:
            topic = dlq_topic(group)
            queue_id = self._random.randrange(DLQ_NUMS_PER_GROUP)
            create_dlq_topic(broker.topics, group)
            delay_level = 0
        elif delay_level == 0:
            delay_level = 3 + msg.reconsume_times
        props["DELAY"] = str(delay_level)
        if _blank(props.get("ORIGIN_MESSAGE_ID")):
            host, port = msg.store_host
            props["ORIGIN_MESSAGE_ID"] = create_offset_msg_id(host, port, msg.commit_log_offset)
        if delay_level > 0:
            topic, queue_id = broker.schedule.park(topic, queue_id, props, delay_level)

        try:
            result = broker.store.put_batch(
                topic, [msg.body], queue_id, properties=encode_properties(props), flag=msg.flag,
                sys_flag=msg.sys_flag, born_timestamp=msg.born_timestamp, born_host=msg.born_host,
                reconsume_times=msg.reconsume_times + 1, wait_flush=False)
        except (MessageTooLargeError, PropertiesTooLongError, DiskFullError, StoreError, TypeError,
                ValueError) as exc:
            status = _failure_status(exc)
            log.error("send-back of the message at %d for group %s failed: %s: %s", header.offset, group, status, exc)
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, f"{status}: {exc}")
        if result.status is not PutStatus.PUT_OK:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, result.status.name)
        broker.stats.on_put(result.count, result.wrote_bytes)
        if to_dlq:
            self.dead_lettered += 1
            log.info("group %s: message %s moved to %s after %d reconsumptions", group, props["ORIGIN_MESSAGE_ID"],
                     dlq_topic(group), msg.reconsume_times)
        else:
            self.sent_back += 1
        return cmd.create_response(ResponseCode.SUCCESS)


def _failure_status(exc: Exception) -> str:
    """The PutMessageStatus name Java's store would report for this failure (the send-back remark)."""
    if isinstance(exc, PropertiesTooLongError):
        return "PROPERTIES_SIZE_EXCEEDED"
    if isinstance(exc, (MessageTooLargeError, TypeError, ValueError)):
        return "MESSAGE_ILLEGAL"
    return "SERVICE_NOT_AVAILABLE"
