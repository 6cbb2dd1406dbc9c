"""Wire bodies: RegisterBrokerBody (JSON and compressed), routes in both JSON forms, small bodies, bad input."""
from __future__ import annotations

import json
import struct
import zlib

import pytest

from rmq_nameserver import bodies
from rmq_nameserver.bodies import (BodyError, BrokerData, ClusterInfo, DataVersion, QueueData, RegisterBrokerBody,
                                   TopicConfig, TopicList, TopicRouteData, decode_kv_table, encode_kv_table)


def compressed_by_hand(dv: bytes, topics: list[str], filters: bytes) -> bytes:
    """The binary form of §3.3 built field by field, independent of the codec under test."""
    out = struct.pack(">i", len(dv)) + dv + struct.pack(">i", len(topics))
    for line in topics:
        raw = line.encode()
        out += struct.pack(">i", len(raw)) + raw
    out += struct.pack(">i", len(filters)) + filters
    return zlib.compress(out, 9)


def test_json_body_as_java_writes_it():
    text = (b'{"filterServerList":[],"topicConfigSerializeWrapper":{"dataVersion":{"counter":3,'
            b'"timestamp":1690000000000},"topicConfigTable":{"TopicA":{"order":false,"perm":6,"readQueueNums":4,'
            b'"topicFilterType":"SINGLE_TAG","topicName":"TopicA","topicSysFlag":0,"writeQueueNums":4}}}}')
    body = RegisterBrokerBody.decode(text)
    assert body.data_version == DataVersion(3, 1690000000000)
    assert body.topic_config_table == {"TopicA": TopicConfig("TopicA", 4, 4, 6, "SINGLE_TAG", 0, False)}
    assert body.filter_server_list == []
    assert RegisterBrokerBody.decode(body.encode()) == body
    assert json.loads(body.encode()) == json.loads(text)


def test_compressed_body_matches_the_documented_layout():
    body = RegisterBrokerBody(DataVersion(7, 42), {"T1": TopicConfig("T1", 8, 4, 6, "MULTI_TAG"),
                                                   "T2": TopicConfig("T2", 1, 1, 2)}, ["10.0.0.1:30000"])
    wire = body.encode(compress=True)
    by_hand = compressed_by_hand(b'{"counter":7,"timestamp":42}', ["T1 8 4 6 MULTI_TAG", "T2 1 1 2 SINGLE_TAG"],
                                 b'["10.0.0.1:30000"]')
    assert zlib.decompress(wire) == zlib.decompress(by_hand)
    assert RegisterBrokerBody.decode(by_hand, compressed=True) == body


def test_compressed_body_carries_no_sys_flag_or_order_and_ignores_5x_attributes():
    wire = compressed_by_hand(b'{"counter":1,"timestamp":2}', ['T 4 4 6 SINGLE_TAG {"+message.type":"NORMAL"}',
                                                              "U 2 2 6 SINGLE_TAG "], b"[]")
    body = RegisterBrokerBody.decode(wire, compressed=True)
    assert body.topic_config_table == {"T": TopicConfig("T", 4, 4, 6), "U": TopicConfig("U", 2, 2, 6)}
    ordered = RegisterBrokerBody(DataVersion(), {"O": TopicConfig("O", order=True, topic_sys_flag=1)})
    assert RegisterBrokerBody.decode(ordered.encode(True), True).topic_config_table["O"] == TopicConfig("O")


@pytest.mark.parametrize("wire, message", [
    (b"not zlib at all", "not a zlib stream"),
    (zlib.compress(struct.pack(">i", 100) + b"{}"), "ends early"),
    (compressed_by_hand(b'{"counter":1}', ["T 4 4"], b"[]"), "name read write perm filterType"),
    (compressed_by_hand(b'{"counter":1}', ["T 4 x 6 SINGLE_TAG"], b"[]"), "must be integers"),
    (compressed_by_hand(b'{"counter":1}', ["T 4 4 6 NO_TAG"], b"[]"), "SINGLE_TAG or MULTI_TAG"),
    (compressed_by_hand(b'{"counter":1}', [], b"{}"), "filterServerList must be a list"),
    (compressed_by_hand(b"nope", [], b"[]"), "DataVersion is not JSON"),
    (zlib.compress(struct.pack(">i", 2) + b"{}" + struct.pack(">i", -1)), "negative topic count"),
])
def test_bad_compressed_bodies_are_clear_errors(wire, message):
    with pytest.raises(BodyError, match=message):
        RegisterBrokerBody.decode(wire, compressed=True)


def test_compressed_body_inflation_is_capped(monkeypatch):
    monkeypatch.setattr(bodies, "MAX_INFLATED_REGISTER_BODY_BYTES", 1000)
    bomb = zlib.compress(b"\0" * 100_000, 9)
    with pytest.raises(BodyError, match="inflates beyond 1000 bytes"):
        RegisterBrokerBody.decode(bomb, compressed=True)


@pytest.mark.parametrize("text, message", [
    (b"{not json", "not JSON"),
    (b"[1,2]", "must be a JSON object"),
    (b'{"topicConfigSerializeWrapper":{"topicConfigTable":[]}}', "topicConfigTable must be a JSON object"),
    (b'{"topicConfigSerializeWrapper":{"topicConfigTable":{"T":{"perm":"rw"}}}}', r"topicConfigTable\.T\.perm"),
    (b'{"topicConfigSerializeWrapper":{"topicConfigTable":{"T":{"readQueueNums":true}}}}', "readQueueNums"),
    (b'{"topicConfigSerializeWrapper":{"topicConfigTable":{"T":{"writeQueueNums":4294967296}}}}', "out of range"),
    (b'{"topicConfigSerializeWrapper":{"topicConfigTable":{"T":{"order":"maybe"}}}}', "order must be a boolean"),
    (b'{"topicConfigSerializeWrapper":{"dataVersion":{"counter":"x"}}}', r"dataVersion\.counter"),
    (b'{"filterServerList":"10.0.0.1:1"}', "filterServerList must be a list"),
])
def test_bad_json_bodies_name_the_bad_value(text, message):
    with pytest.raises(BodyError, match=message):
        RegisterBrokerBody.decode(text)


def test_json_body_leniency_matches_fastjson():
    # bare keys, numeric strings, a missing topicName (the table key is used), the pre-3.0.11 bare wrapper
    body = RegisterBrokerBody.decode(b'{topicConfigSerializeWrapper:{dataVersion:{counter:"2",timestamp:5},'
                                     b'topicConfigTable:{"T":{"readQueueNums":"8"}}}}')
    assert body.data_version == DataVersion(2, 5)
    assert body.topic_config_table == {"T": TopicConfig("T", 8, 16)}
    old = RegisterBrokerBody.decode(b'{"dataVersion":{"counter":1,"timestamp":1},"topicConfigTable":{"X":{}}}')
    assert list(old.topic_config_table) == ["X"] and old.data_version == DataVersion(1, 1)


def test_route_data_in_both_json_forms():
    route = TopicRouteData([QueueData("broker-a", 4, 4, 6)],
                           [BrokerData("DefaultCluster", "broker-a", {1: "10.0.0.6:10911", 0: "10.0.0.5:10911"})],
                           order_topic_conf="broker-a:4")
    bare = route.encode()
    assert b'"brokerAddrs":{0:"10.0.0.5:10911",1:"10.0.0.6:10911"}' in bare
    with pytest.raises(ValueError):
        json.loads(bare)                                  # what a standard parser makes of fastjson's form
    standard = route.encode(standard_json=True)
    doc = json.loads(standard)
    assert doc["brokerDatas"][0]["brokerAddrs"] == {"0": "10.0.0.5:10911", "1": "10.0.0.6:10911"}
    assert doc["queueDatas"] == [{"brokerName": "broker-a", "perm": 6, "readQueueNums": 4, "topicSysFlag": 0,
                                  "writeQueueNums": 4}]
    assert doc["orderTopicConf"] == "broker-a:4" and doc["filterServerTable"] == {}
    assert TopicRouteData.decode(bare) == TopicRouteData.decode(standard) == route


def test_route_without_order_conf_omits_it_and_old_spelling_is_read():
    assert b"orderTopicConf" not in TopicRouteData().encode()
    old = TopicRouteData.decode(b'{"brokerDatas":[],"queueDatas":[{"brokerName":"b","perm":6,"readQueueNums":1,'
                                b'"topicSynFlag":3,"writeQueueNums":1}]}')
    assert old.queue_datas[0].topic_sys_flag == 3


def test_small_bodies_round_trip():
    info = ClusterInfo({"broker-a": BrokerData("C", "broker-a", {0: "h:1"})}, {"C": ["broker-a"]})
    assert b'"brokerAddrs":{0:"h:1"}' in info.encode()
    assert ClusterInfo.decode(info.encode()) == info
    topics = TopicList(["A", "B"], "h:1")
    assert json.loads(topics.encode()) == {"brokerAddr": "h:1", "topicList": ["A", "B"]}
    assert TopicList.decode(topics.encode()) == topics
    assert json.loads(TopicList(["A"]).encode()) == {"topicList": ["A"]}
    assert decode_kv_table(encode_kv_table({"k": "v"})) == {"k": "v"}
    assert json.loads(DataVersion(3, 4).encode()) == {"counter": 3, "timestamp": 4}
