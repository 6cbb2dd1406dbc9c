"""Transactional messages: half messages, their commit/rollback records and the check-back loop.

The flow (PROTOCOL.md §9.5; RocketMQ 4.9's ``TransactionalMessageBridge``, ``TransactionalMessageServiceImpl``,
``TransactionalMessageCheckService``, ``EndTransactionProcessor``):

1. A send with ``TRAN_MSG=true`` is stored as a *half* message in ``RMQ_SYS_TRANS_HALF_TOPIC`` queue 0, its real
   topic and queue in REAL_TOPIC/REAL_QID and the transaction bits of its sysflag cleared (NOT type, so the half
   queue indexes it; a PREPARED record gets no consume-queue unit). Consumers of the real topic see nothing.
2. END_TRANSACTION (37) with commit: the half read at ``commitLogOffset`` is stored again under REAL_TOPIC/REAL_QID
   with sysflag COMMIT and ``preparedTransactionOffset = commitLogOffset`` (``commit``); a DELAY or TIMER_*
   property it carries is applied now (``TimerService.park``, as RocketMQ 5.x). Commit and rollback both append
   an *op* record to ``RMQ_SYS_TRANS_OP_HALF_TOPIC`` queue 0: tag ``d``, body = the half's queue offset in decimal
   (as RocketMQ), and KEYS = the transaction's UNIQ_KEY (rmq's addition, see below).
3. Every ``transactionCheckInterval`` (60 s) a check round walks the half queue from the check progress: halves with
   an op are passed over; an unresolved half older than ``transactionTimeOut`` (6 s, or its
   CHECK_IMMUNITY_TIME_IN_SECONDS) is stored again at the end of the half queue with TRANSACTION_CHECK_TIMES + 1
   and CHECK_TRANSACTION_STATE (39, oneway) naming that new copy goes to a live connection of its producer group
   (PGROUP); the producer answers with END_TRANSACTION ``fromTransactionCheck=true``. A half already checked
   ``transactionCheckMax`` (15) times, or older than the commitlog's retention, is moved to
   ``TRANS_CHECK_MAX_TIME_TOPIC`` (what 4.9's ``DefaultTransactionalMessageCheckListener`` does) by the round
   after its last check (RocketMQ may move it in the same round, before the producer could answer) and never
   checked again. The round stops at the first half too young to check, and at copies stored during the round.

Progress, as RocketMQ: the next half offset to examine and the next op offset not yet accounted for are the
consumer offsets of the system group ``CID_RMQ_SYS_TRANS`` for queue 0 of the half and op topics, in the broker's
ConsumerOffsetManager (consumerOffset.json), so they survive restarts. Every op below the op progress refers to a
half below the half progress; the half progress is committed before the op progress, so a snapshot of the table
taken between the two commits keeps that invariant.

What rmq keeps in memory instead of re-reading the op queue every round (RocketMQ's "op lookahead"): the ops past
the op progress, as ``half offset → op offset`` for halves at or past the half progress (``_resolved``). They are
read once at start (from the op progress to the end of the op queue) and then added as ops are written — this
broker is the only writer. The half progress moves over resolved halves as soon as their ops are written (not
only once per round), so the table only holds resolutions that arrived out of order behind an unresolved half:
at most the transactions resolved during one ``transactionTimeOut`` + ``transactionCheckInterval`` window behind
a producer that never answers. A round reads only the halves it must decide about; an idle round costs two
integer comparisons.

Exactly once, with the op topic as the source of truth:

* a half whose queue offset has an op is resolved: a second END_TRANSACTION (duplicate commit, commit after
  rollback, a check answer arriving after the producer's own) is answered SUCCESS and delivers nothing;
* a transaction can have several half copies (each check stores one); their ops are keyed by the half offset, so
  the op records also carry the transaction id (UNIQ_KEY) in KEYS, and the store's key index tells whether *any*
  copy was resolved. The broker asks it only in the rare cases where another copy can exist: before checking a
  half, and for an END_TRANSACTION naming a copy, a half the check progress already passed, or a half stored
  before this broker started. RocketMQ 4.9 has no such test (a commit of the first copy and a later "commit"
  answer to the check of the second deliver twice);
* a commit whose op record was lost by a crash between the two writes is recognised the same way (a COMMIT record
  with that UNIQ_KEY in the real topic, SCHEDULE_TOPIC_XXXX or rmq_sys_wheel_timer) and its op is written then.

Messages without UNIQ_KEY (every 4.x client sets it on transactional sends) and brokers with
``messageIndexEnable=false`` get RocketMQ's offset-only behaviour.
"""
from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Any

import trio

from rmq_common import sysflag
from rmq_common._record import decode_record, encode_record
from rmq_common.msgid import create_offset_msg_id
from rmq_common.properties import PropertiesTooLongError, PropertyKey, decode_properties, encode_properties
from rmq_common.topic import (CID_RMQ_SYS_TRANS_GROUP, RMQ_SYS_TRANS_HALF_TOPIC, RMQ_SYS_TRANS_OP_HALF_TOPIC,
                              SCHEDULE_TOPIC, TRANS_CHECK_MAX_TIME_TOPIC)
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode
from rmq_remoting.errors import RemotingError
from rmq_remoting.headers import CheckTransactionStateRequestHeader, EndTransactionRequestHeader
from rmq_store import DiskFullError, GetStatus, MessageTooLargeError, StoreError

from rmq_broker.consumer_offset import OffsetTableFullError
from rmq_broker.perm import PermName
from rmq_broker.timer import DELAY_MS, DELAY_SEC, DELIVER_MS, TIMER_TOPIC, TimerRefused

if TYPE_CHECKING:
    from rmq_broker.broker import Broker
    from rmq_common.message import MessageExt

__all__ = [
    "CHECK_MAX_TOPIC",
    "HALF_TOPIC",
    "OP_TOPIC",
    "REMOVE_TAG",
    "SYS_GROUP",
    "EndResult",
    "TransactionService",
    "half_message",
    "is_transaction_message",
]

log = logging.getLogger("rmq_broker.transaction")

HALF_TOPIC = RMQ_SYS_TRANS_HALF_TOPIC
OP_TOPIC = RMQ_SYS_TRANS_OP_HALF_TOPIC
CHECK_MAX_TOPIC = TRANS_CHECK_MAX_TIME_TOPIC
SYS_GROUP = CID_RMQ_SYS_TRANS_GROUP
REMOVE_TAG = "d"                         # TransactionalMessageUtil.REMOVETAG

OP_READ_BATCH = 256                      # ops read per store call at start
ROUND_TIME_LIMIT_MS = 60_000             # MAX_PROCESS_TIME_LIMIT of one round
ROUND_YIELD_EVERY = 64                   # halves examined between two checkpoints of the event loop
CHECK_SEND_TIMEOUT_MS = 10               # Broker2Client.checkProducerTransactionState's oneway timeout
ERROR_RETRY_MS = 1_000

_TRAN_PREFIX = b"TRAN_MSG\x01"
_P = PropertyKey


def is_transaction_message(props: bytes) -> bool:
    """TRAN_MSG parses as true (Java ``Boolean.parseBoolean``: ``true`` in any case)."""
    if _TRAN_PREFIX not in props:
        return False
    return decode_properties(props).get(_P.TRAN_MSG, "").lower() == "true"


def half_message(topic: str, queue_id: int, props: bytes, sys_flag: int) -> tuple[str, int, bytes, int]:
    """Where and how a transactional send is stored (``TransactionalMessageBridge.parseHalfMessageInner``):
    half topic queue 0, REAL_TOPIC/REAL_QID = the real topic and queue, transaction bits of the sysflag NOT."""
    table = decode_properties(props)
    table[_P.REAL_TOPIC] = topic
    table[_P.REAL_QID] = str(queue_id)
    return (HALF_TOPIC, 0, encode_properties(table),
            sysflag.reset_transaction_value(sys_flag, sysflag.TRANSACTION_NOT_TYPE))


def _java_int(text: str | None) -> int | None:
    """None when absent; -1 when not a number (RocketMQ's ``getInt``/``getLong`` on a bad value)."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return -1


class EndResult(enum.Enum):
    COMMITTED = "committed"
    ROLLED_BACK = "rolled back"
    ALREADY_RESOLVED = "already resolved"
    REFUSED = "refused"


class TransactionService:
    """Half/op bookkeeping and the check loop of one broker; everything runs on the broker's trio thread except
    ``load`` (start-up, in the store-opening worker thread, before any request is served)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.half_progress = 0
        self.op_progress = 0
        self._committed_progress: tuple[int, int] | None = None
        self._resolved: dict[int, int] = {}      # half queue offset ≥ half_progress → op queue offset
        self._done_ops: set[int] = set()         # op offsets accounted for, not yet contiguous with op_progress
        self._round_active = False
        self._round_pos = 0
        self._started_ms = 0
        self.rounds = 0
        self.checks_sent = 0
        self.discarded = 0
        self.committed = 0
        self.rolled_back = 0

    # -- start ------------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the progress offsets and the ops past the op progress (the op lookahead)."""
        broker = self.broker
        store = broker.store
        self._started_ms = broker.clock.now_ms()
        half = broker.offsets.query(SYS_GROUP, HALF_TOPIC, 0)
        op = broker.offsets.query(SYS_GROUP, OP_TOPIC, 0)
        self.half_progress = max(half if half is not None and half >= 0 else 0, store.min_offset(HALF_TOPIC, 0))
        self.op_progress = max(op if op is not None and op >= 0 else 0, store.min_offset(OP_TOPIC, 0))
        # absent offsets mean "from the start of the queue", so nothing is written until something changes
        self._committed_progress = (self.half_progress if half is None else half,
                                    self.op_progress if op is None else op)
        offset = self.op_progress
        end = store.max_offset(OP_TOPIC, 0)
        read = 0
        while offset < end:
            result = store.get_messages(OP_TOPIC, 0, offset, OP_READ_BATCH)
            try:
                if result.status is not GetStatus.FOUND:
                    if result.next_begin_offset <= offset:
                        break
                    for skipped in range(offset, result.next_begin_offset):
                        self._done_ops.add(skipped)
                    offset = result.next_begin_offset
                    continue
                for view in result.records():
                    msg = decode_record(view, check_crc=False)
                    self._account_op(msg.queue_offset, self._op_half_offset(msg))
                    read += 1
                offset = result.next_begin_offset
            finally:
                result.release()
        self._advance()
        log.info("transaction: half progress %d (queue end %d), op progress %d (queue end %d), %d ops read, "
                 "%d resolved halves ahead", self.half_progress, store.max_offset(HALF_TOPIC, 0), self.op_progress,
                 end, read, len(self._resolved))

    @staticmethod
    def _op_half_offset(msg: MessageExt) -> int | None:
        if msg.properties.get(_P.TAGS) != REMOVE_TAG:
            log.error("transaction: op record %d has tag %r, not %r; ignored", msg.queue_offset,
                      msg.properties.get(_P.TAGS), REMOVE_TAG)
            return None
        try:
            return int(bytes(msg.body).decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            log.error("transaction: op record %d has a body that is not a half offset: %r", msg.queue_offset,
                      bytes(msg.body)[:64])
            return None

    # -- progress ---------------------------------------------------------------------------------

    def _account_op(self, op_offset: int, half_offset: int | None) -> None:
        if half_offset is not None and half_offset >= self.half_progress:
            if half_offset < self.broker.store.max_offset(HALF_TOPIC, 0):
                self._resolved.setdefault(half_offset, op_offset)
                return
            # would hold the op progress back for ever
            log.error("transaction: op record %d names half %d, past the end of the half queue; ignored",
                      op_offset, half_offset)
        self._done_ops.add(op_offset)

    def _advance(self) -> None:
        """Move the half progress over resolved halves at its head (not during a round, which owns it), the op
        progress over accounted-for ops, and commit both (half first) when they changed."""
        if not self._round_active:
            resolved = self._resolved
            while self.half_progress in resolved:
                self._done_ops.add(resolved.pop(self.half_progress))
                self.half_progress += 1
        done = self._done_ops
        while self.op_progress in done:
            done.discard(self.op_progress)
            self.op_progress += 1
        self._commit_progress()

    def _commit_progress(self) -> None:
        now = (self.half_progress, self.op_progress)
        if now == self._committed_progress:
            return
        offsets = self.broker.offsets
        try:
            offsets.commit(SYS_GROUP, HALF_TOPIC, 0, now[0])
            offsets.commit(SYS_GROUP, OP_TOPIC, 0, now[1])
        except (OffsetTableFullError, ValueError) as exc:       # keep going: the next change retries
            log.error("transaction: cannot record the check progress %s: %s", now, exc)
            return
        self._committed_progress = now

    def _finish_round(self, position: int) -> None:
        self._round_active = False
        store = self.broker.store
        position = max(position, store.min_offset(HALF_TOPIC, 0))
        op_min = store.min_offset(OP_TOPIC, 0)
        if self.op_progress < op_min:           # retention removed ops never accounted for
            log.warning("transaction: op records %d..%d were removed before they were read", self.op_progress,
                        op_min - 1)
            self._done_ops = {o for o in self._done_ops if o >= op_min}
            self.op_progress = op_min
        if position > self.half_progress:
            self.half_progress = position
            for offset in [q for q in self._resolved if q < position]:
                self._done_ops.add(self._resolved.pop(offset))
        self._advance()

    # -- op records -------------------------------------------------------------------------------

    def _write_op(self, half: MessageExt) -> bool:
        """Record that ``half`` is resolved (``deletePrepareMessage``)."""
        props = {_P.TAGS: REMOVE_TAG}
        txid = half.properties.get(_P.UNIQ_KEY)
        if txid:
            props[_P.KEYS] = txid
        try:
            result = self.broker.store.put_batch(OP_TOPIC, [str(half.queue_offset).encode()], 0,
                                                 properties=encode_properties(props), wait_flush=False)
        except (StoreError, ValueError, TypeError) as exc:
            log.error("transaction: writing the op record of half %d (msgId %s) failed: %s", half.queue_offset,
                      txid, exc)
            return False
        self._ensure_topic(OP_TOPIC)
        self._account_op(result.first_queue_offset, half.queue_offset)
        self._advance()
        return True

    def _ensure_topic(self, topic: str) -> None:
        topics = self.broker.topics
        if topics.select(topic) is None:
            topics.create_in_send_back(topic, 1, PermName.READ | PermName.WRITE, 0)

    def on_half_stored(self) -> None:
        """The send path stored a half: the half topic exists from then on (created lazily, as RocketMQ)."""
        self._ensure_topic(HALF_TOPIC)

    # -- is it resolved? --------------------------------------------------------------------------

    def _lookup(self, topic: str, key: str) -> list:
        try:
            return self.broker.store.query_message(topic, key, 32).records
        except StoreError:
            return []                   # the index is disabled: offsets only

    def _op_recorded(self, txid: str) -> bool:
        return bool(self._lookup(OP_TOPIC, txid))

    def _commit_stored(self, half: MessageExt, txid: str) -> bool:
        """A COMMIT record of this transaction exists (its op may have been lost by a crash)."""
        real = half.properties.get(_P.REAL_TOPIC)
        for topic in (real, SCHEDULE_TOPIC, TIMER_TOPIC) if real else (SCHEDULE_TOPIC, TIMER_TOPIC):
            for view in self._lookup(topic, txid):
                try:
                    msg = decode_record(view, check_crc=False)
                except ValueError:
                    continue
                if (sysflag.transaction_value(msg.sys_flag) == sysflag.TRANSACTION_COMMIT_TYPE
                        and msg.properties.get(_P.UNIQ_KEY) == txid):
                    return True
        return False

    def _transaction_resolved(self, half: MessageExt) -> bool:
        """Some copy of ``half``'s transaction has an op, or its commit is stored (then the missing op is
        written now). Uses the key index; only for the rare cases where another copy can exist."""
        txid = half.properties.get(_P.UNIQ_KEY)
        if not txid:
            return False
        if self._op_recorded(txid):
            return True
        if self._commit_stored(half, txid):
            log.warning("transaction: %s was committed but its op record is missing (crash?); writing it", txid)
            self._write_op(half)
            return True
        return False

    def _resolved_for_end(self, half: MessageExt) -> bool:
        if half.queue_offset in self._resolved:
            return True
        props = half.properties
        may_have_copies = (half.queue_offset < self.half_progress or _P.TRANSACTION_CHECK_TIMES in props
                           or _P.TRAN_PREPARED_QUEUE_OFFSET in props or half.store_timestamp <= self._started_ms)
        return may_have_copies and self._transaction_resolved(half)

    # -- END_TRANSACTION --------------------------------------------------------------------------

    def end_transaction(self, header: EndTransactionRequestHeader) -> tuple[EndResult, int, str | None]:
        """Commit or roll back (``header.commit_or_rollback`` is COMMIT or ROLLBACK): the checks of
        ``EndTransactionProcessor.checkPrepareMessage``, then delivery (commit) and the op record."""
        half = self._find_half(header.commit_log_offset)
        if half is None:
            return EndResult.REFUSED, ResponseCode.SYSTEM_ERROR, "Find prepared transaction message failed"
        if half.properties.get(_P.PGROUP) != header.producer_group:
            return EndResult.REFUSED, ResponseCode.SYSTEM_ERROR, "The producer group wrong"
        if half.queue_offset != header.tran_state_table_offset:
            return EndResult.REFUSED, ResponseCode.SYSTEM_ERROR, "The transaction state table offset wrong"
        if self._resolved_for_end(half):
            log.info("transaction: %s (half %d) is already committed or rolled back; END_TRANSACTION %d ignored",
                     half.properties.get(_P.UNIQ_KEY), half.queue_offset, header.commit_or_rollback)
            return (EndResult.ALREADY_RESOLVED, ResponseCode.SUCCESS,
                    "the transaction was already committed or rolled back")
        if header.commit_or_rollback == sysflag.TRANSACTION_COMMIT_TYPE:
            code, remark = self._deliver(half, header.commit_log_offset)
            if code != ResponseCode.SUCCESS:
                return EndResult.REFUSED, code, remark
            self.committed += 1
            self._write_op(half)
            return EndResult.COMMITTED, ResponseCode.SUCCESS, None
        self.rolled_back += 1
        self._write_op(half)
        return EndResult.ROLLED_BACK, ResponseCode.SUCCESS, None

    def _find_half(self, commit_log_offset: int) -> MessageExt | None:
        try:
            msg = self.broker.store.read_message(commit_log_offset)
        except (OverflowError, ValueError, StoreError):
            return None
        if msg is None or msg.topic != HALF_TOPIC:
            return None
        return msg

    def _deliver(self, half: MessageExt, commit_log_offset: int) -> tuple[int, str | None]:
        """Store the committed message (``endMessageTransaction`` + ``sendFinalMessage``): the half's body, flag,
        born time/host, reconsume count and property string, under REAL_TOPIC/REAL_QID (or the schedule queue
        of its DELAY), sysflag COMMIT, preparedTransactionOffset = the half's commitlog offset. Like RocketMQ
        4.9, which serialises the properties before clearing REAL_TOPIC/REAL_QID/TRAN_MSG from its map, the
        stored property string keeps them. TIMER_DELIVER_MS / TIMER_DELAY_SEC / TIMER_DELAY_MS park it as a timer
        (``TimerService.park``, as for a send; RocketMQ 5.x does the same at commit), whose delivery then stores it
        under REAL_TOPIC/REAL_QID."""
        props = dict(half.properties)
        topic = props.get(_P.REAL_TOPIC)
        queue_id = _java_int(props.get(_P.REAL_QID))
        if not topic or queue_id is None or queue_id < 0:
            return ResponseCode.SYSTEM_ERROR, "the half message has no valid REAL_TOPIC/REAL_QID"
        commit_sys_flag = sysflag.reset_transaction_value(half.sys_flag, sysflag.TRANSACTION_COMMIT_TYPE)
        if DELIVER_MS in props or DELAY_SEC in props or DELAY_MS in props:
            # RocketMQ 5.x applies TIMER_* at commit (the final message goes through the put hooks): parked in
            # rmq_sys_wheel_timer now, a relative delay counted from the commit; a DELAY level wins and drops them
            try:
                topic, queue_id, encoded = self.broker.timer.park(topic, queue_id, encode_properties(props),
                                                                  commit_sys_flag)
            except TimerRefused as refused:
                return refused.code, refused.remark
            props = decode_properties(encoded)
        level = _java_int(props.get(_P.DELAY)) or 0
        if level > 0:
            level = min(level, self.broker.schedule.max_level)
            props[_P.DELAY] = str(level)
            topic, queue_id = SCHEDULE_TOPIC, level - 1
        try:
            self.broker.store.put_batch(
                topic, [half.body], queue_id, properties=encode_properties(props), flag=half.flag,
                sys_flag=commit_sys_flag, born_timestamp=half.born_timestamp, born_host=half.born_host,
                reconsume_times=half.reconsume_times, prepared_transaction_offset=commit_log_offset, wait_flush=False)
        except (MessageTooLargeError, PropertiesTooLongError) as exc:
            return ResponseCode.MESSAGE_ILLEGAL, f"The message is illegal: {exc}"
        except DiskFullError as exc:
            return ResponseCode.SERVICE_NOT_AVAILABLE, f"Service not available now: the disk is full ({exc})"
        except (StoreError, ValueError, TypeError) as exc:
            return ResponseCode.SYSTEM_ERROR, f"storing the committed message failed: {exc}"
        return ResponseCode.SUCCESS, None

    # -- the check loop ---------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """One check round every ``transactionCheckInterval`` of broker time (read each time: runtime key)."""
        task_status.started()
        broker = self.broker
        while True:
            await broker.clock.sleep_ms(broker.config.transaction_check_interval_ms)
            if broker.stopping or not broker.is_master:
                continue
            try:
                await self.check_round()
            except StoreError as exc:
                log.error("transaction: check round failed: %s", exc)
                await broker.clock.sleep_ms(ERROR_RETRY_MS)

    async def check_round(self) -> int:
        """One pass over the half queue from the check progress; returns how many checks were sent."""
        store = self.broker.store
        if self.half_progress >= store.max_offset(HALF_TOPIC, 0) or self._round_active:
            return 0
        self.rounds += 1
        self._round_active = True
        self._round_pos = max(self.half_progress, store.min_offset(HALF_TOPIC, 0))
        sent_before = self.checks_sent
        try:
            await self._walk()
        finally:
            self._finish_round(self._round_pos)
        return self.checks_sent - sent_before

    async def _walk(self) -> None:
        broker = self.broker
        store = broker.store
        config = broker.config
        clock = broker.clock
        timeout = config.transaction_timeout_ms
        check_max = config.transaction_check_max
        reserved_ms = store.config.file_reserved_time_hours * 3_600_000
        start = clock.now_ms()
        examined = 0
        while self._round_pos < store.max_offset(HALF_TOPIC, 0):
            i = self._round_pos
            examined += 1
            if examined % ROUND_YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()
            if clock.now_ms() - start > ROUND_TIME_LIMIT_MS:
                log.info("transaction: check round reached its time limit at half %d", i)
                return
            if i in self._resolved:
                self._round_pos = i + 1
                continue
            msg, next_offset = self._read_half(i)
            if msg is None:
                if next_offset is None:
                    return
                self._round_pos = max(i + 1, next_offset)
                continue
            if msg.store_timestamp >= start:
                return                  # stored during this round (a copy made by it): next round
            props = dict(msg.properties)
            now = clock.now_ms()
            times = _java_int(props.get(_P.TRANSACTION_CHECK_TIMES))
            if (times is not None and times >= check_max) or now - msg.born_timestamp > reserved_ms:
                if not self._transaction_resolved(msg):
                    self._discard(msg)
                self._round_pos = i + 1
                continue
            props[_P.TRANSACTION_CHECK_TIMES] = str(1 if times is None else times + 1)
            age = now - msg.born_timestamp
            immunity = timeout
            immunity_text = props.get(_P.CHECK_IMMUNITY_TIME_IN_SECONDS)
            if immunity_text is not None:
                seconds = _java_int(immunity_text)
                immunity = timeout if seconds is None or seconds < 0 else seconds * 1000
                if age < immunity:
                    if self._immune(msg, props):
                        self._round_pos = i + 1
                        continue
                    return
            elif 0 <= age < timeout:
                return                  # too young: so is everything after it
            if self._transaction_resolved(msg):
                self._round_pos = i + 1
                continue
            copy = self._put_back(msg, props)
            if copy is None:
                return                  # try again next round
            self._round_pos = i + 1
            await self._send_check(msg, props, copy)

    def _read_half(self, offset: int) -> tuple[MessageExt | None, int | None]:
        """The half at ``offset``, or (None, where to go on) / (None, None) when the queue ends there."""
        result = self.broker.store.get_messages(HALF_TOPIC, 0, offset, 1)
        try:
            if result.status is GetStatus.FOUND:
                for view in result.records():
                    return decode_record(view, check_crc=False), None
            if result.status in (GetStatus.OFFSET_OVERFLOW_ONE, GetStatus.OFFSET_OVERFLOW_BADLY,
                                 GetStatus.NO_MESSAGE_IN_QUEUE, GetStatus.NO_MATCHED_LOGIC_QUEUE):
                return None, None
            log.warning("transaction: half %d cannot be read (%s); skipped", offset, result.status.name)
            return None, result.next_begin_offset
        finally:
            result.release()

    def _immune(self, msg: MessageExt, props: dict[str, str]) -> bool:
        """A half inside its CHECK_IMMUNITY_TIME_IN_SECONDS (``checkPrepareQueueOffset``): resolved meanwhile →
        passed over; otherwise stored again, remembering its first offset in TRAN_PREPARED_QUEUE_OFFSET, and
        passed over. False: leave it where it is and end the round."""
        prepared = _java_int(props.get(_P.TRAN_PREPARED_QUEUE_OFFSET))
        if prepared is None:
            props[_P.TRAN_PREPARED_QUEUE_OFFSET] = str(msg.queue_offset)
        elif prepared < 0:
            return False
        elif prepared in self._resolved or self._transaction_resolved(msg):
            return True
        return self._put_back(msg, props) is not None

    def _put_back(self, msg: MessageExt, props: dict[str, str]) -> Any:
        """Store ``msg`` again at the end of the half queue with ``props`` (``putBackHalfMsgQueue``)."""
        try:
            return self.broker.store.put_batch(
                HALF_TOPIC, [msg.body], 0, properties=encode_properties(props), flag=msg.flag,
                sys_flag=msg.sys_flag, born_timestamp=msg.born_timestamp, born_host=msg.born_host,
                reconsume_times=msg.reconsume_times, wait_flush=False)
        except (StoreError, ValueError, TypeError) as exc:
            log.error("transaction: storing half %d again failed: %s", msg.queue_offset, exc)
            return None

    def _discard(self, msg: MessageExt) -> None:
        """Checked too often (or older than the retention): into TRANS_CHECK_MAX_TIME_TOPIC, never checked again
        (``DefaultTransactionalMessageCheckListener.resolveDiscardMsg``)."""
        self.discarded += 1
        log.error("transaction: half %d (msgId %s, topic %s) checked %s times; moved to %s", msg.queue_offset,
                  msg.properties.get(_P.UNIQ_KEY), msg.properties.get(_P.REAL_TOPIC),
                  msg.properties.get(_P.TRANSACTION_CHECK_TIMES), CHECK_MAX_TOPIC)
        try:
            self._ensure_topic(CHECK_MAX_TOPIC)
            self.broker.store.put_batch(
                CHECK_MAX_TOPIC, [msg.body], 0, properties=encode_properties(msg.properties), flag=msg.flag,
                sys_flag=msg.sys_flag, born_timestamp=msg.born_timestamp, born_host=msg.born_host,
                reconsume_times=msg.reconsume_times, wait_flush=False)
        except (StoreError, ValueError, TypeError) as exc:
            log.error("transaction: moving half %d to %s failed: %s", msg.queue_offset, CHECK_MAX_TOPIC, exc)

    async def _send_check(self, msg: MessageExt, props: dict[str, str], copy: Any) -> None:
        """CHECK_TRANSACTION_STATE (39, oneway) about the new copy to a live producer of PGROUP
        (``AbstractTransactionalMessageCheckListener.sendCheckMessage``): the body is the half in stored layout
        with topic and queue set back to REAL_TOPIC/REAL_QID."""
        broker = self.broker
        group = props.get(_P.PGROUP)
        conn = broker.producers.available_channel(group) if group and broker.producers is not None else None
        if conn is None:
            log.warning("transaction: check of half %d not sent: no producer of group %s is connected",
                        copy.first_queue_offset, group)
            return
        uniq = props.get(_P.UNIQ_KEY)
        host, port = broker.store_host
        header = CheckTransactionStateRequestHeader(
            tran_state_table_offset=copy.first_queue_offset, commit_log_offset=copy.first_phy_offset,
            msg_id=uniq, transaction_id=uniq, offset_msg_id=create_offset_msg_id(host, port, copy.first_phy_offset))
        real_qid = _java_int(props.get(_P.REAL_QID))
        body = encode_record(
            topic=props.get(_P.REAL_TOPIC) or msg.topic, body=msg.body,
            queue_id=real_qid if real_qid is not None and real_qid >= 0 else 0, flag=msg.flag,
            queue_offset=copy.first_queue_offset, phy_offset=copy.first_phy_offset, sys_flag=msg.sys_flag,
            born_timestamp=msg.born_timestamp, born_host=msg.born_host, store_timestamp=msg.store_timestamp,
            store_host=msg.store_host, reconsume_times=msg.reconsume_times,
            prepared_transaction_offset=msg.prepared_transaction_offset, properties=encode_properties(props))
        cmd = RemotingCommand.request(RequestCode.CHECK_TRANSACTION_STATE, header.to_ext(), body)
        try:
            await conn.send_oneway(cmd, CHECK_SEND_TIMEOUT_MS)
        except (RemotingError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.error("transaction: check of half %d to %s failed: %r", copy.first_queue_offset,
                      getattr(conn, "remote_addr", conn), exc)
            return
        self.checks_sent += 1
        log.info("transaction: checking %s (half %d, check %s) with producer %s of group %s", uniq,
                 copy.first_queue_offset, props.get(_P.TRANSACTION_CHECK_TIMES), getattr(conn, "remote_addr", conn),
                 group)
