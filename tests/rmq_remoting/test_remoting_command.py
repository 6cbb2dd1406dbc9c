"""RemotingCommand: golden frames from PROTOCOL.md §1 and CAPTURES.md, tolerant decoding, round trips."""
from __future__ import annotations

import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmq_remoting import (CURRENT_VERSION, RPC_ONEWAY, RPC_RESPONSE, FrameError, LanguageCode, MQVersion,
                          RemotingCommand, RequestCode, ResponseCode, SerializeType)

# PROTOCOL.md §1.2, "Example response", verbatim (232 bytes).
SPEC_RESPONSE_HEADER = (
    b'{"code":0,"extFields":{"queueId":"2","MSG_REGION":"DefaultRegion","queueOffset":"17",'
    b'"TRACE_ON":"true","msgId":"0A00000500002A9F0000000000012C40"},"flag":1,"language":"JAVA",'
    b'"opaque":7,"serializeTypeCurrentRPC":"JSON","version":407}')


def spec_response() -> RemotingCommand:
    return RemotingCommand(0, opaque=7, flag=RPC_RESPONSE, ext_fields={
        "queueId": "2", "MSG_REGION": "DefaultRegion", "queueOffset": "17", "TRACE_ON": "true",
        "msgId": "0A00000500002A9F0000000000012C40"})


def test_json_frame_golden():
    """length = 4 + 232 = 0xEC, header word = type 0 | 0xE8, then the header, no body."""
    frame = b"\x00\x00\x00\xec" + b"\x00\x00\x00\xe8" + SPEC_RESPONSE_HEADER
    assert len(SPEC_RESPONSE_HEADER) == 0xE8
    assert spec_response().encode() == frame
    decoded = RemotingCommand.decode(frame)
    assert decoded == spec_response()
    assert decoded.is_response and not decoded.is_oneway and decoded.body is None


def test_binary_frame_golden():
    """§1.3 by hand: SEND_MESSAGE_V2 request, ROCKETMQ header of 29 bytes, body "abc"."""
    header = bytes.fromhex("0136" "00" "0197" "0000002a" "00000000" "00000000"
                           "00000008" "0001" "61" "00000001" "78")
    frame = b"\x00\x00\x00\x24" + b"\x01\x00\x00\x1d" + header + b"abc"
    cmd = RemotingCommand(RequestCode.SEND_MESSAGE_V2, opaque=42, ext_fields={"a": "x"}, body=b"abc",
                          serialize_type=SerializeType.ROCKETMQ)
    assert cmd.encode() == frame
    assert RemotingCommand.decode(frame) == cmd


def test_binary_and_json_decode_to_the_same_command():
    cmd = spec_response()
    cmd.remark = "note"
    binary = RemotingCommand.decode(RemotingCommand(**{**_fields(cmd), "serialize_type": 1}).encode())
    json_ = RemotingCommand.decode(cmd.encode())
    assert _fields(binary) | {"serialize_type": 0} == _fields(json_)


def _fields(cmd: RemotingCommand) -> dict:
    return {k: getattr(cmd, k) for k in RemotingCommand.__slots__}


# CAPTURES.md §1: the first request of rocketmq-client-cpp (PyPI rocketmq 0.4.4), as it arrives.
CPP_ROUTE_REQUEST = (
    b'{"code":105,"extFields":{"AccessKey":"","OnsChannel":"ALIYUN","Signature":"SqGQ=","topic":"CapTopic"},'
    b'"flag":0,"language":"CPP","opaque":0,"remark":"","version":63}')

# CAPTURES.md §2 "Full examples": SEND_MESSAGE with numbers among the extFields values.
CPP_SEND_HEADER = (
    '{"code":10,"extFields":{"AccessKey":"","OnsChannel":"ALIYUN","Signature":"SqGQ","batch":"0",'
    '"bornTimestamp":"1795552161155","defaultTopic":"TBW102","defaultTopicQueueNums":4,"flag":0,'
    '"producerGroup":"PG_aa1695fb","properties":"KEYS\\u0001Kaa-0\\u0002TAGS\\u0001Tag0\\u0002WAIT\\u0001true\\u0002",'
    '"queueId":0,"reconsumeTimes":"0","sysFlag":0,"topic":"ITpy_sync_x","unitMode":"0"},'
    '"flag":0,"language":"CPP","opaque":3,"remark":"","version":63}').encode()


def frame_of(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">iI", 4 + len(header) + len(body), len(header)) + header + body


def test_cpp_route_request_from_captures():
    cmd = RemotingCommand.decode(frame_of(CPP_ROUTE_REQUEST))
    assert cmd.code == RequestCode.GET_ROUTEINFO_BY_TOPIC
    assert (cmd.language, cmd.version, cmd.opaque, cmd.flag, cmd.remark) == ("CPP", 63, 0, 0, "")
    assert cmd.ext_fields["topic"] == "CapTopic" and cmd.ext_fields["OnsChannel"] == "ALIYUN"
    resp = cmd.create_response(ResponseCode.TOPIC_NOT_EXIST, "No topic route info in name server for the topic: CapTopic")
    frame = resp.encode()
    assert frame[4] == 0                                   # CPP cannot read anything but JSON headers
    parsed = orjson.loads(frame[8:])
    assert parsed["extFields"] == {} and parsed["opaque"] == 0 and parsed["flag"] == 1
    assert parsed["version"] == 407 and parsed["language"] == "JAVA"
    assert list(parsed) == sorted(parsed)                  # fastjson's sorted keys


def test_cpp_send_message_values_coerced_to_strings():
    body = "body-aa1695fb-0-é".encode()
    cmd = RemotingCommand.decode(frame_of(CPP_SEND_HEADER, body))
    assert cmd.ext_fields["queueId"] == "0" and cmd.ext_fields["defaultTopicQueueNums"] == "4"
    assert cmd.ext_fields["sysFlag"] == "0" and cmd.ext_fields["batch"] == "0"
    assert cmd.ext_fields["properties"] == "KEYS\x01Kaa-0\x02TAGS\x01Tag0\x02WAIT\x01true\x02"
    assert all(type(v) is str for v in cmd.ext_fields.values())
    assert bytes(cmd.body) == body


@pytest.mark.parametrize("ext, expected", [
    ({"b": True, "f": False}, {"b": "true", "f": "false"}),
    ({"n": None, "x": "1"}, {"x": "1"}),
    ({"big": 123456789012345678, "neg": -1, "fl": 1.5}, {"big": "123456789012345678", "neg": "-1", "fl": "1.5"}),
    ({"o": {"a": 1}, "l": [1, "x"]}, {"o": '{"a":1}', "l": '[1,"x"]'}),
])
def test_ext_fields_any_json_type(ext, expected):
    header = orjson.dumps({"code": 1, "extFields": ext})
    assert RemotingCommand.decode(frame_of(header)).ext_fields == expected


def test_missing_fields_take_defaults_and_unknown_ones_are_ignored():
    header = b'{"code":34,"bname":"b","ns":"x","nsd":false,"oway":true,"lo":1,"serializeTypeCurrentRPC":"JSON"}'
    cmd = RemotingCommand.decode(frame_of(header))
    assert (cmd.code, cmd.language, cmd.version, cmd.opaque, cmd.flag) == (34, "JAVA", 0, 0, 0)
    assert cmd.remark is None and cmd.ext_fields == {}
    assert RemotingCommand.decode(frame_of(b"{}")).code == 0


@pytest.mark.parametrize("header, expected", [
    (b'{"code":"10","opaque":"7","flag":1.0,"version":true}', (10, 7, 1, 1)),
    (b'{"code":10,"opaque":null,"language":9}', (10, 0, 0, 0)),
])
def test_int_fields_bound_leniently(header, expected):
    cmd = RemotingCommand.decode(frame_of(header))
    assert (cmd.code, cmd.opaque, cmd.flag, cmd.version) == expected


def test_language_variants():
    assert RemotingCommand.decode(frame_of(b'{"language":9}')).language == "GO"
    assert RemotingCommand.decode(frame_of(b'{"language":"NODE_JS"}')).language == "NODE_JS"
    assert RemotingCommand.decode(frame_of(b'{"language":"KOTLIN"}')).language == "KOTLIN"
    assert RemotingCommand.decode(frame_of(b'{"language":[1]}')).language == "OTHER"
    unknown = RemotingCommand(1, language="KOTLIN", serialize_type=1)
    assert RemotingCommand.decode(unknown.encode()).language == "OTHER"


def test_fastjson_header_accepted():
    """Java parses headers with fastjson, so bare keys in a header must not kill the connection."""
    cmd = RemotingCommand.decode(frame_of(b"{code:11,opaque:5,extFields:{queueId:3}}"))
    assert (cmd.code, cmd.opaque, cmd.ext_fields) == (11, 5, {"queueId": "3"})


@pytest.mark.parametrize("header", [
    b"", b"{", b"not json", b"[]", b"null", b"42", b'"x"', b'{"code":"ten"}', b'{"code":[1]}',
    b'{"code":1.5}', b'{"opaque":4294967296}', b'{"extFields":5}', b'{"extFields":[1]}',
    b"[" * 5000 + b"]" * 5000, b"\xff\xfe",
])
def test_unusable_json_headers_raise_frame_error(header):
    with pytest.raises(FrameError):
        RemotingCommand.decode(frame_of(header))


def test_decode_requires_exactly_one_frame():
    frame = RemotingCommand(1).encode()
    with pytest.raises(FrameError):
        RemotingCommand.decode(frame + frame)
    with pytest.raises(FrameError):
        RemotingCommand.decode(frame[:-1])


def test_flags_and_responses():
    req = RemotingCommand.request(RequestCode.UPDATE_CONSUMER_OFFSET, {"queueId": "1"}, oneway=True,
                                  serialize_type=SerializeType.ROCKETMQ)
    assert req.is_oneway and not req.is_response and req.flag == RPC_ONEWAY and req.opaque > 0
    resp = req.create_response(ResponseCode.SUCCESS, ext_fields={"offset": "5"})
    assert resp.is_response and resp.opaque == req.opaque and resp.serialize_type == SerializeType.ROCKETMQ
    assert resp.version == CURRENT_VERSION == MQVersion.V4_9_7 == 407
    other = RemotingCommand.request(1)
    assert other.opaque != req.opaque
    other.mark_oneway()
    other.mark_response()
    assert other.flag == 3


def test_encode_coerces_ext_values_and_drops_none():
    cmd = RemotingCommand(1, ext_fields={"a": 1, "b": True, "c": None, "d": "x"})
    parsed = orjson.loads(cmd.encode()[8:])
    assert parsed["extFields"] == {"a": "1", "b": "true", "d": "x"}
    assert "remark" not in parsed


def test_encode_rejects_out_of_range_fields():
    with pytest.raises(FrameError):
        RemotingCommand(1 << 31).encode()
    with pytest.raises(FrameError):
        RemotingCommand(200050, serialize_type=1).encode()       # 5.x POP codes need JSON
    assert RemotingCommand.decode(RemotingCommand(200050).encode()).code == 200050
    with pytest.raises(FrameError):
        RemotingCommand(1, serialize_type=7).encode()


def test_language_enum_accepted_on_encode():
    cmd = RemotingCommand(1, language=LanguageCode.CPP)   # type: ignore[arg-type]
    assert RemotingCommand.decode(cmd.encode()).language == "CPP"


def test_repr_mentions_kind():
    assert "oneway" in repr(RemotingCommand(1, flag=RPC_ONEWAY))
    assert "response" in repr(RemotingCommand(1, flag=RPC_RESPONSE))


def test_codes_match_the_spec():
    assert ResponseCode.SYSTEM_BUSY == 2 and ResponseCode.REQUEST_CODE_NOT_SUPPORTED == 3
    assert ResponseCode.TOPIC_NOT_EXIST == 17 and ResponseCode.QUERY_NOT_FOUND == 22
    assert ResponseCode.TRANSACTION_STATE_UNKNOW == 202 and ResponseCode.FLOW_CONTROL == 215
    assert ResponseCode(209).name == "UPDATE_AND_CREATE_ACL_CONFIG_FAILED"
    assert RequestCode.SEND_MESSAGE_V2 == 310 and RequestCode.SEND_BATCH_MESSAGE == 320
    assert RequestCode.GET_ROUTEINFO_BY_TOPIC == 105 and RequestCode.QUERY_DATA_VERSION == 322
    assert RequestCode.ADD_WRITE_PERM_OF_BROKER == 327 and RequestCode.GET_SYSTEM_TOPIC_LIST_FROM_NS == 304
    assert len({c.value for c in RequestCode}) == len(RequestCode)
    assert [m.value for m in LanguageCode] == list(range(14))


# -- round trips ----------------------------------------------------------------------------------

int32 = st.integers(-(1 << 31), (1 << 31) - 1)
int16 = st.integers(-32768, 32767)
languages = st.sampled_from([m.name for m in LanguageCode])
ext_st = st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=8)
body_st = st.none() | st.binary(min_size=1, max_size=500)


@settings(max_examples=150, deadline=None)
@given(int32, languages, int32, int32, int32, st.none() | st.text(max_size=50), ext_st, body_st)
def test_json_round_trip(code, lang, version, opaque, flag, remark, ext, body):
    cmd = RemotingCommand(code, language=lang, version=version, opaque=opaque, flag=flag, remark=remark,
                          ext_fields=ext, body=body)
    assert RemotingCommand.decode(cmd.encode()) == cmd
    assert RemotingCommand.decode(b"".join(cmd.encode_parts())) == cmd


@settings(max_examples=150, deadline=None)
@given(int16, languages, int16, int32, int32, st.none() | st.text(min_size=1, max_size=50), ext_st, body_st)
def test_rocketmq_round_trip(code, lang, version, opaque, flag, remark, ext, body):
    cmd = RemotingCommand(code, language=lang, version=version, opaque=opaque, flag=flag, remark=remark,
                          ext_fields=ext, body=body, serialize_type=SerializeType.ROCKETMQ)
    decoded = RemotingCommand.decode(cmd.encode())
    assert decoded == cmd
    as_json = RemotingCommand.decode(RemotingCommand(**{**_fields(decoded), "serialize_type": 0}).encode())
    assert _fields(as_json) | {"serialize_type": 1, "body": None} == _fields(decoded) | {"body": None}
