"""BrokerConfig: RocketMQ 4.9 defaults, broker.conf parsing, store delegation, runtime updates."""
from __future__ import annotations

import logging
import os

import pytest

from rmq_broker.config import (IGNORED_KEYS, BrokerConfig, BrokerRole, ConfigError, broker_keys, local_address)
from rmq_common.properties_file import parse_properties
from rmq_store import FlushDiskType, StoreConfig

# A broker.conf as RocketMQ's distribution ships it (conf/2m-2s-sync/broker-a.properties), plus keys often
# added by hand, including the pre-4.2 spelling of the commitlog size and sample keys RocketMQ 4.9 ignores.
BROKER_CONF = """\
# Licensed to the Apache Software Foundation (ASF) ...
brokerClusterName=DefaultCluster
brokerName=broker-a
brokerId=0
deleteWhen=04
fileReservedTime=48
brokerRole=SYNC_MASTER
flushDiskType=SYNC_FLUSH
namesrvAddr = 10.0.0.1:9876;10.0.0.2:9876
listenPort=10921
brokerIP1=10.0.0.5
storePathRootDir={root}
storePathCommitLog={root}/commitlog
storePathConsumeQueue={root}/consumequeue
mapedFileSizeCommitLog=268435456
maxMessageSize=65536
autoCreateTopicEnable=false
autoCreateSubscriptionGroup=false
sendMessageThreadPoolNums=128
transientStorePoolEnable=false
! a Java-style comment
slaveReadEnable : true
"""


@pytest.fixture
def conf(tmp_path) -> dict[str, str]:
    return parse_properties(BROKER_CONF.format(root=tmp_path / "store"))


# -- defaults -------------------------------------------------------------------------------------------


def test_defaults_are_rocketmq_49s(monkeypatch) -> None:
    monkeypatch.delenv("NAMESRV_ADDR", raising=False)
    cfg = BrokerConfig(broker_ip1="10.1.2.3")
    assert cfg.broker_cluster_name == "DefaultCluster"
    assert cfg.broker_name == "broker-a"
    assert cfg.broker_id == 0
    assert cfg.broker_role is BrokerRole.ASYNC_MASTER
    assert cfg.broker_ip2 == "10.1.2.3"                   # defaults to brokerIP1
    assert cfg.namesrv_addr is None
    assert cfg.listen_port == 10911 and cfg.vip_listen_port == 10909 and cfg.ha_listen_port == 10912
    assert cfg.broker_permission == 6
    assert cfg.auto_create_topic_enable and cfg.auto_create_subscription_group
    assert cfg.default_topic_queue_nums == 8
    assert cfg.cluster_topic_enable and cfg.broker_topic_enable and not cfg.trace_topic_enable
    assert cfg.register_name_server_period_ms == 30_000
    assert cfg.long_polling_enable and cfg.short_polling_time_ms == 1000
    assert not cfg.enable_property_filter and not cfg.slave_read_enable
    assert cfg.flush_consumer_offset_interval_ms == 5000
    assert cfg.max_pull_msg_nums == 32
    assert cfg.max_transfer_bytes_on_message_in_memory == 256 * 1024
    assert cfg.access_message_in_memory_max_ratio_percent == 40
    assert cfg.transaction_timeout_ms == 6000 and cfg.transaction_check_max == 15
    assert cfg.region_id == "DefaultRegion" and cfg.trace_on
    store = cfg.store
    assert store.store_path_root_dir == os.path.expanduser("~/store")
    assert store.flush_disk_type is FlushDiskType.ASYNC_FLUSH
    assert store.file_reserved_time_hours == 72 and store.delete_when == "04"
    assert store.max_message_size == 4 * 1024 * 1024
    assert store.mapped_file_size_commitlog == 1 << 30
    assert len(cfg.delay_levels_ms) == 18


def test_namesrv_addr_defaults_to_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("NAMESRV_ADDR", "10.9.9.9:9876;10.9.9.8:9876")
    cfg = BrokerConfig(broker_ip1="10.1.2.3")
    assert cfg.namesrv_addr_list == ["10.9.9.9:9876", "10.9.9.8:9876"]
    assert BrokerConfig.from_properties({"namesrvAddr": "1.2.3.4:9876", "brokerIP1": "10.1.2.3"}).namesrv_addr \
        == "1.2.3.4:9876"                                  # the file wins over the environment


def test_local_address_is_an_ip() -> None:
    import ipaddress
    ipaddress.ip_address(local_address())
    assert BrokerConfig().broker_ip1 == local_address()


def test_derived_addresses_and_period_clamp() -> None:
    cfg = BrokerConfig(broker_ip1="10.0.0.5", broker_ip2="10.0.1.5", listen_port=20911)
    assert cfg.broker_addr == "10.0.0.5:20911"
    assert cfg.ha_server_addr == "10.0.1.5:20912"
    assert BrokerConfig(broker_ip1="::1").broker_addr == "[::1]:10911"
    assert cfg.replace(register_name_server_period_ms=1000).register_period_ms == 10_000
    assert cfg.replace(register_name_server_period_ms=600_000).register_period_ms == 60_000
    assert BrokerConfig(broker_ip1="10.0.0.5", listen_port=0).vip_listen_port == 0     # ephemeral ports in tests


# -- parsing broker.conf ----------------------------------------------------------------------------------


def test_rocketmq_broker_conf(conf, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, "rmq_broker.config"):
        cfg = BrokerConfig.from_properties(conf)
    assert cfg.broker_role is BrokerRole.SYNC_MASTER
    assert cfg.namesrv_addr_list == ["10.0.0.1:9876", "10.0.0.2:9876"]
    assert cfg.listen_port == 10921 and cfg.ha_listen_port == 10922
    assert cfg.broker_ip1 == "10.0.0.5"
    assert not cfg.auto_create_topic_enable and not cfg.auto_create_subscription_group
    assert cfg.slave_read_enable
    store = cfg.store
    assert store.store_path_root_dir == str(tmp_path / "store")
    assert store.flush_disk_type is FlushDiskType.SYNC_FLUSH
    assert store.file_reserved_time_hours == 48
    assert store.mapped_file_size_commitlog == 268435456            # the old "maped" spelling is understood
    assert store.max_message_size == 65536
    assert cfg.config_dir == str(tmp_path / "store" / "config")
    # Accepted-and-ignored keys are kept (and not warned about); nothing here is unknown.
    assert cfg.extra == {"storePathConsumeQueue": str(tmp_path / "store" / "consumequeue"),
                         "sendMessageThreadPoolNums": "128", "transientStorePoolEnable": "false"}
    assert cfg.unknown_keys == []
    assert not [r for r in caplog.records if "unknown" in r.getMessage()]


def test_load_reads_a_file(tmp_path) -> None:
    path = tmp_path / "broker.conf"
    path.write_text(BROKER_CONF.format(root=tmp_path / "s"))
    assert BrokerConfig.load(path).broker_role is BrokerRole.SYNC_MASTER


def test_attribute_names_are_accepted_too(tmp_path) -> None:
    cfg = BrokerConfig.from_properties({"broker_name": "b-1", "listen_port": "12000", "brokerIP1": "10.0.0.5",
                                        "file_reserved_time_hours": "0.5", "store_path_root_dir": str(tmp_path),
                                        "delete_files_batch_max": "3"})
    assert cfg.broker_name == "b-1" and cfg.listen_port == 12000
    assert cfg.store.file_reserved_time_hours == 0.5 and cfg.store.delete_files_batch_max == 3


def test_unknown_keys_are_kept_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, "rmq_broker.config"):
        cfg = BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", "autoCreateTopicEnabel": "true"})
    assert cfg.extra == {"autoCreateTopicEnabel": "true"}
    assert cfg.unknown_keys == ["autoCreateTopicEnabel"]
    assert any("autoCreateTopicEnabel" in r.getMessage() for r in caplog.records)
    assert cfg.to_properties()["autoCreateTopicEnabel"] == "true"          # echoed by GET_BROKER_CONFIG


def test_ignored_keys_cover_common_tuning() -> None:
    for key in ("sendMessageThreadPoolNums", "pullMessageThreadPoolNums", "transientStorePoolEnable",
                "serverWorkerThreads", "useReentrantLockWhenPutMessage", "storePathIndex"):
        assert key in IGNORED_KEYS
    assert not IGNORED_KEYS & set(broker_keys())                            # nothing is both read and ignored


@pytest.mark.parametrize("key, value, expect", [
    ("autoCreateTopicEnable", "yes", "autoCreateTopicEnable: must be true or false"),
    ("listenPort", "10911x", "listenPort: must be a whole number"),
    ("listenPort", "70000", "listenPort: must be 3-65534"),
    ("defaultTopicQueueNums", "0", "defaultTopicQueueNums: must be positive"),
    ("brokerRole", "MASTER", "brokerRole: must be ASYNC_MASTER, SYNC_MASTER or SLAVE"),
    ("flushDiskType", "SOMETIMES", "flushDiskType: must be ASYNC_FLUSH or SYNC_FLUSH"),
    ("brokerIP1", "broker.example.com", "brokerIP1: must be an IPv4 or IPv6 address"),
    ("namesrvAddr", "10.0.0.1;10.0.0.2:9876", "namesrvAddr: entry '10.0.0.1' is not host:port"),
    ("brokerPermission", "16", "brokerPermission: perm 16 is not a permission"),
    ("brokerName", "broker.a", "brokerName: is also the name of a topic"),
    ("brokerClusterName", "", "brokerClusterName: is also the name of a topic"),
    ("brokerClusterName", "C" * 120, "brokerClusterName: is too long for the cluster's reply topic"),
    ("accessMessageInMemoryMaxRatio", "120", "accessMessageInMemoryMaxRatio: is a percentage"),
    ("aclEnable", "true", "aclEnable: ACL is not supported"),
    ("enableDLegerCommitLog", "true", "enableDLegerCommitLog: the DLedger commitlog is not supported"),
    ("fileReservedTime", "three days", "fileReservedTime: must be a number"),
    ("mappedFileSizeCommitLog", "100", "mappedFileSizeCommitLog: mapped_file_size_commitlog must be at least"),
    ("mapedFileSizeConsumeQueue", "21", "mappedFileSizeConsumeQueue: mapped_file_size_consume_queue must be a"),
    ("messageDelayLevel", "1s 5x", "messageDelayLevel: bad delay level 2 '5x'"),
    ("diskMaxUsedSpaceRatio", "0", "diskMaxUsedSpaceRatio: disk_max_used_space_ratio is a percentage"),
    ("store_host", "1.2.3.4", "store_host: the store host is brokerIP1:listenPort"),
    ("rmqDedupWindowMsDefault", "-1", "rmqDedupWindowMsDefault: must be 0 (off) to 604800000 ms"),
    ("rmqDedupMaxEntries", "0", "rmqDedupMaxEntries: must be 1-100000000"),
])
def test_bad_values_are_refused_naming_the_key(key, value, expect) -> None:
    with pytest.raises(ConfigError) as info:
        BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", key: value})
    assert str(info.value).startswith(expect), str(info.value)
    assert info.value.key in (key, "mappedFileSizeConsumeQueue")


def test_slave_needs_a_positive_broker_id_and_a_master_gets_zero(caplog) -> None:
    with pytest.raises(ConfigError, match="brokerId: a SLAVE's brokerId must be > 0"):
        BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", "brokerRole": "SLAVE"})
    slave = BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", "brokerRole": "slave", "brokerId": "2"})
    assert slave.broker_role is BrokerRole.SLAVE and slave.broker_id == 2 and not slave.is_master
    with caplog.at_level(logging.WARNING, "rmq_broker.config"):
        master = BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", "brokerId": "3"})
    assert master.broker_id == 0                                           # as BrokerStartup forces it
    assert any("brokerId=3 ignored" in r.getMessage() for r in caplog.records)


def test_commitlog_elsewhere_is_refused_and_ha_port_is_derived(tmp_path, caplog) -> None:
    root = str(tmp_path / "s")
    ok = BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", "storePathRootDir": root,
                                       "storePathCommitLog": root + "/commitlog/"})
    assert ok.store.store_path_root_dir == root
    with pytest.raises(ConfigError, match="storePathCommitLog: rmq keeps the commitlog"):
        BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", "storePathRootDir": root,
                                      "storePathCommitLog": "/data2/commitlog"})
    with caplog.at_level(logging.WARNING, "rmq_broker.config"):
        cfg = BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", "listenPort": "10911", "haListenPort": "9999"})
    assert cfg.ha_listen_port == 10912
    assert any("haListenPort=9999 ignored" in r.getMessage() for r in caplog.records)


def test_tilde_in_store_path_is_expanded() -> None:
    cfg = BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", "storePathRootDir": "~/rmq-store"})
    assert cfg.store.store_path_root_dir == os.path.expanduser("~/rmq-store")


# -- the store ------------------------------------------------------------------------------------------


def test_store_config_delegation(conf) -> None:
    cfg = BrokerConfig.from_properties(conf)
    store = cfg.store_config()
    assert isinstance(store, StoreConfig)
    assert store.store_host == ("10.0.0.5", 10921)                          # STOREHOST = brokerIP1:listenPort
    assert store.flush_disk_type is FlushDiskType.SYNC_FLUSH
    assert store.max_message_size == 65536 and store.file_reserved_time_hours == 48
    assert store == cfg.store.replace(store_host=("10.0.0.5", 10921))


def test_every_store_key_is_read_through_store_config(tmp_path) -> None:
    from rmq_store.config import ROCKETMQ_KEYS
    values = {"storePathRootDir": str(tmp_path), "mappedFileSizeCommitLog": "8192",
              "mappedFileSizeConsumeQueue": "2000", "flushDiskType": "SYNC_FLUSH", "flushIntervalCommitLog": "7",
              "flushIntervalConsumeQueue": "8", "syncFlushTimeout": "9", "maxMessageSize": "10",
              "maxHashSlotNum": "11", "maxIndexNum": "12", "messageIndexEnable": "false",
              "fileReservedTime": "13", "deleteWhen": "01;13", "diskMaxUsedSpaceRatio": "14",
              "checkCRCOnRecover": "false", "warmMapedFileEnable": "false", "messageDelayLevel": "1s 2m",
              "cleanResourceInterval": "15"}
    assert set(values) == set(ROCKETMQ_KEYS)
    cfg = BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", **values})
    props = cfg.to_properties()
    for key, value in values.items():
        assert props[key] == value, key
    assert cfg.store.delete_hours == {1, 13}


# -- writing properties ---------------------------------------------------------------------------------


def test_to_properties_round_trip(conf) -> None:
    cfg = BrokerConfig.from_properties(conf)
    props = cfg.to_properties()
    assert props["brokerRole"] == "SYNC_MASTER" and props["flushDiskType"] == "SYNC_FLUSH"
    assert props["fileReservedTime"] == "48" and props["autoCreateTopicEnable"] == "false"
    assert props["haListenPort"] == "10922"
    assert props["mappedFileSizeCommitLog"] == "268435456" and "mapedFileSizeCommitLog" not in props
    assert "namesrvAddr" in props and "rocketmqHome" not in props or os.environ.get("ROCKETMQ_HOME")
    assert BrokerConfig.from_properties(props) == cfg
    text = cfg.to_properties_text()
    assert "brokerName=broker-a\n" in text
    assert BrokerConfig.from_properties(parse_properties(text)) == cfg


# -- runtime updates --------------------------------------------------------------------------------------


def test_update_applies_runtime_keys_and_reports_the_rest(conf) -> None:
    cfg = BrokerConfig.from_properties(conf)
    before = cfg.data_version
    result = cfg.update({"autoCreateTopicEnable": "true", "fileReservedTime": "24", "listenPort": "10931",
                         "brokerName": "broker-b", "pullMessageThreadPoolNums": "8", "noSuchKey": "1",
                         "slaveReadEnable": "true"}, now_ms=before.timestamp_ms + 5)
    assert result.applied == {"autoCreateTopicEnable": "true", "fileReservedTime": "24"}
    assert result.restart_required == {"listenPort": "10931", "brokerName": "broker-b"}
    assert result.ignored == {"pullMessageThreadPoolNums": "8"}
    assert result.unknown == {"noSuchKey": "1"}
    assert result.store_changed and not result.permission_changed
    assert cfg.auto_create_topic_enable and cfg.store.file_reserved_time_hours == 24
    assert cfg.store_config().file_reserved_time_hours == 24
    assert cfg.listen_port == 10921 and cfg.broker_name == "broker-a"      # not applied: need a restart
    assert cfg.extra["pullMessageThreadPoolNums"] == "8" and "noSuchKey" not in cfg.extra
    assert cfg.data_version == before.next_version(before.timestamp_ms + 5)


def test_update_is_all_or_nothing(conf) -> None:
    cfg = BrokerConfig.from_properties(conf)
    snapshot = cfg.to_properties()
    with pytest.raises(ConfigError, match="brokerPermission"):
        cfg.update({"autoCreateTopicEnable": "true", "brokerPermission": "99"})
    with pytest.raises(ConfigError, match="listenPort"):
        cfg.update({"autoCreateTopicEnable": "true", "listenPort": "x"})   # restart keys are validated too
    assert cfg.to_properties() == snapshot


def test_update_of_broker_permission_is_flagged(conf) -> None:
    cfg = BrokerConfig.from_properties(conf)
    result = cfg.update({"brokerPermission": "4"})
    assert result.permission_changed and cfg.broker_permission == 4
    same = cfg.update({"brokerPermission": "4", "storePathCommitLog": cfg.to_properties()["storePathCommitLog"],
                       "haListenPort": str(cfg.ha_listen_port)})
    assert not same.applied and not same.restart_required and not same.ignored   # unchanged values are no news


def test_update_of_derived_keys(conf) -> None:
    cfg = BrokerConfig.from_properties(conf)
    assert cfg.update({"haListenPort": "1234"}).ignored == {"haListenPort": "1234"}      # always listenPort+1
    with pytest.raises(ConfigError, match="storePathCommitLog"):
        cfg.update({"storePathCommitLog": "/elsewhere"})
