"""fastjson bodies (PROTOCOL.md §1.6): bare and object keys in, RocketMQ's form and standard JSON out."""
from __future__ import annotations

import dataclasses
import enum
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmq_remoting.fastjson import FastjsonError, FrozenDict, dumps, loads

# §3.1 TopicRouteData in RocketMQ's (bare-key) form.
ROUTE_BARE = (b'{"brokerDatas":[{"brokerAddrs":{0:"10.0.0.5:10911",1:"10.0.0.6:10911"},"brokerName":"broker-a",'
              b'"cluster":"DefaultCluster"}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a",'
              b'"perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}')


def test_route_data_bare_keys():
    route = loads(ROUTE_BARE)
    assert route["brokerDatas"][0]["brokerAddrs"] == {0: "10.0.0.5:10911", 1: "10.0.0.6:10911"}
    assert dumps(route) == ROUTE_BARE


def test_route_data_standard_form():
    route = loads(ROUTE_BARE)
    standard = dumps(route, standard=True)
    assert b'"brokerAddrs":{"0":"10.0.0.5:10911","1":"10.0.0.6:10911"}' in standard
    assert json.loads(standard)["queueDatas"][0]["perm"] == 6
    assert loads(standard)["brokerDatas"][0]["brokerAddrs"] == {"0": "10.0.0.5:10911", "1": "10.0.0.6:10911"}


def test_offset_table_nested_int_keys():
    body = b'{"offsetTable":{"T@G":{0:15,1:3},"%RETRY%G@G":{0:0}}}'
    table = loads(body)
    assert table == {"offsetTable": {"T@G": {0: 15, 1: 3}, "%RETRY%G@G": {0: 0}}}
    assert loads(dumps(table)) == table


def test_object_keys():
    body = (b'{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:12,'
            b'{"brokerName":"b","queueId":1,"topic":"T"}:7}}')
    table = loads(body)["offsetTable"]
    mq = FrozenDict(brokerName="b", queueId=0, topic="T")
    assert table[mq] == 12 and len(table) == 2
    assert hash(mq) == hash(FrozenDict({"topic": "T", "queueId": 0, "brokerName": "b"}))
    assert mq == {"brokerName": "b", "queueId": 0, "topic": "T"}
    assert dumps(loads(body)) == body
    standard = dumps(loads(body), standard=True)
    assert json.loads(standard)["offsetTable"]['{"brokerName":"b","queueId":0,"topic":"T"}'] == 12


def test_string_values_that_look_like_keys_are_untouched():
    """A regex quoting ``,0:`` would corrupt this value; the tokenizer must not."""
    body = b'{0:"a,1:b",1:"{2:c}"}'
    assert loads(body) == {0: "a,1:b", 1: "{2:c}"}


def test_heartbeat_from_cpp_with_ordinals_and_newline():
    body = (b'{"clientID":"18390-127.0.0.1@DEFAULT","consumerDataSet":[{"consumeFromWhere":0,"consumeType":1,'
            b'"groupName":"CG","messageModel":1,"subscriptionDataSet":[{"subString":"*",'
            b'"subVersion":"1795552161199","topic":"%RETRY%CG"}]}]}\n')
    hb = loads(body)
    assert hb["consumerDataSet"][0]["consumeType"] == 1
    assert hb["consumerDataSet"][0]["subscriptionDataSet"][0]["subVersion"] == "1795552161199"


@pytest.mark.parametrize("text, expected", [
    ("{a:1,'b':'x\\'y',c:[1,2,],}", {"a": 1, "b": "x'y", "c": [1, 2]}),
    ('{"s":"tab\\tend\\u00e9"}', {"s": "tab\tend\u00e9"}),
    ('{"s":"raw\ttab"}', {"s": "raw\ttab"}),
    ("{-1:true,2.5:null,true:false}", {-1: True, 2.5: None, True: False}),
    ("[1e3,-0.5,12345678901234567890123]", [1000.0, -0.5, 12345678901234567890123]),
    ("{[1,{0:2}]:3}", {(1, FrozenDict({0: 2})): 3}),
    ("  {}  ", {}),
])
def test_tolerant_forms(text, expected):
    assert loads(text) == expected


@pytest.mark.parametrize("text", [
    "", "{", "{0:}", "{0 1}", '{"a":1 "b":2}', "[1 2]", "tru", '"unterminated', '"bad\\x"', "{}}",
    "[" * 2000 + "]" * 2000, "@",
])
def test_invalid_input_raises_fastjson_error(text):
    with pytest.raises(FastjsonError):
        loads(text)


class Model(enum.Enum):
    BROADCASTING = 0
    CLUSTERING = 1


class Code(enum.IntEnum):
    TEN = 10


@dataclasses.dataclass
class QueueData:
    brokerName: str
    writeQueueNums: int
    perm: int = 6
    orderTopicConf: str | None = None


def test_writer_rules():
    assert dumps({"b": 1, "a": None, "c": Model.CLUSTERING, "d": Code.TEN}) == b'{"b":1,"c":"CLUSTERING","d":10}'
    assert dumps(QueueData("broker-a", 4)) == b'{"brokerName":"broker-a","perm":6,"writeQueueNums":4}'
    assert dumps({"s": {3, 1, 2}, "t": (1, None), "raw": b"\x00\xff"}) == b'{"raw":"AP8=","s":[1,2,3],"t":[1,null]}'
    assert dumps({10: "x", 9: "y"}) == b'{9:"y",10:"x"}'
    assert dumps({"u": "é😀"}) == '{"u":"é😀"}'.encode()
    assert dumps({"u": "é😀"}, standard=True) == b'{"u":"\\u00e9\\ud83d\\ude00"}'
    assert dumps([1.5, True, False, None]) == b"[1.5,true,false,null]"
    with pytest.raises(TypeError):
        dumps(object())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10) | st.integers(-1000, 1000), children, max_size=4),
    max_leaves=25)


def _drop_none_values(value):
    if isinstance(value, dict):
        return {k: _drop_none_values(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none_values(v) for v in value]
    return value


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_round_trip_bare_form(value):
    assert loads(dumps(value)) == _drop_none_values(value)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_standard_form_is_ascii_json(value):
    text = dumps(value, standard=True)
    assert text.isascii()
    json.loads(text)
