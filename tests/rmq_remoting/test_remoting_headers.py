"""Typed headers: every code covered, wire names, coercion, round trips, and RocketMQ's missing-field remark."""
from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmq_remoting import RemotingClient, RemotingCommand, RequestCode, ResponseCode, SerializeType
from rmq_remoting import headers as h
from rmq_remoting.errors import RemotingCommandError

INT32 = (-2 ** 31, 2 ** 31 - 1)
INT64 = (-2 ** 63, 2 ** 63 - 1)

ALL_HEADERS = sorted({*h.REQUEST_HEADERS.values(), *h.RESPONSE_HEADERS.values()}, key=lambda c: c.__name__)

# Codes a broker or nameserver never receives from a peer, or which RocketMQ serves with a body only.
NOT_REQUESTS = {RequestCode.GET_ALL_DELAY_OFFSET}


def _field_strategy(field: msgspec.inspect.Field) -> st.SearchStrategy:
    t = field.type
    optional = isinstance(t, msgspec.inspect.UnionType)
    if optional:
        t = next(x for x in t.types if not isinstance(x, msgspec.inspect.NoneType))
    if isinstance(t, msgspec.inspect.StrType):
        base: st.SearchStrategy = st.text(max_size=20)
    elif isinstance(t, msgspec.inspect.BoolType):
        base = st.booleans()
    else:
        assert isinstance(t, msgspec.inspect.IntType), (field.name, t)
        base = st.integers(t.ge, t.le)
    return st.one_of(st.none(), base) if optional else base


def _instances(cls: type[h.CommandHeader]) -> st.SearchStrategy:
    info = msgspec.inspect.type_info(cls)
    return st.builds(cls, **{f.name: _field_strategy(f) for f in info.fields})


def _required_wire_names(cls: type[h.CommandHeader]) -> list[str]:
    info = msgspec.inspect.type_info(cls)
    return [f.encode_name for f in info.fields if f.required]


def test_every_request_code_has_a_header_or_is_headerless():
    for code in RequestCode:
        if code in NOT_REQUESTS:
            continue
        assert code in h.REQUEST_HEADERS or code in h.HEADERLESS_REQUESTS, code.name


def test_int_and_long_fields_are_java_ranges():
    for cls in ALL_HEADERS:
        for f in msgspec.inspect.type_info(cls).fields:
            t = f.type
            types = t.types if isinstance(t, msgspec.inspect.UnionType) else (t,)
            for x in types:
                if isinstance(x, msgspec.inspect.IntType):
                    assert (x.ge, x.le) in (INT32, INT64), (cls.__name__, f.name)


@pytest.mark.parametrize("cls", ALL_HEADERS, ids=lambda c: c.__name__)
def test_round_trip_through_ext_fields(cls):
    @settings(max_examples=30, deadline=None)
    @given(_instances(cls))
    def check(header):
        ext = header.to_ext()
        assert all(type(k) is str and type(v) is str for k, v in ext.items())
        again = cls.decode(ext)
        # None and an omitted optional field are the same thing on the wire.
        for f in msgspec.inspect.type_info(cls).fields:
            a, b = getattr(header, f.name), getattr(again, f.name)
            assert a == b or (a is None and b == f.default), (f.name, a, b)
    check()


@pytest.mark.parametrize("cls", [c for c in ALL_HEADERS if _required_wire_names(c)], ids=lambda c: c.__name__)
def test_each_missing_mandatory_field_is_named(cls):
    info = msgspec.inspect.type_info(cls)
    full = {}
    for f in info.fields:
        t = f.type
        t = next(x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)) \
            if isinstance(t, msgspec.inspect.UnionType) else t
        full[f.encode_name] = "true" if isinstance(t, msgspec.inspect.BoolType) else \
            ("7" if isinstance(t, msgspec.inspect.IntType) else "x")
    cls.decode(full)
    for name in _required_wire_names(cls):
        ext = {k: v for k, v in full.items() if k != name}
        with pytest.raises(RemotingCommandError) as err:
            cls.decode(ext)
        assert str(err.value) == f"the custom field <{name}> is null"
        assert err.value.field == name


def test_wire_names_are_rocketmq_camel_case():
    assert h.PullMessageRequestHeader.__struct_encode_fields__[:4] == (
        "consumerGroup", "topic", "queueId", "queueOffset")
    assert "suspendTimeoutMillis" in h.PullMessageRequestHeader.__struct_encode_fields__
    assert h.UnregisterClientRequestHeader.__struct_encode_fields__[0] == "clientID"
    assert "bodyCrc32" in h.RegisterBrokerRequestHeader.__struct_encode_fields__
    assert "indexLastUpdatePhyoffset" in h.QueryMessageResponseHeader.__struct_encode_fields__
    assert h.SendMessageRequestHeaderV2.__struct_encode_fields__ == tuple("abcdefghijklmn")


def test_capture_of_the_cpp_client_send_decodes():
    # CAPTURES.md §2: numbers and strings mixed; the command layer has made them strings already.
    raw = (b'{"code":10,"extFields":{"AccessKey":"","OnsChannel":"ALIYUN","Signature":"SqGQ","batch":"0",'
           b'"bornTimestamp":"1795552161155","defaultTopic":"TBW102","defaultTopicQueueNums":4,"flag":0,'
           b'"producerGroup":"PG_aa1695fb","properties":"KEYS\\u0001K-0\\u0002TAGS\\u0001Tag0\\u0002",'
           b'"queueId":0,"reconsumeTimes":"0","sysFlag":0,"topic":"ITpy_sync","unitMode":"0"},"flag":0,'
           b'"language":"CPP","opaque":0,"remark":"","version":63}')
    cmd = RemotingCommand.from_frame(raw, 0, b"body")
    header = h.decode_send_header(cmd)
    assert header.producer_group == "PG_aa1695fb" and header.topic == "ITpy_sync"
    assert header.default_topic == "TBW102" and header.default_topic_queue_nums == 4
    assert header.born_timestamp == 1795552161155 and header.queue_id == 0
    assert header.batch is False and header.unit_mode is False and header.reconsume_times == 0
    assert header.properties == "KEYS\x01K-0\x02TAGS\x01Tag0\x02"
    cmd.ext_fields["batch"] = "1"                   # CAPTURES.md §3.4: "1" means a batch
    assert h.decode_send_header(cmd).batch is True


def test_booleans_accept_java_and_cpp_spellings():
    base = {"topic": "T", "defaultTopic": "TBW102", "readQueueNums": "4", "writeQueueNums": "4",
            "perm": "6", "topicFilterType": "SINGLE_TAG"}
    for text, value in [("true", True), ("TRUE", True), ("1", True), ("false", False), ("0", False)]:
        assert h.CreateTopicRequestHeader.decode({**base, "order": text}).order is value
    with pytest.raises(RemotingCommandError, match=r"<order> is invalid"):
        h.CreateTopicRequestHeader.decode({**base, "order": "maybe"})


def test_ranges_and_types_are_checked():
    ok = {"topic": "T", "queueId": "3"}
    assert h.GetMaxOffsetRequestHeader.decode(ok).queue_id == 3
    with pytest.raises(RemotingCommandError, match=r"<queueId> is invalid.*'2147483648'"):
        h.GetMaxOffsetRequestHeader.decode({"topic": "T", "queueId": str(2 ** 31)})
    with pytest.raises(RemotingCommandError, match=r"<queueId> is invalid"):
        h.GetMaxOffsetRequestHeader.decode({"topic": "T", "queueId": "one"})
    assert h.ViewMessageRequestHeader.decode({"offset": str(2 ** 40)}).offset == 2 ** 40
    with pytest.raises(RemotingCommandError, match=r"<offset> is invalid"):
        h.ViewMessageRequestHeader.decode({"offset": str(2 ** 63)})
    assert h.GetMaxOffsetRequestHeader.decode({**ok, "Signature": "x", "futureField": "y"}).topic == "T"


def test_v1_and_v2_send_headers_convert_both_ways():
    v1 = h.SendMessageRequestHeader(producer_group="PG", topic="T", default_topic="TBW102",
                                    default_topic_queue_nums=4, queue_id=-1, sys_flag=0,
                                    born_timestamp=1700000000000, flag=0, properties="a\x01b\x02",
                                    reconsume_times=2, max_reconsume_times=16, batch=False)
    v2 = v1.to_v2()
    assert v2.to_ext()["a"] == "PG" and v2.to_ext()["e"] == "-1" and v2.to_ext()["l"] == "16"
    assert v2.to_v1() == v1
    for code in (RequestCode.SEND_MESSAGE_V2, RequestCode.SEND_BATCH_MESSAGE, RequestCode.SEND_MESSAGE):
        ext = v1.to_ext() if code == RequestCode.SEND_MESSAGE else v2.to_ext()
        header = h.decode_send_header(RemotingCommand.request(code, ext))
        assert header.topic == "T" and header.queue_id == -1
        assert header.batch is (code == RequestCode.SEND_BATCH_MESSAGE)
    # The long form under a V2 code is not guessed at: the broker decodes by code, as Java does.
    with pytest.raises(RemotingCommandError, match="<a> is null"):
        h.decode_send_header(RemotingCommand.request(RequestCode.SEND_MESSAGE_V2, v1.to_ext()))


def test_a_missing_field_over_the_wire_answers_system_error_and_keeps_the_connection(rt):
    async def get_max(conn, cmd):
        header = h.GetMaxOffsetRequestHeader.decode(cmd.ext_fields)
        return cmd.create_response(0, ext_fields=h.GetMaxOffsetResponseHeader(offset=header.queue_id).to_ext())

    async def main():
        async with rt.server() as srv, RemotingClient() as client:
            srv.register(RequestCode.GET_MAX_OFFSET, get_max)
            addr = f"127.0.0.1:{srv.port}"
            for ser in (SerializeType.JSON, SerializeType.ROCKETMQ):
                resp = await client.invoke(addr, RemotingCommand.request(
                    RequestCode.GET_MAX_OFFSET, {"queueId": "1"}, serialize_type=ser))
                assert resp.code == ResponseCode.SYSTEM_ERROR
                assert resp.remark == "the custom field <topic> is null"
                resp = await client.invoke(addr, RemotingCommand.request(
                    RequestCode.GET_MAX_OFFSET, {"topic": "T", "queueId": "5"}, serialize_type=ser))
                assert resp.code == ResponseCode.SUCCESS and resp.ext_fields == {"offset": "5"}
            assert len(srv.connections) == 1
    rt.run(main)
