"""Consumer groups of one broker and their file, ``config/subscriptionGroup.json`` (Java
``SubscriptionGroupManager``).

A subscription group config says whether a group may consume here at all, how many retry queues its
``%RETRY%`` topic gets, after how many retries a message goes to its ``%DLQ%`` topic, and which
broker it should pull from when it falls behind. The pull path looks the group up on every pull;
with autoCreateSubscriptionGroup (default true) an unknown group is created with the defaults on
first use, otherwise the pull is answered SUBSCRIPTION_GROUP_NOT_EXIST. Groups whose name starts
with ``CID_RMQ_SYS_`` are always auto-created (the broker's own transactional group).

Built-in groups, all with the default settings (RocketMQ 4.9's constructor; the file is loaded over
them): TOOLS_CONSUMER, FILTERSRV_CONSUMER, SELF_TEST_C_GROUP, CID_ONS-HTTP-PROXY, CID_ONSAPI_PULL,
CID_ONSAPI_PERMISSION, CID_ONSAPI_OWNER. (RocketMQ 5 adds CID_RMQ_SYS_TRANS; 4.9 auto-creates it
through the CID_RMQ_SYS_ prefix rule.)

Group names: the charset and length RocketMQ's clients enforce (``Validators.checkGroup``:
``[%|a-zA-Z0-9_-]``, at most 255 characters). The broker relies on it: ``topic@group`` keys the
offset table and ``%RETRY%<group>`` must be a legal topic.

File: ``{"dataVersion":{…},"subscriptionGroupTable":{"G":{…}}}``; every change gets a new data version
and is written at once (a slave copies the table when the version differs).
"""
from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from rmq_common.topic import TOOLS_CONSUMER_GROUP
from rmq_remoting import fastjson

from rmq_broker.config import BrokerConfig
from rmq_broker.config_file import PersistentTable, dumps_file, json_bool, json_int, load_json_file
from rmq_broker.data_version import DataVersion

__all__ = ["SubscriptionGroupConfig", "SubscriptionGroupManager", "InvalidGroupError", "validate_group_name",
           "BUILT_IN_GROUPS", "SUBSCRIPTION_GROUP_FILE", "SYS_CONSUMER_GROUP_PREFIX", "GROUP_MAX_LENGTH"]

log = logging.getLogger("rmq_broker.subscription_group")

SUBSCRIPTION_GROUP_FILE: Final = "subscriptionGroup.json"
#: Groups with this prefix are created on first use even with autoCreateSubscriptionGroup=false
#: (``MixAll.CID_RMQ_SYS_PREFIX``).
SYS_CONSUMER_GROUP_PREFIX: Final = "CID_RMQ_SYS_"
#: ``Validators.CHARACTER_MAX_LENGTH``.
GROUP_MAX_LENGTH: Final = 255

FILTERSRV_CONSUMER_GROUP: Final = "FILTERSRV_CONSUMER"
SELF_TEST_CONSUMER_GROUP: Final = "SELF_TEST_C_GROUP"
ONS_HTTP_PROXY_GROUP: Final = "CID_ONS-HTTP-PROXY"
CID_ONSAPI_PULL_GROUP: Final = "CID_ONSAPI_PULL"
CID_ONSAPI_PERMISSION_GROUP: Final = "CID_ONSAPI_PERMISSION"
CID_ONSAPI_OWNER_GROUP: Final = "CID_ONSAPI_OWNER"

#: The groups every broker starts with, in RocketMQ 4.9's order.
BUILT_IN_GROUPS: Final = (TOOLS_CONSUMER_GROUP, FILTERSRV_CONSUMER_GROUP, SELF_TEST_CONSUMER_GROUP,
                          ONS_HTTP_PROXY_GROUP, CID_ONSAPI_PULL_GROUP, CID_ONSAPI_PERMISSION_GROUP,
                          CID_ONSAPI_OWNER_GROUP)

_BAD_GROUP_CHAR: Final = re.compile(r"[^%|a-zA-Z0-9_-]")


class InvalidGroupError(ValueError):
    """A consumer group name RocketMQ's clients would refuse; the message says why."""


def validate_group_name(name: str) -> None:
    """Raise InvalidGroupError unless ``name`` is a legal consumer group name."""
    if not isinstance(name, str) or not name:
        raise InvalidGroupError("consumer group name is empty")
    if len(name) > GROUP_MAX_LENGTH:
        raise InvalidGroupError(f"consumer group name is {len(name)} characters long, more than {GROUP_MAX_LENGTH}")
    bad = _BAD_GROUP_CHAR.search(name)
    if bad is not None:
        raise InvalidGroupError(f"consumer group name {name!r} contains the illegal character {bad.group()!r} at "
                                f"position {bad.start()}; allowed are only %, |, ASCII letters, digits, _ and -")


@dataclass(frozen=True, slots=True)
class SubscriptionGroupConfig:
    """One consumer group's settings (Java ``SubscriptionGroupConfig``, defaults as 4.9). Immutable."""

    group_name: str
    consume_enable: bool = True
    consume_from_min_enable: bool = True
    consume_broadcast_enable: bool = True
    retry_queue_nums: int = 1
    retry_max_times: int = 16
    broker_id: int = 0
    which_broker_when_consume_slowly: int = 1
    notify_consumer_ids_changed_enable: bool = True

    def __post_init__(self) -> None:
        validate_group_name(self.group_name)
        for name in ("consume_enable", "consume_from_min_enable", "consume_broadcast_enable",
                     "notify_consumer_ids_changed_enable"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"group {self.group_name}: {name} must be true or false, got {getattr(self, name)!r}")
        for name in ("retry_queue_nums", "retry_max_times", "broker_id", "which_broker_when_consume_slowly"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"group {self.group_name}: {name} must be an integer, got {value!r}")
        if not 0 <= self.retry_queue_nums <= 2**31 - 1:
            raise ValueError(f"group {self.group_name}: retry_queue_nums must not be negative, "
                             f"got {self.retry_queue_nums}")
        if self.broker_id < 0 or self.which_broker_when_consume_slowly < 0:
            raise ValueError(f"group {self.group_name}: broker ids must not be negative")

    def replace(self, **changes: Any) -> SubscriptionGroupConfig:
        return replace(self, **changes)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "brokerId": self.broker_id,
            "consumeBroadcastEnable": self.consume_broadcast_enable,
            "consumeEnable": self.consume_enable,
            "consumeFromMinEnable": self.consume_from_min_enable,
            "groupName": self.group_name,
            "notifyConsumerIdsChangedEnable": self.notify_consumer_ids_changed_enable,
            "retryMaxTimes": self.retry_max_times,
            "retryQueueNums": self.retry_queue_nums,
            "whichBrokerWhenConsumeSlowly": self.which_broker_when_consume_slowly,
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], name: str | None = None) -> SubscriptionGroupConfig:
        """Read RocketMQ's JSON form (an UPDATE_AND_CREATE_SUBSCRIPTIONGROUP body or a table entry). Missing
        fields take the defaults; RocketMQ 5's extra fields (groupSysFlag, consumeTimeoutMinute, ...) are
        ignored. ValueError (InvalidGroupError for the name) if unusable."""
        if not isinstance(data, Mapping):
            raise ValueError(f"subscription group {name!r} must be a JSON object, not {type(data).__name__}")
        group = data.get("groupName", name)
        if not isinstance(group, str):
            raise InvalidGroupError(f"subscription group config {name!r} has no groupName")
        what = f"group {group}"
        return cls(
            group_name=group,
            consume_enable=json_bool(data, "consumeEnable", True, what),
            consume_from_min_enable=json_bool(data, "consumeFromMinEnable", True, what),
            consume_broadcast_enable=json_bool(data, "consumeBroadcastEnable", True, what),
            retry_queue_nums=json_int(data, "retryQueueNums", 1, what),
            retry_max_times=json_int(data, "retryMaxTimes", 16, what),
            broker_id=json_int(data, "brokerId", 0, what),
            which_broker_when_consume_slowly=json_int(data, "whichBrokerWhenConsumeSlowly", 1, what),
            notify_consumer_ids_changed_enable=json_bool(data, "notifyConsumerIdsChangedEnable", True, what),
        )


def _now_ms() -> int:
    return int(time.time() * 1000)


class SubscriptionGroupManager(PersistentTable):
    """The consumer groups of one broker, persisted to ``<config_dir>/subscriptionGroup.json``.

    Loads in the constructor (``ConfigFileError`` if the file and its .bak are both unreadable).
    ``broker_config`` is read live (autoCreateSubscriptionGroup may change at run time).
    """

    def __init__(self, config_dir: str | os.PathLike[str], broker_config: BrokerConfig, *,
                 clock_ms: Callable[[], int] = _now_ms, persist_on_change: bool = True) -> None:
        super().__init__(os.path.join(os.fspath(config_dir), SUBSCRIPTION_GROUP_FILE))
        self.broker_config = broker_config
        self._clock_ms = clock_ms
        self.persist_on_change = persist_on_change
        self._table: dict[str, SubscriptionGroupConfig] = {}
        self._data_version = DataVersion(clock_ms())
        for group in BUILT_IN_GROUPS:
            self._table[group] = SubscriptionGroupConfig(group)
        self.load()

    def load(self) -> bool:
        """Load subscriptionGroup.json (or its .bak) over the current table; False if there was no file."""
        loaded = load_json_file(self.path, _decode_wrapper)
        if loaded is None:
            return False
        version, table = loaded
        with self._lock:
            self._table.update(table)
            self._data_version = version
            self._dirty = False
        log.info("loaded %d subscription groups from %s (data version %s)", len(table), self.path, version)
        return True

    # -- reading ----------------------------------------------------------------------------------------

    def find(self, group: str) -> SubscriptionGroupConfig | None:
        """The group's config; None if it does not exist (no auto-creation)."""
        return self._table.get(group)

    def find_or_auto_create(self, group: str) -> SubscriptionGroupConfig | None:
        """The group's config, created with the defaults if absent and autoCreateSubscriptionGroup is on (or
        the name starts with CID_RMQ_SYS_); None otherwise. InvalidGroupError for an illegal name."""
        existing = self._table.get(group)
        if existing is not None:
            return existing
        if not (self.broker_config.auto_create_subscription_group or group.startswith(SYS_CONSUMER_GROUP_PREFIX)):
            return None
        created = SubscriptionGroupConfig(group)
        with self._lock:
            existing = self._table.get(group)
            if existing is not None:
                return existing
            self._table[group] = created
            self._bump()
        log.info("auto-created subscription group %s", created)
        self._after_change()
        return created

    def __contains__(self, group: object) -> bool:
        return group in self._table

    def __len__(self) -> int:
        return len(self._table)

    def groups(self) -> list[str]:
        with self._lock:
            return sorted(self._table)

    def table(self) -> dict[str, SubscriptionGroupConfig]:
        with self._lock:
            return dict(self._table)

    @property
    def data_version(self) -> DataVersion:
        return self._data_version

    # -- changing ---------------------------------------------------------------------------------------

    def update(self, config: SubscriptionGroupConfig) -> SubscriptionGroupConfig | None:
        """Create or replace a group (UPDATE_AND_CREATE_SUBSCRIPTIONGROUP); returns the previous config.
        An identical config changes nothing."""
        if not isinstance(config, SubscriptionGroupConfig):
            raise TypeError(f"expected a SubscriptionGroupConfig, not {type(config).__name__}")
        with self._lock:
            previous = self._table.get(config.group_name)
            if previous == config:
                return previous
            self._table[config.group_name] = config
            self._bump()
        log.info("%s subscription group %s", "updated" if previous else "created", config)
        self._after_change()
        return previous

    def delete(self, group: str) -> SubscriptionGroupConfig | None:
        """Remove a group (DELETE_SUBSCRIPTIONGROUP); returns its config, None if it did not exist.
        Its consumer offsets are the caller's business (ConsumerOffsetManager.remove_group)."""
        with self._lock:
            removed = self._table.pop(group, None)
            if removed is None:
                return None
            self._bump()
        log.info("deleted subscription group %s", removed)
        self._after_change()
        return removed

    def disable_consume(self, group: str) -> bool:
        """Set consumeEnable=false for an existing group; False if the group does not exist."""
        with self._lock:
            entry = self._table.get(group)
            if entry is None:
                return False
            if not entry.consume_enable:
                return True
            self._table[group] = entry.replace(consume_enable=False)
            self._bump()
        self._after_change()
        return True

    def replace_all(self, wrapper: Mapping[str, Any]) -> bool:
        """Take a master's groups and data version (a slave's GET_ALL_SUBSCRIPTIONGROUP_CONFIG sync); False if
        the versions were already equal."""
        version, table = _decode_wrapper_dict(wrapper)
        with self._lock:
            if version == self._data_version:
                return False
            self._table = table
            self._data_version = version
            self._changed()
        if self.persist_on_change:
            self._persist_after_change()
        return True

    # -- wire and file forms ----------------------------------------------------------------------------

    def wrapper(self) -> dict[str, Any]:
        """``{"dataVersion":…,"subscriptionGroupTable":{…}}`` as plain JSON data
        (GET_ALL_SUBSCRIPTIONGROUP_CONFIG body)."""
        with self._lock:
            return {"dataVersion": self._data_version.to_json_dict(),
                    "subscriptionGroupTable": {g: c.to_json_dict() for g, c in sorted(self._table.items())}}

    def encode(self) -> bytes:
        return fastjson.dumps(self.wrapper())

    def _encode_file(self) -> str:
        return dumps_file(self.wrapper())

    def _bump(self) -> None:
        assert self._lock._is_owned()  # type: ignore[attr-defined]
        self._data_version = self._data_version.next_version(self._clock_ms())
        self._changed()

    def _after_change(self) -> None:
        if self.persist_on_change:
            self._persist_after_change()


def _decode_wrapper_dict(data: Any) -> tuple[DataVersion, dict[str, SubscriptionGroupConfig]]:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object with subscriptionGroupTable, not {type(data).__name__}")
    raw_version = data.get("dataVersion")
    version = DataVersion.from_json_dict(raw_version) if raw_version is not None else DataVersion(_now_ms())
    raw_table = data.get("subscriptionGroupTable") or {}
    if not isinstance(raw_table, Mapping):
        raise ValueError("subscriptionGroupTable must be a JSON object")
    table: dict[str, SubscriptionGroupConfig] = {}
    for name, raw in raw_table.items():
        try:
            entry = SubscriptionGroupConfig.from_json_dict(raw, str(name))
        except InvalidGroupError as exc:
            log.error("skipping subscription group %r: %s", name, exc)
            continue
        table[entry.group_name] = entry
    return version, table


def _decode_wrapper(data: bytes) -> tuple[DataVersion, dict[str, SubscriptionGroupConfig]]:
    return _decode_wrapper_dict(fastjson.loads(data))
