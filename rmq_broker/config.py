"""Broker configuration: RocketMQ 4.9's ``broker.conf`` keys with units in the names.

A RocketMQ ``broker.conf`` works as is. RocketMQ spreads the keys over BrokerConfig,
NettyServerConfig and MessageStoreConfig; here the broker and network keys are fields of
``BrokerConfig`` and every key the store engine understands is delegated to ``rmq_store.StoreConfig``
(its ``ROCKETMQ_KEYS`` table and its own validation), kept in ``BrokerConfig.store``. ``store_config()``
gives the StoreConfig to open the broker's MessageStore with (STOREHOST = brokerIP1:listenPort).

Reading (``from_properties`` / ``load``):

* RocketMQ key names, and also our attribute names (``listen_port``, ``file_reserved_time_hours``);
* values are checked, not guessed: ``true``/``false`` only for switches, decimal integers for
  numbers. RocketMQ's ``properties2Object`` silently ignores a value it cannot parse and
  ``Boolean.parseBoolean`` reads ``yes`` as false; here a bad value raises ``ConfigError`` naming the
  key, so a typo cannot start a broker with a setting the operator did not ask for;
* RocketMQ keys that mean nothing here (thread pools, transient store pool, Netty buffers:
  ``IGNORED_KEYS``) are accepted and kept; unknown keys are kept with a warning. Both are echoed by
  ``to_properties`` (GET_BROKER_CONFIG), as RocketMQ's ``Configuration`` keeps every key it was given;
* settings rmq cannot honour are refused rather than ignored: ``aclEnable=true`` (no ACL: a broker
  the operator believes protected would be open), ``enableDLegerCommitLog=true``, and a
  ``storePathCommitLog`` other than ``<storePathRootDir>/commitlog``.

Defaults are RocketMQ 4.9's, except (see docs/broker.md): ``brokerName`` is ``broker-a`` (RocketMQ: the
host name, which is often not a legal topic name although the broker registers a topic of that
name); ``brokerIP1`` is the address of the interface that routes outside (RocketMQ: the first
non-loopback address of any interface), 127.0.0.1 without one; ``brokerIP2`` defaults to brokerIP1
(RocketMQ detects it separately, so setting only brokerIP1 left HA on another address).

Changing settings at run time (UPDATE_BROKER_CONFIG, ``update``): keys marked ``runtime`` are read by the
broker each time they are used and are applied at once; any other known key is validated and
reported as needing a restart, and not applied, so GET_BROKER_CONFIG always shows what is in effect.
"""
from __future__ import annotations

import dataclasses
import enum
import ipaddress
import logging
import os
import re
import socket
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from rmq_common.properties_file import format_properties, load_properties
from rmq_common.topic import RMQ_SYS_TRACE_TOPIC, InvalidTopicError, reply_topic, validate_topic
from rmq_store.config import ROCKETMQ_KEYS as STORE_KEYS
from rmq_store.config import FlushDiskType, StoreConfig

from rmq_broker.data_version import DataVersion
from rmq_broker.perm import PermName, validate_perm

__all__ = ["BrokerConfig", "BrokerRole", "ConfigError", "ConfigUpdate", "IGNORED_KEYS", "KEY_ALIASES",
           "MAX_DEDUP_WINDOW_MS", "STORE_RUNTIME_KEYS", "broker_keys", "local_address"]

log = logging.getLogger("rmq_broker.config")

_INT32_MAX: Final = 2**31 - 1
_INT64_MAX: Final = 2**63 - 1
#: Longest deduplication window (rmq's extension, docs/features.md "Deduplication"): 7 days.
MAX_DEDUP_WINDOW_MS: Final = 7 * 24 * 3600 * 1000


class BrokerRole(enum.StrEnum):
    """A master takes writes (SYNC_MASTER also waits for its slave); a SLAVE replicates a master."""

    ASYNC_MASTER = "ASYNC_MASTER"
    SYNC_MASTER = "SYNC_MASTER"
    SLAVE = "SLAVE"


class ConfigError(ValueError):
    """A configuration value that cannot be used; ``key`` is the RocketMQ key it came from."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def local_address() -> str:
    """The address of the interface that routes outside this host, or 127.0.0.1 if there is none.

    A UDP ``connect`` only asks the kernel for a route; no packet is sent.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    if address.startswith("127.") or address == "0.0.0.0":
        return "127.0.0.1"
    return address


_physical_memory_bytes: int | None = None


def physical_memory_bytes() -> int:
    """This host's physical memory (Java ``StoreUtil.TOTAL_PHYSICAL_MEMORY_SIZE``), read once."""
    global _physical_memory_bytes
    if _physical_memory_bytes is None:
        try:
            _physical_memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            _physical_memory_bytes = 24 * 1024 ** 3   # Java's fallback when the MXBean cannot say
        assert _physical_memory_bytes > 0
    return _physical_memory_bytes


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _key(key: str, default: Any = dataclasses.MISSING, *, runtime: bool = False,
         factory: Any = dataclasses.MISSING) -> Any:
    """A field read from RocketMQ key ``key``; ``runtime`` = may change while the broker runs."""
    meta = {"key": key, "runtime": runtime}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class BrokerConfig:
    """Everything the broker can be told. Field order = the order of ``to_properties``."""

    # -- identity and role ----------------------------------------------------------------------------
    broker_cluster_name: str = _key("brokerClusterName", "DefaultCluster")
    #: RocketMQ's default is the host name; see the module docstring.
    broker_name: str = _key("brokerName", "broker-a")
    #: 0 = master; slaves 1, 2, ... A master's id is forced to 0 (as BrokerStartup does).
    broker_id: int = _key("brokerId", 0)
    broker_role: BrokerRole = _key("brokerRole", BrokerRole.ASYNC_MASTER)
    #: Address registered with nameservers and written as STOREHOST into every record.
    broker_ip1: str = _key("brokerIP1", factory=local_address)
    #: Address of the HA port advertised to slaves; None = brokerIP1.
    broker_ip2: str | None = _key("brokerIP2", None)
    #: ``host:port`` entries separated by ``;``. Default: $NAMESRV_ADDR.
    namesrv_addr: str | None = _key("namesrvAddr", factory=lambda: _env("NAMESRV_ADDR"))
    #: RocketMQ looks nameservers up over HTTP when true; rmq cannot (warning), use namesrvAddr.
    fetch_namesrv_addr_by_address_server: bool = _key("fetchNamesrvAddrByAddressServer", False)
    #: Perm of the whole broker (READ 4 | WRITE 2); a broker without WRITE refuses sends.
    broker_permission: int = _key("brokerPermission", int(PermName.READ | PermName.WRITE), runtime=True)
    #: RocketMQ's installation directory; informative only.
    rocketmq_home: str | None = _key("rocketmqHome", factory=lambda: _env("ROCKETMQ_HOME"))
    region_id: str = _key("regionId", "DefaultRegion")
    #: Sent back to producers in the TRACE_ON field of send replies.
    trace_on: bool = _key("traceOn", True, runtime=True)

    # -- network ----------------------------------------------------------------------------------------
    #: Main port; the VIP port is listenPort - 2 and the HA port listenPort + 1. 0 = any free port (tests).
    listen_port: int = _key("listenPort", 10911)
    #: Address to listen on (RocketMQ 5.x ``bindAddress``; 4.x listens on every address).
    listen_host: str = _key("bindAddress", "0.0.0.0")
    #: Also serve the VIP port listenPort - 2 (rmq's own key; RocketMQ 4.9 always does). Java clients <= 4.4
    #: send most requests there, so turn it off only when no such client exists.
    vip_channel_enable: bool = _key("vipChannelEnable", True)
    #: Close a connection idle for this long; 0 = never.
    server_channel_max_idle_time_s: int = _key("serverChannelMaxIdleTimeSeconds", 120)

    # -- topics and subscription groups --------------------------------------------------------------
    auto_create_topic_enable: bool = _key("autoCreateTopicEnable", True, runtime=True)
    #: Queues of TBW102, the template of auto-created topics.
    default_topic_queue_nums: int = _key("defaultTopicQueueNums", 8, runtime=True)
    cluster_topic_enable: bool = _key("clusterTopicEnable", True)
    broker_topic_enable: bool = _key("brokerTopicEnable", True)
    trace_topic_enable: bool = _key("traceTopicEnable", False)
    msg_trace_topic_name: str = _key("msgTraceTopicName", RMQ_SYS_TRACE_TOPIC)
    auto_create_subscription_group: bool = _key("autoCreateSubscriptionGroup", True, runtime=True)

    # -- nameserver registration ---------------------------------------------------------------------
    #: Re-registration period; clamped to 10-60 s (``register_period_ms``), as RocketMQ does.
    register_name_server_period_ms: int = _key("registerNameServerPeriod", 30_000, runtime=True)
    register_broker_timeout_ms: int = _key("registerBrokerTimeoutMills", 6_000, runtime=True)
    force_register: bool = _key("forceRegister", True, runtime=True)
    compressed_register: bool = _key("compressedRegister", False, runtime=True)

    # -- pulling ------------------------------------------------------------------------------------------
    long_polling_enable: bool = _key("longPollingEnable", True, runtime=True)
    #: How long a pull is held when long polling is off.
    short_polling_time_ms: int = _key("shortPollingTimeMills", 1_000, runtime=True)
    slave_read_enable: bool = _key("slaveReadEnable", False, runtime=True)
    notify_consumer_ids_changed_enable: bool = _key("notifyConsumerIdsChangedEnable", True, runtime=True)
    enable_property_filter: bool = _key("enablePropertyFilter", False, runtime=True)
    filter_support_retry: bool = _key("filterSupportRetry", False, runtime=True)
    #: Share of physical memory regarded as "in memory" (slave-read suggestion, first-boot offsets).
    access_message_in_memory_max_ratio_percent: int = _key("accessMessageInMemoryMaxRatio", 40, runtime=True)
    max_transfer_bytes_on_message_in_memory: int = _key("maxTransferBytesOnMessageInMemory", 256 * 1024,
                                                        runtime=True)
    #: Most messages one pull returns (``max_pull_msg_nums``).
    max_transfer_count_on_message_in_memory: int = _key("maxTransferCountOnMessageInMemory", 32, runtime=True)
    max_transfer_bytes_on_message_in_disk: int = _key("maxTransferBytesOnMessageInDisk", 64 * 1024, runtime=True)
    max_transfer_count_on_message_in_disk: int = _key("maxTransferCountOnMessageInDisk", 8, runtime=True)
    #: rmq's own: the physical memory the in-memory window is a share of; 0 = this host's (detected). Lets
    #: tests and small hosts exercise the "in disk" limits and the slave-read suggestion without gigabytes.
    rmq_total_physical_memory_bytes: int = _key("rmqTotalPhysicalMemoryBytes", 0, runtime=True)
    #: A slave corrects a pull's out-of-range offset as a master does (true) or keeps it and sends the
    #: consumer back to the master (false, RocketMQ's default): a slave behind its master must not move
    #: consumers backwards.
    offset_check_in_slave: bool = _key("offsetCheckInSlave", False, runtime=True)
    #: QUERY_MESSAGE answers at most this many messages.
    default_query_max_num: int = _key("defaultQueryMaxNum", 32, runtime=True)

    # -- persistence of consumer progress -------------------------------------------------------------
    flush_consumer_offset_interval_ms: int = _key("flushConsumerOffsetInterval", 5_000, runtime=True)
    flush_delay_offset_interval_ms: int = _key("flushDelayOffsetInterval", 10_000, runtime=True)

    # -- transactions and request-reply ----------------------------------------------------------------
    reject_transaction_message: bool = _key("rejectTransactionMessage", False, runtime=True)
    #: A half message is checked with its producer only after it is this old.
    transaction_timeout_ms: int = _key("transactionTimeOut", 6_000, runtime=True)
    transaction_check_max: int = _key("transactionCheckMax", 15, runtime=True)
    transaction_check_interval_ms: int = _key("transactionCheckInterval", 60_000, runtime=True)
    store_reply_message_enable: bool = _key("storeReplyMessageEnable", True, runtime=True)

    # -- timer messages (RocketMQ 5.x MessageStoreConfig keys) ----------------------------------------
    #: Accept sends with TIMER_DELIVER_MS / TIMER_DELAY_SEC / TIMER_DELAY_MS (false: refused, SYSTEM_ERROR).
    timer_wheel_enable: bool = _key("timerWheelEnable", True, runtime=True)
    #: The furthest a timer may be set ahead, in seconds (RocketMQ's default: 3 days; at most 68 years).
    timer_max_delay_sec: int = _key("timerMaxDelaySec", 3 * 24 * 3600, runtime=True)
    #: A timer is delivered at the first multiple of this at or after its deliver time.
    timer_precision_ms: int = _key("timerPrecisionMs", 1_000, runtime=True)

    # -- deduplication of producer retries (rmq's extension, not in RocketMQ) -------------------------
    #: Window of topics without their own ``rmqDedupWindowMs`` (ordinary topics only); 0 = off.
    rmq_dedup_window_ms_default: int = _key("rmqDedupWindowMsDefault", 0, runtime=True)
    #: Most (topic, UNIQ_KEY) entries remembered; beyond, the oldest are forgotten (best effort).
    rmq_dedup_max_entries: int = _key("rmqDedupMaxEntries", 100_000, runtime=True)

    # -- flow control ---------------------------------------------------------------------------------
    #: Answer SYSTEM_BUSY to requests that waited too long for their turn instead of serving them late.
    broker_fast_failure_enable: bool = _key("brokerFastFailureEnable", True, runtime=True)
    wait_time_ms_in_send_queue: int = _key("waitTimeMillsInSendQueue", 200, runtime=True)
    wait_time_ms_in_pull_queue: int = _key("waitTimeMillsInPullQueue", 5_000, runtime=True)

    # -- HA (master/slave) ----------------------------------------------------------------------------
    #: A slave's master HA address ``ip:port``; None = learnt from the nameserver.
    ha_master_address: str | None = _key("haMasterAddress", None)
    ha_send_heartbeat_interval_ms: int = _key("haSendHeartbeatInterval", 5_000)
    ha_housekeeping_interval_ms: int = _key("haHousekeepingInterval", 20_000)
    ha_transfer_batch_size_bytes: int = _key("haTransferBatchSize", 32 * 1024)
    #: SYNC_MASTER: a slave further behind than this is "not available" for synchronous sends.
    ha_slave_fallbehind_max_bytes: int = _key("haSlaveFallbehindMax", 256 * 1024 * 1024, runtime=True)
    #: SYNC_MASTER: how long a send waits for its slave's acknowledgement.
    slave_timeout_ms: int = _key("slaveTimeout", 3_000, runtime=True)
    #: A slave's wait before it connects to its master again after a failed attempt or a closed link
    #: (rmq's key; RocketMQ waits a fixed 5 s).
    ha_reconnect_interval_ms: int = _key("haReconnectInterval", 5_000)

    # -- refused features -----------------------------------------------------------------------------
    #: Must stay false: rmq has no ACL.
    acl_enable: bool = _key("aclEnable", False)
    #: Must stay false: rmq has no DLedger commitlog.
    enable_dleger_commit_log: bool = _key("enableDLegerCommitLog", False)

    # -- not keys ---------------------------------------------------------------------------------------
    #: The store keys (storePathRootDir, flushDiskType, fileReservedTime, ...), validated by StoreConfig.
    store: StoreConfig = field(default_factory=lambda: StoreConfig(), metadata={"key": None})
    #: Keys that are not ours (IGNORED_KEYS and unknown ones), kept verbatim for to_properties.
    extra: dict[str, str] = field(default_factory=dict, metadata={"key": None})
    #: Changes with every applied update (GET_BROKER_CONFIG's ``version`` header).
    data_version: DataVersion = field(default_factory=lambda: DataVersion(int(time.time() * 1000)),
                                      compare=False, metadata={"key": None})

    def __post_init__(self) -> None:
        if isinstance(self.broker_role, str) and not isinstance(self.broker_role, BrokerRole):
            self.broker_role = _parse_role("brokerRole", self.broker_role)
        if self.broker_ip2 is None:
            self.broker_ip2 = self.broker_ip1
        if self.broker_role is not BrokerRole.SLAVE and self.broker_id != 0:
            log.warning("brokerId=%d ignored: a %s always has brokerId 0", self.broker_id, self.broker_role)
            self.broker_id = 0
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(_FIELD_KEYS[name], f"{why}, got {getattr(self, name)!r}")

        for name in ("broker_cluster_name", "broker_name", "msg_trace_topic_name"):
            try:
                validate_topic(getattr(self, name))
            except InvalidTopicError as exc:
                raise bad(name, f"is also the name of a topic the broker creates, so it must be a legal topic "
                                f"name ({exc})") from None
        try:
            validate_topic(reply_topic(self.broker_cluster_name))
        except InvalidTopicError as exc:
            raise bad("broker_cluster_name", f"is too long for the cluster's reply topic ({exc})") from None
        if self.broker_role is BrokerRole.SLAVE and self.broker_id <= 0:
            raise bad("broker_id", "a SLAVE's brokerId must be > 0")
        if not 0 <= self.broker_id <= _INT64_MAX:
            raise bad("broker_id", "must be a non-negative number")
        for name in ("broker_ip1", "broker_ip2"):
            try:
                ipaddress.ip_address(getattr(self, name))
            except ValueError:
                raise bad(name, "must be an IPv4 or IPv6 address (it is written into every stored message)") from None
        for entry in _split_addresses(self.namesrv_addr):
            if _host_port(entry) is None:
                raise bad("namesrv_addr", f"entry {entry!r} is not host:port; write e.g. "
                                          "\"127.0.0.1:9876;192.168.0.1:9876\"")
        if self.ha_master_address is not None and _host_port(self.ha_master_address) is None:
            raise bad("ha_master_address", "must be host:port")
        if self.fetch_namesrv_addr_by_address_server:
            log.warning("fetchNamesrvAddrByAddressServer=true is not supported by rmq: set namesrvAddr")
        try:
            validate_perm(self.broker_permission, "perm")
        except ValueError as exc:
            raise ConfigError("brokerPermission", str(exc)) from None
        if self.listen_port != 0 and not 3 <= self.listen_port <= 65534:
            raise bad("listen_port", "must be 3-65534 (the VIP port is listenPort-2, HA listenPort+1), or 0")
        if not self.listen_host:
            raise bad("listen_host", "must not be empty")
        positive = ("default_topic_queue_nums", "register_name_server_period_ms", "register_broker_timeout_ms",
                    "flush_consumer_offset_interval_ms", "flush_delay_offset_interval_ms", "transaction_timeout_ms",
                    "transaction_check_interval_ms", "max_transfer_bytes_on_message_in_memory",
                    "max_transfer_count_on_message_in_memory", "max_transfer_bytes_on_message_in_disk",
                    "max_transfer_count_on_message_in_disk", "default_query_max_num",
                    "ha_send_heartbeat_interval_ms", "ha_housekeeping_interval_ms", "ha_transfer_batch_size_bytes",
                    "ha_slave_fallbehind_max_bytes", "slave_timeout_ms", "ha_reconnect_interval_ms")
        for name in positive:
            if getattr(self, name) <= 0:
                raise bad(name, "must be positive")
        for name in ("short_polling_time_ms", "server_channel_max_idle_time_s", "transaction_check_max",
                     "wait_time_ms_in_send_queue", "wait_time_ms_in_pull_queue"):
            if getattr(self, name) < 0:
                raise bad(name, "must not be negative")
        for name, top in (("timer_max_delay_sec", _INT32_MAX), ("timer_precision_ms", 60_000)):
            if not 1 <= getattr(self, name) <= top:
                raise bad(name, f"must be 1-{top}")
        if not 0 <= self.rmq_dedup_window_ms_default <= MAX_DEDUP_WINDOW_MS:
            raise bad("rmq_dedup_window_ms_default", f"must be 0 (off) to {MAX_DEDUP_WINDOW_MS} ms (7 days)")
        if not 1 <= self.rmq_dedup_max_entries <= 100_000_000:
            raise bad("rmq_dedup_max_entries", "must be 1-100000000")
        if self.default_topic_queue_nums > _INT32_MAX:
            raise bad("default_topic_queue_nums", "is too large")
        if not 0 <= self.rmq_total_physical_memory_bytes <= _INT64_MAX:
            raise bad("rmq_total_physical_memory_bytes", "must be 0 (this host's memory) or a number of bytes")
        if not 0 <= self.access_message_in_memory_max_ratio_percent <= 100:
            raise bad("access_message_in_memory_max_ratio_percent", "is a percentage, 0-100")
        if self.acl_enable:
            raise bad("acl_enable", "ACL is not supported by rmq; refusing to start a broker the configuration "
                                    "expects to check access. Remove aclEnable or set it to false")
        if self.enable_dleger_commit_log:
            raise bad("enable_dleger_commit_log", "the DLedger commitlog is not supported by rmq")
        if not isinstance(self.store, StoreConfig):
            raise TypeError(f"BrokerConfig.store must be a StoreConfig, not {type(self.store).__name__}")

    # -- derived ----------------------------------------------------------------------------------------

    @property
    def is_master(self) -> bool:
        return self.broker_role is not BrokerRole.SLAVE

    @property
    def vip_listen_port(self) -> int:
        """The VIP channel port (listenPort - 2; Java clients <= 4.4 send most requests there)."""
        return 0 if self.listen_port == 0 else self.listen_port - 2

    @property
    def ha_listen_port(self) -> int:
        """The HA port: always listenPort + 1, as BrokerStartup sets it whatever haListenPort says."""
        return 0 if self.listen_port == 0 else self.listen_port + 1

    @property
    def broker_addr(self) -> str:
        """``brokerIP1:listenPort``, the address registered with nameservers."""
        return _join_host_port(self.broker_ip1, self.listen_port)

    @property
    def ha_server_addr(self) -> str:
        """``brokerIP2:haPort``, the HA address advertised to slaves."""
        return _join_host_port(self.broker_ip2 or self.broker_ip1, self.ha_listen_port)

    @property
    def namesrv_addr_list(self) -> list[str]:
        """``namesrvAddr`` split into its ``host:port`` entries."""
        return _split_addresses(self.namesrv_addr)

    @property
    def register_period_ms(self) -> int:
        """``registerNameServerPeriod`` clamped to 10-60 s, as BrokerController does."""
        return max(10_000, min(60_000, self.register_name_server_period_ms))

    @property
    def memory_window_bytes(self) -> int:
        """How far behind the commitlog's end a record may be and still count as in memory (RocketMQ:
        ``accessMessageInMemoryMaxRatio`` % of the physical memory): pulls further behind get the "in disk"
        limits, and with ``slaveReadEnable`` a suggestion to read from a slave."""
        total = self.rmq_total_physical_memory_bytes or physical_memory_bytes()
        return total * self.access_message_in_memory_max_ratio_percent // 100

    @property
    def max_pull_msg_nums(self) -> int:
        """Most messages one pull returns: maxTransferCountOnMessageInMemory."""
        return self.max_transfer_count_on_message_in_memory

    @property
    def store_path_root_dir(self) -> str:
        return self.store.store_path_root_dir

    @property
    def config_dir(self) -> str:
        """``<storePathRootDir>/config``: topics.json, subscriptionGroup.json, consumerOffset.json, ..."""
        return os.path.join(self.store.store_path_root_dir, "config")

    @property
    def flush_disk_type(self) -> FlushDiskType:
        return self.store.flush_disk_type

    @property
    def delay_levels_ms(self) -> list[int]:
        return self.store.delay_levels_ms

    @property
    def unknown_keys(self) -> list[str]:
        """Kept keys that are neither ours nor known RocketMQ keys (probably typos)."""
        return [k for k in self.extra if k not in IGNORED_KEYS]

    def store_config(self) -> StoreConfig:
        """The StoreConfig for this broker's MessageStore: the store keys, STOREHOST = brokerIP1:listenPort."""
        return self.store.replace(store_host=(self.broker_ip1, self.listen_port))

    def replace(self, **changes: Any) -> BrokerConfig:
        return dataclasses.replace(self, **changes)

    # -- RocketMQ properties ----------------------------------------------------------------------------

    @classmethod
    def from_properties(cls, props: Mapping[str, Any], **overrides: Any) -> BrokerConfig:
        """Build from broker.conf keys (RocketMQ names or attribute names); ``overrides`` are field values.

        Raises ConfigError naming the key for a bad value; unknown keys are kept (warning).
        """
        parsed = _parse_all(props)
        broker_kwargs = dict(parsed.broker)
        store_kwargs = dict(parsed.store)
        store = overrides.pop("store", None)
        if store is None:
            store = _build_store(StoreConfig(), store_kwargs)
        elif store_kwargs:
            store = _build_store(store, store_kwargs)
        broker_kwargs.update(overrides)
        cfg = cls(**broker_kwargs, store=store, extra=dict(parsed.extra))
        cfg._check_special(parsed.special)
        return cfg

    @classmethod
    def load(cls, path: str | os.PathLike[str], **overrides: Any) -> BrokerConfig:
        """``from_properties`` of a broker.conf file (PropertiesFileError if it cannot be read)."""
        return cls.from_properties(load_properties(path), **overrides)

    def _check_special(self, special: Mapping[str, str]) -> None:
        commitlog = special.get("storePathCommitLog")
        expected = os.path.join(self.store.store_path_root_dir, "commitlog")
        if commitlog is not None and os.path.normpath(os.path.expanduser(commitlog)) != os.path.normpath(expected):
            raise ConfigError("storePathCommitLog",
                              f"rmq keeps the commitlog in <storePathRootDir>/commitlog ({expected}); "
                              f"a separate directory {commitlog!r} is not supported")
        ha_port = special.get("haListenPort")
        if ha_port is not None and _parse_int("haListenPort", ha_port) != self.ha_listen_port:
            log.warning("haListenPort=%s ignored: the HA port is always listenPort+1 = %d (as in RocketMQ 4.9)",
                        ha_port, self.ha_listen_port)

    def to_properties(self) -> dict[str, str]:
        """Every setting under its RocketMQ key, then the store's, then the kept extra keys (GET_BROKER_CONFIG).

        ``from_properties(cfg.to_properties())`` gives an equal config.
        """
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            key = f.metadata.get("key")
            if key is None:
                continue
            value = getattr(self, f.name)
            if value is not None:
                out[key] = _format_value(value)
        out["haListenPort"] = str(self.ha_listen_port)
        for key, name in STORE_KEYS.items():
            out[key] = _format_value(getattr(self.store, name))
        out["storePathCommitLog"] = os.path.join(self.store.store_path_root_dir, "commitlog")
        for key in sorted(self.extra):
            out.setdefault(key, self.extra[key])
        return out

    def to_properties_text(self) -> str:
        """``to_properties`` as ``key=value`` lines: the GET_BROKER_CONFIG body."""
        return format_properties(self.to_properties())

    def update(self, props: Mapping[str, Any], *, now_ms: int | None = None) -> ConfigUpdate:
        """Apply an UPDATE_BROKER_CONFIG body in place, all or nothing.

        Runtime keys are applied; other known keys are validated and returned in ``restart_required``
        but not applied; IGNORED_KEYS are stored; unknown keys are reported and dropped (RocketMQ's
        ``Configuration.update`` also drops keys it does not know). Raises ConfigError (nothing changed)
        for a bad value. The data version changes when something was applied.
        """
        parsed = _parse_all(props, warn=False)
        result = ConfigUpdate()
        broker_changes: dict[str, Any] = {}
        store_changes: dict[str, Any] = {}
        for name, value in parsed.broker.items():
            key = _FIELD_KEYS[name]
            if _RUNTIME_FIELDS.get(name):
                if getattr(self, name) != value:
                    broker_changes[name] = value
                    result.applied[key] = _format_value(value)
            elif getattr(self, name) != value:
                result.restart_required[key] = _format_value(value)
        for name, value in parsed.store.items():
            key = _STORE_FIELD_KEYS.get(name, name)
            if getattr(self.store, name) == value:
                continue
            if key in STORE_RUNTIME_KEYS:
                store_changes[name] = value
                result.applied[key] = _format_value(value)
            else:
                result.restart_required[key] = _format_value(value)
        if parsed.special:
            self._check_special(parsed.special)       # an unsupported commitlog path is refused here too
            if parsed.special.get("haListenPort", str(self.ha_listen_port)) != str(self.ha_listen_port):
                result.ignored["haListenPort"] = parsed.special["haListenPort"]
        new_extra = dict(self.extra)
        for key, value in parsed.extra.items():
            if key in IGNORED_KEYS:
                result.ignored[key] = value
                new_extra[key] = value
            else:
                result.unknown[key] = value
        store = _build_store(self.store, store_changes) if store_changes else self.store
        candidate = dataclasses.replace(self, **broker_changes, store=store, extra=new_extra)
        if result.applied or new_extra != self.extra:
            now = int(time.time() * 1000) if now_ms is None else now_ms
            candidate.data_version = self.data_version.next_version(now)
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(candidate, f.name))
        result.store_changed = bool(store_changes)
        result.permission_changed = "brokerPermission" in result.applied
        if result.restart_required:
            log.info("config update: %s take effect only after a restart",
                     ", ".join(sorted(result.restart_required)))
        if result.unknown:
            log.warning("config update: unknown keys dropped: %s", ", ".join(sorted(result.unknown)))
        return result


@dataclass
class ConfigUpdate:
    """What ``BrokerConfig.update`` did; values are the new values as text, by RocketMQ key."""

    #: Applied now.
    applied: dict[str, str] = field(default_factory=dict)
    #: Valid but not applied: they take effect when the broker is restarted with them in its broker.conf.
    restart_required: dict[str, str] = field(default_factory=dict)
    #: RocketMQ keys without effect in rmq (IGNORED_KEYS); stored so GET_BROKER_CONFIG shows them.
    ignored: dict[str, str] = field(default_factory=dict)
    #: Keys nobody knows; dropped.
    unknown: dict[str, str] = field(default_factory=dict)
    #: A store key changed: hand ``store_config()`` to the running MessageStore (``store.config = ...``).
    store_changed: bool = False
    #: brokerPermission changed: bump the topic data version and re-register (RocketMQ does both).
    permission_changed: bool = False


#: RocketMQ keys accepted for compatibility that have no effect in rmq: thread pools and their queues (one
#: trio loop serves everything), Netty and transient-store-pool tuning, commercial/statistics switches,
#: filter servers, and path keys RocketMQ 4.9 itself ignores (storePathConsumeQueue, storePathIndex,
#: storeCheckpoint and abortFile appear in RocketMQ's sample files but no 4.9 class reads them).
IGNORED_KEYS: Final[frozenset[str]] = frozenset({
    "sendMessageThreadPoolNums", "putMessageFutureThreadPoolNums", "pullMessageThreadPoolNums",
    "processReplyMessageThreadPoolNums", "queryMessageThreadPoolNums", "adminBrokerThreadPoolNums",
    "clientManageThreadPoolNums", "consumerManageThreadPoolNums", "heartbeatThreadPoolNums",
    "endTransactionThreadPoolNums", "sendThreadPoolQueueCapacity", "putThreadPoolQueueCapacity",
    "pullThreadPoolQueueCapacity", "replyThreadPoolQueueCapacity", "queryThreadPoolQueueCapacity",
    "clientManagerThreadPoolQueueCapacity", "consumerManagerThreadPoolQueueCapacity",
    "heartbeatThreadPoolQueueCapacity", "endTransactionPoolQueueCapacity", "useReentrantLockWhenPutMessage",
    "transientStorePoolEnable", "transientStorePoolSize", "fastFailIfNoBufferInStorePool",
    "commitIntervalCommitLog", "commitCommitLogLeastPages", "commitCommitLogThoroughInterval",
    "flushCommitLogLeastPages", "flushConsumeQueueLeastPages", "flushCommitLogThoroughInterval",
    "flushConsumeQueueThoroughInterval", "flushLeastPagesWhenWarmMapedFile", "flushCommitLogTimed",
    "flushConsumerOffsetHistoryInterval", "deleteCommitLogFilesInterval", "deleteConsumeQueueFilesInterval",
    "destroyMapedFileIntervalForcibly", "redeleteHangedFileInterval", "cleanFileForciblyEnable",
    "putMsgIndexHightWater", "maxMsgsNumBatch", "messageIndexSafe", "osPageCacheBusyTimeOutMills",
    "duplicationEnable", "diskFallRecorded", "debugLockEnable", "enableConsumeQueueExt",
    "mappedFileSizeConsumeQueueExt", "bitMapLengthConsumeQueueExt", "messageStorePlugIn", "highSpeedMode",
    "commercialEnable", "commercialTimerCount", "commercialTransCount", "commercialBigCount",
    "commercialBaseCount", "transferMsgByHeap", "maxDelayTime", "filterServerNums", "enableCalcFilterBitMap",
    "expectConsumerNumUseFilter", "maxErrorRateOfBloomFilter", "filterDataCleanTimeSpan",
    "disableConsumeIfConsumerReadSlowly", "consumerFallbehindThreshold", "waitTimeMillsInHeartbeatQueue",
    "waitTimeMillsInTransactionQueue", "startAcceptSendRequestTimeStamp", "enableDetailStat",
    "autoDeleteUnusedStats", "isolateLogEnable", "enableScheduleMessageStats", "enableScheduleAsyncDeliver",
    "scheduleAsyncDeliverMaxPendingLimit", "scheduleAsyncDeliverMaxResendNum2Blocked", "enableLmq",
    "enableMultiDispatch", "maxLmqConsumeQueueNum", "isEnableBatchPush", "storePathConsumeQueue",
    "storePathIndex", "storeCheckpoint", "abortFile", "storePathDLedgerCommitLog", "readOnlyCommitLogStorePaths",
    "dLegerGroup", "dLegerPeers", "dLegerSelfId", "preferredLeaderId", "serverWorkerThreads",
    "serverCallbackExecutorThreads", "serverSelectorThreads", "serverOnewaySemaphoreValue",
    "serverAsyncSemaphoreValue", "serverSocketSndBufSize", "serverSocketRcvBufSize", "writeBufferHighWaterMark",
    "writeBufferLowWaterMark", "serverSocketBacklog", "serverPooledByteBufAllocatorEnable",
    "useEpollNativeSelector", "clientWorkerThreads", "clientCallbackExecutorThreads",
    "clientOnewaySemaphoreValue", "clientAsyncSemaphoreValue", "connectTimeoutMillis",
    "channelNotActiveInterval", "clientChannelMaxIdleTimeSeconds", "clientSocketSndBufSize",
    "clientSocketRcvBufSize", "clientPooledByteBufAllocatorEnable", "clientCloseSocketIfTimeout", "useTLS",
})

#: Old or alternative spellings → the RocketMQ 4.9 key. ``mapedFile...`` is the pre-4.2 spelling still found
#: in many broker.conf files (RocketMQ 4.9 silently ignores it; rmq reads it as meant).
KEY_ALIASES: Final[dict[str, str]] = {
    "mapedFileSizeCommitLog": "mappedFileSizeCommitLog",
    "mapedFileSizeConsumeQueue": "mappedFileSizeConsumeQueue",
    "warmMappedFileEnable": "warmMapedFileEnable",
}

#: Store keys that the running MessageStore reads on every use (retention pass, put), so an update applies
#: them by replacing ``store.config`` (ConfigUpdate.store_changed).
STORE_RUNTIME_KEYS: Final[frozenset[str]] = frozenset({
    "fileReservedTime", "deleteWhen", "diskMaxUsedSpaceRatio", "syncFlushTimeout", "maxMessageSize",
})

#: Keys handled specially: checked against the derived value instead of stored.
_SPECIAL_KEYS: Final = frozenset({"storePathCommitLog", "haListenPort"})

_FIELD_KEYS: dict[str, str] = {f.name: f.metadata["key"] for f in dataclasses.fields(BrokerConfig)
                               if f.metadata.get("key")}
_KEY_FIELDS: dict[str, str] = {key: name for name, key in _FIELD_KEYS.items()}
_RUNTIME_FIELDS: dict[str, bool] = {f.name: bool(f.metadata.get("runtime")) for f in dataclasses.fields(BrokerConfig)}
_STORE_FIELD_KEYS: dict[str, str] = {name: key for key, name in STORE_KEYS.items()}
_BROKER_TYPES = typing.get_type_hints(BrokerConfig)
_STORE_TYPES = typing.get_type_hints(StoreConfig)
#: StoreConfig fields without a RocketMQ key that may still be set by attribute name.
_STORE_ATTR_ONLY: Final = frozenset({"disk_space_clean_forcibly_ratio", "delete_files_batch_max"})


def broker_keys() -> dict[str, str]:
    """Every RocketMQ key this config reads → the attribute it sets (``store.<name>`` for store keys)."""
    keys = dict(_KEY_FIELDS)
    keys.update({key: f"store.{name}" for key, name in STORE_KEYS.items()})
    return keys


# -- parsing --------------------------------------------------------------------------------------------

_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")


def _parse_bool(key: str, text: str) -> bool:
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ConfigError(key, f"must be true or false, got {text!r}")


def _parse_int(key: str, text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise ConfigError(key, f"must be a whole number, got {text!r}")
    value = int(text)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise ConfigError(key, f"is out of range, got {text!r}")
    return value


def _parse_float(key: str, text: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise ConfigError(key, f"must be a number, got {text!r}")
    return float(text)


def _parse_role(key: str, text: str) -> BrokerRole:
    try:
        return BrokerRole(text.strip().upper())
    except ValueError:
        raise ConfigError(key, f"must be ASYNC_MASTER, SYNC_MASTER or SLAVE, got {text!r}") from None


def _parse_flush(key: str, text: str) -> FlushDiskType:
    try:
        return FlushDiskType(text.strip().upper())
    except ValueError:
        raise ConfigError(key, f"must be ASYNC_FLUSH or SYNC_FLUSH, got {text!r}") from None


def _coerce(key: str, kind: Any, text: str) -> Any:
    if kind is bool:
        return _parse_bool(key, text)
    if kind is int:
        return _parse_int(key, text)
    if kind is float:
        return _parse_float(key, text)
    if kind is BrokerRole:
        return _parse_role(key, text)
    if kind is FlushDiskType:
        return _parse_flush(key, text)
    if kind == (str | None):
        return text or None
    if kind is str:
        return text
    raise ConfigError(key, f"cannot be set from a configuration file (type {kind})")


def _text(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value).strip()


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _text(value)


@dataclass
class _Parsed:
    broker: dict[str, Any] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)
    special: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


def _parse_all(props: Mapping[str, Any], *, warn: bool = True) -> _Parsed:
    """Sort properties into broker fields, store fields, special keys and kept extras; coerce values."""
    out = _Parsed()
    seen: dict[str, str] = {}                       # canonical key → the spelling that set it
    for raw_key, raw_value in props.items():
        key = str(raw_key).strip()
        text = _text(raw_value)
        canonical = KEY_ALIASES.get(key, key)
        canonical = _FIELD_KEYS.get(canonical, _STORE_FIELD_KEYS.get(canonical, canonical))   # attribute names
        if canonical in seen and seen[canonical] != key:
            log.warning("config: %s and %s both set %s; the later one (%s=%s) wins",
                        seen[canonical], key, canonical, key, text)
        seen[canonical] = key
        if canonical in _KEY_FIELDS:
            name = _KEY_FIELDS[canonical]
            out.broker[name] = _coerce(canonical, _BROKER_TYPES[name], text)
        elif canonical in STORE_KEYS:
            name = STORE_KEYS[canonical]
            value = _coerce(canonical, _STORE_TYPES[name], text)
            if name == "store_path_root_dir":
                if not value:
                    raise ConfigError(canonical, "must not be empty")
                value = os.path.expanduser(value)
            out.store[name] = value
        elif canonical in _STORE_ATTR_ONLY:
            out.store[canonical] = _coerce(canonical, _STORE_TYPES[canonical], text)
        elif canonical == "store_host":
            raise ConfigError(key, "the store host is brokerIP1:listenPort; set those instead")
        elif canonical in _SPECIAL_KEYS:
            out.special[canonical] = text
        elif canonical in IGNORED_KEYS:
            log.info("config: %s=%s has no effect in rmq (kept)", canonical, text)
            out.extra[canonical] = text
        else:
            if warn:
                log.warning("config: unknown key %s=%s kept but not used", key, text)
            out.extra[key] = text
    return out


def _build_store(base: StoreConfig, changes: Mapping[str, Any]) -> StoreConfig:
    """``base`` with ``changes``, StoreConfig's own validation reported under the RocketMQ key.

    Changes are applied one at a time (StoreConfig's checks are per field), so a refusal names its key.
    """
    store = base
    for name, value in changes.items():
        try:
            store = store.replace(**{name: value})
        except (ValueError, TypeError) as exc:
            raise ConfigError(_STORE_FIELD_KEYS.get(name, name), f"{exc}, got {value!r}") from None
    return store


# -- addresses ------------------------------------------------------------------------------------------


def _split_addresses(text: str | None) -> list[str]:
    if not text:
        return []
    return [part.strip() for part in text.split(";") if part.strip()]


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        return None
    return host.strip("[]"), int(port)


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
