"""SEND_MESSAGE (10), SEND_MESSAGE_V2 (310), SEND_BATCH_MESSAGE (320): from a request to stored records.

The path (PROTOCOL.md §4.9, Java ``SendMessageProcessor.asyncSendMessage`` and ``msgCheck``):

    header (long or one-letter form, chosen by code) → checks → topic auto-create from the default
    topic → queue choice (queueId < 0: a random writable queue) → properties (− WAIT, + CLUSTER; DELAY
    moves the message to SCHEDULE_TOPIC_XXXX) → one ``store.put_batch`` call → SYNC_FLUSH: wait for the
    group commit that covers the bytes → reply msgId (offset id), queueId, queueOffset.

Held pulls on the written queue are woken by the store's arrival listener inside ``put_batch``,
before the reply is sent, so a consumer can see a message before its producer sees the answer.

Every refusal is a RocketMQ response code with a remark; nothing is stored unless everything was
valid (the store checks a whole batch before writing any of it). A batch keeps each item's own flag;
items with different flags take one put per run of equal flags (``_put_flag_runs``).

Topics with a deduplication window (rmq's extension, ``rmq_broker/dedup.py``): a message whose UNIQ_KEY was
stored less than a window ago is answered with the original's msgId/queueId/queueOffset and not stored again;
in a batch only the new items are stored.
"""
from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import trio

from rmq_common import sysflag
from rmq_common._record import decode_batch_body
from rmq_common.msgid import create_offset_msg_id, join_offset_msg_ids
from rmq_common.properties import (MAX_PROPERTIES_LENGTH, PropertiesTooLongError, decode_properties,
                                   encode_properties)
from rmq_common.topic import (RETRY_GROUP_TOPIC_PREFIX, InvalidTopicError, is_not_allowed_send_topic,
                              is_retry_topic, validate_topic)
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode
from rmq_remoting.headers import SendMessageRequestHeader, SendMessageResponseHeader, decode_send_header
from rmq_store import DiskFullError, MessageTooLargeError, PutResult, PutStatus, StoreError

from rmq_broker.dedup import DedupEntry, uniq_key_of
from rmq_broker.perm import PermName
from rmq_broker.processors.send_back import create_dlq_topic, group_not_exist_remark, max_reconsume_times
from rmq_broker.subscription_group import InvalidGroupError
from rmq_broker.timer import TimerRefused, has_timer_property
from rmq_broker.transaction import half_message, is_transaction_message

if TYPE_CHECKING:
    from rmq_broker.broker import Broker
    from rmq_remoting import Connection

__all__ = ["SendMessageProcessor"]

log = logging.getLogger("rmq_broker.send")

_FAQ = "\nSee http://rocketmq.apache.org/docs/faq/ for further details."
_WAIT_FALSE = b"WAIT\x01false"
_WAIT_KEY = b"WAIT\x01"
_DELAY_KEY = b"DELAY\x01"
_TIMER_KEY = b"TIMER_"
MAX_BATCH_ITEMS = 4096

# Store result → response code (Java SendMessageProcessor.handlePutMessageResult).
_PUT_CODES = {
    PutStatus.PUT_OK: ResponseCode.SUCCESS,
    PutStatus.FLUSH_DISK_TIMEOUT: ResponseCode.FLUSH_DISK_TIMEOUT,
    PutStatus.FLUSH_SLAVE_TIMEOUT: ResponseCode.FLUSH_SLAVE_TIMEOUT,
    PutStatus.SLAVE_NOT_AVAILABLE: ResponseCode.SLAVE_NOT_AVAILABLE,
}


def _drop_property(props: bytes, key: bytes) -> bytes:
    """``props`` without every ``key`` pair (``key`` ends with U+0001), keeping the rest byte for byte.

    Only a match at the start of a pair counts (start of the string or right after U+0002), so a value
    that happens to contain the key's text is left alone. Cheap when the key is absent (one ``find``).
    """
    start = 0
    while True:
        i = props.find(key, start)
        if i < 0:
            return props
        if i and props[i - 1] != 0x02:
            start = i + 1
            continue
        end = props.find(b"\x02", i)
        if end >= 0:
            props = props[:i] + props[end + 1:]
        else:                                       # the last pair: also drop the separator before it
            props = props[:max(0, i - 1)]
        start = max(0, i - 1)


def _join_properties(props: bytes, extra: bytes) -> bytes:
    """``props`` followed by ``extra`` pairs, with the U+0002 separator between them when needed."""
    if not props:
        return extra
    if props.endswith(b"\x02"):
        return props + extra
    return props + b"\x02" + extra


class _Refused(Exception):
    """A check failed: answer with ``code`` and ``remark``, store nothing."""

    def __init__(self, code: int, remark: str) -> None:
        super().__init__(remark)
        self.code = code
        self.remark = remark


class SendMessageProcessor:
    """Handles the three send codes (and SEND_REPLY_MESSAGE(_V2), which store the same way)."""

    CODES = (RequestCode.SEND_MESSAGE, RequestCode.SEND_MESSAGE_V2, RequestCode.SEND_BATCH_MESSAGE,
             RequestCode.SEND_REPLY_MESSAGE, RequestCode.SEND_REPLY_MESSAGE_V2)

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._random = random.Random()
        self._cluster_property = b""
        self.refresh()

    def refresh(self) -> None:
        """Re-read what is derived from the broker's configuration (after UPDATE_BROKER_CONFIG)."""
        self._cluster_property = b"CLUSTER\x01" + self.broker.config.broker_cluster_name.encode()

    # -- entry point ------------------------------------------------------------------------------

    async def handle(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = decode_send_header(cmd)        # RemotingCommandError → SYSTEM_ERROR with the field's name
        try:
            topic_config = self._check(conn, header)
            if header.batch:
                return await self._send_batch(conn, cmd, header, topic_config)
            return await self._send_one(conn, cmd, header, topic_config)
        except _Refused as refused:
            return cmd.create_response(refused.code, refused.remark)

    # -- checks (Java msgCheck) -------------------------------------------------------------------

    def _check(self, conn: Connection, header: SendMessageRequestHeader) -> Any:
        broker = self.broker
        topic = header.topic
        if not broker.writable:
            raise _Refused(ResponseCode.SERVICE_NOT_AVAILABLE,
                           f"broker {broker.config.broker_name} is not writable now "
                           f"(role {broker.config.broker_role}, permission {broker.config.broker_permission})")
        try:
            validate_topic(topic)
        except InvalidTopicError as exc:
            raise _Refused(ResponseCode.SYSTEM_ERROR, str(exc)) from None
        if is_not_allowed_send_topic(topic):
            raise _Refused(ResponseCode.NO_PERMISSION, f"Sending message to topic[{topic}] is forbidden.")
        topics = broker.topics
        topic_config = topics.select(topic)
        if topic_config is None:
            topic_sys_flag = 0
            if header.unit_mode:
                topic_sys_flag = 3 if is_retry_topic(topic) else 1     # TopicSysFlag unit / unit-sub
            topic_config = topics.create_in_send(topic, header.default_topic, header.default_topic_queue_nums,
                                                 topic_sys_flag)
            if topic_config is None and is_retry_topic(topic):
                topic_config = topics.create_in_send_back(topic, 1, PermName.READ | PermName.WRITE,
                                                          topic_sys_flag)
            if topic_config is None:
                raise _Refused(ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist, apply first please!{_FAQ}")
        if not topic_config.perm & PermName.WRITE:
            raise _Refused(ResponseCode.NO_PERMISSION,
                           f"the topic[{topic}] sending message is forbidden")
        valid_ids = max(topic_config.write_queue_nums, topic_config.read_queue_nums)
        if header.queue_id >= valid_ids:
            raise _Refused(ResponseCode.SYSTEM_ERROR,
                           f"request queueId[{header.queue_id}] is illegal, topic:[{topic}] "
                           f"topicConfig.writeQueueNums:[{topic_config.write_queue_nums}] "
                           f"producer:[{conn.remote_addr}]")
        return topic_config

    def _queue_id(self, header: SendMessageRequestHeader, topic_config: Any) -> int:
        if header.queue_id >= 0:
            return header.queue_id
        if topic_config.write_queue_nums <= 0:
            raise _Refused(ResponseCode.NO_PERMISSION, f"topic[{header.topic}] has no writable queue")
        return self._random.randrange(topic_config.write_queue_nums)

    def _sys_flag(self, header: SendMessageRequestHeader, topic_config: Any) -> int:
        flag = header.sys_flag
        if topic_config.topic_filter_type == "MULTI_TAG":
            flag |= sysflag.MULTI_TAGS_FLAG
        return flag

    # -- one message ------------------------------------------------------------------------------

    async def _send_one(self, conn: Connection, cmd: RemotingCommand, header: SendMessageRequestHeader,
                        topic_config: Any) -> RemotingCommand:
        broker = self.broker
        body = cmd.body if cmd.body is not None else b""
        props = (header.properties or "").encode()
        topic = header.topic
        queue_id = self._queue_id(header, topic_config)
        transactional = is_transaction_message(props)
        if transactional and broker.config.reject_transaction_message:
            raise _Refused(ResponseCode.NO_PERMISSION,
                           f"the broker[{broker.config.broker_ip1}] sending transaction message is forbidden")
        wait = _WAIT_FALSE not in props
        dedup_window = broker.dedup.window_ms(topic_config)
        uniq = uniq_key_of(props) if dedup_window else None
        if uniq is not None:
            original = broker.dedup.lookup(topic, uniq, dedup_window, broker.clock.now_ms())
            if original is not None:
                log.debug("send to %s: %s was stored at %d less than %d ms ago; not stored again", topic, uniq,
                          original.phy_offset, dedup_window)
                return await self._reply_originals(cmd, [original], wait, one_id=True)
        # Java 4.9 does not store WAIT (it only steers this reply): 9 bytes less per message (§4.3).
        props = _drop_property(props, _WAIT_KEY)
        reply_queue_id = queue_id       # a delayed message's reply names the queue chosen, as Java's does
        if is_retry_topic(topic):
            topic, queue_id, topic_config, props = self._retry_or_dlq(cmd, header, topic, queue_id, topic_config,
                                                                      props)
        if transactional:
            # a half message (§9.5): the reply names the real queue and the half queue's offset, as Java's;
            # a DELAY is applied when the transaction commits
            try:
                topic, queue_id, props, half_sys_flag = half_message(topic, queue_id, props, header.sys_flag)
            except ValueError as exc:           # PropertiesTooLongError
                raise _Refused(ResponseCode.MESSAGE_ILLEGAL, f"the message properties are too long: {exc}") from None
            header = msgspec.structs.replace(header, sys_flag=half_sys_flag)
            broker.transactions.on_half_stored()
        elif _DELAY_KEY in props or _TIMER_KEY in props:
            topic, queue_id, props = self._timer_or_delay(topic, queue_id, props, header.sys_flag)
        props = _join_properties(props, self._cluster_property)
        born_host = conn.remote_address[:2] if conn.remote_address else None
        result = self._put(topic, [bytes(body)], queue_id, props, header.flag, header, topic_config, born_host)
        if result.status is PutStatus.PUT_OK:
            if uniq is not None:
                broker.dedup.record(header.topic, uniq, result.first_phy_offset, reply_queue_id,
                                    result.first_queue_offset, result.store_timestamp, dedup_window,
                                    broker.clock.now_ms())
            if wait:
                await self._await_flush(result)
        return self._reply(cmd, result, reply_queue_id, one_id=True)

    def _retry_or_dlq(self, cmd: RemotingCommand, header: SendMessageRequestHeader, topic: str, queue_id: int,
                      topic_config: Any, props: bytes) -> tuple[str, int, Any, bytes]:
        """A send to %RETRY%<group> (a consumer storing its own retry, or an orderly consumer giving up) whose
        header reconsumeTimes reached the group's maximum goes to %DLQ%<group> queue 0 instead, at once: a
        DELAY it carries is dropped (Java ``handleRetryAndDLQ``; 4.9.7 kept the client's DELAY, so the message
        waited up to 2 h in SCHEDULE_TOPIC_XXXX before reaching the DLQ — 5.x fixed that)."""
        group = topic[len(RETRY_GROUP_TOPIC_PREFIX):]
        try:
            group_config = self.broker.groups.find_or_auto_create(group)
        except InvalidGroupError as exc:
            raise _Refused(ResponseCode.SYSTEM_ERROR, str(exc)) from None
        if group_config is None:
            raise _Refused(ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST, group_not_exist_remark(group))
        limit = max_reconsume_times(cmd.version, group_config, header.max_reconsume_times)
        if (header.reconsume_times or 0) < limit:
            return topic, queue_id, topic_config, props
        dlq_config = create_dlq_topic(self.broker.topics, group)
        log.info("a retry of group %s reconsumed %d times (max %d) goes to %s", group, header.reconsume_times,
                 limit, dlq_config.topic_name)
        return dlq_config.topic_name, 0, dlq_config, _drop_property(props, _DELAY_KEY)

    def _timer_or_delay(self, topic: str, queue_id: int, props: bytes, sys_flag: int) -> tuple[str, int, bytes]:
        """TIMER_DELIVER_MS / TIMER_DELAY_SEC / TIMER_DELAY_MS park the message in rmq_sys_wheel_timer
        (``TimerService.park``; a DELAY level wins and drops them), then DELAY is handled (Java
        ``HookUtils.handleScheduleMessage``)."""
        if _TIMER_KEY in props:
            try:
                topic, queue_id, props = self.broker.timer.park(topic, queue_id, props, sys_flag)
            except TimerRefused as refused:
                raise _Refused(refused.code, refused.remark) from None
        if _DELAY_KEY in props:
            topic, queue_id, props = self._delay(topic, queue_id, props)
        return topic, queue_id, props

    def _delay(self, topic: str, queue_id: int, props: bytes) -> tuple[str, int, bytes]:
        """DELAY=level (1-based) moves the message to SCHEDULE_TOPIC_XXXX queue level-1, keeping its
        real topic and queue in REAL_TOPIC/REAL_QID (Java CommitLog.asyncPutMessage)."""
        table = decode_properties(props)
        try:
            level = int(table.get("DELAY", "0"))
        except ValueError:
            raise _Refused(ResponseCode.MESSAGE_ILLEGAL, f"DELAY property is not a number: {table['DELAY']!r}")
        if level <= 0:
            return topic, queue_id, props
        topic, queue_id = self.broker.schedule.park(topic, queue_id, table, level)
        return topic, queue_id, encode_properties(table)

    # -- a batch ----------------------------------------------------------------------------------

    async def _send_batch(self, conn: Connection, cmd: RemotingCommand, header: SendMessageRequestHeader,
                          topic_config: Any) -> RemotingCommand:
        topic = header.topic
        if is_retry_topic(topic):
            raise _Refused(ResponseCode.MESSAGE_ILLEGAL, f"batch request does not support retry group {topic}")
        batch_props = (header.properties or "").encode()
        # Java CommitLog.asyncPutMessages refuses a batch with transaction bits (MESSAGE_ILLEGAL); TRAN_MSG in
        # the batch properties would otherwise store a "transaction" that no END_TRANSACTION can resolve
        if (sysflag.transaction_value(header.sys_flag) != sysflag.TRANSACTION_NOT_TYPE
                or is_transaction_message(batch_props)):
            raise _Refused(ResponseCode.MESSAGE_ILLEGAL, "batch messages do not support transactions")
        if _DELAY_KEY in batch_props:
            raise _Refused(ResponseCode.MESSAGE_ILLEGAL, "batch messages do not support a delay level")
        if has_timer_property(batch_props):
            raise _Refused(ResponseCode.MESSAGE_ILLEGAL, "batch messages do not support timer properties")
        wait = _WAIT_FALSE not in batch_props
        extra = _join_properties(batch_props, self._cluster_property)
        try:
            bodies, props, flags = decode_batch_body(cmd.body if cmd.body is not None else b"", extra,
                                                     MAX_BATCH_ITEMS, self.broker.store.config.max_message_size)
        except ValueError as exc:
            raise _Refused(ResponseCode.MESSAGE_ILLEGAL, f"the batch body is malformed: {exc}") from None
        queue_id = self._queue_id(header, topic_config)
        born_host = conn.remote_address[:2] if conn.remote_address else None
        dedup = self.broker.dedup
        dedup_window = dedup.window_ms(topic_config)
        if not dedup_window:
            result = self._put_items(topic, bodies, queue_id, props, flags, header, topic_config, born_host)
            if result.status is PutStatus.PUT_OK and wait:
                await self._await_flush(result)
            return self._reply(cmd, result, queue_id, one_id=False)

        # a topic with a deduplication window: store only the items not stored within it
        now = self.broker.clock.now_ms()
        uniqs = [uniq_key_of(p) for p in props]
        answers: list[DedupEntry | int] = []        # per item: its original, or its index among the stored items
        kept: list[int] = []
        first_in_batch: dict[str, int] = {}
        for i, uniq in enumerate(uniqs):
            if uniq is not None:
                original = dedup.lookup(topic, uniq, dedup_window, now)
                if original is not None:
                    answers.append(original)
                    continue
                if uniq in first_in_batch:          # the same key twice in one batch: stored once
                    answers.append(first_in_batch[uniq])
                    continue
                first_in_batch[uniq] = len(kept)
            answers.append(len(kept))
            kept.append(i)
        if not kept:
            return await self._reply_originals(cmd, answers, wait, one_id=False)
        if len(kept) < len(bodies):
            log.debug("batch to %s: %d of %d items were stored less than %d ms ago; not stored again", topic,
                      len(bodies) - len(kept), len(bodies), dedup_window)
            bodies = [bodies[i] for i in kept]
            props = [props[i] for i in kept]
            flags = [flags[i] for i in kept]
        result = self._put_items(topic, bodies, queue_id, props, flags, header, topic_config, born_host)
        if result.status is not PutStatus.PUT_OK:
            return self._reply(cmd, result, queue_id, one_id=False)
        now = self.broker.clock.now_ms()
        for j, i in enumerate(kept):
            if uniqs[i] is not None:
                dedup.record(topic, uniqs[i], int(result.phy_offsets[j]), queue_id, result.first_queue_offset + j,
                             result.store_timestamp, dedup_window, now)
        if wait:
            await self._await_flush(result)
        if len(kept) == len(answers) or result.status is not PutStatus.PUT_OK:     # no duplicate, or a timeout
            return self._reply(cmd, result, queue_id, one_id=False)
        self.broker.stats.on_put(result.count, result.wrote_bytes)
        items = [a if isinstance(a, DedupEntry)
                 else DedupEntry(int(result.phy_offsets[a]), queue_id, result.first_queue_offset + a, 0, 0)
                 for a in answers]
        # queueId/queueOffset: those of the first item stored now (a batch's items share one queue)
        return self._reply_entries(cmd, items, queue_id, result.first_queue_offset, one_id=False)

    def _put_items(self, topic: str, bodies: list, queue_id: int, props: list, flags: list,
                   header: SendMessageRequestHeader, topic_config: Any, born_host: tuple | None) -> Any:
        # Each item keeps its own flag (Java's MessageExtBatchEncoder); the header's flag is the batch's.
        if min(flags) == max(flags):
            return self._put(topic, bodies, queue_id, props, flags[0], header, topic_config, born_host)
        return self._put_flag_runs(topic, bodies, queue_id, props, flags, header, topic_config, born_host)

    # -- store and reply --------------------------------------------------------------------------

    def _put_flag_runs(self, topic: str, bodies: list, queue_id: int, props: list, flags: list,
                       header: SendMessageRequestHeader, topic_config: Any, born_host: tuple | None) -> Any:
        """A batch whose items have different flags: the store takes one flag per put, so one put per
        run of equal flags, back to back on this thread (nothing else can append to the queue in
        between, so queue offsets stay consecutive), merged into one result. What the store would
        refuse for a single item is checked for all first; only a failure of the disk between two runs
        (full, I/O error) could leave the first runs stored."""
        for i, p in enumerate(props):
            if len(p) > MAX_PROPERTIES_LENGTH:
                raise _Refused(ResponseCode.MESSAGE_ILLEGAL,
                               f"the message properties are too long: batch item {i} has {len(p)} bytes")
        results = []
        start, n = 0, len(bodies)
        while start < n:
            end = start + 1
            while end < n and flags[end] == flags[start]:
                end += 1
            results.append(self._put(topic, bodies[start:end], queue_id, props[start:end], flags[start], header,
                                     topic_config, born_host))
            start = end
        first, last = results[0], results[-1]
        return PutResult(PutStatus.PUT_OK, first.first_phy_offset, first.first_queue_offset,
                         sum(r.count for r in results), sum(r.wrote_bytes for r in results), last.store_timestamp,
                         np.concatenate([r.phy_offsets for r in results]), last.end_offset)

    def _put(self, topic: str, bodies: list, queue_id: int, props: Any, flag: int,
             header: SendMessageRequestHeader, topic_config: Any, born_host: tuple | None) -> Any:
        store = self.broker.store
        try:
            return store.put_batch(topic, bodies, queue_id, properties=props, flag=flag,
                                   sys_flag=self._sys_flag(header, topic_config),
                                   born_timestamp=header.born_timestamp, born_host=born_host,
                                   reconsume_times=header.reconsume_times or 0, wait_flush=False)
        except MessageTooLargeError as exc:
            raise _Refused(ResponseCode.MESSAGE_ILLEGAL, f"the message is illegal: {exc}") from None
        except PropertiesTooLongError as exc:
            raise _Refused(ResponseCode.MESSAGE_ILLEGAL, f"the message properties are too long: {exc}") from None
        except DiskFullError as exc:
            log.error("send to %s refused: disk full: %s", topic, exc)
            raise _Refused(ResponseCode.SERVICE_NOT_AVAILABLE,
                           f"service not available now: the broker's disk is full ({exc})") from None
        except StoreError as exc:
            raise _Refused(ResponseCode.SERVICE_NOT_AVAILABLE, f"service not available now: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise _Refused(ResponseCode.MESSAGE_ILLEGAL, f"the message is illegal: {exc}") from None

    async def _await_flush(self, result: Any) -> None:
        """A send with WAIT=true: SYNC_FLUSH answers once the group commit covering this put is on disk
        (else FLUSH_DISK_TIMEOUT); SYNC_MASTER then once a slave has acknowledged its bytes (else
        SLAVE_NOT_AVAILABLE / FLUSH_SLAVE_TIMEOUT, which win as in Java's handleDiskFlush + handleHA).
        Other requests are served meanwhile: only this send's task waits."""
        if not await self._flushed_to(result.end_offset):
            result.status = PutStatus.FLUSH_DISK_TIMEOUT
        ha = self.broker.ha
        if ha.sync_master:
            replicated = await ha.wait_replicated(result.end_offset)
            if replicated is not PutStatus.PUT_OK:
                result.status = replicated

    async def _flushed_to(self, end_offset: int) -> bool:
        """SYNC_FLUSH: wait until the commitlog is on disk up to ``end_offset``; False on the timeout."""
        if not self.broker.sync_flush:
            return True
        store = self.broker.store
        if store.flushed_offset >= end_offset:
            return True
        done = trio.Event()
        outcome = [False]
        token = trio.lowlevel.current_trio_token()

        def flushed(ok: bool) -> None:          # runs on the flush thread
            outcome[0] = ok
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        store.request_flush(end_offset, flushed)
        with trio.move_on_after(store.config.sync_flush_timeout_ms / 1000):
            await done.wait()
        return outcome[0]

    def _reply(self, cmd: RemotingCommand, result: Any, queue_id: int, *, one_id: bool) -> RemotingCommand:
        code = _PUT_CODES.get(result.status)
        if code is None:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, f"putting the message failed: {result.status.name}")
        host, port = self.broker.store_host
        if one_id:
            msg_id = create_offset_msg_id(host, port, result.first_phy_offset)
        else:
            msg_id = join_offset_msg_ids(host, port, result.phy_offsets)
        header = SendMessageResponseHeader(msg_id=msg_id, queue_id=queue_id, queue_offset=result.first_queue_offset)
        ext = header.to_ext()
        ext["MSG_REGION"] = self.broker.config.region_id
        ext["TRACE_ON"] = "true" if self.broker.config.trace_on else "false"
        self.broker.stats.on_put(result.count, result.wrote_bytes)
        return cmd.create_response(code, None if code == ResponseCode.SUCCESS else result.status.name, ext)

    async def _reply_originals(self, cmd: RemotingCommand, originals: list[DedupEntry], wait: bool, *,
                               one_id: bool) -> RemotingCommand:
        """Every message of the send was stored within its topic's deduplication window: answer what the first
        send was answered (SYNC_FLUSH: once the originals are on disk), store nothing."""
        store = self.broker.store
        flushed = True
        if wait and store.flushed_offset <= max(e.phy_offset for e in originals):
            flushed = await self._flushed_to(store.max_phy_offset)
        first = originals[0]
        return self._reply_entries(cmd, originals, first.queue_id, first.queue_offset, one_id=one_id,
                                   status=PutStatus.PUT_OK if flushed else PutStatus.FLUSH_DISK_TIMEOUT)

    def _reply_entries(self, cmd: RemotingCommand, entries: list[DedupEntry], queue_id: int, queue_offset: int, *,
                       one_id: bool, status: PutStatus = PutStatus.PUT_OK) -> RemotingCommand:
        """A send reply naming ``entries`` (the messages of the send, in order; some stored before)."""
        host, port = self.broker.store_host
        ids = [create_offset_msg_id(host, port, e.phy_offset) for e in (entries[:1] if one_id else entries)]
        header = SendMessageResponseHeader(msg_id=",".join(ids), queue_id=queue_id, queue_offset=queue_offset)
        ext = header.to_ext()
        ext["MSG_REGION"] = self.broker.config.region_id
        ext["TRACE_ON"] = "true" if self.broker.config.trace_on else "false"
        code = _PUT_CODES[status]
        return cmd.create_response(code, None if code == ResponseCode.SUCCESS else status.name, ext)
