"""Consumer offsets: on the brokers (clustering) or in a local file (broadcasting).

Java's ``RemoteBrokerOffsetStore`` and ``LocalFileOffsetStore``, for one consumer group:

* ``update_offset(mq, offset, increase_only)`` changes the offset in memory (``increase_only`` never moves it
  back, as concurrent consumers committing out of order need);
* ``read_offset(mq, ReadOffsetType.MEMORY)`` is that value (-1 unknown); ``STORE`` asks the store — the broker
  (QUERY_CONSUMER_OFFSET: -1 when it answers 22, the group has no offset there; -2 on any other failure) or
  the file — and remembers the answer; ``MEMORY_FIRST_THEN_STORE`` falls back to the store;
* ``persist_all(mqs)`` / ``persist(mq)`` write the memory values out: UPDATE_CONSUMER_OFFSET to each queue's
  master (Java sends them oneway; here they are awaited, in parallel, so a shutdown knows they arrived), or
  the whole table to the file. ``persist_all`` forgets offsets of queues not listed (no longer assigned).

The local file is Java's: ``<local_offset_store_dir>/<client id>/<group>/offsets.json`` holding fastjson's
``{"offsetTable":{{"brokerName":…,"queueId":…,"topic":…}:offset,…}}`` (a MessageQueue object in key position),
so a Java broadcasting consumer with the same client id reads it and vice versa. It is replaced atomically
(temporary file, fsync, rename); the previous content is kept as ``offsets.json.bak`` and read when the main
file is missing or unreadable, as Java does.
"""
from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import trio

from rmq_client.consumer_api import OffsetNotFoundError, query_consumer_offset, queue_from_wire, \
    update_consumer_offset
from rmq_client.instance import ClientInstance
from rmq_client.routing import MessageQueue
from rmq_common.atomic_file import write_file_atomically
from rmq_remoting import fastjson
from rmq_remoting.errors import RemotingError
from rmq_remoting.fastjson import FrozenDict

__all__ = ["ReadOffsetType", "OffsetStore", "RemoteBrokerOffsetStore", "LocalFileOffsetStore",
           "default_local_offset_store_dir"]

log = logging.getLogger("rmq_client")


def default_local_offset_store_dir() -> str:
    """``$ROCKETMQ_CLIENT_LOCAL_OFFSET_STORE_DIR`` or ``~/.rocketmq_offsets`` (Java's default)."""
    return os.environ.get("ROCKETMQ_CLIENT_LOCAL_OFFSET_STORE_DIR") or os.path.join(os.path.expanduser("~"),
                                                                                    ".rocketmq_offsets")


class ReadOffsetType(enum.Enum):
    MEMORY = "READ_FROM_MEMORY"
    STORE = "READ_FROM_STORE"
    MEMORY_FIRST_THEN_STORE = "MEMORY_FIRST_THEN_STORE"


class OffsetStore:
    """The in-memory offset table shared by both stores."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.table: dict[MessageQueue, int] = {}

    async def load(self) -> None:
        pass

    def update_offset(self, mq: MessageQueue, offset: int, increase_only: bool = False) -> None:
        if offset < 0:
            return
        old = self.table.get(mq)
        if old is None or not increase_only or offset > old:
            self.table[mq] = offset

    def memory_offset(self, mq: MessageQueue) -> int:
        return self.table.get(mq, -1)

    async def read_offset(self, mq: MessageQueue, kind: ReadOffsetType = ReadOffsetType.MEMORY_FIRST_THEN_STORE) -> int:
        if kind is not ReadOffsetType.STORE:
            offset = self.table.get(mq)
            if offset is not None:
                return offset
            if kind is ReadOffsetType.MEMORY:
                return -1
        return await self._read_from_store(mq)

    async def _read_from_store(self, mq: MessageQueue) -> int:
        raise NotImplementedError

    def remove_offset(self, mq: MessageQueue) -> None:
        self.table.pop(mq, None)

    async def persist(self, mq: MessageQueue) -> None:
        raise NotImplementedError

    async def persist_all(self, mqs: Iterable[MessageQueue]) -> None:
        raise NotImplementedError

    def clone_offset_table(self, topic: str) -> dict[MessageQueue, int]:
        return {mq: off for mq, off in self.table.items() if not topic or mq.topic == topic}


class RemoteBrokerOffsetStore(OffsetStore):
    """Offsets of a clustering consumer: kept by the brokers, per (group, topic, queue)."""

    def __init__(self, instance: ClientInstance, group: str) -> None:
        super().__init__(group)
        self.instance = instance

    async def _read_from_store(self, mq: MessageQueue) -> int:
        try:
            offset = await query_consumer_offset(self.instance, self.group, mq)
        except OffsetNotFoundError:
            return -1
        except Exception as exc:
            log.warning("consumer %s: fetching the offset of %s failed: %s", self.group, mq, exc)
            return -2
        self.update_offset(mq, offset, False)
        return offset

    async def persist(self, mq: MessageQueue) -> None:
        offset = self.table.get(mq)
        if offset is None:
            return
        try:
            await update_consumer_offset(self.instance, self.group, mq, offset)
        except Exception as exc:
            log.warning("consumer %s: persisting offset %d of %s failed: %s", self.group, offset, mq, exc)

    async def persist_all(self, mqs: Iterable[MessageQueue]) -> None:
        keep = set(mqs)
        todo = [(mq, off) for mq, off in self.table.items() if mq in keep]
        for mq in [mq for mq in self.table if mq not in keep]:
            del self.table[mq]
        if not todo:
            return

        async def one(mq: MessageQueue, offset: int) -> None:
            try:
                await update_consumer_offset(self.instance, self.group, mq, offset)
            except (RemotingError, Exception) as exc:
                log.warning("consumer %s: persisting offset %d of %s failed: %s", self.group, offset, mq, exc)

        async with trio.open_nursery() as nursery:
            for mq, offset in todo:
                nursery.start_soon(one, mq, offset)


class LocalFileOffsetStore(OffsetStore):
    """Offsets of a broadcasting consumer, in ``<dir>/<client id>/<group>/offsets.json``."""

    def __init__(self, directory: str | os.PathLike[str], client_id: str, group: str) -> None:
        super().__init__(group)
        self.path = Path(directory) / client_id / group / "offsets.json"
        self._file_table: dict[MessageQueue, int] = {}

    @staticmethod
    def _parse(data: bytes) -> dict[MessageQueue, int]:
        doc = fastjson.loads(data)
        table = doc.get("offsetTable") if isinstance(doc, dict) else None
        out: dict[MessageQueue, int] = {}
        for key, value in (table or {}).items():
            if isinstance(key, str):                     # a standard JSON writer's quoted form
                key = fastjson.loads(key)
            out[queue_from_wire(key)] = int(value)
        return out

    def read_local(self) -> dict[MessageQueue, int]:
        """The file's table (the .bak copy when the file is missing or unreadable); {} when neither exists."""
        for path in (self.path, self.path.with_name(self.path.name + ".bak")):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                return self._parse(data)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("consumer %s: offsets file %s is unreadable: %s", self.group, path, exc)
        return {}

    async def load(self) -> None:
        self._file_table = await trio.to_thread.run_sync(self.read_local)
        self.table.update(self._file_table)

    async def _read_from_store(self, mq: MessageQueue) -> int:
        offset = self._file_table.get(mq)
        if offset is None:
            return -1
        self.update_offset(mq, offset, False)
        return offset

    def _write(self, table: dict[MessageQueue, int]) -> None:
        doc = {"offsetTable": {FrozenDict(mq.to_wire()): off for mq, off in table.items()}}
        data = fastjson.dumps(doc)
        if self.path.exists():
            try:
                write_file_atomically(self.path.with_name(self.path.name + ".bak"), self.path.read_bytes())
            except OSError as exc:
                log.debug("consumer %s: no backup of %s: %s", self.group, self.path, exc)
        write_file_atomically(self.path, data)

    async def persist(self, mq: MessageQueue) -> None:
        await self.persist_all([mq, *self._file_table])

    async def persist_all(self, mqs: Iterable[MessageQueue]) -> None:
        keep = set(mqs)
        table = {mq: off for mq, off in self.table.items() if mq in keep}
        if not table:
            return
        merged = dict(self._file_table)
        merged.update(table)
        try:
            await trio.to_thread.run_sync(self._write, merged)
        except OSError as exc:
            log.warning("consumer %s: writing %s failed: %s", self.group, self.path, exc)
            return
        self._file_table = merged
