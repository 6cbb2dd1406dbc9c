"""Deduplication of producer retries: rmq's extension, opt-in per topic (docs/features.md "Deduplication").

A RocketMQ producer whose send timed out, or was answered with an error after the broker had stored the
message (FLUSH_DISK_TIMEOUT, a lost connection), sends the same message again: same UNIQ_KEY (the client's
msgId), usually to another queue. RocketMQ stores it twice. For a topic with a deduplication window the
broker remembers, per (topic, UNIQ_KEY), where it stored the message — ``(commitlog offset, queue id, queue
offset, store time)``, which is exactly the send reply — and answers a send of a key it stored less than a
window ago with SEND_OK and the *original* msgId, queueId and queueOffset, storing nothing.

Which window a topic has (``window_ms``): its ``rmqDedupWindowMs`` (> 0), else the broker's
``rmqDedupWindowMsDefault``; ``rmqDedupWindowMs = -1`` turns it off for the topic. System, retry and DLQ
topics never have one (a consumer's own retries of one message carry its UNIQ_KEY each time, legitimately).

Memory: one ordered map for the whole broker, in store order, at most ``rmqDedupMaxEntries`` entries; the
oldest are evicted beyond that (so the guarantee holds for at most that many messages per window, across
the dedup topics), and expired entries are dropped from its front as new ones arrive.

Restart (``rebuild``): the map is rebuilt from the store before the broker takes requests. Two ways were
possible: look every send up in the hash index (``query_message`` by UNIQ_KEY: no rebuild, but an index
lookup plus a record read for *every* new message of a dedup topic, for ever, and nothing without
``messageIndexEnable``), or read back, once at start, the messages stored within the window. The second is
cheaper: it reads only the queues of the dedup topics from the store time ``now - window``
(``offset_by_time``, a binary search), at most ``rmqDedupMaxEntries`` per queue, plus the three parking
queues that hold what such a send may have become (SCHEDULE_TOPIC_XXXX for a DELAY, rmq_sys_wheel_timer
queue 0 for a timer, RMQ_SYS_TRANS_HALF_TOPIC for a half message: entries there count for their
REAL_TOPIC). Copies the broker made itself are not originals and are skipped: delivered delay and timer
copies (REAL_TOPIC / ``__RMQ_TIMER_SOURCE`` in a real topic), committed transactions (sysflag COMMIT), half
copies of check rounds, rolled timers. Of several records of one key the oldest wins.

Everything runs on the broker's trio thread, except ``rebuild`` (start-up, in the store-opening worker
thread, before any request is served).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, NamedTuple

from rmq_common import sysflag
from rmq_common._record import decode_records
from rmq_common.topic import SCHEDULE_TOPIC, is_dlq_topic, is_retry_topic
from rmq_store import GetStatus, StoreError

from rmq_broker.timer import ROLL_TIMES, SOURCE, TIMER_QUEUE, TIMER_TOPIC
from rmq_broker.transaction import HALF_TOPIC

if TYPE_CHECKING:
    from rmq_broker.broker import Broker
    from rmq_broker.topic_config import TopicConfig

__all__ = ["DedupEntry", "DedupService", "uniq_key_of"]

log = logging.getLogger("rmq_broker.dedup")

READ_BATCH = 256
_UNIQ_KEY = b"UNIQ_KEY\x01"
_HALF_COPY_KEYS = ("TRANSACTION_CHECK_TIMES", "TRAN_PREPARED_QUEUE_OFFSET")


class DedupEntry(NamedTuple):
    """Where a message was stored: what its send reply said, and when."""

    phy_offset: int         # commitlog offset (the reply's offset msgId)
    queue_id: int           # the reply's queueId (the real queue for a parked message)
    queue_offset: int       # the reply's queueOffset (in the parking queue for a parked message)
    store_ms: int
    expires_ms: int         # store time + the topic's window when it was stored (eviction order)


def uniq_key_of(props: bytes) -> str | None:
    """The UNIQ_KEY value of an encoded property string (a pair start only), None when absent or empty."""
    start = 0
    while True:
        i = props.find(_UNIQ_KEY, start)
        if i < 0:
            return None
        if i and props[i - 1] != 0x02:
            start = i + 1
            continue
        begin = i + len(_UNIQ_KEY)
        end = props.find(b"\x02", begin)
        value = props[begin:end if end >= 0 else len(props)]
        return value.decode("utf-8", "replace") or None


class DedupService:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._entries: OrderedDict[tuple[str, str], DedupEntry] = OrderedDict()
        self.hits = 0
        self.evicted = 0
        self.rebuilt = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- settings ---------------------------------------------------------------------------------

    def window_ms(self, topic_config: TopicConfig) -> int:
        """The topic's deduplication window in ms; 0 = none (read on every send: runtime settings)."""
        window = topic_config.dedup_window_ms
        if window == 0:
            window = self.broker.config.rmq_dedup_window_ms_default
        if window <= 0:                 # DEDUP_OFF, or no default: the common case costs two comparisons
            return 0
        topic = topic_config.topic_name
        if is_retry_topic(topic) or is_dlq_topic(topic) or self.broker.topics.is_system_topic(topic):
            return 0
        return window

    # -- the send path ----------------------------------------------------------------------------

    def lookup(self, topic: str, uniq: str, window_ms: int, now_ms: int) -> DedupEntry | None:
        """The original of a message of ``topic`` with ``uniq`` stored less than ``window_ms`` ago, or None."""
        entry = self._entries.get((topic, uniq))
        if entry is None:
            return None
        if now_ms - entry.store_ms < window_ms:
            self.hits += 1
            return entry
        return None

    def record(self, topic: str, uniq: str, phy_offset: int, queue_id: int, queue_offset: int, store_ms: int,
               window_ms: int, now_ms: int) -> None:
        """Remember a message just stored; drop expired entries at the front and the oldest beyond the bound."""
        entries = self._entries
        key = (topic, uniq)
        if key in entries:
            del entries[key]            # an expired entry of the key: the new one goes to the end
        entries[key] = DedupEntry(phy_offset, queue_id, queue_offset, store_ms, store_ms + window_ms)
        self._trim(now_ms)

    def forget_topic(self, topic: str) -> int:
        """Drop the entries of a deleted topic (a topic created again under its name starts afresh)."""
        keys = [key for key in self._entries if key[0] == topic]
        for key in keys:
            del self._entries[key]
        return len(keys)

    def _trim(self, now_ms: int) -> None:
        entries = self._entries
        limit = self.broker.config.rmq_dedup_max_entries
        while entries:
            first = next(iter(entries.values()))
            if first.expires_ms > now_ms and len(entries) <= limit:
                return
            if first.expires_ms > now_ms:
                self.evicted += 1
            entries.popitem(last=False)

    # -- start-up ---------------------------------------------------------------------------------

    def rebuild(self) -> int:
        """Fill the map from the messages stored within each dedup topic's window (module docstring)."""
        broker = self.broker
        store = broker.store
        now = broker.clock.now_ms()
        windows = {name: w for name, cfg in broker.topics.table().items() if (w := self.window_ms(cfg)) > 0}
        if not windows:
            return 0
        found: dict[tuple[str, str], DedupEntry] = {}

        def consider(topic: str, uniq: str, entry: DedupEntry) -> None:
            old = found.get((topic, uniq))
            if old is None or entry.phy_offset < old.phy_offset:
                found[(topic, uniq)] = entry

        queues = store.queues()
        for topic, queue_id in queues:
            window = windows.get(topic)
            if window:
                for msg in self._read_since(topic, queue_id, now - window):
                    uniq = msg.properties.get("UNIQ_KEY")
                    props = msg.properties
                    if (not uniq or "REAL_TOPIC" in props or SOURCE in props
                            or sysflag.transaction_value(msg.sys_flag) == sysflag.TRANSACTION_COMMIT_TYPE):
                        continue
                    consider(topic, uniq, DedupEntry(msg.commit_log_offset, queue_id, msg.queue_offset,
                                                     msg.store_timestamp, msg.store_timestamp + window))
        longest = max(windows.values())
        parking = [(t, q) for t, q in queues
                   if t == SCHEDULE_TOPIC or (t, q) == (TIMER_TOPIC, TIMER_QUEUE) or (t, q) == (HALF_TOPIC, 0)]
        for topic, queue_id in parking:
            for msg in self._read_since(topic, queue_id, now - longest):
                props = msg.properties
                real = props.get("REAL_TOPIC")
                window = windows.get(real) if real else None
                uniq = props.get("UNIQ_KEY")
                if (not window or not uniq or msg.store_timestamp < now - window
                        or sysflag.transaction_value(msg.sys_flag) == sysflag.TRANSACTION_COMMIT_TYPE
                        or ROLL_TIMES in props or SOURCE in props or any(k in props for k in _HALF_COPY_KEYS)):
                    continue
                try:
                    real_qid = int(props.get("REAL_QID", ""))
                except ValueError:
                    continue
                consider(real, uniq, DedupEntry(msg.commit_log_offset, real_qid, msg.queue_offset,
                                                msg.store_timestamp, msg.store_timestamp + window))
        ordered = sorted(found.items(), key=lambda item: item[1].phy_offset)
        limit = broker.config.rmq_dedup_max_entries
        if len(ordered) > limit:
            ordered = ordered[-limit:]
        self._entries = OrderedDict(ordered)
        self._trim(now)
        self.rebuilt = len(self._entries)
        log.info("dedup: %d message keys of %d topics with a deduplication window read back from the store",
                 self.rebuilt, len(windows))
        return self.rebuilt

    def _read_since(self, topic: str, queue_id: int, since_ms: int):
        """The messages of a queue stored at or after ``since_ms`` (at most the last rmqDedupMaxEntries)."""
        store = self.broker.store
        low, end = store.min_offset(topic, queue_id), store.max_offset(topic, queue_id)
        if low >= end:
            return
        try:
            offset = store.offset_by_time(topic, queue_id, since_ms) - 1      # the nearest: maybe just after
        except StoreError:
            offset = low
        offset = max(offset, low, end - self.broker.config.rmq_dedup_max_entries)
        while offset < end:
            result = store.get_messages(topic, queue_id, offset, READ_BATCH)
            try:
                if result.status is not GetStatus.FOUND:
                    if result.next_begin_offset <= offset:
                        return
                    offset = result.next_begin_offset
                    continue
                records = decode_records(b"".join(result.buffers))
                offset = result.next_begin_offset
            finally:
                result.release()
            for msg in records:
                if msg.store_timestamp >= since_ms:
                    yield msg
