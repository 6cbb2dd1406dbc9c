"""Consumer progress of clustering consumers and its file, ``config/consumerOffset.json`` (Java
``ConsumerOffsetManager``).

The table maps ``(group, topic, queue id)`` to the next queue offset the group will consume, as the
consumers commit it (UPDATE_CONSUMER_OFFSET, or piggybacked on PULL_MESSAGE). It is only a table: what
an absent entry means (QUERY_NOT_FOUND vs 0, PROTOCOL.md §5.5), retry topics and offset resets are the
processors' business.

Keys are ``"<topic>@<group>"`` (topic first), as in RocketMQ's file. Neither a topic nor a group
name can contain ``@``, so the key splits unambiguously; ``commit`` refuses a group or topic with ``@``.

File: RocketMQ's form, ``{"offsetTable":{"T@G":{0:5,1:7}}}`` with bare integer queue ids (fastjson's
``Map<Integer,Long>``), so the file of a RocketMQ broker can be used here and the other way round. It
is not standard JSON; ``rmq_remoting.fastjson.loads`` reads it, and reading also accepts quoted ids
(``{"0":5}``, what a standard JSON writer produces). Writes are periodic (flushConsumerOffsetInterval,
5 s) and only when something changed (``persist_if_dirty``), plus one at shutdown: a crash loses at most
the last interval of commits, and consumers then re-consume those messages (at-least-once).

Memory is bounded: at most ``max_entries`` queue entries (default 1,000,000, about 150 MB). A commit
that would add an entry beyond it raises ``OffsetTableFullError``; updating existing entries always
works. RocketMQ has no bound, and UPDATE_CONSUMER_OFFSET accepts any topic and queue id.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Final

from rmq_remoting import fastjson

from rmq_broker.config_file import PersistentTable, dumps_file, load_json_file

__all__ = ["ConsumerOffsetManager", "OffsetTableFullError", "CONSUMER_OFFSET_FILE", "TOPIC_GROUP_SEPARATOR",
           "DEFAULT_MAX_ENTRIES"]

log = logging.getLogger("rmq_broker.consumer_offset")

CONSUMER_OFFSET_FILE: Final = "consumerOffset.json"
TOPIC_GROUP_SEPARATOR: Final = "@"
DEFAULT_MAX_ENTRIES: Final = 1_000_000

_QUEUE_ID_MAX: Final = 2**31 - 1
_OFFSET_MIN: Final = -(2**63)
_OFFSET_MAX: Final = 2**63 - 1


class OffsetTableFullError(RuntimeError):
    """A commit would add an entry beyond ``max_entries``."""


def _key(group: str, topic: str) -> str:
    return topic + TOPIC_GROUP_SEPARATOR + group


def _split(key: str) -> tuple[str, str] | None:
    """``(topic, group)`` of a key; None for a key that is not ``topic@group`` (kept, but never matched)."""
    parts = key.split(TOPIC_GROUP_SEPARATOR)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


class ConsumerOffsetManager(PersistentTable):
    """The offset table, persisted to ``<config_dir>/consumerOffset.json``. Thread-safe.

    Loads in the constructor (``ConfigFileError`` if the file and its .bak are both unreadable).
    """

    def __init__(self, config_dir: str | os.PathLike[str], *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        super().__init__(os.path.join(os.fspath(config_dir), CONSUMER_OFFSET_FILE))
        if max_entries <= 0:
            raise ValueError(f"max_entries must be positive, got {max_entries}")
        self.max_entries = max_entries
        self._table: dict[str, dict[int, int]] = {}
        self._entries = 0
        self.load()

    def load(self) -> bool:
        """Replace the table with consumerOffset.json (or its .bak); False if there was no file."""
        table = load_json_file(self.path, _decode_file)
        if table is None:
            return False
        with self._lock:
            self._table = table
            self._entries = sum(len(q) for q in table.values())
            self._dirty = False
        if self._entries > self.max_entries:
            log.warning("%s holds %d entries, more than max_entries=%d: new entries are refused until some are "
                        "removed", self.path, self._entries, self.max_entries)
        log.info("loaded %d consumer offsets of %d topic@group keys from %s", self._entries, len(table), self.path)
        return True

    # -- committing and querying ------------------------------------------------------------------------

    def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        """Record ``offset`` as the group's next offset on the queue (a smaller offset than stored is taken
        too, as RocketMQ does: consumers reset their offsets). Raises ValueError for an unusable key and
        OffsetTableFullError if a new entry would exceed ``max_entries``."""
        if not group or TOPIC_GROUP_SEPARATOR in group:
            raise ValueError(f"consumer group {group!r} is empty or contains '@'")
        if not topic or TOPIC_GROUP_SEPARATOR in topic:
            raise ValueError(f"topic {topic!r} is empty or contains '@'")
        if not 0 <= queue_id <= _QUEUE_ID_MAX:
            raise ValueError(f"queue id {queue_id} of {topic}@{group} is out of range")
        if not _OFFSET_MIN <= offset <= _OFFSET_MAX:
            raise ValueError(f"offset {offset} of {topic}@{group} queue {queue_id} is out of range")
        key = _key(group, topic)
        with self._lock:
            queues = self._table.get(key)
            if queues is None or queue_id not in queues:
                if self._entries >= self.max_entries:
                    raise OffsetTableFullError(
                        f"cannot store the offset of {key} queue {queue_id}: the offset table already holds "
                        f"{self._entries} entries (max_entries={self.max_entries}); remove unused groups or "
                        "raise the limit")
                if queues is None:
                    queues = self._table[key] = {}
                self._entries += 1
            elif queues[queue_id] == offset:
                return
            elif offset < queues[queue_id]:
                log.debug("offset of %s queue %d moves back from %d to %d", key, queue_id, queues[queue_id], offset)
            queues[queue_id] = offset
            self._changed()

    def query(self, group: str, topic: str, queue_id: int) -> int | None:
        """The committed offset; None if the group never committed one for this queue (RocketMQ: -1)."""
        queues = self._table.get(_key(group, topic))
        if queues is None:
            return None
        return queues.get(queue_id)

    def query_all(self, group: str, topic: str) -> dict[int, int]:
        """Every committed offset of the group on the topic, by queue id (a copy; empty if none)."""
        with self._lock:
            return dict(self._table.get(_key(group, topic), {}))

    def groups_of_topic(self, topic: str) -> set[str]:
        """Groups with committed offsets on ``topic`` (Java ``whichGroupByTopic``)."""
        with self._lock:
            return {split[1] for split in map(_split, self._table) if split and split[0] == topic}

    def topics_of_group(self, group: str) -> set[str]:
        """Topics on which ``group`` has committed offsets (Java ``whichTopicByConsumer``)."""
        with self._lock:
            return {split[0] for split in map(_split, self._table) if split and split[1] == group}

    def __len__(self) -> int:
        """Number of queue entries."""
        return self._entries

    # -- removing and copying ---------------------------------------------------------------------------

    def remove(self, group: str, topic: str) -> bool:
        """Forget the group's offsets on one topic; whether there were any."""
        with self._lock:
            queues = self._table.pop(_key(group, topic), None)
            if queues is None:
                return False
            self._entries -= len(queues)
            assert self._entries >= 0, "entry count out of step with the table"
            self._changed()
            return True

    def remove_topic(self, topic: str) -> int:
        """Forget every group's offsets on ``topic`` (the topic was deleted); returns how many keys went."""
        return self._remove_where(lambda t, g: t == topic)

    def remove_group(self, group: str) -> int:
        """Forget ``group``'s offsets on every topic (Java ``removeOffset``); returns how many keys went."""
        return self._remove_where(lambda t, g: g == group)

    def _remove_where(self, doomed: Any) -> int:
        with self._lock:
            keys = [k for k in self._table if (split := _split(k)) is not None and doomed(*split)]
            for key in keys:
                self._entries -= len(self._table.pop(key))
            assert self._entries >= 0, "entry count out of step with the table"
            if keys:
                self._changed()
            return len(keys)

    def clone_offset(self, src_group: str, dest_group: str, topic: str) -> bool:
        """Give ``dest_group`` a copy of ``src_group``'s offsets on ``topic`` (replacing its own); False if the
        source has none. Raises OffsetTableFullError if the copy does not fit."""
        if not dest_group or TOPIC_GROUP_SEPARATOR in dest_group:
            raise ValueError(f"consumer group {dest_group!r} is empty or contains '@'")
        with self._lock:
            source = self._table.get(_key(src_group, topic))
            if source is None:
                return False
            dest_key = _key(dest_group, topic)
            old = self._table.get(dest_key, {})
            if self._entries - len(old) + len(source) > self.max_entries:
                raise OffsetTableFullError(f"copying {len(source)} offsets to {dest_key} would exceed "
                                           f"max_entries={self.max_entries}")
            self._table[dest_key] = dict(source)
            self._entries += len(source) - len(old)
            self._changed()
            return True

    def merge(self, table: Mapping[str, Mapping[Any, Any]]) -> int:
        """Put every entry of an offset table into this one (a slave's GET_ALL_CONSUMER_OFFSET sync, Java
        ``putAll``: the master's keys replace ours, our other keys stay); returns how many keys were taken.
        Not bounded by max_entries: the master's table is already bounded."""
        decoded = _decode_table(table)
        with self._lock:
            for key, queues in decoded.items():
                old = self._table.get(key, {})
                self._table[key] = queues
                self._entries += len(queues) - len(old)
            if decoded:
                self._changed()
        return len(decoded)

    # -- wire and file forms ----------------------------------------------------------------------------

    def table(self) -> dict[str, dict[int, int]]:
        """A deep copy of the table, ``{"topic@group": {queue id: offset}}`` (GET_ALL_CONSUMER_OFFSET)."""
        with self._lock:
            return {key: dict(queues) for key, queues in self._table.items()}

    def encode(self) -> bytes:
        """``{"offsetTable":…}`` in RocketMQ's compact form, bare integer keys (GET_ALL_CONSUMER_OFFSET body)."""
        return fastjson.dumps({"offsetTable": self.table()})

    def _encode_file(self) -> str:
        return dumps_file({"offsetTable": self._table})


def _queue_id(raw: Any, key: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        value = int(raw)
    else:
        raise ValueError(f"offsetTable[{key!r}] has a queue id that is not a number: {raw!r}")
    if not 0 <= value <= _QUEUE_ID_MAX:
        raise ValueError(f"offsetTable[{key!r}] has an out-of-range queue id {value}")
    return value


def _offset(raw: Any, key: str, queue_id: int) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and _OFFSET_MIN <= raw <= _OFFSET_MAX:
        return raw
    raise ValueError(f"offsetTable[{key!r}][{queue_id}] is not an offset: {raw!r}")


def _decode_table(raw: Any) -> dict[str, dict[int, int]]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"offsetTable must be a JSON object, not {type(raw).__name__}")
    table: dict[str, dict[int, int]] = {}
    for key, queues in raw.items():
        if not isinstance(key, str):
            raise ValueError(f"offsetTable key {key!r} is not a string")
        if not isinstance(queues, Mapping):
            raise ValueError(f"offsetTable[{key!r}] must be a JSON object, not {type(queues).__name__}")
        decoded: dict[int, int] = {}
        for raw_id, raw_offset in queues.items():
            queue_id = _queue_id(raw_id, key)
            decoded[queue_id] = _offset(raw_offset, key, queue_id)
        table[key] = decoded
    return table


def _decode_file(data: bytes) -> dict[str, dict[int, int]]:
    parsed = fastjson.loads(data)
    if not isinstance(parsed, Mapping):
        raise ValueError(f"expected a JSON object with offsetTable, not {type(parsed).__name__}")
    return _decode_table(parsed.get("offsetTable") or {})
