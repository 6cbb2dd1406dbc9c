"""TopicConfigManager: system topics, auto-creation rules, persistence in RocketMQ's topics.json form."""
from __future__ import annotations

import json
import logging
import os

import pytest

from rmq_broker.config import BrokerConfig
from rmq_broker.config_file import ConfigFileError
from rmq_broker.data_version import DataVersion
from rmq_broker.perm import PermName
from rmq_broker.topic_config import TopicConfig, TopicConfigManager, TopicFilterType
from rmq_common.topic import InvalidTopicError

RW = int(PermName.READ | PermName.WRITE)


class Clock:
    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


@pytest.fixture
def broker_config(tmp_path) -> BrokerConfig:
    return BrokerConfig.from_properties({"brokerIP1": "10.0.0.5", "storePathRootDir": str(tmp_path / "store")})


def manager(cfg: BrokerConfig, **kw) -> TopicConfigManager:
    kw.setdefault("clock_ms", Clock())
    return TopicConfigManager(cfg.config_dir, cfg, **kw)


# -- system topics ----------------------------------------------------------------------------------


def test_system_topics_as_rocketmq_creates_them(broker_config) -> None:
    topics = manager(broker_config)
    expected = {
        "SELF_TEST_TOPIC": (1, RW),
        "TBW102": (8, RW | PermName.INHERIT),
        "BenchmarkTest": (1024, RW),
        "DefaultCluster": (16, RW | PermName.INHERIT),
        "broker-a": (1, RW | PermName.INHERIT),
        "OFFSET_MOVED_EVENT": (1, RW),
        "SCHEDULE_TOPIC_XXXX": (18, RW),
        "rmq_sys_wheel_timer": (1, PermName.READ),
        "DefaultCluster_REPLY_TOPIC": (1, RW),
    }
    assert set(topics.topics()) == set(expected)
    for name, (queues, perm) in expected.items():
        entry = topics.select(name)
        assert (entry.read_queue_nums, entry.write_queue_nums, entry.perm) == (queues, queues, perm), name
    for name in [*expected, "RMQ_SYS_TRACE_TOPIC", "rmq_sys_anything", "RMQ_SYS_TRANS_HALF_TOPIC"]:
        assert topics.is_system_topic(name), name
    assert not topics.is_system_topic("Orders")
    assert topics.data_version.counter == 0 and not topics.dirty
    assert not os.path.exists(topics.path)                   # nothing written until something changes


def test_system_topics_follow_the_switches(tmp_path) -> None:
    cfg = BrokerConfig.from_properties({
        "brokerIP1": "10.0.0.5", "storePathRootDir": str(tmp_path), "autoCreateTopicEnable": "false",
        "clusterTopicEnable": "false", "brokerTopicEnable": "false", "traceTopicEnable": "true",
        "msgTraceTopicName": "MyTrace", "brokerClusterName": "C1", "brokerName": "b1",
        "defaultTopicQueueNums": "4", "messageDelayLevel": "1s 10s 1m"})
    topics = manager(cfg)
    assert topics.select("TBW102") is None
    assert topics.select("C1").perm == PermName.INHERIT
    assert topics.select("b1").perm == PermName.INHERIT
    assert topics.select("MyTrace").write_queue_nums == 1
    assert topics.select("C1_REPLY_TOPIC") is not None
    assert topics.select("SCHEDULE_TOPIC_XXXX").read_queue_nums == 3          # one queue per delay level
    assert topics.is_system_topic("MyTrace") and topics.is_system_topic("TBW102")


# -- auto-creation -----------------------------------------------------------------------------------


def test_create_in_send_inherits_from_the_default_topic(broker_config) -> None:
    topics = manager(broker_config)
    changes = []
    topics.on_change.append(lambda name, entry: changes.append((name, entry)))
    created = topics.create_in_send("Orders", "TBW102", 4, topic_sys_flag=1)
    assert created == TopicConfig("Orders", 4, 4, RW, TopicFilterType.SINGLE_TAG, 1)
    assert not created.perm & PermName.INHERIT
    assert topics.select("Orders") is created
    assert changes == [("Orders", created)]
    assert topics.data_version.counter == 1
    assert topics.create_in_send("Orders", "TBW102", 2) is created            # exists: unchanged
    assert topics.data_version.counter == 1 and len(changes) == 1
    # Queue count = min(client's, default topic's write queues).
    assert topics.create_in_send("Big", "TBW102", 100).write_queue_nums == 8
    assert topics.create_in_send("Neg", "TBW102", -3).write_queue_nums == 0


def test_create_in_send_from_another_inheritable_topic(broker_config) -> None:
    topics = manager(broker_config)
    topics.create_or_update(TopicConfig("Template", 3, 2, RW | PermName.INHERIT, TopicFilterType.MULTI_TAG))
    created = topics.create_in_send("Child", "Template", 16)
    assert (created.read_queue_nums, created.write_queue_nums, created.perm) == (2, 2, RW)
    assert created.topic_filter_type is TopicFilterType.MULTI_TAG


def test_create_in_send_refusals_say_why(broker_config, caplog) -> None:
    topics = manager(broker_config)
    topics.create_or_update(TopicConfig("Plain", 4, 4, RW))
    with caplog.at_level(logging.WARNING, "rmq_broker.topic_config"):
        assert topics.create_in_send("X1", "NoSuchTopic", 4) is None
        assert topics.create_in_send("X2", "Plain", 4) is None
    assert "does not exist" in topics.auto_create_refusal("NoSuchTopic")
    assert "without INHERIT" in topics.auto_create_refusal("Plain")
    assert topics.auto_create_refusal("TBW102") is None
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "X1" in messages and "X2" in messages
    assert topics.select("X1") is None and topics.select("X2") is None
    with pytest.raises(InvalidTopicError):
        topics.create_in_send("bad topic", "TBW102", 4)


def test_auto_create_switched_off_at_run_time_refuses_tbw102(broker_config) -> None:
    topics = manager(broker_config)
    broker_config.update({"autoCreateTopicEnable": "false"})
    assert topics.create_in_send("Orders", "TBW102", 4) is None
    assert "autoCreateTopicEnable is false" in topics.auto_create_refusal("TBW102")
    assert topics.select("TBW102").perm == RW | PermName.INHERIT             # the table itself is untouched
    broker_config.update({"autoCreateTopicEnable": "true"})
    assert topics.create_in_send("Orders", "TBW102", 4) is not None


def test_create_in_send_back_for_retry_and_dlq(broker_config) -> None:
    topics = manager(broker_config)
    retry = topics.create_in_send_back("%RETRY%G", 1, RW)
    assert retry == TopicConfig("%RETRY%G", 1, 1, RW)
    assert topics.create_in_send_back("%RETRY%G", 5, PermName.WRITE) is retry
    dlq = topics.create_in_send_back("%DLQ%G", 1, PermName.WRITE, 0)
    assert dlq.perm == PermName.WRITE
    half = topics.create_in_send_back("RMQ_SYS_TRANS_HALF_TOPIC", 1, RW)     # lazily, as RocketMQ 4.9
    assert half.read_queue_nums == 1
    assert topics.data_version.counter == 3


# -- updates, deletes, order ---------------------------------------------------------------------------


def test_create_or_update_and_delete(broker_config) -> None:
    topics = manager(broker_config)
    calls = []
    topics.on_change.append(lambda name, entry: calls.append((name, entry)))
    cfg = TopicConfig("Orders", 8, 8, RW)
    assert topics.create_or_update(cfg) is None
    assert topics.create_or_update(TopicConfig("Orders", 8, 8, RW)) == cfg    # identical: no change
    assert topics.data_version.counter == 1 and len(calls) == 1
    newer = cfg.replace(write_queue_nums=4, perm=PermName.READ)
    assert topics.create_or_update(newer) == cfg
    assert topics.select("Orders") == newer and topics.data_version.counter == 2
    assert topics.delete("Orders") == newer
    assert topics.delete("Orders") is None
    assert topics.select("Orders") is None and topics.data_version.counter == 3
    assert calls[-1] == ("Orders", None)


def test_update_order_topic_config(broker_config) -> None:
    topics = manager(broker_config)
    topics.create_or_update(TopicConfig("A"))
    topics.create_or_update(TopicConfig("B", order=True))
    version = topics.data_version
    assert topics.update_order_topic_config(["A", "Unknown"])
    assert topics.is_order_topic("A") and not topics.is_order_topic("B") and not topics.is_order_topic("Unknown")
    assert topics.data_version.counter == version.counter + 1
    assert not topics.update_order_topic_config({"A": "broker-a:4"})            # a KV table's keys work too
    assert topics.data_version.counter == version.counter + 1


def test_a_failing_callback_does_not_break_the_change(broker_config, caplog) -> None:
    topics = manager(broker_config)
    seen = []

    def bad(name, entry):
        raise RuntimeError("boom")

    topics.on_change.extend([bad, lambda name, entry: seen.append(name)])
    with caplog.at_level(logging.ERROR, "rmq_broker.topic_config"):
        topics.create_or_update(TopicConfig("Orders"))
    assert seen == ["Orders"] and topics.select("Orders") is not None
    assert any("callback" in r.getMessage() for r in caplog.records)


def test_topic_config_validation() -> None:
    with pytest.raises(InvalidTopicError):
        TopicConfig("")
    for kwargs in ({"read_queue_nums": -1}, {"write_queue_nums": 70_000}, {"perm": 99},
                   {"topic_filter_type": "ANY_TAG"}, {"topic_sys_flag": -1}, {"order": "yes"},
                   {"dedup_window_ms": -2}, {"dedup_window_ms": 7 * 24 * 3600 * 1000 + 1},
                   {"dedup_window_ms": True}):
        with pytest.raises(ValueError):
            TopicConfig("T", **kwargs)
    assert TopicConfig("T", topic_filter_type="MULTI_TAG").topic_filter_type == "MULTI_TAG"


# -- wire form and persistence ---------------------------------------------------------------------------


def test_wrapper_is_the_register_broker_form(broker_config) -> None:
    topics = manager(broker_config)
    topics.create_or_update(TopicConfig("TopicA", 4, 4, RW))
    wrapper = topics.wrapper()
    assert wrapper["dataVersion"] == topics.data_version.to_json_dict()
    assert wrapper["topicConfigTable"]["TopicA"] == {
        "order": False, "perm": 6, "readQueueNums": 4, "topicFilterType": "SINGLE_TAG", "topicName": "TopicA",
        "topicSysFlag": 0, "writeQueueNums": 4}
    assert json.loads(json.dumps(wrapper)) == wrapper                     # plain JSON data
    body = topics.encode()
    assert b'"TopicA":{"order":false,"perm":6,"readQueueNums":4,"topicFilterType":"SINGLE_TAG",' \
           b'"topicName":"TopicA","topicSysFlag":0,"writeQueueNums":4}' in body
    assert body.startswith(b'{"dataVersion":{"counter":1,"timestamp":')


def test_registration_wrapper_masks_perms_with_the_broker_permission(broker_config) -> None:
    topics = manager(broker_config)
    assert topics.registration_wrapper() == topics.wrapper()
    broker_config.update({"brokerPermission": "4"})                       # read-only broker
    table = topics.registration_wrapper()["topicConfigTable"]
    assert {entry["perm"] for entry in table.values()} == {4}
    assert topics.select("TBW102").perm == 7                                # the table keeps its own perms
    before = topics.data_version
    assert topics.bump_data_version() == before.next_version(topics.data_version.timestamp_ms)
    assert manager(broker_config).data_version == topics.data_version     # persisted


def test_dedup_window_is_an_extra_field_written_only_when_set(broker_config) -> None:
    """rmq's rmqDedupWindowMs: in topics.json and the wire form only when non-zero, read back, and a RocketMQ
    topics.json (without it) reads as 0 = the broker's default."""
    topics = manager(broker_config)
    topics.create_or_update(TopicConfig("Dedup", dedup_window_ms=30_000))
    topics.create_or_update(TopicConfig("Off", dedup_window_ms=-1))
    topics.create_or_update(TopicConfig("Plain"))
    table = topics.wrapper()["topicConfigTable"]
    assert table["Dedup"]["rmqDedupWindowMs"] == 30_000 and table["Off"]["rmqDedupWindowMs"] == -1
    assert "rmqDedupWindowMs" not in table["Plain"]
    with open(topics.path) as f:
        on_disk = json.load(f)["topicConfigTable"]
    assert on_disk["Dedup"]["rmqDedupWindowMs"] == 30_000 and "rmqDedupWindowMs" not in on_disk["Plain"]
    again = manager(broker_config)
    assert again.select("Dedup").dedup_window_ms == 30_000 and again.select("Off").dedup_window_ms == -1
    assert again.select("Plain").dedup_window_ms == 0


def test_persistence_round_trip_across_a_restart(broker_config) -> None:
    topics = manager(broker_config)
    topics.create_or_update(TopicConfig("Orders", 4, 2, PermName.READ, TopicFilterType.MULTI_TAG, 2, True))
    topics.create_in_send("Auto", "TBW102", 3)
    version = topics.data_version
    assert version.counter == 2 and not topics.dirty                      # written at once
    again = manager(broker_config)
    assert again.table() == topics.table()
    assert again.data_version == version
    assert not again.dirty


def test_file_entries_win_over_system_topics(broker_config) -> None:
    topics = manager(broker_config)
    topics.create_or_update(TopicConfig("TBW102", 2, 2, RW | PermName.INHERIT))
    again = manager(broker_config)
    assert again.select("TBW102").write_queue_nums == 2


def test_reads_a_rocketmq_topics_json(broker_config) -> None:
    # As RocketMQ 4.9 writes it: pretty, tab-indented, 4.x field set; plus a 5.x "attributes" field.
    text = ('{\n\t"dataVersion":{\n\t\t"counter":7,\n\t\t"timestamp":1690000000000\n\t},\n'
            '\t"topicConfigTable":{\n'
            '\t\t"TopicTest":{\n\t\t\t"order":false,\n\t\t\t"perm":6,\n\t\t\t"readQueueNums":4,\n'
            '\t\t\t"topicFilterType":"SINGLE_TAG",\n\t\t\t"topicName":"TopicTest",\n\t\t\t"topicSysFlag":0,\n'
            '\t\t\t"writeQueueNums":4\n\t\t},\n'
            '\t\t"%RETRY%please_rename_unique_group_name_4":{"perm":6,"readQueueNums":1,'
            '"topicName":"%RETRY%please_rename_unique_group_name_4","writeQueueNums":1,"attributes":{}},\n'
            '\t\t"host.with.dots":{"topicName":"host.with.dots","perm":7}\n'
            '\t}\n}')
    os.makedirs(broker_config.config_dir)
    with open(os.path.join(broker_config.config_dir, "topics.json"), "w") as f:
        f.write(text)
    topics = manager(broker_config)
    assert topics.data_version == DataVersion(1690000000000, 7)
    assert topics.select("TopicTest") == TopicConfig("TopicTest", 4, 4, RW)
    assert topics.select("%RETRY%please_rename_unique_group_name_4") == \
        TopicConfig("%RETRY%please_rename_unique_group_name_4", 1, 1, RW)
    assert topics.select("host.with.dots") is None                      # illegal here: skipped, logged
    assert topics.select("SELF_TEST_TOPIC") is not None                 # system topics still there


def test_written_file_is_rocketmqs_form(broker_config) -> None:
    topics = manager(broker_config)
    topics.create_or_update(TopicConfig("Orders", 4, 4, RW))
    text = open(topics.path).read()
    assert text.startswith('{\n\t"dataVersion":{\n\t\t"counter":1,\n\t\t"timestamp":')
    assert '\t\t"Orders":{\n\t\t\t"order":false,\n\t\t\t"perm":6,\n' in text
    parsed = json.loads(text)                                             # standard JSON as well
    assert parsed["topicConfigTable"]["Orders"]["writeQueueNums"] == 4


def test_corrupt_file_uses_the_bak(broker_config) -> None:
    topics = manager(broker_config)
    topics.create_or_update(TopicConfig("First"))
    topics.create_or_update(TopicConfig("Second"))                       # .bak now holds the state with First
    with open(topics.path, "w") as f:
        f.write('{"dataVersion":{"counter":2,')
    again = manager(broker_config)
    assert again.select("First") is not None and again.select("Second") is None
    assert again.data_version.counter == 1


def test_corrupt_file_without_bak_is_a_clear_error(broker_config) -> None:
    os.makedirs(broker_config.config_dir)
    path = os.path.join(broker_config.config_dir, "topics.json")
    with open(path, "w") as f:
        f.write('{"topicConfigTable":{"T":{"topicName":"T","perm":"rw"}}}')
    with pytest.raises(ConfigFileError) as info:
        manager(broker_config)
    assert "topics.json" in str(info.value) and "perm must be a whole number" in str(info.value)


def test_persist_on_change_off_leaves_writing_to_the_owner(broker_config) -> None:
    topics = manager(broker_config, persist_on_change=False)
    topics.create_or_update(TopicConfig("Orders"))
    assert topics.dirty and not os.path.exists(topics.path)
    assert topics.persist_if_dirty()
    assert manager(broker_config).select("Orders") is not None


def test_replace_all_is_the_slave_sync(broker_config, tmp_path) -> None:
    master_cfg = BrokerConfig.from_properties({"brokerIP1": "10.0.0.6", "storePathRootDir": str(tmp_path / "m")})
    master = manager(master_cfg, clock_ms=Clock(1_800_000_000_000))
    master.create_or_update(TopicConfig("Orders", 4, 4, RW))
    slave = manager(broker_config)
    slave.create_or_update(TopicConfig("Stale"))
    changes = []
    slave.on_change.append(lambda name, entry: changes.append((name, entry)))
    wrapper = json.loads(master.encode())
    assert slave.replace_all(wrapper)
    assert slave.select("Orders") == TopicConfig("Orders", 4, 4, RW)
    assert slave.select("Stale") is None and slave.select("SELF_TEST_TOPIC") is not None
    assert slave.data_version == master.data_version
    assert ("Stale", None) in changes and ("Orders", TopicConfig("Orders", 4, 4, RW)) in changes
    assert not slave.replace_all(wrapper)                                 # same version: nothing to do
    assert manager(broker_config).select("Orders") is not None           # persisted
