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

Reads from slaves (PROTOCOL.md §5.6, Java ``PullMessageProcessor`` + ``DefaultMessageStore.getMessage``): a
pull whose last record lies more than the in-memory window (``accessMessageInMemoryMaxRatio`` % of physical
memory, ``BrokerConfig.memory_window_bytes``) behind the commitlog's end is "consuming slowly". With
``slaveReadEnable`` the answer's suggestWhichBrokerId is then the group's ``whichBrokerWhenConsumeSlowly``
(default 1), else the group's ``brokerId`` (0); without it, always 0. Clients pull from the suggested broker
next. Records beyond the window are also capped by the "in disk" limits (``maxTransferCountOnMessageInDisk``
8, ``maxTransferBytesOnMessageInDisk`` 64 KiB) instead of the in-memory ones, record by record as Java's
``isTheBatchFull``. A slave answers like a master (Java sets PULL_RETRY_IMMEDIATELY for a slave without
``slaveReadEnable`` and then overwrites it with the store status's code, so its consumers are served), except
that with ``offsetCheckInSlave=false`` (the default) it never corrects an out-of-range offset: it keeps the
requested one and answers PULL_RETRY_IMMEDIATELY with the group's ``brokerId`` as suggestion, sending the
consumer back to the master instead of moving it to where the slave happens to be.

SQL92 subscriptions (``expressionType`` SQL92, with ``enablePropertyFilter``): the expression is compiled
once per text (``Sql92FilterCache``) and evaluated against every candidate record's properties; the store
read has no tag filter, and up to ``MAX_SCAN_UNITS`` units are examined to find ``maxMsgNums`` matches, as
RocketMQ's ``getMessage`` does with its ``MessageFilter``. CHECK_CLIENT_CONFIG (46), which Java consumers
send at start for a non-TAG subscription, is answered here too: it compiles the expression the same way.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rmq_remoting import RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_remoting.headers import PullMessageRequestHeader, PullMessageResponseHeader
from rmq_store import GetStatus
from rmq_store.store import MAX_SCAN_UNITS

from rmq_broker.consumer_offset import OffsetTableFullError
from rmq_broker.filter import Sql92Filter, Sql92FilterCache, Sql92ParseError
from rmq_broker.filter.records import record_properties
from rmq_broker.heartbeat import ExpressionType, SubscriptionData, SubscriptionParseError
from rmq_broker.perm import PermName

if TYPE_CHECKING:
    from rmq_broker.broker import Broker
    from rmq_remoting import Connection

__all__ = ["PullMessageProcessor", "PullSysFlag"]

log = logging.getLogger("rmq_broker.pull")

_FAQ = "\nSee http://rocketmq.apache.org/docs/faq/ for further details."

#: brokerId of a group's master (Java ``MixAll.MASTER_ID``).
MASTER_ID = 0
#: ``RequestCode.CHECK_CLIENT_CONFIG``: a consumer asks whether the broker can filter with its subscription.
CHECK_CLIENT_CONFIG = 46
#: Compiled SQL92 expressions kept per broker (RocketMQ's parse cache keeps 100).
SQL92_CACHE_ENTRIES = 1024


class PullSysFlag:
    """Bits of the pull request's sysFlag (``COM/sysflag/PullSysFlag.java``)."""

    COMMIT_OFFSET = 0x1
    SUSPEND = 0x2
    SUBSCRIPTION = 0x4
    CLASS_FILTER = 0x8
    LITE_PULL = 0x10


#: Store statuses whose nextBeginOffset is a correction of the requested offset (Java
#: ``DefaultMessageStore.nextOffsetCorrection``): a slave without offsetCheckInSlave keeps the requested one.
_CORRECTED_STATUSES = frozenset({GetStatus.NO_MESSAGE_IN_QUEUE, GetStatus.NO_MATCHED_LOGIC_QUEUE,
                                 GetStatus.OFFSET_TOO_SMALL, GetStatus.OFFSET_OVERFLOW_ONE,
                                 GetStatus.OFFSET_OVERFLOW_BADLY, GetStatus.OFFSET_FOUND_NULL})


class _FilteredResult:
    """What ``process`` reads of a store GetResult, for records kept by a SQL92 filter or cut by the
    "in disk" limits: one buffer per record, with the record's commitlog offset and queue offset."""

    def __init__(self, status: GetStatus, next_begin_offset: int, min_offset: int, max_offset: int,
                 buffers: list[bytes], phy_offsets: list[int], queue_offsets: list[int]) -> None:
        assert len(buffers) == len(phy_offsets) == len(queue_offsets)
        self.status = status
        self.next_begin_offset = next_begin_offset
        self.min_offset = min_offset
        self.max_offset = max_offset
        self.buffers = buffers
        self.phy_offsets = phy_offsets
        self.queue_offsets = queue_offsets
        self.sizes = [len(b) for b in buffers]

    def records(self) -> list[bytes]:
        return self.buffers

    def release(self) -> None:
        pass


class PullMessageProcessor:
    CODES = (RequestCode.PULL_MESSAGE, CHECK_CLIENT_CONFIG)

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.sql92_filters = Sql92FilterCache(SQL92_CACHE_ENTRIES)

    async def handle(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        if cmd.code == CHECK_CLIENT_CONFIG:
            return self.check_client_config(cmd)
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
        checked = self._subscription(cmd, header, group_config)
        if isinstance(checked, RemotingCommand):
            return checked
        subscription, sql_filter = checked

        max_count = max(1, min(header.max_msg_nums, config.max_pull_msg_nums))
        if sql_filter is not None:
            result = self._get_sql92(topic, queue_id, header.queue_offset, max_count,
                                     config.max_transfer_bytes_on_message_in_memory, sql_filter)
        else:
            result = broker.store.get_messages(
                topic, queue_id, header.queue_offset, max_count, config.max_transfer_bytes_on_message_in_memory,
                None if subscription is None or subscription.all_tags else set(subscription.code_set))
        try:
            slowly = False
            if result.status is GetStatus.FOUND:
                max_phy_offset = broker.store.max_phy_offset
                window_bytes = config.memory_window_bytes
                result = self._disk_limited(result, max_phy_offset, window_bytes)
                # Java measures to the last unit it looked at; the last record returned is at most one
                # record before it (docs/compatibility.md)
                slowly = max_phy_offset - int(result.phy_offsets[-1]) > window_bytes
            code, body = self._code_and_body(result, header)
            next_begin_offset = result.next_begin_offset
            suggest = self._suggest_broker_id(group_config, slowly)
            if not broker.is_master and not config.offset_check_in_slave and result.status in _CORRECTED_STATUSES:
                next_begin_offset = header.queue_offset
                if code == ResponseCode.PULL_OFFSET_MOVED:
                    code = ResponseCode.PULL_RETRY_IMMEDIATELY
                    suggest = group_config.broker_id
            response_header = PullMessageResponseHeader(
                suggest_which_broker_id=suggest, next_begin_offset=next_begin_offset,
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

    def _suggest_broker_id(self, group_config: Any, slowly: bool) -> int:
        """suggestWhichBrokerId (§5.6): only with slaveReadEnable does a broker send consumers elsewhere."""
        if not self.broker.config.slave_read_enable:
            return MASTER_ID
        return group_config.which_broker_when_consume_slowly if slowly else group_config.broker_id

    def _disk_limited(self, result: Any, max_phy_offset: int, window_bytes: int) -> Any:
        """``result`` cut where Java's ``isTheBatchFull`` would stop, now that records may be "in disk".

        The store applied the in-memory limits. Commitlog offsets grow along a queue, so when the first
        record is within the window every record is and nothing changes (the common case, no per-record
        work); otherwise each record after the first is checked against the limits of its own place.
        """
        phy_offsets = result.phy_offsets
        count = len(phy_offsets)
        if count <= 1 or max_phy_offset - int(phy_offsets[0]) <= window_bytes:
            return result
        cfg = self.broker.config
        sizes = [int(x) for x in result.sizes]
        total = sizes[0]
        keep = count
        for i in range(1, count):
            size = sizes[i]
            if max_phy_offset - int(phy_offsets[i]) > window_bytes:
                full = total + size > cfg.max_transfer_bytes_on_message_in_disk or \
                    i >= cfg.max_transfer_count_on_message_in_disk
            else:
                full = total + size > cfg.max_transfer_bytes_on_message_in_memory or \
                    i >= cfg.max_transfer_count_on_message_in_memory
            if full:
                keep = i
                break
            total += size
        if keep == count:
            return result
        queue_offsets = [int(x) for x in result.queue_offsets[:keep]]
        kept = [bytes(record) for record, _ in zip(result.records(), range(keep))]
        cut = _FilteredResult(GetStatus.FOUND, int(result.queue_offsets[keep]), result.min_offset,
                              result.max_offset, kept, [int(x) for x in phy_offsets[:keep]], queue_offsets)
        result.release()
        return cut

    def _subscription(self, cmd: RemotingCommand, header: PullMessageRequestHeader, group_config: Any) -> Any:
        """(subscription, compiled SQL92 filter or None) to filter with, or a response refusing the pull.

        Order of the SQL92 checks as in RocketMQ: a subscription in the request is refused with SYSTEM_ERROR
        when ``enablePropertyFilter`` is off, then compiled (SUBSCRIPTION_PARSE_FAILED); one from the heartbeat
        is compiled first (a bad one was never registered: FILTER_DATA_NOT_EXIST), then the switch is checked.
        """
        broker = self.broker
        topic = header.topic
        if header.sys_flag & PullSysFlag.SUBSCRIPTION:
            try:
                expression_type = header.expression_type or ExpressionType.TAG
                sub_string = header.subscription if not ExpressionType.is_tag_type(expression_type) else \
                    header.subscription or "*"
                subscription = SubscriptionData.build(topic, sub_string, expression_type)
            except SubscriptionParseError as exc:
                return cmd.create_response(ResponseCode.SUBSCRIPTION_PARSE_FAILED,
                                           f"parse the consumer's subscription failed: {exc}")
            if subscription.is_tag_type:
                return subscription, None
            if not broker.config.enable_property_filter:
                return self._filter_disabled(cmd, subscription)
            try:
                return subscription, self._compile(subscription)
            except (Sql92ParseError, SubscriptionParseError) as exc:
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
            if subscription.is_tag_type:
                return subscription, None
            try:
                sql_filter = self._compile(subscription)
            except (Sql92ParseError, SubscriptionParseError) as exc:
                log.warning("pull: the heartbeat subscription of %s to %s does not compile: %s",
                            header.consumer_group, topic, exc)
                return cmd.create_response(ResponseCode.FILTER_DATA_NOT_EXIST,
                                           "The broker's consumer filter data is not exist!Your expression may be "
                                           "wrong!")
            if not broker.config.enable_property_filter:
                return self._filter_disabled(cmd, subscription)
            return subscription, sql_filter
        return subscription, None

    def _filter_disabled(self, cmd: RemotingCommand, subscription: SubscriptionData) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SYSTEM_ERROR, "The broker does not support consumer to filter "
                                   f"message by {subscription.expression_type}")

    def _compile(self, subscription: SubscriptionData) -> Sql92Filter:
        """The compiled filter of a non-TAG subscription; Sql92ParseError or SubscriptionParseError when it
        cannot be used."""
        if subscription.expression_type != ExpressionType.SQL92:
            raise SubscriptionParseError(f"expression type {subscription.expression_type} is not supported")
        return self.sql92_filters.get(subscription.sub_string)

    def _get_sql92(self, topic: str, queue_id: int, offset: int, max_count: int, max_bytes: int,
                   sql_filter: Sql92Filter) -> Any:
        """Up to ``max_count`` records matching ``sql_filter`` from ``offset``, examining at most
        max(MAX_SCAN_UNITS, max_count) units (RocketMQ: ``getMessage`` with an ``ExpressionMessageFilter``).

        Records are read in batches without a tag filter; each candidate's properties are decoded from the
        stored record and the matching records are copied. The first store answer that is not FOUND is
        returned as is; once something was scanned, the answer is FOUND with the matches or
        NO_MATCHED_MESSAGE, and nextBeginOffset is past the last unit examined (or at the first match that
        did not fit)."""
        store = self.broker.store
        matches = sql_filter.matches
        scan_limit = max(MAX_SCAN_UNITS, max_count)
        kept: list[bytes] = []
        kept_phy_offsets: list[int] = []
        kept_queue_offsets: list[int] = []
        kept_bytes = 0
        scanned = 0
        next_offset = offset
        min_offset = max_offset = 0
        while True:
            batch = min(max(max_count, 32), scan_limit - scanned)
            result = store.get_messages(topic, queue_id, next_offset, batch, max_bytes, None)
            try:
                if result.status is not GetStatus.FOUND:
                    if scanned == 0:
                        return result
                    break
                min_offset, max_offset = result.min_offset, result.max_offset
                stop_at = -1
                for record, queue_offset, phy_offset in zip(result.records(), result.queue_offsets.tolist(),
                                                            result.phy_offsets.tolist()):
                    if not matches(record_properties(record)):
                        continue
                    size = len(record)
                    if kept and kept_bytes + size > max_bytes:
                        stop_at = queue_offset
                        break
                    kept.append(bytes(record))
                    kept_phy_offsets.append(phy_offset)
                    kept_queue_offsets.append(queue_offset)
                    kept_bytes += size
                    if len(kept) >= max_count:
                        stop_at = queue_offset + 1
                        break
                if stop_at >= 0:
                    scanned += stop_at - next_offset
                    next_offset = stop_at
                    break
                scanned += result.next_begin_offset - next_offset
                next_offset = result.next_begin_offset
            finally:
                result.release()
            if scanned >= scan_limit or next_offset >= max_offset:
                break
        status = GetStatus.FOUND if kept else GetStatus.NO_MATCHED_MESSAGE
        return _FilteredResult(status, next_offset, min_offset, max_offset, kept, kept_phy_offsets,
                               kept_queue_offsets)

    def check_client_config(self, cmd: RemotingCommand) -> RemotingCommand:
        """CHECK_CLIENT_CONFIG (46): can this broker filter with the consumer's subscription?

        RocketMQ ``ClientManageProcessor.checkClientConfig``: TAG (or no subscription) → SUCCESS; otherwise
        SYSTEM_ERROR without ``enablePropertyFilter``, SUBSCRIPTION_PARSE_FAILED when the expression does not
        compile. A Java consumer with a SQL92 subscription fails to start on anything but SUCCESS."""
        body = cmd.body
        if not body:
            return cmd.create_response(ResponseCode.SUCCESS, None)
        try:
            doc = fastjson.loads(body)
        except (fastjson.FastjsonError, UnicodeDecodeError, RecursionError) as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, f"bad CHECK_CLIENT_CONFIG body: {exc}")
        sub = doc.get("subscriptionData") if isinstance(doc, dict) else None
        if not isinstance(sub, dict):
            return cmd.create_response(ResponseCode.SUCCESS, None)
        expression_type, sub_string = sub.get("expressionType"), sub.get("subString")
        if not isinstance(expression_type, (str, type(None))) or not isinstance(sub_string, (str, type(None))):
            return cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                       "bad CHECK_CLIENT_CONFIG body: expressionType and subString must be strings")
        if ExpressionType.is_tag_type(expression_type):
            return cmd.create_response(ResponseCode.SUCCESS, None)
        if not self.broker.config.enable_property_filter:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, "The broker does not support consumer to filter "
                                       f"message by {expression_type}")
        try:
            self._compile(SubscriptionData.build(str(sub.get("topic") or ""), sub_string, expression_type))
        except (Sql92ParseError, SubscriptionParseError) as exc:
            log.warning("CHECK_CLIENT_CONFIG: %s of group %s does not compile: %s", sub_string, doc.get("group"), exc)
            return cmd.create_response(ResponseCode.SUBSCRIPTION_PARSE_FAILED, str(exc))
        return cmd.create_response(ResponseCode.SUCCESS, None)

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
