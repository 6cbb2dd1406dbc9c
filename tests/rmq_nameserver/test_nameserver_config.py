"""NamesrvConfig (RocketMQ keys, unknown keys, validation, live updates) and the persisted KV store."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from rmq_common.properties_file import parse_properties
from rmq_nameserver import ConfigError, KVConfigError, KVConfigManager, NamesrvConfig


def test_defaults_are_rocketmqs_with_rmq_home(monkeypatch, tmp_path):
    monkeypatch.setenv("RMQ_HOME", str(tmp_path / "home"))
    cfg = NamesrvConfig()
    assert cfg.listen_port == 9876 and cfg.listen_host == "0.0.0.0"
    assert cfg.scan_not_active_broker_interval_ms == 10_000 and cfg.scan_not_active_broker_first_delay_ms == 5_000
    assert cfg.broker_channel_expired_time_ms == 120_000 and cfg.server_channel_max_idle_time_seconds == 120
    assert cfg.order_message_enable is False and cfg.return_order_topic_config_to_broker is True
    assert cfg.kv_config_file == str(tmp_path / "home" / "namesrv" / "kvConfig.json")
    assert cfg.config_store_file is None and cfg.idle_timeout_s == 120.0
    monkeypatch.delenv("RMQ_HOME")
    assert NamesrvConfig().rmq_home == os.path.expanduser("~/rmq")


def test_from_properties_maps_rocketmq_keys_and_keeps_unknown_ones(caplog):
    props = {"listenPort": "10000", "kvConfigPath": "~/kv.json", "orderMessageEnable": "TRUE",
             "scanNotActiveBrokerInterval": "5000", "serverChannelMaxIdleTimeSeconds": "0", "bindAddress": "127.0.0.1",
             "serverWorkerThreads": "16", "myOwnKey": "x"}
    with caplog.at_level(logging.INFO, logger="rmq.nameserver"):
        cfg = NamesrvConfig.from_properties(props, listen_port=10001)
    assert cfg.listen_port == 10001                   # overrides win
    assert cfg.kv_config_file == os.path.expanduser("~/kv.json")
    assert cfg.order_message_enable is True and cfg.scan_not_active_broker_interval_ms == 5000
    assert cfg.idle_timeout_s is None and cfg.listen_host == "127.0.0.1"
    assert cfg.extra_properties == {"serverWorkerThreads": "16", "myOwnKey": "x"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["config: unknown key myOwnKey=x kept but not used"]
    out = cfg.to_properties()
    assert out["listenPort"] == "10001" and out["orderMessageEnable"] == "true" and out["myOwnKey"] == "x"
    assert parse_properties(cfg.to_properties_text()) == out


@pytest.mark.parametrize("props, message", [
    ({"listenPort": "nine"}, "listenPort must be an integer"),
    ({"listenPort": "70000"}, "listenPort"),
    ({"orderMessageEnable": "yes"}, "orderMessageEnable must be true or false"),
    ({"scanNotActiveBrokerInterval": "0"}, "scanNotActiveBrokerInterval"),
    ({"brokerChannelExpiredTime": "-1"}, "brokerChannelExpiredTime"),
    ({"serverChannelMaxIdleTimeSeconds": "-5"}, "serverChannelMaxIdleTimeSeconds"),
])
def test_bad_values_name_the_key(props, message):
    with pytest.raises(ConfigError, match=message):
        NamesrvConfig.from_properties(props)


def test_update_is_all_or_nothing_and_refuses_paths(tmp_path):
    cfg = NamesrvConfig(rmq_home=str(tmp_path))
    assert cfg.update_from_properties({"orderMessageEnable": "true", "listenPort": "9999"}) == [
        "orderMessageEnable", "listenPort"]
    assert cfg.order_message_enable is True and cfg.listen_port == 9999
    with pytest.raises(ConfigError, match="listenPort must be an integer"):
        cfg.update_from_properties({"orderMessageEnable": "false", "listenPort": "x"})
    assert cfg.order_message_enable is True                   # nothing applied
    with pytest.raises(ConfigError, match="Can not update config path"):
        cfg.update_from_properties({"kvConfigPath": "/elsewhere"})
    assert cfg.update_from_properties({"somethingNew": "1"}) == ["somethingNew"]
    assert cfg.to_properties()["somethingNew"] == "1"
    assert cfg.update_from_properties({"orderMessageEnable": "true"}) == []


# -- KV store ----------------------------------------------------------------------------------------

def test_kv_put_get_delete_and_persistence(tmp_path):
    path = str(tmp_path / "namesrv" / "kvConfig.json")
    kv = KVConfigManager(path)
    kv.load()                                                   # no file yet: empty
    assert kv.get_kv_config("ns", "k") is None and kv.get_kv_list_by_namespace("ns") is None
    kv.put_kv_config("ns", "k", "v1")
    kv.put_kv_config("ns", "k", "v2")
    kv.put_kv_config("ORDER_TOPIC_CONFIG", "T", "broker-a:4")
    assert json.loads(Path(path).read_text()) == {"configTable": {"ORDER_TOPIC_CONFIG": {"T": "broker-a:4"},
                                                             "ns": {"k": "v2"}}}
    assert not os.path.exists(path + ".tmp")
    kv.delete_kv_config("ns", "k")
    kv.delete_kv_config("ns", "never")
    kv.delete_kv_config("never", "k")
    again = KVConfigManager(path)
    again.load()
    assert again.get_kv_config("ORDER_TOPIC_CONFIG", "T") == "broker-a:4"
    assert again.get_kv_list_by_namespace("ns") == {}          # emptied namespaces stay, as in RocketMQ


def test_kv_reads_rocketmqs_file(tmp_path):
    path = tmp_path / "kvConfig.json"
    path.write_text('{"configTable":{"ORDER_TOPIC_CONFIG":{"T":"broker-a:8"},"n":{"num":5}}}')
    kv = KVConfigManager(str(path))
    kv.load()
    assert kv.get_kv_config("ORDER_TOPIC_CONFIG", "T") == "broker-a:8" and kv.get_kv_config("n", "num") == "5"


@pytest.mark.parametrize("content, why", [
    ("{oops", "not JSON"),
    ("[1]", "not a JSON object"),
    ('{"configTable":[]}', "configTable is not an object"),
    ('{"configTable":{"ns":"x"}}', "namespace 'ns' is not an object"),
])
def test_corrupt_kv_file_is_an_error_naming_it(tmp_path, content, why):
    path = tmp_path / "kvConfig.json"
    path.write_text(content)
    kv = KVConfigManager(str(path))
    with pytest.raises(KVConfigError, match=f"{path}.*corrupt.*{why}"):
        kv.load()
    assert path.read_text() == content                           # left alone for the operator


def test_failed_kv_write_changes_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    kv = KVConfigManager(str(blocker / "kvConfig.json"))         # its directory is a file: cannot write
    with pytest.raises(KVConfigError, match="cannot write"):
        kv.put_kv_config("ns", "k", "v")
    assert kv.get_kv_config("ns", "k") is None
