"""SubscriptionGroupManager: built-in groups, auto-creation, persistence in RocketMQ's form."""
from __future__ import annotations

import json
import os

import pytest

from rmq_broker.config import BrokerConfig
from rmq_broker.config_file import ConfigFileError
from rmq_broker.data_version import DataVersion
from rmq_broker.subscription_group import (BUILT_IN_GROUPS, InvalidGroupError, SubscriptionGroupConfig,
                                           SubscriptionGroupManager, validate_group_name)


class Clock:
    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


@pytest.fixture
def broker_config(tmp_path) -> BrokerConfig:
    return BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", "storePathRootDir": str(tmp_path / "store")})


def manager(cfg: BrokerConfig, **kw) -> SubscriptionGroupManager:
    kw.setdefault("clock_ms", Clock())
    return SubscriptionGroupManager(cfg.config_dir, cfg, **kw)


def test_defaults_are_rocketmq_49s() -> None:
    g = SubscriptionGroupConfig("G")
    assert (g.consume_enable, g.consume_from_min_enable, g.consume_broadcast_enable,
            g.notify_consumer_ids_changed_enable) == (True, True, True, True)
    assert (g.retry_queue_nums, g.retry_max_times, g.broker_id, g.which_broker_when_consume_slowly) == (1, 16, 0, 1)


def test_built_in_groups(broker_config) -> None:
    groups = manager(broker_config)
    assert set(groups.groups()) == {"TOOLS_CONSUMER", "FILTERSRV_CONSUMER", "SELF_TEST_C_GROUP", "CID_ONS-HTTP-PROXY",
                                    "CID_ONSAPI_PULL", "CID_ONSAPI_PERMISSION", "CID_ONSAPI_OWNER"}
    assert set(BUILT_IN_GROUPS) == set(groups.groups())
    assert groups.find("TOOLS_CONSUMER") == SubscriptionGroupConfig("TOOLS_CONSUMER")
    assert groups.data_version.counter == 0 and not os.path.exists(groups.path)


def test_find_or_auto_create(broker_config) -> None:
    groups = manager(broker_config)
    assert groups.find("G1") is None                                  # find never creates
    created = groups.find_or_auto_create("G1")
    assert created == SubscriptionGroupConfig("G1")
    assert groups.find("G1") is created and groups.find_or_auto_create("G1") is created
    assert groups.data_version.counter == 1
    broker_config.update({"autoCreateSubscriptionGroup": "false"})
    assert groups.find_or_auto_create("G2") is None
    assert groups.find_or_auto_create("CID_RMQ_SYS_TRANS") is not None   # the system prefix is always created
    assert groups.find_or_auto_create("G1") is created                # existing groups still found
    broker_config.update({"autoCreateSubscriptionGroup": "true"})
    with pytest.raises(InvalidGroupError, match="illegal character"):
        groups.find_or_auto_create("bad group")


def test_update_delete_disable(broker_config) -> None:
    groups = manager(broker_config)
    config = SubscriptionGroupConfig("G", retry_queue_nums=2, retry_max_times=3, consume_broadcast_enable=False)
    assert groups.update(config) is None
    assert groups.update(SubscriptionGroupConfig("G", retry_queue_nums=2, retry_max_times=3,
                                                 consume_broadcast_enable=False)) == config   # identical: no-op
    assert groups.data_version.counter == 1
    assert groups.disable_consume("G") and not groups.find("G").consume_enable
    assert groups.disable_consume("G") and groups.data_version.counter == 2                     # already off
    assert not groups.disable_consume("Nope")
    assert groups.delete("G").retry_queue_nums == 2
    assert groups.delete("G") is None and groups.find("G") is None
    assert groups.data_version.counter == 3


def test_group_validation() -> None:
    validate_group_name("please_rename_unique_group_name_4")
    validate_group_name("ns%CID-1|x")
    for bad in ("", "a@b", "a.b", "x" * 256):
        with pytest.raises(InvalidGroupError):
            validate_group_name(bad)
    for kwargs in ({"retry_queue_nums": -1}, {"broker_id": -1}, {"consume_enable": 1}, {"retry_max_times": "3"}):
        with pytest.raises(ValueError):
            SubscriptionGroupConfig("G", **kwargs)


def test_request_body_from_rocketmq_tools() -> None:
    # UPDATE_AND_CREATE_SUBSCRIPTIONGROUP body from mqadmin 5.x: extra fields are ignored.
    body = ('{"brokerId":0,"consumeBroadcastEnable":false,"consumeEnable":true,"consumeFromMinEnable":false,'
            '"consumeMessageOrderly":false,"consumeTimeoutMinute":15,"groupName":"G","groupRetryPolicy":{},'
            '"groupSysFlag":0,"notifyConsumerIdsChangedEnable":true,"retryMaxTimes":"5","retryQueueNums":1,'
            '"whichBrokerWhenConsumeSlowly":1}')
    config = SubscriptionGroupConfig.from_json_dict(json.loads(body))
    assert config == SubscriptionGroupConfig("G", consume_from_min_enable=False, consume_broadcast_enable=False,
                                             retry_max_times=5)
    assert SubscriptionGroupConfig.from_json_dict(config.to_json_dict()) == config
    with pytest.raises(InvalidGroupError):
        SubscriptionGroupConfig.from_json_dict({"retryQueueNums": 1})


def test_persistence_round_trip_and_shape(broker_config) -> None:
    groups = manager(broker_config)
    groups.update(SubscriptionGroupConfig("G", retry_max_times=3))
    groups.find_or_auto_create("H")
    assert not groups.dirty
    text = open(groups.path).read()
    assert text.startswith('{\n\t"dataVersion":{\n\t\t"counter":2,')
    parsed = json.loads(text)
    assert parsed["subscriptionGroupTable"]["G"] == {
        "brokerId": 0, "consumeBroadcastEnable": True, "consumeEnable": True, "consumeFromMinEnable": True,
        "groupName": "G", "notifyConsumerIdsChangedEnable": True, "retryMaxTimes": 3, "retryQueueNums": 1,
        "whichBrokerWhenConsumeSlowly": 1}
    again = manager(broker_config)
    assert again.table() == groups.table() and again.data_version == groups.data_version
    assert groups.encode().startswith(b'{"dataVersion":{"counter":2,"timestamp":')


def test_reads_a_rocketmq_subscription_group_json(broker_config) -> None:
    os.makedirs(broker_config.config_dir)
    with open(os.path.join(broker_config.config_dir, "subscriptionGroup.json"), "w") as f:
        f.write('{\n\t"dataVersion":{\n\t\t"counter":2,\n\t\t"timestamp":1690000000000\n\t},\n'
                '\t"subscriptionGroupTable":{\n\t\t"please_rename_unique_group_name_4":{\n'
                '\t\t\t"brokerId":0,\n\t\t\t"consumeBroadcastEnable":true,\n\t\t\t"consumeEnable":true,\n'
                '\t\t\t"consumeFromMinEnable":true,\n\t\t\t"groupName":"please_rename_unique_group_name_4",\n'
                '\t\t\t"notifyConsumerIdsChangedEnable":true,\n\t\t\t"retryMaxTimes":16,\n'
                '\t\t\t"retryQueueNums":1,\n\t\t\t"whichBrokerWhenConsumeSlowly":1\n\t\t}\n\t}\n}')
    groups = manager(broker_config)
    assert groups.data_version == DataVersion(1690000000000, 2)
    assert groups.find("please_rename_unique_group_name_4") == \
        SubscriptionGroupConfig("please_rename_unique_group_name_4")
    assert groups.find("TOOLS_CONSUMER") is not None


def test_corrupt_file_uses_the_bak_else_fails(broker_config) -> None:
    groups = manager(broker_config)
    groups.update(SubscriptionGroupConfig("A"))
    groups.update(SubscriptionGroupConfig("B"))
    with open(groups.path, "w") as f:
        f.write("{garbage")
    again = manager(broker_config)
    assert again.find("A") is not None and again.find("B") is None
    os.unlink(groups.path + ".bak")
    with pytest.raises(ConfigFileError, match="subscriptionGroup.json"):
        manager(broker_config)


def test_replace_all_is_the_slave_sync(broker_config) -> None:
    slave = manager(broker_config)
    slave.update(SubscriptionGroupConfig("Stale"))
    wrapper = {"dataVersion": {"counter": 9, "timestamp": 5},
               "subscriptionGroupTable": {"G": SubscriptionGroupConfig("G", retry_max_times=2).to_json_dict()}}
    assert slave.replace_all(wrapper)
    assert slave.groups() == ["G"] and slave.data_version == DataVersion(5, 9)
    assert not slave.replace_all(wrapper)
    assert manager(broker_config).find("G").retry_max_times == 2
