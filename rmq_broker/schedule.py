"""Delay levels: messages parked in SCHEDULE_TOPIC_XXXX and delivered to their real topic on time.

A send with ``DELAY=L`` is stored in queue L-1 of ``SCHEDULE_TOPIC_XXXX`` with its real topic and queue
in REAL_TOPIC/REAL_QID (the send processor does that). One task per level reads its queue in order:
every message of a level waits the same time, so the queue is ordered by delivery time and the task
only ever waits for its head — the cost does not grow with the number of pending messages. At the
delivery time the message is stored again under its real topic and queue, without DELAY, keeping
body, flags, born time/host and reconsume count (Java ``ScheduleMessageService.messageTimeup``), and
the level's progress advances.

Progress is ``delayOffset.json`` (``{"offsetTable":{1:5,2:0}}``, level → next queue offset, as
RocketMQ), written after every delivered batch and at close. A crash between the re-put and the
progress write delivers that message again on restart (at-least-once, as RocketMQ); nothing is ever
lost, because progress is written only after the re-put returned.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import trio

from rmq_common._record import decode_records
from rmq_common.properties import encode_properties
from rmq_common.topic import SCHEDULE_TOPIC, parse_delay_levels
from rmq_remoting import fastjson
from rmq_store import GetStatus, StoreError

from rmq_broker.config_file import load_json_file, write_json_file
from rmq_broker.long_polling import PullHoldService

if TYPE_CHECKING:
    from rmq_broker.broker import Broker

__all__ = ["ScheduleService"]

log = logging.getLogger("rmq_broker.schedule")

BATCH = 64
IDLE_WAIT_MS = 60_000          # how long an empty level waits before looking again (arrivals wake it)
ERROR_RETRY_MS = 1_000


class ScheduleService:
    def __init__(self, broker: Broker, levels_text: str, path: str) -> None:
        self.broker = broker
        self.delays_ms = parse_delay_levels(levels_text)
        self.path = path
        self.offsets: dict[int, int] = {}
        self.delivered_total = 0
        # Idle levels wait here for arrivals, not in the broker's PullHoldService: that one counts and
        # bounds the consumers' held pulls (heldPulls of GET_BROKER_RUNTIME_INFO).
        self._arrivals = PullHoldService()
        self._load()

    @property
    def max_level(self) -> int:
        return len(self.delays_ms)

    def _load(self) -> None:
        data = load_json_file(self.path, fastjson.loads)
        if not data:
            return
        table = data.get("offsetTable") or {}
        for level, offset in table.items():
            self.offsets[int(level)] = int(offset)

    def park(self, topic: str, queue_id: int, properties: dict[str, str], level: int) -> tuple[str, int]:
        """Where a message of delay ``level`` (≥ 1) is stored: queue level-1 of SCHEDULE_TOPIC_XXXX.

        ``properties`` is changed in place: REAL_TOPIC/REAL_QID keep ``topic`` and ``queue_id`` for the
        delivery, DELAY the level used (a level above the last one is clamped to it), as Java's
        ``CommitLog.asyncPutMessage``. Both a send with DELAY and CONSUMER_SEND_MSG_BACK come here.
        """
        level = min(level, self.max_level)
        properties["REAL_TOPIC"] = topic
        properties["REAL_QID"] = str(queue_id)
        properties["DELAY"] = str(level)
        return SCHEDULE_TOPIC, level - 1

    def notify(self, topic: str, queue_id: int, max_offset: int) -> None:
        """The store's arrival listener: wake the level whose queue just grew."""
        if topic == SCHEDULE_TOPIC:
            self._arrivals.notify(topic, queue_id, max_offset)

    def persist(self) -> None:
        write_json_file(self.path, fastjson.dumps({"offsetTable": dict(sorted(self.offsets.items()))}).decode())

    def text(self) -> str:
        """delayOffset.json's content (GET_ALL_DELAY_OFFSET)."""
        return fastjson.dumps({"offsetTable": dict(sorted(self.offsets.items()))}).decode()

    def replace_offsets(self, doc: Any) -> None:
        """Take a master's delay progress (a slave's GET_ALL_DELAY_OFFSET sync) and write delayOffset.json.

        ``doc`` is the parsed ``{"offsetTable":{level:offset,…}}``; ValueError/TypeError if it is not that
        (nothing changes then), OSError if the file cannot be written (the table is taken anyway). Only a
        slave calls this: its levels do not run, so nothing races with the replacement."""
        table = doc.get("offsetTable") if isinstance(doc, dict) else None
        if table is None:
            table = {}
        if not isinstance(table, dict):
            raise ValueError("offsetTable must be a JSON object")
        offsets: dict[int, int] = {}
        for level, offset in table.items():
            if isinstance(level, bool) or isinstance(offset, bool) or not isinstance(offset, int):
                raise ValueError(f"offsetTable entry {level!r}: {offset!r} is not level: offset")
            level = int(level)          # bare int from fastjson, "1" from a standard JSON writer
            if level < 1 or offset < 0:
                raise ValueError(f"offsetTable entry {level}: {offset} is out of range")
            offsets[level] = offset
        self.offsets = offsets
        self.persist()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if not self.broker.is_master:
            # Java runs ScheduleMessageService on masters only: a slave's SCHEDULE_TOPIC_XXXX is the
            # master's, replicated; delivering from it would write to the slave's own commitlog.
            task_status.started()
            return
        async with trio.open_nursery() as nursery:
            for level in range(1, self.max_level + 1):
                nursery.start_soon(self._run_level, level)
            task_status.started()

    async def _run_level(self, level: int) -> None:
        broker = self.broker
        queue_id = level - 1
        delay_ms = self.delays_ms[queue_id]
        clock = broker.clock
        while True:
            offset = self.offsets.get(level, 0)
            store = broker.store
            min_offset = store.min_offset(SCHEDULE_TOPIC, queue_id)
            if offset < min_offset:
                offset = min_offset                 # retention removed what we had not delivered
            result = store.get_messages(SCHEDULE_TOPIC, queue_id, offset, BATCH)
            if result.status is not GetStatus.FOUND:
                result.release()
                if result.status in (GetStatus.NO_MATCHED_LOGIC_QUEUE, GetStatus.NO_MESSAGE_IN_QUEUE,
                                     GetStatus.OFFSET_OVERFLOW_ONE):
                    await self._arrivals.wait(SCHEDULE_TOPIC, queue_id, offset, IDLE_WAIT_MS / 1000)
                else:
                    self.offsets[level] = result.next_begin_offset
                    await trio.sleep(0)
                continue
            try:
                records = decode_records(b"".join(result.buffers))
            finally:
                result.release()
            delivered = 0
            for msg in records:
                due_ms = msg.store_timestamp + delay_ms
                now = clock.now_ms()
                if due_ms > now:
                    break
                if not self._deliver(msg):
                    await clock.sleep_ms(ERROR_RETRY_MS)
                    break
                delivered += 1
                self.offsets[level] = msg.queue_offset + 1
            if delivered:
                self.delivered_total += delivered
                self._persist_quietly()
                await trio.sleep(0)
                continue
            if records:
                await clock.sleep_until_ms(records[0].store_timestamp + delay_ms)

    def _deliver(self, msg) -> bool:
        props = dict(msg.properties)
        topic = props.get("REAL_TOPIC")
        try:
            queue_id = int(props.get("REAL_QID", "0"))
        except ValueError:
            queue_id = 0
        if not topic:
            log.error("delay: message at %d has no REAL_TOPIC; skipped", msg.commit_log_offset)
            return True
        props.pop("DELAY", None)
        try:
            self.broker.store.put_batch(topic, [msg.body], queue_id, properties=encode_properties(props),
                                        flag=msg.flag, sys_flag=msg.sys_flag, born_timestamp=msg.born_timestamp,
                                        born_host=msg.born_host, reconsume_times=msg.reconsume_times,
                                        wait_flush=False)
        except (StoreError, ValueError, TypeError) as exc:
            log.error("delay: re-delivering the message at %d to %s failed: %s", msg.commit_log_offset, topic, exc)
            return False
        return True

    def _persist_quietly(self) -> None:
        try:
            self.persist()
        except OSError as exc:
            log.error("delay: cannot write %s: %s", self.path, exc)
