"""Timer messages (RocketMQ 5.x): a message delivered at an arbitrary time, to the millisecond.

A producer sets one of three properties (Java ``Message.setDeliverTimeMs`` / ``setDelayTimeSec`` /
``setDelayTimeMs``)::

    TIMER_DELIVER_MS  absolute wall-clock time in ms
    TIMER_DELAY_SEC   seconds from the broker's now
    TIMER_DELAY_MS    milliseconds from the broker's now

The send path (``TimerService.park``, as Java ``HookUtils.handleScheduleMessage``) turns such a send into a
*parked* record: stored in queue 0 of the system topic ``rmq_sys_wheel_timer`` with its absolute deliver time
in TIMER_OUT_MS and its real topic and queue in REAL_TOPIC/REAL_QID. A deliver time not after the broker's
now is no timer: the message is stored to its topic at once, properties as sent. A delay level (DELAY > 0)
wins over the TIMER properties, which are then dropped. More than ``timerMaxDelaySec`` ahead, or a value that
is not a number: MESSAGE_ILLEGAL with Java's remark. ``timerWheelEnable=false``: SYSTEM_ERROR.

``TimerService`` delivers parked records. It keeps a min-heap of ``(due, q, commitlog offset, deliver_ms)``
— q being the record's offset in the timer queue — fed from the timer queue like every other index of the
broker (the queue is derived from the commitlog). At its time an entry is re-stored to REAL_TOPIC/REAL_QID
with REAL_TOPIC/REAL_QID removed and TIMER_DEQUEUE_MS/TIMER_ENQUEUE_MS added (TIMER_OUT_MS and the producer's
TIMER_* stay, as Java's ``TimerMessageStore.convertMessage`` leaves them: a copy sent again is not re-timed).
A timer further out than the roll window (2 days, at most half of ``fileReservedTime``) is *rolled* before
retention could delete its parked record: stored again in the timer queue with TIMER_ROLL_TIMES + 1, as
Java's roll does.

Durability: what is delivered is recorded in the commitlog too, in queue 1 of the timer topic (the *op
queue*), so a restart neither loses nor repeats a delivery.

Invariants
----------
I1  Identity. A timer is its offset q in the timer queue. Only this service writes the op queue (the timer
    topic is READ-only for producers). Its records alternate ``I q,q,…`` (intent: the entries about to be
    delivered or rolled) and ``D q,q,…`` (done: those of the intent that were delivered, rolled or dropped;
    the others go back on the heap). At most one ``I`` lacks its ``D``, and then it is the last op record
    (no new ``I`` is written until a failed ``D`` has been written).
I2  Marker. Every copy the service stores — a delivery or a roll — carries ``__RMQ_TIMER_SOURCE=q`` and is
    stored after the ``I`` naming q and before its ``D``.
I3  Done. q is done iff q < lowWater, or a ``D`` names it, or q is in the open ``I`` and a copy of q with
    marker q follows that ``I`` in the commitlog. Done is final: a done q is never delivered again; every q
    not done is pending and is delivered (or rolled) once, when due. The commitlog survives a crash as a
    prefix (recovery truncates at the first bad record), so a surviving copy implies its ``I`` survived and
    a lost ``I`` implies its copies are lost too.
I4  Checkpoint. ``config/timerCheckpoint.json`` = ``{"lowWater": L, "opOffset": O}``: every q < L is done and
    every op record before O names only q < L. It is a snapshot taken on the event loop and written only
    once the commitlog is flushed past the snapshot, so everything it claims is on disk; an older file is
    still true (just more to read at start). Recovery = read it, read the op queue from O, settle the open
    ``I`` by scanning the commitlog after it for markers (a few records: the ``I`` is written right before
    its copies), then load the timer queue from L, skipping done entries.
I5  Memory. The heap holds exactly the pending entries loaded so far (q in [L, read)); ``done`` holds the
    done q's in [L, read) (plus, during recovery, done q's ≥ read); L is the smallest pending q, or read.
I6  Cost. A tick pops its k due entries (k · log n), reads their k parked records and writes k copies and two
    op records; a new timer is one heap push. No tick looks at the pending entries that are not due (moving L
    past done entries is amortised O(1) per entry). Memory is O(pending + done above L); L waits at most a roll
    window behind a far timer.
I7  Retention. A pending entry is due at min(deliver time, parked store time + roll window), the window being
    at most half of ``fileReservedTime``, so its parked record is copied forward before it can expire.

Time is the broker's clock (``BrokerClock``, a trio MockClock in tests); a tick is delivered at the first
multiple of ``timerPrecisionMs`` at or after its deliver time — never before it, at most one precision late.
"""
from __future__ import annotations

import heapq
import logging
import os
import re
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from rmq_common import sysflag
from rmq_common._record import decode_record, decode_records
from rmq_common.properties import MAX_PROPERTIES_LENGTH, decode_properties, encode_properties
from rmq_common.topic import SYSTEM_TOPIC_PREFIX
from rmq_remoting import ResponseCode, fastjson
from rmq_store import GetStatus, StoreError

from rmq_broker.config_file import ConfigFileError, load_json_file, write_json_file

if TYPE_CHECKING:
    from rmq_common.message import MessageExt
    from rmq_store import MessageStore

    from rmq_broker.clock import BrokerClock
    from rmq_broker.config import BrokerConfig

__all__ = ["TIMER_TOPIC", "TIMER_QUEUE", "OP_QUEUE", "TimerService", "TimerRefused", "TimerStats",
           "DELIVER_MS", "DELAY_SEC", "DELAY_MS", "OUT_MS", "ROLL_TIMES", "ENQUEUE_MS", "DEQUEUE_MS", "SOURCE",
           "has_timer_property"]

log = logging.getLogger("rmq_broker.timer")

#: Java ``TimerMessageStore.TIMER_TOPIC`` = ``TopicValidator.SYSTEM_TOPIC_PREFIX + "wheel_timer"``.
TIMER_TOPIC: Final = SYSTEM_TOPIC_PREFIX + "wheel_timer"
TIMER_QUEUE: Final = 0
#: rmq's own: the op records (I1) live in queue 1 of the timer topic, which is registered with one queue.
OP_QUEUE: Final = 1

# Property names (Java MessageConst).
DELIVER_MS: Final = "TIMER_DELIVER_MS"
DELAY_SEC: Final = "TIMER_DELAY_SEC"
DELAY_MS: Final = "TIMER_DELAY_MS"
OUT_MS: Final = "TIMER_OUT_MS"
ROLL_TIMES: Final = "TIMER_ROLL_TIMES"
ENQUEUE_MS: Final = "TIMER_ENQUEUE_MS"
DEQUEUE_MS: Final = "TIMER_DEQUEUE_MS"
DEL_UNIQKEY: Final = "TIMER_DEL_UNIQKEY"
#: rmq's own marker (I2): the timer-queue offset a delivered or rolled copy comes from.
SOURCE: Final = "__RMQ_TIMER_SOURCE"

_TIMER_KEYS: Final = (DELIVER_MS, DELAY_SEC, DELAY_MS)
_TIMER_KEYS_BYTES: Final = tuple(k.encode() + b"\x01" for k in _TIMER_KEYS)
#: Bytes a parked record's properties may grow by on delivery or roll (marker, dequeue/enqueue times).
_GROWTH_RESERVE: Final = 160
_JAVA_LONG: Final = re.compile(r"[-+]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

BATCH: Final = 256                      # due entries per tick (one I/D op pair)
LOAD_CHUNK: Final = 4096                # timer-queue records loaded before the loop yields
ROLL_WINDOW_MS: Final = 2 * 24 * 3600 * 1000          # Java timerRollWindowSlot (2 days at 1 s precision)
MIN_ROLL_WINDOW_MS: Final = 3600 * 1000
CHECKPOINT_INTERVAL_MS: Final = 1000    # Java timerFlushIntervalMs
ERROR_RETRY_MS: Final = 1000


class TimerRefused(Exception):
    """A timer send that must be refused: answer ``code`` with ``remark``."""

    def __init__(self, code: int, remark: str) -> None:
        super().__init__(remark)
        self.code = code
        self.remark = remark


def has_timer_property(props: bytes) -> bool:
    """True if a property string sets TIMER_DELIVER_MS, TIMER_DELAY_SEC or TIMER_DELAY_MS (cheap pre-check)."""
    if b"TIMER_" not in props:
        return False
    return any(key in props for key in _TIMER_KEYS_BYTES) and bool(
        set(_TIMER_KEYS) & decode_properties(props).keys())


def _java_long(text: str | None) -> int | None:
    """``Long.parseLong``: optional sign and digits only, in range; None otherwise."""
    if text is None or _JAVA_LONG.fullmatch(text) is None:
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


@dataclass(slots=True)
class TimerStats:
    """Counters of the service; ``last_tick_*`` describe the most recent delivery tick (I6)."""

    parked_loaded: int = 0
    delivered: int = 0
    rolled: int = 0
    dropped: int = 0
    ticks: int = 0
    heap_pushes: int = 0
    heap_pops: int = 0
    last_tick_pops: int = 0
    last_tick_pushes: int = 0
    last_tick_reads: int = 0
    recovered_from_tail: int = 0


class TimerService:
    """Parks timer sends (``park``) and delivers them on time (``run``); see the module docstring."""

    def __init__(self, store: MessageStore, clock: BrokerClock, config: BrokerConfig, path: str) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.path = path
        self.stats = TimerStats()
        self._heap: list[tuple[int, int, int, int]] = []      # (due ms, q, commitlog offset, deliver ms)
        self._done: set[int] = set()
        self._low = 0                   # L: every q below is done
        self._read = 0                  # next timer-queue offset to load
        self._ops: deque[tuple[int, int]] = deque()           # (op-queue offset, largest q named) from O on
        self._op_next = 0               # op-queue offset after the last op record
        self._unrecorded: list[int] | None = None            # a D that could not be written yet
        self._recovered = False
        self._caught_up = False         # the backlog present at recovery has been loaded
        self._backlog_end = 0
        self._wake = trio.Event()
        self._saved: tuple[int, int] | None = None

    # -- the send path ----------------------------------------------------------------------------

    def park(self, topic: str, queue_id: int, props: bytes, sys_flag: int) -> tuple[str, int, bytes]:
        """Where a send goes: ``(topic, queue_id, props)`` unchanged unless it is a timer message, then the
        timer queue with TIMER_OUT_MS/REAL_TOPIC/REAL_QID added. Raises TimerRefused."""
        tran = sysflag.transaction_value(sys_flag)
        if tran not in (sysflag.TRANSACTION_NOT_TYPE, sysflag.TRANSACTION_COMMIT_TYPE):
            return topic, queue_id, props               # half and rollback records are never timed (Java)
        if b"TIMER_" not in props:
            return topic, queue_id, props
        table = decode_properties(props)
        if not any(key in table for key in _TIMER_KEYS):
            return topic, queue_id, props
        level = _java_long(table.get("DELAY"))
        if level is not None and level > 0:
            # A delay level wins: the TIMER properties are dropped (Java checkIfTimerMessage).
            for key in _TIMER_KEYS:
                table.pop(key, None)
            return topic, queue_id, encode_properties(table)
        if topic == TIMER_TOPIC or OUT_MS in table:
            return topic, queue_id, props               # already timed once: stored as it is (Java's double check)
        config = self.config
        if not config.timer_wheel_enable:
            raise TimerRefused(ResponseCode.SYSTEM_ERROR,
                               f"accurate timer message is not enabled, timerWheelEnable is "
                               f"{str(config.timer_wheel_enable).lower()}")
        now = self.clock.now_ms()
        deliver_ms = self._deliver_ms(table, now)
        illegal = TimerRefused(ResponseCode.MESSAGE_ILLEGAL,
                               f"timer message illegal, the delay time should not be bigger than the max delay "
                               f"{config.timer_max_delay_sec * 1000}ms; or if set del msg, the delay time should "
                               f"be bigger than the current time")
        if deliver_ms is None:
            raise illegal
        if deliver_ms <= now:
            if DEL_UNIQKEY in table:
                raise illegal
            return topic, queue_id, props               # due already: stored to its topic now, as sent
        if deliver_ms - now > config.timer_max_delay_sec * 1000:
            raise illegal
        if DEL_UNIQKEY in table:
            raise TimerRefused(ResponseCode.MESSAGE_ILLEGAL,
                               "cancelling a timer message (TIMER_DEL_UNIQKEY) is not supported by this broker")
        table[OUT_MS] = str(deliver_ms)
        table["REAL_TOPIC"] = topic
        table["REAL_QID"] = str(queue_id)
        table.pop(SOURCE, None)
        encoded = encode_properties(table)
        if len(encoded) + _GROWTH_RESERVE > MAX_PROPERTIES_LENGTH:
            raise TimerRefused(ResponseCode.MESSAGE_ILLEGAL,
                               f"the message properties are too long for a timer message: {len(encoded)} bytes, "
                               f"at most {MAX_PROPERTIES_LENGTH - _GROWTH_RESERVE}")
        return TIMER_TOPIC, TIMER_QUEUE, encoded

    @staticmethod
    def _deliver_ms(table: dict[str, str], now: int) -> int | None:
        """The absolute deliver time of Java ``formatDelayTime``: DELAY_SEC, then DELAY_MS, then DELIVER_MS."""
        if DELAY_SEC in table:
            sec = _java_long(table[DELAY_SEC])
            return None if sec is None else now + sec * 1000
        if DELAY_MS in table:
            ms = _java_long(table[DELAY_MS])
            return None if ms is None else now + ms
        return _java_long(table.get(DELIVER_MS))

    # -- state ------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Timers loaded and not yet delivered."""
        return len(self._heap)

    @property
    def low_water(self) -> int:
        return self._low

    def roll_window_ms(self) -> int:
        """How long a parked record may wait before it is copied forward (I7); read on every use."""
        retention_ms = int(self.config.store.file_reserved_time_hours * 3_600_000)
        return max(MIN_ROLL_WINDOW_MS, min(ROLL_WINDOW_MS, retention_ms // 2))

    def notify(self, topic: str, queue_id: int, max_offset: int) -> None:
        """The store's arrival listener: a new parked record (a send or a roll) wakes the loop."""
        if topic == TIMER_TOPIC and queue_id == TIMER_QUEUE:
            self._wake.set()

    # -- recovery (I4) ----------------------------------------------------------------------------

    def recover(self) -> None:
        """Rebuild the done set from the checkpoint, the op queue and the commitlog after an open intent.
        The timer queue itself is loaded afterwards, in chunks, by ``load``."""
        store = self.store
        try:
            data = load_json_file(self.path, _decode_checkpoint) or (0, 0)
        except ConfigFileError as exc:         # only a starting point: read everything instead
            log.warning("timer: %s; recovering from the start of the timer queues", exc)
            data = (0, 0)
        # clamped to the queues as they are (a store emptied under a kept config/ starts from 0 again)
        low = min(max(data[0], store.min_offset(TIMER_TOPIC, TIMER_QUEUE)),
                  store.max_offset(TIMER_TOPIC, TIMER_QUEUE))
        op_offset = min(max(data[1], store.min_offset(TIMER_TOPIC, OP_QUEUE)),
                        store.max_offset(TIMER_TOPIC, OP_QUEUE))
        self._low = self._read = low
        self._heap.clear()
        self._done.clear()
        self._ops.clear()
        open_intent: tuple[list[int], int] | None = None
        op_max = store.max_offset(TIMER_TOPIC, OP_QUEUE)
        offset = op_offset
        while offset < op_max:
            result = store.get_messages(TIMER_TOPIC, OP_QUEUE, offset, BATCH)
            if result.status is not GetStatus.FOUND:
                result.release()
                if result.next_begin_offset <= offset:
                    break
                offset = result.next_begin_offset
                continue
            try:
                records = decode_records(b"".join(result.buffers))
            finally:
                result.release()
            for msg in records:
                kind, qs = _parse_op(msg.body)
                self._ops.append((msg.queue_offset, max(qs, default=-1)))
                if kind == "I":
                    open_intent = (qs, msg.commit_log_offset + msg.store_size)
                else:
                    open_intent = None
                    self._done.update(q for q in qs if q >= low)
            offset = result.next_begin_offset
        self._op_next = op_max
        if open_intent is not None:
            self._settle_intent(*open_intent)
        self._backlog_end = store.max_offset(TIMER_TOPIC, TIMER_QUEUE)
        self._caught_up = self._read >= self._backlog_end
        self._recovered = True
        log.info("timer: recovered from checkpoint (lowWater %d, opOffset %d); %d done above it, %d parked "
                 "records to load", low, op_offset, len(self._done), self._backlog_end - low)

    def _settle_intent(self, qs: list[int], after: int) -> None:
        """The last intent has no D (a crash or a failed write between them): a q of it is done iff a copy
        carrying marker q follows the intent (I3). Then the missing D is written."""
        store = self.store
        wanted = {q for q in qs if q >= self._low and q not in self._done}
        found: list[int] = []
        if wanted:
            file_size = store.config.mapped_file_size_commitlog
            phy, end = max(after, store.min_phy_offset), store.max_phy_offset
            while phy < end:
                rec = store.read_record(phy)
                if rec is None:                          # the blank end of a file
                    phy = (phy // file_size + 1) * file_size
                    continue
                msg = decode_record(rec)
                phy += msg.store_size
                q = _java_long(msg.properties.get(SOURCE))
                if q is not None and q in wanted and self._is_copy_of(msg, q):
                    wanted.discard(q)
                    found.append(q)
        self._done.update(found)
        self.stats.recovered_from_tail += len(found)
        log.info("timer: the last intent (%d entries) had no done record; %d of them were stored before the "
                 "stop and are not delivered again", len(qs), len(found))
        self._unrecorded = sorted(found)
        self._write_unrecorded()

    def _is_copy_of(self, msg: MessageExt, q: int) -> bool:
        parked = self._parked_at(q)
        if parked is None or parked.body != msg.body:
            return False
        if msg.topic == TIMER_TOPIC:
            return msg.queue_id == TIMER_QUEUE
        return (msg.topic == parked.properties.get("REAL_TOPIC")
                and str(msg.queue_id) == parked.properties.get("REAL_QID"))

    def _parked_at(self, q: int) -> MessageExt | None:
        result = self.store.get_messages(TIMER_TOPIC, TIMER_QUEUE, q, 1)
        try:
            if result.status is not GetStatus.FOUND:
                return None
            records = decode_records(b"".join(result.buffers))
        finally:
            result.release()
        return records[0] if records and records[0].queue_offset == q else None

    # -- loading parked records -------------------------------------------------------------------

    def load(self, limit: int = 1 << 62) -> int:
        """Push the parked records from ``read`` on (up to ``limit``) onto the heap; returns how many were read.
        One heap push per pending record (I6)."""
        store = self.store
        count = 0
        window = self.roll_window_ms()
        while count < limit:
            max_offset = store.max_offset(TIMER_TOPIC, TIMER_QUEUE)
            if self._read >= max_offset:
                break
            min_offset = store.min_offset(TIMER_TOPIC, TIMER_QUEUE)
            if self._read < min_offset:
                log.error("timer: parked records %d..%d were removed by retention before delivery",
                          self._read, min_offset - 1)
                self._skip_to(min_offset)
                continue
            result = store.get_messages(TIMER_TOPIC, TIMER_QUEUE, self._read, min(BATCH, limit - count))
            if result.status is not GetStatus.FOUND:
                result.release()
                if result.next_begin_offset <= self._read:
                    break
                log.error("timer: parked records %d..%d are unreadable (%s)", self._read,
                          result.next_begin_offset - 1, result.status.name)
                self._skip_to(result.next_begin_offset)
                continue
            try:
                records = decode_records(b"".join(result.buffers))
            finally:
                result.release()
            for msg in records:
                q = msg.queue_offset
                if q > self._read:
                    self._skip_to(q)                   # units the store could not read: lost
                self._read = q + 1
                count += 1
                if q < self._low or q in self._done:
                    continue
                deliver_ms = _java_long(msg.properties.get(OUT_MS))
                if deliver_ms is None or not msg.properties.get("REAL_TOPIC"):
                    log.error("timer: parked record %d has no TIMER_OUT_MS or REAL_TOPIC; dropped", q)
                    self.stats.dropped += 1
                    self._done.add(q)
                    continue
                due = min(deliver_ms, msg.store_timestamp + window)
                heapq.heappush(self._heap, (due, q, msg.commit_log_offset, deliver_ms))
                self.stats.heap_pushes += 1
                self.stats.parked_loaded += 1
            if result.next_begin_offset > self._read:
                self._skip_to(result.next_begin_offset)
        if not self._caught_up and self._read >= self._backlog_end:
            self._caught_up = True
        self._advance_low()
        return count

    def _skip_to(self, offset: int) -> None:
        while self._read < offset:
            if self._read >= self._low:
                self._done.add(self._read)
            self._read += 1

    def _advance_low(self) -> None:
        done = self._done
        while self._low < self._read and self._low in done:
            done.discard(self._low)
            self._low += 1
        ops = self._ops
        while ops and ops[0][1] < self._low:
            ops.popleft()

    @property
    def op_offset(self) -> int:
        """O of I4: the first op record that may name a q ≥ L."""
        return self._ops[0][0] if self._ops else self._op_next

    # -- delivering -------------------------------------------------------------------------------

    def tick(self, now: int) -> int:
        """Deliver (or roll) up to BATCH entries due at ``now``; returns how many were handled.
        Raises StoreError when the store cannot take the op records (the entries stay pending)."""
        self._write_unrecorded()
        heap = self._heap
        if not heap or heap[0][0] > now:
            return 0
        batch = []
        while heap and heap[0][0] <= now and len(batch) < BATCH:
            batch.append(heapq.heappop(heap))
        stats = self.stats
        stats.ticks += 1
        stats.heap_pops += len(batch)
        stats.last_tick_pops = len(batch)
        stats.last_tick_pushes = 0
        stats.last_tick_reads = 0
        try:
            self._put_op("I", [e[1] for e in batch])
        except StoreError:
            for entry in batch:
                heapq.heappush(heap, entry)
            stats.heap_pushes += len(batch)
            stats.last_tick_pushes = len(batch)
            raise
        done: list[int] = []
        failed: list[tuple[int, int, int, int]] = []
        for i, entry in enumerate(batch):
            try:
                self._handle(entry, now)
            except StoreError as exc:
                log.error("timer: storing entry %d failed, retrying later: %s", entry[1], exc)
                failed = batch[i:]
                break
            except Exception:                   # a bug must not lose the entry: it stays pending
                log.exception("timer: delivering entry %d failed, retrying later", entry[1])
                failed = batch[i:]
                break
            done.append(entry[1])
        for entry in failed:
            heapq.heappush(heap, entry)
        stats.heap_pushes += len(failed)
        stats.last_tick_pushes = len(failed)
        for q in done:
            if q >= self._low:
                self._done.add(q)
        self._advance_low()
        self._unrecorded = done
        self._write_unrecorded()
        if failed:
            raise StoreError(f"{len(failed)} timer entries could not be stored")
        return len(done)

    def _handle(self, entry: tuple[int, int, int, int], now: int) -> None:
        """Deliver or roll one due entry. Raises StoreError (retry); anything else about the record drops it."""
        _, q, phy, deliver_ms = entry
        store = self.store
        self.stats.last_tick_reads += 1
        msg = store.read_message(phy)
        if msg is None or msg.topic != TIMER_TOPIC or msg.queue_offset != q:
            log.error("timer: parked record %d (commitlog offset %d) is gone; dropped", q, phy)
            self.stats.dropped += 1
            return
        props = dict(msg.properties)
        props[SOURCE] = str(q)
        if deliver_ms > now:
            rolls = _java_long(props.get(ROLL_TIMES)) or 0
            props[ROLL_TIMES] = str(rolls + 1)
            topic, queue_id = TIMER_TOPIC, TIMER_QUEUE
        else:
            topic = props.pop("REAL_TOPIC", "")
            queue_id = _java_long(props.pop("REAL_QID", None))
            if not topic or queue_id is None or queue_id < 0:
                log.error("timer: parked record %d names no real topic/queue; dropped", q)
                self.stats.dropped += 1
                return
            props[ENQUEUE_MS] = str(msg.store_timestamp)
            props[DEQUEUE_MS] = str(now)
        try:
            store.put_batch(topic, [msg.body], queue_id, properties=encode_properties(props), flag=msg.flag,
                            sys_flag=msg.sys_flag, born_timestamp=msg.born_timestamp, born_host=msg.born_host,
                            reconsume_times=msg.reconsume_times, wait_flush=False)
        except (ValueError, TypeError) as exc:
            log.error("timer: parked record %d cannot be stored to %s (%s); dropped", q, topic, exc)
            self.stats.dropped += 1
            return
        if topic == TIMER_TOPIC:
            self.stats.rolled += 1
        else:
            self.stats.delivered += 1

    def _put_op(self, kind: str, qs: list[int]) -> None:
        body = (kind + " " + ",".join(map(str, qs))).encode()
        result = self.store.put_batch(TIMER_TOPIC, [body], OP_QUEUE, properties=b"TAGS\x01" + kind.encode(),
                                      wait_flush=False)
        self._ops.append((result.first_queue_offset, max(qs, default=-1)))
        self._op_next = result.first_queue_offset + 1
        self._advance_low()

    def _write_unrecorded(self) -> None:
        """Write the D of the last intent if it is still missing (I1); StoreError if the store refuses."""
        if self._unrecorded is not None:
            self._put_op("D", self._unrecorded)
            self._unrecorded = None

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Recover, then load and deliver until cancelled; the checkpoint is written on the way out."""
        store = self.store
        store.arrival_listeners.append(self.notify)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while not self._recovered:
                    try:
                        self.recover()
                    except StoreError as exc:
                        log.error("timer: recovery failed, retrying: %s", exc)
                        await self.clock.sleep_ms(ERROR_RETRY_MS)
                nursery.start_soon(self._checkpoint_loop)
                await self._loop()
        finally:
            try:
                store.arrival_listeners.remove(self.notify)
            except ValueError:
                pass
            if self._recovered and store.is_open:
                try:
                    store.flush()
                    self._write_checkpoint(self._snapshot())
                except (OSError, StoreError) as exc:
                    log.error("timer: writing %s at shutdown failed: %s", self.path, exc)

    async def _loop(self) -> None:
        clock = self.clock
        while True:
            self._wake = trio.Event()               # arrivals from here on end the wait below
            loaded = self.load(LOAD_CHUNK)
            if not self._caught_up:                 # deliver in order: the backlog first
                await trio.sleep(0)
                continue
            now = clock.now_ms()
            if self.config.is_master and self._heap and self._heap[0][0] <= now:
                try:
                    self.tick(now)
                except StoreError as exc:
                    log.error("timer: %s", exc)
                    await clock.sleep_ms(ERROR_RETRY_MS)
                await trio.sleep(0)
                continue
            if loaded:
                await trio.sleep(0)
                continue
            if self._heap and self.config.is_master:
                precision = max(1, self.config.timer_precision_ms)
                due = self._heap[0][0]
                wake_at = -(-due // precision) * precision
                with trio.move_on_after(max(1, wake_at - now) / 1000):
                    await self._wake.wait()
            else:
                await self._wake.wait()

    # -- checkpoint (I4) --------------------------------------------------------------------------

    def _snapshot(self) -> tuple[int, int, int]:
        return self._low, self.op_offset, self.store.max_phy_offset

    def _write_checkpoint(self, snap: tuple[int, int, int]) -> None:
        low, op_offset, _ = snap
        write_json_file(self.path, fastjson.dumps({"lowWater": low, "opOffset": op_offset}).decode())
        self._saved = (low, op_offset)

    async def _checkpoint_loop(self) -> None:
        pending: tuple[int, int, int] | None = None
        while True:
            await self.clock.sleep_ms(CHECKPOINT_INTERVAL_MS)
            if pending is None:
                snap = self._snapshot()
                if snap[:2] != self._saved:
                    pending = snap
            # only what the flushed commitlog backs may be claimed (I4)
            if pending is not None and self.store.is_open and self.store.flushed_offset >= pending[2]:
                try:
                    await trio.to_thread.run_sync(self._write_checkpoint, pending)
                except OSError as exc:
                    log.error("timer: cannot write %s: %s", self.path, exc)
                pending = None

    def persist(self) -> None:
        """Write the checkpoint now (flushing the commitlog first)."""
        self.store.flush()
        self._write_checkpoint(self._snapshot())


def _parse_op(body: bytes) -> tuple[str, list[int]]:
    text = body.decode("ascii", "replace")
    kind, _, rest = text.partition(" ")
    qs = [int(x) for x in rest.split(",") if x.strip().isdigit()]
    return ("I" if kind == "I" else "D"), qs


def _decode_checkpoint(data: bytes) -> tuple[int, int]:
    obj = fastjson.loads(data)
    low, op_offset = obj["lowWater"], obj["opOffset"]
    if not isinstance(low, int) or not isinstance(op_offset, int) or low < 0 or op_offset < 0:
        raise ValueError("lowWater and opOffset must be non-negative integers")
    return low, op_offset


def checkpoint_path(config_dir: str) -> str:
    return os.path.join(config_dir, "timerCheckpoint.json")
