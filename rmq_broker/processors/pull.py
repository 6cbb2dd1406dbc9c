"""PULL_MESSAGE (11): stored records straight from the mapped commitlog, with long polling.

Java ``PullMessageProcessor.processRequest`` step by step (PROTOCOL.md §5): permission and group checks,
the subscription (from the request when sysFlag bit 2 is set, else from the group's heartbeat), one
store read filtered by tag hash code, the status mapped to a response code and next offset, and the
commit-offset piggyback (bit 0) on the first execution.

Long polling: a PULL_NOT_FOUND with the suspend bit (0x2) on the first execution waits in
``PullHoldService`` for ``suspendTimeoutMillis`` (or ``shortPollingTimeMills`` with long polling
off), then runs once more without suspending — exactly Java's re-execution with
``brokerAllowSuspend=false``. The wait happens in this request's own task, so the connection keeps
serving its other requests (CAPTURES.md §3.6).

The reply body is the stored records concatenated verbatim; the views of the mapped files are
released as soon as they are copied into the reply.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rmq_remoting import RemotingCommand, RequestCode, ResponseCode
from rmq_remoting.headers import PullMessageRequestHeader, PullMessageResponseHeader
from rmq_store import GetStatus

from rmq_broker.consumer_offset import OffsetTableFullError
from rmq_broker.heartbeat import SubscriptionData, SubscriptionParseError
from rmq_broker.perm import PermName

if TYPE_CHECKING:
    from rmq_broker.broker import Broker
    from rmq_remoting import Connection

__all__ = ["PullMessageProcessor", "PullSysFlag"]

log = logging.getLogger("rmq_broker.pull")

_FAQ = "\nSee http://rocketmq.apache.org/docs/faq/ for further details."


class PullSysFlag:
    """Bits of the pull request's sysFlag (``COM/sysflag/PullSysFlag.java``)."""

    COMMIT_OFFSET = 0x1
    SUSPEND = 0x2
    SUBSCRIPTION = 0x4
    CLASS_FILTER = 0x8
    LITE_PULL = 0x10


class PullMessageProcessor:
    CODES = (RequestCode.PULL_MESSAGE,)

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def handle(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = PullMessageRequestHeader.decode(cmd.ext_fields)
        return await self.process(conn, cmd, header, allow_suspend=True)

    async def process(self, conn: Connection, cmd: RemotingCommand, header: PullMessageRequestHeader,
                      allow_suspend: bool) -> RemotingCommand:
        broker = self.broker
        config = broker.config
        if not broker.readable:
            return cmd.create_response(ResponseCode.NO_PERMISSION,
                                       f"the broker[{config.broker_ip1}] pulling message is forbidden")
        group = header.consumer_group
        group_config = broker.groups.find_or_auto_create(group)
        if group_config is None:
            return cmd.create_response(ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST,
                                       f"subscription group [{group}] does not exist, {_FAQ}")
        if not group_config.consume_enable:
            return cmd.create_response(ResponseCode.NO_PERMISSION, f"subscription group no permission, {group}")
        topic = header.topic
        topic_config = broker.topics.select(topic)
        if topic_config is None:
            log.debug("pull: topic %s of group %s does not exist (from %s)", topic, group, conn.remote_addr)
            return cmd.create_response(ResponseCode.TOPIC_NOT_EXIST,
                                       f"topic[{topic}] not exist, apply first please! {_FAQ}")
        if not topic_config.perm & PermName.READ:
            return cmd.create_response(ResponseCode.NO_PERMISSION, f"the topic[{topic}] pulling message is forbidden")
        queue_id = header.queue_id
        if queue_id < 0 or queue_id >= topic_config.read_queue_nums:
            return cmd.create_response(
                ResponseCode.SYSTEM_ERROR,
                f"queueId[{queue_id}] is illegal, topic:[{topic}] topicConfig.readQueueNums:"
                f"[{topic_config.read_queue_nums}] consumer:[{conn.remote_addr}]")

        sys_flag = header.sys_flag
        subscription = self._subscription(cmd, header, group_config)
        if isinstance(subscription, RemotingCommand):
            return subscription

        result = broker.store.get_messages(
            topic, queue_id, header.queue_offset, max(1, min(header.max_msg_nums, config.max_pull_msg_nums)),
            config.max_transfer_bytes_on_message_in_memory,
            None if subscription is None or subscription.all_tags else set(subscription.code_set))
        try:
            code, body = self._code_and_body(result, header)
            response_header = PullMessageResponseHeader(
                suggest_which_broker_id=0, next_begin_offset=result.next_begin_offset,
                min_offset=result.min_offset, max_offset=result.max_offset)
        finally:
            result.release()

        if code == ResponseCode.PULL_NOT_FOUND and allow_suspend and sys_flag & PullSysFlag.SUSPEND:
            timeout_ms = header.suspend_timeout_millis if config.long_polling_enable else \
                config.short_polling_time_ms
            self._store_offset(header, allow_suspend)
            # Nothing can arrive between the read above and this registration: both run on this trio
            # thread without a checkpoint in between, and every put notifies the hold service.
            await broker.holds.wait(topic, queue_id, header.queue_offset, max(0, timeout_ms) / 1000)
            return await self.process(conn, cmd, header, allow_suspend=False)

        self._store_offset(header, allow_suspend)
        if code == ResponseCode.SUCCESS:
            broker.stats.on_get(len(result.phy_offsets), len(body))
        return cmd.create_response(code, result.status.name, response_header.to_ext(), body)

    def _subscription(self, cmd: RemotingCommand, header: PullMessageRequestHeader, group_config: Any) -> Any:
        """The subscription to filter with, or a response refusing the pull."""
        broker = self.broker
        topic = header.topic
        if header.sys_flag & PullSysFlag.SUBSCRIPTION:
            try:
                subscription = SubscriptionData.build(topic, header.subscription or "*",
                                                      header.expression_type or "TAG")
            except SubscriptionParseError as exc:
                return cmd.create_response(ResponseCode.SUBSCRIPTION_PARSE_FAILED,
                                           f"parse the consumer's subscription failed: {exc}")
        else:
            info = broker.consumers.consumer_group_info(header.consumer_group)
            if info is None:
                return cmd.create_response(ResponseCode.SUBSCRIPTION_NOT_EXIST,
                                           "the consumer's group info not exist" + _FAQ)
            if not group_config.consume_broadcast_enable and info.message_model == 0:
                return cmd.create_response(ResponseCode.NO_PERMISSION,
                                           f"the consumer group[{header.consumer_group}] can not consume by broadcast way")
            subscription = info.find_subscription(topic)
            if subscription is None:
                return cmd.create_response(ResponseCode.SUBSCRIPTION_NOT_EXIST,
                                           "the consumer's subscription not exist" + _FAQ)
            if subscription.sub_version < header.sub_version:
                return cmd.create_response(ResponseCode.SUBSCRIPTION_NOT_LATEST,
                                           "the consumer's subscription not latest")
        if subscription.expression_type not in ("TAG", "", None):
            if not broker.config.enable_property_filter:
                return cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                           "The broker does not support consumer to filter message by "
                                           f"{subscription.expression_type}")
            return cmd.create_response(ResponseCode.SUBSCRIPTION_PARSE_FAILED,
                                       f"expression type {subscription.expression_type} is not supported yet")
        return subscription

    def _code_and_body(self, result: Any, header: PullMessageRequestHeader) -> tuple[int, bytes | None]:
        status = result.status
        if status is GetStatus.FOUND:
            return ResponseCode.SUCCESS, b"".join(result.buffers)
        if status in (GetStatus.MESSAGE_WAS_REMOVING, GetStatus.NO_MATCHED_MESSAGE):
            return ResponseCode.PULL_RETRY_IMMEDIATELY, None
        if status in (GetStatus.NO_MATCHED_LOGIC_QUEUE, GetStatus.NO_MESSAGE_IN_QUEUE):
            if header.queue_offset != 0:
                return ResponseCode.PULL_OFFSET_MOVED, None
            return ResponseCode.PULL_NOT_FOUND, None
        if status in (GetStatus.OFFSET_FOUND_NULL, GetStatus.OFFSET_OVERFLOW_ONE):
            return ResponseCode.PULL_NOT_FOUND, None
        if status in (GetStatus.OFFSET_OVERFLOW_BADLY, GetStatus.OFFSET_TOO_SMALL):
            return ResponseCode.PULL_OFFSET_MOVED, None
        log.error("pull: unexpected store status %s", status)
        return ResponseCode.SYSTEM_ERROR, None

    def _store_offset(self, header: PullMessageRequestHeader, allow_suspend: bool) -> None:
        """The commit-offset piggyback: only on the first execution, only on a master (§5.4)."""
        if allow_suspend and header.sys_flag & PullSysFlag.COMMIT_OFFSET and self.broker.is_master:
            try:
                self.broker.offsets.commit(header.consumer_group, header.topic, header.queue_id,
                                           header.commit_offset)
            except (ValueError, OffsetTableFullError) as exc:
                log.warning("pull: offset of %s on %s:%d not stored: %s", header.consumer_group, header.topic,
                            header.queue_id, exc)
