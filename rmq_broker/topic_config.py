"""Topic configurations of one broker and their file, ``config/topics.json`` (Java ``TopicConfigManager``).

A topic exists on a broker when it has a TopicConfig here: its queue counts, permission and filter
type. The whole table, with its DataVersion, is what the broker registers with every nameserver
(REGISTER_BROKER body, PROTOCOL.md §3.3) and what GET_ALL_TOPIC_CONFIG returns; clients build their
routes from it. Every change therefore makes a new DataVersion, is written to topics.json at once
(as RocketMQ's ``persist()`` after each change) and is announced to the ``on_change`` callbacks, which
the broker uses to re-register.

At start the system topics are put into the table first, as RocketMQ's constructor does, and
topics.json is loaded over them, so an entry from the file wins:

    topic                            queues                   perm                  when
    SELF_TEST_TOPIC                  1                        RW                    always
    TBW102                           defaultTopicQueueNums    RW + INHERIT          autoCreateTopicEnable
    BenchmarkTest                    1024                     RW                    always
    <brokerClusterName>              16                       INHERIT (+ RW if clusterTopicEnable)
    <brokerName>                     1                        INHERIT (+ RW if brokerTopicEnable)
    OFFSET_MOVED_EVENT               1                        RW                    always
    SCHEDULE_TOPIC_XXXX              one per delay level      RW                    always
    rmq_sys_wheel_timer              1                        R (RocketMQ 5.x: RW)  always
    <msgTraceTopicName>              1                        RW                    traceTopicEnable
    <brokerClusterName>_REPLY_TOPIC  1                        RW                    always

RocketMQ 4.9 creates RMQ_SYS_TRANS_HALF_TOPIC, RMQ_SYS_TRANS_OP_HALF_TOPIC and
TRANS_CHECK_MAX_TIME_TOPIC lazily, when the transaction code first uses them, with
``create_in_send_back(topic, 1, READ|WRITE)``; so does rmq. SCHEDULE_TOPIC_XXXX gets one queue per
configured delay level (RocketMQ hard-codes 18, the default level count).

Auto-creation (``create_in_send``, Java ``createTopicInSendMessageMethod``): a producer sending to an
unknown topic names a default topic (TBW102). The topic is created only if the default topic exists
here and has the INHERIT bit; it gets ``min(client's queue count, default topic's write queues)``
queues and the default topic's perm without INHERIT. With autoCreateTopicEnable=false TBW102 never
counts as inheritable (RocketMQ rewrites its perm to RW in memory on the first attempt; rmq refuses
without touching the table). Refusals return None and are logged with the reason
(``auto_create_refusal`` gives it to the caller).

Thread safety: every method may be called from any thread. Changes write the file synchronously
(milliseconds, an fsync) unless the manager was built with ``persist_on_change=False``, in which case
the owner calls ``persist_if_dirty()`` (e.g. from a worker thread).
"""
from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from rmq_common.topic import (BENCHMARK_TOPIC, DEFAULT_TOPIC, OFFSET_MOVED_EVENT, SCHEDULE_TOPIC, SELF_TEST_TOPIC,
                              InvalidTopicError, is_system_topic, reply_topic, validate_topic)
from rmq_remoting import fastjson

from rmq_broker.config import MAX_DEDUP_WINDOW_MS, BrokerConfig
from rmq_broker.config_file import PersistentTable, dumps_file, json_bool, json_int, load_json_file
from rmq_broker.data_version import DataVersion
from rmq_broker.perm import PermName, is_inherited, is_readable, is_writeable, validate_perm
from rmq_broker.timer import TIMER_TOPIC

__all__ = ["TopicConfig", "TopicFilterType", "TopicConfigManager", "TopicChangeCallback", "MAX_QUEUE_NUMS",
           "TOPICS_FILE", "DEDUP_WINDOW_KEY", "DEDUP_OFF", "MAX_DEDUP_WINDOW_MS"]

log = logging.getLogger("rmq_broker.topic_config")

TOPICS_FILE: Final = "topics.json"
#: Largest queue count accepted for one topic. RocketMQ has no limit, but every client of the topic builds one
#: object per queue, so an absurd count from a mistyped admin request would hurt every consumer.
MAX_QUEUE_NUMS: Final = 65_535
#: Queue count of a TopicConfig that does not say (Java ``TopicConfig.defaultReadQueueNums``).
DEFAULT_QUEUE_NUMS: Final = 16

_RW: Final = int(PermName.READ | PermName.WRITE)

#: rmq's extension field of a topic config (topics.json, GET_ALL_TOPIC_CONFIG, registration bodies) and the extra
#: extFields key of UPDATE_AND_CREATE_TOPIC that sets it: the deduplication window of the topic in ms
#: (docs/features.md "Deduplication"). Written only when non-zero; fastjson-based RocketMQ tools ignore it.
DEDUP_WINDOW_KEY: Final = "rmqDedupWindowMs"
#: ``dedup_window_ms`` value that turns deduplication off for a topic even when the broker has a default window.
DEDUP_OFF: Final = -1


class TopicFilterType(enum.StrEnum):
    SINGLE_TAG = "SINGLE_TAG"
    MULTI_TAG = "MULTI_TAG"


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """One topic's settings (Java ``TopicConfig``). Immutable: managers replace entries, never edit them."""

    topic_name: str
    read_queue_nums: int = DEFAULT_QUEUE_NUMS
    write_queue_nums: int = DEFAULT_QUEUE_NUMS
    perm: int = _RW
    topic_filter_type: TopicFilterType = TopicFilterType.SINGLE_TAG
    topic_sys_flag: int = 0
    order: bool = False
    #: rmq's deduplication window (``rmqDedupWindowMs``): > 0 = that many ms, 0 = the broker's
    #: ``rmqDedupWindowMsDefault``, -1 (DEDUP_OFF) = off even when the broker has a default.
    dedup_window_ms: int = 0

    def __post_init__(self) -> None:
        validate_topic(self.topic_name)
        for name in ("read_queue_nums", "write_queue_nums"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_QUEUE_NUMS:
                raise ValueError(f"topic {self.topic_name}: {name} must be 0-{MAX_QUEUE_NUMS}, got {value!r}")
        object.__setattr__(self, "perm", validate_perm(self.perm, f"topic {self.topic_name}: perm"))
        try:
            object.__setattr__(self, "topic_filter_type", TopicFilterType(self.topic_filter_type))
        except ValueError:
            raise ValueError(f"topic {self.topic_name}: topicFilterType must be SINGLE_TAG or MULTI_TAG, "
                             f"got {self.topic_filter_type!r}") from None
        if isinstance(self.topic_sys_flag, bool) or not isinstance(self.topic_sys_flag, int) or \
                not 0 <= self.topic_sys_flag <= 2**31 - 1:
            raise ValueError(f"topic {self.topic_name}: topicSysFlag must be a non-negative int32, "
                             f"got {self.topic_sys_flag!r}")
        if not isinstance(self.order, bool):
            raise ValueError(f"topic {self.topic_name}: order must be true or false, got {self.order!r}")
        window = self.dedup_window_ms
        if isinstance(window, bool) or not isinstance(window, int) or not DEDUP_OFF <= window <= MAX_DEDUP_WINDOW_MS:
            raise ValueError(f"topic {self.topic_name}: {DEDUP_WINDOW_KEY} must be -1 (off), 0 (the broker's default) "
                             f"or a window of 1-{MAX_DEDUP_WINDOW_MS} ms, got {window!r}")

    @property
    def readable(self) -> bool:
        return is_readable(self.perm)

    @property
    def writeable(self) -> bool:
        return is_writeable(self.perm)

    def replace(self, **changes: Any) -> TopicConfig:
        return replace(self, **changes)

    def to_json_dict(self) -> dict[str, Any]:
        """RocketMQ's JSON form (field names of ``TopicConfig``, fastjson sorts them when writing), plus
        ``rmqDedupWindowMs`` when the topic has a deduplication setting (unknown to RocketMQ, which ignores it)."""
        data: dict[str, Any] = {
            "order": self.order,
            "perm": self.perm,
            "readQueueNums": self.read_queue_nums,
            "topicFilterType": str(self.topic_filter_type),
            "topicName": self.topic_name,
            "topicSysFlag": self.topic_sys_flag,
            "writeQueueNums": self.write_queue_nums,
        }
        if self.dedup_window_ms:
            data[DEDUP_WINDOW_KEY] = self.dedup_window_ms
        return data

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], name: str | None = None) -> TopicConfig:
        """Read RocketMQ's JSON form (and rmq's ``rmqDedupWindowMs``); missing fields take Java's defaults, unknown
        fields (5.x ``attributes``) are ignored. ``name`` is the table key, used when ``topicName`` is absent. ValueError if unusable."""
        if not isinstance(data, Mapping):
            raise ValueError(f"topic config {name!r} must be a JSON object, not {type(data).__name__}")
        topic = data.get("topicName", name)
        if not isinstance(topic, str):
            raise ValueError(f"topic config {name!r} has no topicName")
        what = f"topic {topic}"
        return cls(
            topic_name=topic,
            read_queue_nums=json_int(data, "readQueueNums", DEFAULT_QUEUE_NUMS, what),
            write_queue_nums=json_int(data, "writeQueueNums", DEFAULT_QUEUE_NUMS, what),
            perm=json_int(data, "perm", _RW, what),
            topic_filter_type=data.get("topicFilterType") or TopicFilterType.SINGLE_TAG,
            topic_sys_flag=json_int(data, "topicSysFlag", 0, what),
            order=json_bool(data, "order", False, what),
            dedup_window_ms=json_int(data, DEDUP_WINDOW_KEY, 0, what),
        )


#: ``callback(topic, new_config)``; new_config is None when the topic was deleted.
TopicChangeCallback = Callable[[str, "TopicConfig | None"], None]


def _now_ms() -> int:
    return int(time.time() * 1000)


class TopicConfigManager(PersistentTable):
    """The topic table of one broker, persisted to ``<config_dir>/topics.json``.

    Built and loaded in the constructor (raises ``ConfigFileError`` if topics.json and its .bak are both
    unreadable). ``broker_config`` is read live: runtime changes of autoCreateTopicEnable and
    brokerPermission apply to the next call.
    """

    def __init__(self, config_dir: str | os.PathLike[str], broker_config: BrokerConfig, *,
                 clock_ms: Callable[[], int] = _now_ms, persist_on_change: bool = True) -> None:
        super().__init__(os.path.join(os.fspath(config_dir), TOPICS_FILE))
        self.broker_config = broker_config
        self._clock_ms = clock_ms
        self.persist_on_change = persist_on_change
        #: Called after every change, outside the lock, with (topic, new config or None if deleted).
        #: Several changes in a row call it several times: coalesce re-registrations in the callback.
        self.on_change: list[TopicChangeCallback] = []
        self._table: dict[str, TopicConfig] = {}
        self._data_version = DataVersion(clock_ms())
        self._system_topics = frozenset(self._add_system_topics())
        self.load()

    # -- start-up ---------------------------------------------------------------------------------------

    def _add_system_topics(self) -> list[str]:
        cfg = self.broker_config
        cluster, broker = cfg.broker_cluster_name, cfg.broker_name
        entries = [TopicConfig(SELF_TEST_TOPIC, 1, 1)]
        if cfg.auto_create_topic_enable:
            n = cfg.default_topic_queue_nums
            entries.append(TopicConfig(DEFAULT_TOPIC, n, n, _RW | PermName.INHERIT))
        entries.append(TopicConfig(BENCHMARK_TOPIC, 1024, 1024))
        entries.append(TopicConfig(cluster, perm=int(PermName.INHERIT) | (_RW if cfg.cluster_topic_enable else 0)))
        entries.append(TopicConfig(broker, 1, 1, int(PermName.INHERIT) | (_RW if cfg.broker_topic_enable else 0)))
        entries.append(TopicConfig(OFFSET_MOVED_EVENT, 1, 1))
        levels = len(cfg.delay_levels_ms)
        entries.append(TopicConfig(SCHEDULE_TOPIC, levels, levels))
        # RocketMQ 5.x's timer topic; READ only, so producers cannot forge parked timers (timer.py).
        entries.append(TopicConfig(TIMER_TOPIC, 1, 1, int(PermName.READ)))
        if cfg.trace_topic_enable:
            entries.append(TopicConfig(cfg.msg_trace_topic_name, 1, 1))
        entries.append(TopicConfig(reply_topic(cluster), 1, 1))
        for entry in entries:
            self._table[entry.topic_name] = entry
        # Names the broker treats as system topics even when the entry is absent (TBW102 with auto-create off).
        return [e.topic_name for e in entries] + [DEFAULT_TOPIC, cfg.msg_trace_topic_name]

    def load(self) -> bool:
        """Load topics.json (or its .bak) over the current table; False if there was no file."""
        wrapper = load_json_file(self.path, _decode_wrapper)
        if wrapper is None:
            return False
        version, table = wrapper
        with self._lock:
            self._table.update(table)
            self._data_version = version
            self._dirty = False
        log.info("loaded %d topic configs from %s (data version %s)", len(table), self.path, version)
        return True

    # -- reading ----------------------------------------------------------------------------------------

    def select(self, topic: str) -> TopicConfig | None:
        """The topic's config, None if the topic does not exist on this broker."""
        return self._table.get(topic)

    def __contains__(self, topic: object) -> bool:
        return topic in self._table

    def __len__(self) -> int:
        return len(self._table)

    def topics(self) -> list[str]:
        with self._lock:
            return sorted(self._table)

    def table(self) -> dict[str, TopicConfig]:
        """A copy of the table (the configs themselves are immutable)."""
        with self._lock:
            return dict(self._table)

    @property
    def data_version(self) -> DataVersion:
        return self._data_version

    @property
    def system_topics(self) -> frozenset[str]:
        """The system topic names of this broker: the fixed ones plus its cluster, broker, reply and trace topics."""
        return self._system_topics

    def is_system_topic(self, topic: str) -> bool:
        """True for a system topic (UPDATE_AND_CREATE_TOPIC / DELETE_TOPIC_IN_BROKER refuse these)."""
        return is_system_topic(topic, self._system_topics)

    def is_order_topic(self, topic: str) -> bool:
        entry = self._table.get(topic)
        return entry is not None and entry.order

    # -- changing ---------------------------------------------------------------------------------------

    def create_or_update(self, config: TopicConfig) -> TopicConfig | None:
        """Put ``config`` in the table (UPDATE_AND_CREATE_TOPIC); returns the previous config, if any.

        Nothing changes (no new data version, no callback) if the topic already has exactly this config.
        """
        if not isinstance(config, TopicConfig):
            raise TypeError(f"expected a TopicConfig, not {type(config).__name__}")
        with self._lock:
            previous = self._table.get(config.topic_name)
            if previous == config:
                return previous
            self._table[config.topic_name] = config
            self._bump()
        log.info("%s topic %s", "updated" if previous else "created", config)
        self._after_change([(config.topic_name, config)])
        return previous

    def delete(self, topic: str) -> TopicConfig | None:
        """Remove ``topic`` from the table; returns its config, None if it did not exist."""
        with self._lock:
            removed = self._table.pop(topic, None)
            if removed is None:
                return None
            self._bump()
        log.info("deleted topic %s", removed)
        self._after_change([(topic, None)])
        return removed

    def auto_create_refusal(self, default_topic: str) -> str | None:
        """Why ``create_in_send`` with ``default_topic`` would refuse to create a topic; None if it would not."""
        template = self._table.get(default_topic)
        if template is None:
            return f"the default topic {default_topic!r} does not exist on this broker"
        if default_topic == DEFAULT_TOPIC and not self.broker_config.auto_create_topic_enable:
            return f"autoCreateTopicEnable is false, so the default topic {DEFAULT_TOPIC} cannot be inherited"
        if not is_inherited(template.perm):
            return (f"the default topic {default_topic!r} has perm {template.perm} without INHERIT, "
                    "so topics cannot be created from it")
        return None

    def create_in_send(self, topic: str, default_topic: str, client_default_queue_nums: int,
                       topic_sys_flag: int = 0) -> TopicConfig | None:
        """The topic's config, creating it from ``default_topic`` if it does not exist yet.

        Returns None (and logs why) if the default topic is missing or not inheritable. Raises
        InvalidTopicError for an illegal topic name.
        """
        existing = self._table.get(topic)
        if existing is not None:
            return existing
        validate_topic(topic)
        with self._lock:
            existing = self._table.get(topic)
            if existing is not None:
                return existing
            reason = self.auto_create_refusal(default_topic)
            if reason is not None:
                log.warning("not creating topic %s for a producer: %s", topic, reason)
                return None
            template = self._table[default_topic]
            queues = max(0, min(int(client_default_queue_nums), template.write_queue_nums))
            created = TopicConfig(topic, queues, queues, template.perm & ~PermName.INHERIT,
                                  template.topic_filter_type, topic_sys_flag)
            self._table[topic] = created
            self._bump()
        log.info("created topic %s from default topic %s", created, default_topic)
        self._after_change([(topic, created)])
        return created

    def create_in_send_back(self, topic: str, queue_nums: int, perm: int,
                            topic_sys_flag: int = 0) -> TopicConfig:
        """The topic's config, creating it with these settings if it does not exist (Java
        ``createTopicInSendMessageBackMethod``: %RETRY%/%DLQ% topics, transaction system topics)."""
        existing = self._table.get(topic)
        if existing is not None:
            return existing
        created = TopicConfig(topic, queue_nums, queue_nums, perm, topic_sys_flag=topic_sys_flag)
        with self._lock:
            existing = self._table.get(topic)
            if existing is not None:
                return existing
            self._table[topic] = created
            self._bump()
        log.info("created topic %s", created)
        self._after_change([(topic, created)])
        return created

    def update_order_topic_config(self, order_topics: Iterable[str]) -> bool:
        """Mark exactly ``order_topics`` as ordered (the ORDER_TOPIC_CONFIG table a nameserver returns on
        registration); returns whether anything changed. Topics absent here are ignored."""
        wanted = set(order_topics)
        changes: list[tuple[str, TopicConfig | None]] = []
        with self._lock:
            for name, entry in self._table.items():
                should = name in wanted
                if entry.order != should:
                    changes.append((name, entry.replace(order=should)))
            if not changes:
                return False
            for name, entry in changes:
                self._table[name] = entry
            self._bump()
        log.info("order flag changed on %s", ", ".join(f"{n}={e.order}" for n, e in changes if e))
        self._after_change(changes)
        return True

    def bump_data_version(self) -> DataVersion:
        """Move to the next data version without changing a topic, so nameservers take the table again (what
        RocketMQ does when brokerPermission changes, since registration masks every perm with it)."""
        with self._lock:
            self._bump()
            version = self._data_version
        if self.persist_on_change:
            self._persist_after_change()
        return version

    def replace_all(self, wrapper: Mapping[str, Any]) -> bool:
        """Take a master's table and data version (a slave's GET_ALL_TOPIC_CONFIG sync); False if the
        versions were already equal. System topics missing from the master's table are kept."""
        version, table = _decode_wrapper_dict(wrapper)
        with self._lock:
            if version == self._data_version:
                return False
            old = self._table
            new = {name: entry for name, entry in old.items() if name in self._system_topics}
            new.update(table)
            self._table = new
            self._data_version = version
            self._changed()
            changes = [(n, e) for n, e in new.items() if old.get(n) != e] + \
                      [(n, None) for n in old if n not in new]
        if self.persist_on_change:
            self._persist_after_change()
        self._notify(changes)
        return True

    # -- wire and file forms ----------------------------------------------------------------------------

    def wrapper(self) -> dict[str, Any]:
        """TopicConfigSerializeWrapper as plain JSON data: ``{"dataVersion":…,"topicConfigTable":{…}}``
        (GET_ALL_TOPIC_CONFIG body, and the REGISTER_BROKER body's ``topicConfigSerializeWrapper``)."""
        with self._lock:
            return {"dataVersion": self._data_version.to_json_dict(),
                    "topicConfigTable": {name: entry.to_json_dict() for name, entry in sorted(self._table.items())}}

    def registration_wrapper(self) -> dict[str, Any]:
        """``wrapper()`` as RocketMQ registers it: when the broker's own permission lacks READ or WRITE, every
        topic is announced with the broker's permission instead of its own (Java ``registerBrokerAll``)."""
        data = self.wrapper()
        broker_perm = self.broker_config.broker_permission
        if not (is_readable(broker_perm) and is_writeable(broker_perm)):
            for entry in data["topicConfigTable"].values():
                entry["perm"] = broker_perm
        return data

    def encode(self) -> bytes:
        """``wrapper()`` in RocketMQ's compact fastjson form."""
        return fastjson.dumps(self.wrapper())

    def _encode_file(self) -> str:
        return dumps_file(self.wrapper())

    # -- internals ----------------------------------------------------------------------------------------

    def _bump(self) -> None:
        """Record a change (lock held): next data version, dirty."""
        assert self._lock._is_owned()  # type: ignore[attr-defined]
        self._data_version = self._data_version.next_version(self._clock_ms())
        self._changed()

    def _after_change(self, changes: list[tuple[str, TopicConfig | None]]) -> None:
        if self.persist_on_change:
            self._persist_after_change()
        self._notify(changes)

    def _notify(self, changes: list[tuple[str, TopicConfig | None]]) -> None:
        for topic, entry in changes:
            for callback in list(self.on_change):
                try:
                    callback(topic, entry)
                except Exception:
                    log.exception("topic change callback %r failed for %s", callback, topic)


def _decode_wrapper_dict(data: Any) -> tuple[DataVersion, dict[str, TopicConfig]]:
    """Validate a TopicConfigSerializeWrapper; entries with an illegal topic name are skipped (logged)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object with topicConfigTable, not {type(data).__name__}")
    raw_version = data.get("dataVersion")
    version = DataVersion.from_json_dict(raw_version) if raw_version is not None else DataVersion(_now_ms())
    raw_table = data.get("topicConfigTable")
    if raw_table is None:
        raw_table = {}
    if not isinstance(raw_table, Mapping):
        raise ValueError("topicConfigTable must be a JSON object")
    table: dict[str, TopicConfig] = {}
    for name, raw in raw_table.items():
        try:
            entry = TopicConfig.from_json_dict(raw, str(name))
        except InvalidTopicError as exc:
            log.error("skipping topic %r: %s", name, exc)
            continue
        table[entry.topic_name] = entry
    return version, table


def _decode_wrapper(data: bytes) -> tuple[DataVersion, dict[str, TopicConfig]]:
    return _decode_wrapper_dict(fastjson.loads(data))
