"""Store configuration: RocketMQ's MessageStoreConfig keys that the store engine uses, with units in names."""
from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass, field

from rmq_common.topic import DEFAULT_DELAY_LEVELS, parse_delay_levels


class FlushDiskType(enum.Enum):
    """When an append counts as stored: after the page-cache copy, or after the bytes reach the disk."""

    ASYNC_FLUSH = "ASYNC_FLUSH"
    SYNC_FLUSH = "SYNC_FLUSH"


# RocketMQ key (broker.conf) → our field, for loading RocketMQ-style config files.
ROCKETMQ_KEYS = {
    "storePathRootDir": "store_path_root_dir",
    "mappedFileSizeCommitLog": "mapped_file_size_commitlog",
    "mappedFileSizeConsumeQueue": "mapped_file_size_consume_queue",
    "flushDiskType": "flush_disk_type",
    "flushIntervalCommitLog": "flush_interval_ms",
    "flushIntervalConsumeQueue": "flush_consume_queue_interval_ms",
    "syncFlushTimeout": "sync_flush_timeout_ms",
    "maxMessageSize": "max_message_size",
    "maxHashSlotNum": "max_hash_slot_num",
    "maxIndexNum": "max_index_num",
    "messageIndexEnable": "message_index_enable",
    "fileReservedTime": "file_reserved_time_hours",
    "deleteWhen": "delete_when",
    "diskMaxUsedSpaceRatio": "disk_max_used_space_ratio",
    "checkCRCOnRecover": "check_crc_on_recover",
    "warmMapedFileEnable": "warm_mapped_file_enable",
    "messageDelayLevel": "message_delay_level",
    "cleanResourceInterval": "clean_resource_interval_ms",
}


@dataclass
class StoreConfig:
    """Everything the store engine can be told. Defaults are RocketMQ's."""

    store_path_root_dir: str = field(default_factory=lambda: os.path.expanduser("~/store"))
    # Commitlog file size; every file has exactly this size. RocketMQ: 1 GiB.
    mapped_file_size_commitlog: int = 1 << 30
    # Consume queue file size in bytes: 300,000 units of 20 bytes.
    mapped_file_size_consume_queue: int = 300_000 * 20
    flush_disk_type: FlushDiskType = FlushDiskType.ASYNC_FLUSH
    # ASYNC_FLUSH: how often the background flusher msyncs the commitlog.
    flush_interval_ms: int = 500
    flush_consume_queue_interval_ms: int = 1000
    # SYNC_FLUSH: how long a put waits for its group commit before reporting FLUSH_DISK_TIMEOUT.
    sync_flush_timeout_ms: int = 5000
    # Largest message body accepted (RocketMQ maxMessageSize, 4 MiB).
    max_message_size: int = 4 * 1024 * 1024
    max_hash_slot_num: int = 5_000_000
    max_index_num: int = 20_000_000
    message_index_enable: bool = True
    # Retention: files older than this are deleted at delete_when, or sooner when the disk fills.
    file_reserved_time_hours: float = 72
    # Hours of the day (";"-separated, RocketMQ's "04") when expired files are deleted.
    delete_when: str = "04"
    # Percent of the disk above which expired files are deleted at any hour.
    disk_max_used_space_ratio: int = 75
    # Percent of the disk above which the oldest files are deleted even if not expired.
    disk_space_clean_forcibly_ratio: int = 85
    clean_resource_interval_ms: int = 10_000
    # Files deleted per cleaning pass at most, so a pass never stalls the store.
    delete_files_batch_max: int = 10
    check_crc_on_recover: bool = True
    # Pre-fault every new commitlog file before it becomes current (appends never take page faults).
    warm_mapped_file_enable: bool = True
    message_delay_level: str = DEFAULT_DELAY_LEVELS
    # Host written as STOREHOST into every record: (ip, port).
    store_host: tuple[str, int] = ("127.0.0.1", 10911)

    def __post_init__(self) -> None:
        if isinstance(self.flush_disk_type, str):
            self.flush_disk_type = FlushDiskType(self.flush_disk_type)
        if self.mapped_file_size_commitlog < 4096:
            raise ValueError("mapped_file_size_commitlog must be at least 4096 bytes")
        if self.mapped_file_size_consume_queue <= 0 or self.mapped_file_size_consume_queue % 20:
            raise ValueError("mapped_file_size_consume_queue must be a positive multiple of 20")
        if self.max_message_size <= 0:
            raise ValueError("max_message_size must be positive")
        if self.max_hash_slot_num <= 0 or self.max_index_num <= 1:
            raise ValueError("index sizes must be positive")
        if not (0 < self.disk_max_used_space_ratio <= 100):
            raise ValueError("disk_max_used_space_ratio is a percentage")
        parse_delay_levels(self.message_delay_level)  # fail early on a bad level list

    @property
    def delay_levels_ms(self) -> list[int]:
        return parse_delay_levels(self.message_delay_level)

    @property
    def delete_hours(self) -> set[int]:
        return {int(h) for h in self.delete_when.split(";") if h.strip()}

    def replace(self, **changes) -> "StoreConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_properties(cls, props: dict[str, str], **overrides) -> "StoreConfig":
        """Build from RocketMQ-style keys (``storePathRootDir=...``); unknown keys are ignored."""
        kwargs: dict = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for key, value in props.items():
            name = ROCKETMQ_KEYS.get(key)
            if name is None:
                continue
            kind = types[name]
            if kind in ("int", int):
                kwargs[name] = int(value)
            elif kind in ("float", float):
                kwargs[name] = float(value)
            elif kind in ("bool", bool):
                kwargs[name] = str(value).strip().lower() == "true"
            else:
                kwargs[name] = value
        kwargs.update(overrides)
        return cls(**kwargs)
