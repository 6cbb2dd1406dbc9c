"""ConsumerOffsetManager: the table, its bound, and consumerOffset.json in RocketMQ's bare-key form."""
from __future__ import annotations

import json
import os

import pytest

from rmq_broker.config_file import ConfigFileError
from rmq_broker.consumer_offset import ConsumerOffsetManager, OffsetTableFullError
from rmq_remoting import fastjson


@pytest.fixture
def config_dir(tmp_path) -> str:
    return str(tmp_path / "store" / "config")


def test_commit_and_query(config_dir) -> None:
    offsets = ConsumerOffsetManager(config_dir)
    assert offsets.query("G", "T", 0) is None                        # never committed (RocketMQ: -1)
    assert not offsets.dirty
    offsets.commit("G", "T", 0, 5)
    offsets.commit("G", "T", 1, 7)
    offsets.commit("G", "T", 1, 3)                                   # going back is allowed (offset reset)
    offsets.commit("H", "T", 0, 1)
    offsets.commit("G", "%RETRY%G", 0, 2)
    assert offsets.query("G", "T", 0) == 5 and offsets.query("G", "T", 1) == 3
    assert offsets.query("G", "T", 2) is None and offsets.query("X", "T", 0) is None
    assert offsets.query_all("G", "T") == {0: 5, 1: 3}
    assert offsets.query_all("G", "Nope") == {}
    assert offsets.groups_of_topic("T") == {"G", "H"}
    assert offsets.topics_of_group("G") == {"T", "%RETRY%G"}
    assert len(offsets) == 4 and offsets.dirty
    assert offsets.table() == {"T@G": {0: 5, 1: 3}, "T@H": {0: 1}, "%RETRY%G@G": {0: 2}}


def test_table_is_a_copy(config_dir) -> None:
    offsets = ConsumerOffsetManager(config_dir)
    offsets.commit("G", "T", 0, 5)
    table = offsets.table()
    table["T@G"][0] = 99
    assert offsets.query("G", "T", 0) == 5


def test_commit_refuses_unusable_keys(config_dir) -> None:
    offsets = ConsumerOffsetManager(config_dir)
    for group, topic, queue_id in (("", "T", 0), ("G@x", "T", 0), ("G", "", 0), ("G", "T@x", 0), ("G", "T", -1),
                                   ("G", "T", 2**31)):
        with pytest.raises(ValueError):
            offsets.commit(group, topic, queue_id, 1)
    assert len(offsets) == 0 and not offsets.dirty


def test_unchanged_commit_is_not_dirty(config_dir) -> None:
    offsets = ConsumerOffsetManager(config_dir)
    offsets.commit("G", "T", 0, 5)
    assert offsets.persist_if_dirty()
    offsets.commit("G", "T", 0, 5)
    assert not offsets.dirty and not offsets.persist_if_dirty()
    offsets.commit("G", "T", 0, 6)
    assert offsets.persist_if_dirty()


def test_bounded_by_max_entries(config_dir) -> None:
    offsets = ConsumerOffsetManager(config_dir, max_entries=3)
    offsets.commit("G", "T", 0, 1)
    offsets.commit("G", "T", 1, 1)
    offsets.commit("H", "T", 0, 1)
    with pytest.raises(OffsetTableFullError, match="max_entries=3"):
        offsets.commit("H", "T", 1, 1)
    offsets.commit("G", "T", 0, 2)                                   # existing entries still update
    assert offsets.remove("H", "T") and not offsets.remove("H", "T")
    offsets.commit("H", "T", 1, 1)
    with pytest.raises(OffsetTableFullError):
        offsets.clone_offset("G", "K", "T")
    with pytest.raises(ValueError):
        ConsumerOffsetManager(config_dir, max_entries=0)


def test_remove_topic_and_group(config_dir) -> None:
    offsets = ConsumerOffsetManager(config_dir)
    for group in ("G", "H"):
        for topic in ("A", "B"):
            offsets.commit(group, topic, 0, 1)
            offsets.commit(group, topic, 1, 2)
    assert offsets.remove_topic("A") == 2
    assert offsets.table().keys() == {"B@G", "B@H"}
    assert offsets.remove_group("G") == 1
    assert offsets.table() == {"B@H": {0: 1, 1: 2}} and len(offsets) == 2
    assert offsets.remove_group("Nope") == 0


def test_clone_offset(config_dir) -> None:
    offsets = ConsumerOffsetManager(config_dir)
    offsets.commit("G", "T", 0, 5)
    offsets.commit("G", "T", 1, 6)
    offsets.commit("K", "T", 3, 1)
    assert offsets.clone_offset("G", "K", "T")
    assert offsets.query_all("K", "T") == {0: 5, 1: 6}                  # replaced, as RocketMQ does
    assert len(offsets) == 4
    assert not offsets.clone_offset("Nope", "K", "T")
    offsets.commit("G", "T", 0, 9)
    assert offsets.query("K", "T", 0) == 5                              # a copy, not shared


def test_file_is_rocketmqs_bare_key_form(config_dir) -> None:
    offsets = ConsumerOffsetManager(config_dir)
    offsets.commit("please_rename_unique_group_name_4", "TopicTest", 0, 250)
    offsets.commit("please_rename_unique_group_name_4", "TopicTest", 1, 251)
    offsets.persist()
    text = open(offsets.path).read()
    assert text == ('{\n\t"offsetTable":{\n'
                    '\t\t"TopicTest@please_rename_unique_group_name_4":{0:250,1:251}\n'
                    '\t}\n}\n')
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)                                                # bare keys: not standard JSON, by design
    assert fastjson.loads(text) == {"offsetTable": {"TopicTest@please_rename_unique_group_name_4": {0: 250, 1: 251}}}
    assert offsets.encode() == b'{"offsetTable":{"TopicTest@please_rename_unique_group_name_4":{0:250,1:251}}}'


def test_persistence_round_trip_across_a_restart(config_dir) -> None:
    offsets = ConsumerOffsetManager(config_dir)
    offsets.commit("G", "T", 0, 2**40)
    offsets.commit("G", "%RETRY%G", 0, 0)
    offsets.commit("H", "T", 7, 3)
    offsets.persist()
    again = ConsumerOffsetManager(config_dir)
    assert again.table() == offsets.table() and len(again) == 3 and not again.dirty


def test_reads_rocketmqs_file_and_quoted_keys(config_dir) -> None:
    os.makedirs(config_dir)
    path = os.path.join(config_dir, "consumerOffset.json")
    # RocketMQ 4.9's pretty output, with its closing brace of an integer map on the next line.
    with open(path, "w") as f:
        f.write('{\n\t"offsetTable":{\n'
                '\t\t"%RETRY%please_rename_unique_group_name_4@please_rename_unique_group_name_4":{0:0\n\t\t},\n'
                '\t\t"TopicTest@please_rename_unique_group_name_4":{0:250,1:250,2:250,3:250\n\t\t}\n\t}\n}')
    offsets = ConsumerOffsetManager(config_dir)
    assert offsets.query_all("please_rename_unique_group_name_4", "TopicTest") == {0: 250, 1: 250, 2: 250, 3: 250}
    assert offsets.query("please_rename_unique_group_name_4", "%RETRY%please_rename_unique_group_name_4", 0) == 0
    with open(path, "w") as f:                                           # a standard JSON writer's form
        f.write('{"offsetTable":{"T@G":{"0":5,"12":6}},"dataVersion":{"counter":1,"timestamp":1}}')
    assert ConsumerOffsetManager(config_dir).query_all("G", "T") == {0: 5, 12: 6}


def test_keys_that_are_not_topic_at_group_are_kept_but_never_matched(config_dir) -> None:
    os.makedirs(config_dir)
    with open(os.path.join(config_dir, "consumerOffset.json"), "w") as f:
        f.write('{"offsetTable":{"weird":{0:1},"T@G":{0:2}}}')
    offsets = ConsumerOffsetManager(config_dir)
    assert offsets.groups_of_topic("weird") == set() and offsets.topics_of_group("G") == {"T"}
    assert offsets.remove_topic("weird") == 0
    assert "weird" in offsets.table()


def test_corrupt_file_uses_the_bak(config_dir) -> None:
    offsets = ConsumerOffsetManager(config_dir)
    offsets.commit("G", "T", 0, 1)
    offsets.persist()
    offsets.commit("G", "T", 0, 2)
    offsets.persist()
    with open(offsets.path, "w") as f:
        f.write('{"offsetTable":{"T@G":{0:"x"}}}')
    assert ConsumerOffsetManager(config_dir).query("G", "T", 0) == 1
    os.unlink(offsets.path + ".bak")
    with pytest.raises(ConfigFileError, match="is not an offset"):
        ConsumerOffsetManager(config_dir)


def test_merge_is_the_slave_sync(config_dir) -> None:
    slave = ConsumerOffsetManager(config_dir)
    slave.commit("G", "T", 0, 1)
    slave.commit("Only", "Here", 0, 1)
    master_body = b'{"offsetTable":{"T@G":{0:10,1:11},"U@G":{0:3}}}'
    assert slave.merge(fastjson.loads(master_body)["offsetTable"]) == 2
    assert slave.table() == {"T@G": {0: 10, 1: 11}, "U@G": {0: 3}, "Here@Only": {0: 1}}
    assert len(slave) == 4 and slave.dirty
    with pytest.raises(ValueError):
        slave.merge({"T@G": {"x": 1}})


def test_commits_from_threads_while_persisting(config_dir) -> None:
    import threading

    offsets = ConsumerOffsetManager(config_dir)
    stop = threading.Event()

    def committer(group: str) -> None:
        for i in range(2000):
            offsets.commit(group, "T", i % 50, i)

    def persister() -> None:
        while not stop.is_set():
            offsets.persist_if_dirty()

    writer = threading.Thread(target=persister)
    writer.start()
    threads = [threading.Thread(target=committer, args=(f"G{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    writer.join()
    offsets.persist_if_dirty()
    assert len(offsets) == 200
    assert ConsumerOffsetManager(config_dir).table() == offsets.table()
