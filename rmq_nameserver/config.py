"""NameServer configuration: RocketMQ's NamesrvConfig and NettyServerConfig keys that rmq uses, with units in names.

A RocketMQ ``namesrv.properties`` (``mqnamesrv -c FILE``) can be given as is: ``from_properties`` maps the
RocketMQ key names below, accepts the RocketMQ keys that have no meaning here (thread pools, Netty
buffers) without effect, and keeps unknown keys (with a warning) so that GET_NAMESRV_CONFIG and the
persisted file still show them, as RocketMQ's ``Configuration`` "remembers all configs to prevent
discard".

Paths: RocketMQ keeps the KV store in ``~/namesrv/kvConfig.json``. rmq keeps everything of one
installation under one directory, ``rmq_home`` (``$RMQ_HOME``, default ``~/rmq``): the KV store
defaults to ``<rmq_home>/namesrv/kvConfig.json`` and the daemon's log to ``<rmq_home>/logs/namesrv.log``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rmq_common.properties_file import format_properties, load_properties

__all__ = [
    "NamesrvConfig", "ConfigError", "ROCKETMQ_KEYS", "IGNORED_KEYS", "PATH_KEYS", "RESTART_KEYS",
    "default_rmq_home",
]

log = logging.getLogger("rmq.nameserver")

#: RocketMQ key (namesrv.properties) → our field. ``rmqHome`` and ``brokerChannelExpiredTime`` are rmq's own
#: (RocketMQ 4.x hard-codes the expiry at 120 s); ``bindAddress`` is NettyServerConfig's 5.x name.
ROCKETMQ_KEYS: dict[str, str] = {
    "rmqHome": "rmq_home",
    "kvConfigPath": "kv_config_path",
    "configStorePath": "config_store_path",
    "orderMessageEnable": "order_message_enable",
    "returnOrderTopicConfigToBroker": "return_order_topic_config_to_broker",
    "scanNotActiveBrokerInterval": "scan_not_active_broker_interval_ms",
    "brokerChannelExpiredTime": "broker_channel_expired_time_ms",
    "listenPort": "listen_port",
    "bindAddress": "listen_host",
    "serverChannelMaxIdleTimeSeconds": "server_channel_max_idle_time_seconds",
}

#: RocketMQ keys accepted for compatibility that change nothing in rmq: one trio loop replaces the thread
#: pools, the kernel's defaults replace Netty's buffer settings, clusterTest mode is not implemented.
IGNORED_KEYS: frozenset[str] = frozenset({
    "rocketmqHome", "productEnvName", "clusterTest", "serverWorkerThreads", "serverCallbackExecutorThreads",
    "serverSelectorThreads", "serverOnewaySemaphoreValue", "serverAsyncSemaphoreValue", "serverSocketSndBufSize",
    "serverSocketRcvBufSize", "writeBufferHighWaterMark", "writeBufferLowWaterMark", "serverSocketBacklog",
    "serverPooledByteBufAllocatorEnable", "useEpollNativeSelector", "clientRequestThreadPoolNums",
    "defaultThreadPoolNums", "clientRequestThreadPoolQueueCapacity", "defaultThreadPoolQueueCapacity",
    "unRegisterBrokerQueueCapacity", "supportActingMaster", "enableAllTopicList", "enableTopicList",
    "notifyMinBrokerIdChanged", "notifyMinBrokerIdChangeTimeoutMillis", "enableControllerInNamesrv",
    "needWaitForService", "waitSecondsForService", "deleteTopicWithBrokerRegistration", "configBlackList",
})

#: Keys UPDATE_NAMESRV_CONFIG refuses with NO_PERMISSION (RocketMQ: kvConfigPath, configStorePath and, in 5.x,
#: configBlackList); rmqHome too, since it moves the default KV path.
PATH_KEYS: frozenset[str] = frozenset({"kvConfigPath", "configStorePath", "configBlackList", "rmqHome"})

#: Keys an update stores (and persists) but that only take effect when the server is restarted: the
#: listening socket and the per-connection idle timer are fixed when the server starts.
RESTART_KEYS: frozenset[str] = frozenset({"listenPort", "bindAddress", "serverChannelMaxIdleTimeSeconds"})

_FIELD_TO_KEY = {name: key for key, name in ROCKETMQ_KEYS.items()}


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the RocketMQ key."""


def default_rmq_home() -> str:
    """``$RMQ_HOME``, else ``~/rmq`` (expanded)."""
    return os.path.expanduser(os.environ.get("RMQ_HOME") or "~/rmq")


@dataclass
class NamesrvConfig:
    """Everything the nameserver can be told. Defaults are RocketMQ 4.9's unless noted."""

    #: Root of rmq's files (KV store, logs). rmq only; RocketMQ's ``rocketmqHome`` is the install directory.
    rmq_home: str = field(default_factory=default_rmq_home)
    #: The KV store file; None = ``<rmq_home>/namesrv/kvConfig.json`` (RocketMQ: ``~/namesrv/kvConfig.json``).
    kv_config_path: str | None = None
    #: Where UPDATE_NAMESRV_CONFIG persists the configuration; None = not persisted. RocketMQ writes
    #: ``~/namesrv/namesrv.properties`` (or the ``-c`` file) and never reads the former back.
    config_store_path: str | None = None
    #: Add ``orderTopicConf`` (KV namespace ORDER_TOPIC_CONFIG) to routes.
    order_message_enable: bool = False
    #: Answer REGISTER_BROKER with the ORDER_TOPIC_CONFIG table (RocketMQ 5.x key; 4.x always does).
    return_order_topic_config_to_broker: bool = True
    #: Period of the liveness scan (RocketMQ 4.x: fixed 10 s; the 5.x key defaults to 5 s).
    scan_not_active_broker_interval_ms: int = 10_000
    #: Delay before the first liveness scan (RocketMQ: 5 s; no key).
    scan_not_active_broker_first_delay_ms: int = 5_000
    #: A broker that has not registered for longer than this is dropped (BROKER_CHANNEL_EXPIRED_TIME).
    broker_channel_expired_time_ms: int = 120_000
    #: TCP port; 0 = any free port (the bound port is in NameServer.port).
    listen_port: int = 9876
    #: Address to listen on (RocketMQ 5.x ``bindAddress``; 4.x always listens on every address).
    listen_host: str = "0.0.0.0"
    #: Close a connection that sent nothing for this long; 0 = never (Netty's IdleStateHandler convention).
    server_channel_max_idle_time_seconds: int = 120
    #: Keys that are not ours, kept verbatim for GET_NAMESRV_CONFIG and the persisted file.
    extra_properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{_FIELD_TO_KEY.get(name, name)} ({name}) {why}, got {getattr(self, name)!r}")

        if not (0 <= self.listen_port <= 65535):
            raise bad("listen_port", "must be a TCP port 0-65535")
        for name in ("scan_not_active_broker_interval_ms", "broker_channel_expired_time_ms"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be positive")
        for name in ("scan_not_active_broker_first_delay_ms", "server_channel_max_idle_time_seconds"):
            if getattr(self, name) < 0:
                raise bad(name, "must not be negative")
        if not self.listen_host:
            raise bad("listen_host", "must not be empty")
        if not self.rmq_home:
            raise bad("rmq_home", "must not be empty")

    # -- derived ------------------------------------------------------------------------------------

    @property
    def kv_config_file(self) -> str:
        """The KV store path in effect, ``~`` expanded."""
        path = self.kv_config_path or os.path.join(self.rmq_home, "namesrv", "kvConfig.json")
        return os.path.expanduser(path)

    @property
    def config_store_file(self) -> str | None:
        """Where updates are persisted, ``~`` expanded; None when they are not."""
        return os.path.expanduser(self.config_store_path) if self.config_store_path else None

    @property
    def idle_timeout_s(self) -> float | None:
        """The RemotingServer idle timeout: None when disabled (0)."""
        return float(self.server_channel_max_idle_time_seconds) or None

    def replace(self, **changes: Any) -> NamesrvConfig:
        return dataclasses.replace(self, **changes)

    # -- RocketMQ properties ------------------------------------------------------------------------

    @classmethod
    def from_properties(cls, props: Mapping[str, str], **overrides: Any) -> NamesrvConfig:
        """Build from RocketMQ key names; ``overrides`` use field names and win over ``props``.

        Unknown keys are kept in ``extra_properties`` and logged as warnings, RocketMQ keys without an
        effect here (IGNORED_KEYS) are kept and logged at INFO; a bad value raises ConfigError.
        """
        kwargs, extra = _convert_all(props)
        kwargs["extra_properties"] = extra
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **overrides: Any) -> NamesrvConfig:
        """``from_properties`` of a properties file (PropertiesFileError if it cannot be read)."""
        return cls.from_properties(load_properties(path), **overrides)

    def to_properties(self) -> dict[str, str]:
        """Every setting under its RocketMQ key (effective paths), then the kept extra keys."""
        out: dict[str, str] = {}
        for key, name in ROCKETMQ_KEYS.items():
            if name == "kv_config_path":
                value: Any = self.kv_config_file
            else:
                value = getattr(self, name)
            if value is True or value is False:
                out[key] = "true" if value else "false"
            else:
                out[key] = "" if value is None else str(value)
        for key, value in self.extra_properties.items():
            out.setdefault(key, value)
        return out

    def to_properties_text(self) -> str:
        """``to_properties`` as ``key=value`` lines (GET_NAMESRV_CONFIG's body, ``rmq nameserver -p``)."""
        return format_properties(self.to_properties())

    def update_from_properties(self, props: Mapping[str, str]) -> list[str]:
        """Apply an update in place, all or nothing; returns the RocketMQ keys whose value changed.

        Raises ConfigError for a path key (PATH_KEYS) or a bad value, leaving the config unchanged.
        Components read the config when they use a value, so live keys take effect at once; RESTART_KEYS
        are stored and reported but apply at the next start.
        """
        forbidden = sorted(k for k in props if k in PATH_KEYS)
        if forbidden:
            raise ConfigError(f"Can not update config path: {', '.join(forbidden)}")
        kwargs, extra = _convert_all(props)
        candidate = dataclasses.replace(self, **kwargs, extra_properties={**self.extra_properties, **extra})
        before = self.to_properties()
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(candidate, f.name))
        after = self.to_properties()
        return [key for key in after if before.get(key) != after[key]]


def _parse_bool(key: str, value: str) -> bool:
    text = value.strip().lower()
    if text == "true":
        return True
    if text == "false":
        return False
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _parse_int(key: str, value: str) -> int:
    try:
        return int(value.strip().replace("_", ""))
    except ValueError:
        raise ConfigError(f"{key} must be an integer, got {value!r}") from None


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(NamesrvConfig)}


def _convert(key: str, value: str) -> Any:
    name = ROCKETMQ_KEYS[key]
    kind = _FIELD_TYPES[name]
    if kind in ("bool", bool):
        return _parse_bool(key, value)
    if kind in ("int", int):
        return _parse_int(key, value)
    if kind == "str | None":
        return value or None
    return value


def _convert_all(props: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split RocketMQ properties into field values and kept extra keys, reporting the latter."""
    kwargs: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in props.items():
        value = str(value)
        if key in ROCKETMQ_KEYS:
            kwargs[ROCKETMQ_KEYS[key]] = _convert(key, value)
        elif key in IGNORED_KEYS:
            log.info("config: %s=%s has no effect in rmq (kept)", key, value)
            extra[key] = value
        else:
            log.warning("config: unknown key %s=%s kept but not used", key, value)
            extra[key] = value
    return kwargs, extra
