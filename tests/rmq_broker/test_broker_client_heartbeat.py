"""HEART_BEAT body parsing (PROTOCOL.md §3.4, CAPTURES.md §3.11) and FilterAPI-style subscriptions."""
from __future__ import annotations

import pytest

from rmq_broker.heartbeat import (
    SUB_ALL,
    ConsumeFromWhere,
    ConsumeType,
    HeartbeatError,
    MessageModel,
    SubscriptionData,
    SubscriptionParseError,
    parse_heartbeat,
)
from rmq_common.hashing import java_string_hash

# The C++ client's heartbeat as captured (CAPTURES.md §2): enum ordinals, subVersion as a string, no
# producerDataSet, a trailing newline.
CPP_GROUP = "CGpy_sync_179555216118368"
CPP_BODY = (
    '{"clientID":"18390-127.0.0.1@DEFAULT","consumerDataSet":[{"consumeFromWhere":0,"consumeType":1,'
    f'"groupName":"{CPP_GROUP}","messageModel":1,"subscriptionDataSet":['
    f'{{"subString":"*","subVersion":"1795552161199","topic":"%RETRY%{CPP_GROUP}"}},'
    '{"subString":"*","subVersion":"1795552161199","topic":"ITpy_sync_179555216118368"}]}]}\n'
).encode()

# The Java form of PROTOCOL.md §3.4: enum names, numeric subVersion, empty sets.
JAVA_BODY = (
    b'{"clientID":"10.0.0.9@12345#8721623",'
    b'"consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY",'
    b'"groupName":"G","messageModel":"CLUSTERING","unitMode":false,'
    b'"subscriptionDataSet":[{"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"*",'
    b'"subVersion":1690000000000,"tagsSet":[],"topic":"T"}]}],'
    b'"producerDataSet":[{"groupName":"PG"},{"groupName":"CLIENT_INNER_PRODUCER"}]}'
)


def test_cpp_capture_with_ordinals_string_subversion_and_trailing_newline() -> None:
    hb = parse_heartbeat(CPP_BODY)
    assert hb.client_id == "18390-127.0.0.1@DEFAULT"
    assert hb.producers == ()
    (consumer,) = hb.consumers
    assert consumer.group_name == CPP_GROUP
    assert consumer.consume_type is ConsumeType.CONSUME_PASSIVELY
    assert consumer.message_model is MessageModel.CLUSTERING
    assert consumer.consume_from_where is ConsumeFromWhere.CONSUME_FROM_LAST_OFFSET
    assert consumer.unit_mode is False
    assert [s.topic for s in consumer.subscriptions] == [f"%RETRY%{CPP_GROUP}", "ITpy_sync_179555216118368"]
    for sub in consumer.subscriptions:
        assert sub.sub_string == SUB_ALL and sub.all_tags
        assert sub.sub_version == 1795552161199
        assert sub.expression_type == "TAG"
        assert sub.tags_set == () and sub.code_set == ()


def test_java_body_with_enum_names() -> None:
    hb = parse_heartbeat(memoryview(JAVA_BODY))
    assert hb.client_id == "10.0.0.9@12345#8721623"
    assert [p.group_name for p in hb.producers] == ["PG", "CLIENT_INNER_PRODUCER"]
    (consumer,) = hb.consumers
    assert (consumer.consume_type, consumer.message_model, consumer.consume_from_where) == (
        ConsumeType.CONSUME_PASSIVELY, MessageModel.CLUSTERING, ConsumeFromWhere.CONSUME_FROM_LAST_OFFSET)
    (sub,) = consumer.subscriptions
    assert sub.topic == "T" and sub.sub_version == 1690000000000 and sub.all_tags


@pytest.mark.parametrize("raw, expected", [
    (0, MessageModel.BROADCASTING), (1, MessageModel.CLUSTERING), ("BROADCASTING", MessageModel.BROADCASTING),
    ("1", MessageModel.CLUSTERING),
])
def test_message_model_forms(raw: object, expected: MessageModel) -> None:
    body = {"clientID": "c", "consumerDataSet": [{"groupName": "G", "messageModel": raw}]}
    import orjson
    assert parse_heartbeat(orjson.dumps(body)).consumers[0].message_model is expected


def test_every_consume_from_where_ordinal_and_name() -> None:
    import orjson
    for member in ConsumeFromWhere:
        for raw in (member.value, member.name):
            body = orjson.dumps({"clientID": "c", "consumerDataSet": [{"groupName": "G", "consumeFromWhere": raw,
                                                                       "consumeType": "CONSUME_ACTIVELY"}]})
            consumer = parse_heartbeat(body).consumers[0]
            assert consumer.consume_from_where is member
            assert consumer.consume_type is ConsumeType.CONSUME_ACTIVELY


def test_fastjson_bare_keys_and_lenient_scalars() -> None:
    body = (b"{clientID:'c1',consumerDataSet:[{groupName:'G',unitMode:'true',consumeType:'0',"
            b"subscriptionDataSet:[{topic:'T',subString:'a||b',subVersion:5,tagsSet:['a','b'],codeSet:['97',98]}]}]}")
    hb = parse_heartbeat(body)
    consumer = hb.consumers[0]
    assert consumer.unit_mode is True and consumer.consume_type is ConsumeType.CONSUME_ACTIVELY
    assert consumer.consume_from_where is None and consumer.message_model is None
    sub = consumer.subscriptions[0]
    assert sub.tags_set == ("a", "b") and sub.code_set == (97, 98) and not sub.all_tags


def test_missing_subversion_is_now_and_missing_sets_are_computed() -> None:
    body = b'{"clientID":"c","consumerDataSet":[{"groupName":"G","subscriptionDataSet":[{"topic":"T","subString":"TagA || TagB"}]}]}'
    sub = parse_heartbeat(body, clock_ms=lambda: 4242).consumers[0].subscriptions[0]
    assert sub.sub_version == 4242
    assert sub.tags_set == ("TagA", "TagB") and sub.code_set == (2598919, 2598920)
    assert sub.expression_type == "TAG"


def test_tags_without_codes_get_codes_and_sent_sets_are_kept() -> None:
    body = (b'{"clientID":"c","consumerDataSet":[{"groupName":"G","subscriptionDataSet":['
            b'{"topic":"T1","subString":"x","tagsSet":["x"]},'
            b'{"topic":"T2","subString":"x","tagsSet":["x"],"codeSet":[1]}]}]}')
    s1, s2 = parse_heartbeat(body).consumers[0].subscriptions
    assert s1.code_set == (java_string_hash("x"),)
    assert s2.code_set == (1,)                  # as sent: the Java broker trusts the client's sets


def test_sql92_subscription_is_kept_verbatim() -> None:
    body = (b'{"clientID":"c","consumerDataSet":[{"groupName":"G","subscriptionDataSet":['
            b'{"topic":"T","subString":"a > 5 AND b = \'x\'","expressionType":"SQL92","subVersion":1}]}]}')
    sub = parse_heartbeat(body).consumers[0].subscriptions[0]
    assert sub.expression_type == "SQL92" and sub.sub_string == "a > 5 AND b = 'x'"
    assert sub.tags_set == () and not sub.is_tag_type


def test_empty_heartbeat_of_a_client_without_groups() -> None:
    hb = parse_heartbeat(b'{"clientID":"c","consumerDataSet":[],"producerDataSet":[]}')
    assert hb.consumers == () and hb.producers == ()


@pytest.mark.parametrize("body, fragment", [
    (b"", "empty"),
    (None, "empty"),
    (b"{not json", "not JSON"),
    (b"[1,2]", "expected a HeartbeatData object"),
    (b'{"consumerDataSet":[]}', "clientID: missing"),
    (b'{"clientID":5}', "clientID: expected a string"),
    (b'{"clientID":""}', "clientID: must not be empty"),
    (b'{"clientID":"c","consumerDataSet":{}}', "consumerDataSet: expected an array"),
    (b'{"clientID":"c","consumerDataSet":[{}]}', "consumerDataSet[0].groupName: missing"),
    (b'{"clientID":"c","consumerDataSet":[{"groupName":"G","messageModel":7}]}',
     "consumerDataSet[0].messageModel: unknown MessageModel ordinal"),
    (b'{"clientID":"c","consumerDataSet":[{"groupName":"G","consumeType":"PUSH"}]}',
     "consumerDataSet[0].consumeType: unknown ConsumeType"),
    (b'{"clientID":"c","consumerDataSet":[{"groupName":"G","consumeFromWhere":true}]}',
     "consumeFromWhere: expected a ConsumeFromWhere name or ordinal"),
    (b'{"clientID":"c","consumerDataSet":[{"groupName":"G","unitMode":"maybe"}]}', "unitMode: expected a boolean"),
    (b'{"clientID":"c","consumerDataSet":[{"groupName":"G","subscriptionDataSet":[{"subString":"*"}]}]}',
     "subscriptionDataSet[0].topic: missing"),
    (b'{"clientID":"c","consumerDataSet":[{"groupName":"G","subscriptionDataSet":[{"topic":"T","subVersion":"abc"}]}]}',
     "subscriptionDataSet[0].subVersion: expected an integer"),
    (b'{"clientID":"c","consumerDataSet":[{"groupName":"G","subscriptionDataSet":[{"topic":"T","codeSet":[4294967296]}]}]}',
     "codeSet[0]: integer out of range"),
    (b'{"clientID":"c","consumerDataSet":[{"groupName":"G","subscriptionDataSet":[{"topic":"T","subString":"||"}]}]}',
     "subString: subString split error"),
    (b'{"clientID":"c","producerDataSet":[{"groupName":3}]}', "producerDataSet[0].groupName: expected a string"),
])
def test_bad_bodies_name_the_field(body: bytes | None, fragment: str) -> None:
    with pytest.raises(HeartbeatError) as info:
        parse_heartbeat(body)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


# -- SubscriptionData.build (upstream FilterAPI.buildSubscriptionData) --------------------------------

@pytest.mark.parametrize("expr", ["*", "", None])
def test_build_sub_all(expr: str | None) -> None:
    sub = SubscriptionData.build("T", expr)
    assert sub.sub_string == SUB_ALL and sub.tags_set == () and sub.code_set == () and sub.all_tags


def test_build_tags_and_java_hash_codes() -> None:
    sub = SubscriptionData.build("T", "TagA||TagB")
    assert sub.sub_string == "TagA||TagB"
    assert sub.tags_set == ("TagA", "TagB") and sub.code_set == (2598919, 2598920)
    assert not sub.all_tags and sub.expression_type == "TAG"


def test_build_trims_drops_empty_and_dedups() -> None:
    sub = SubscriptionData.build("T", " a || b ||||a||  ||")
    assert sub.tags_set == ("a", "b") and sub.code_set == (97, 98)
    assert sub.sub_string == " a || b ||||a||  ||"


def test_build_java_split_edge_cases() -> None:
    assert SubscriptionData.build("T", "|||").tags_set == ("|",)        # split leaves a literal "|"
    assert SubscriptionData.build("T", "|||").code_set == (124,)
    blank = SubscriptionData.build("T", "   ")                          # split branch, every piece trims away
    assert blank.sub_string == "   " and blank.tags_set == () and not blank.all_tags
    for bad in ("||", "||||"):
        with pytest.raises(SubscriptionParseError, match="subString split error"):
            SubscriptionData.build("T", bad)


def test_build_java_trim_is_not_unicode_strip() -> None:
    sub = SubscriptionData.build("T", "\u00a0x\t|| y\x01")
    assert sub.tags_set == ("\u00a0x", "y")                             # NBSP is not <= U+0020
    assert sub.code_set == (java_string_hash("\u00a0x"), java_string_hash("y"))


def test_build_non_ascii_tags_hash_like_java() -> None:
    sub = SubscriptionData.build("T", "标签||émoji😀")
    assert sub.code_set == tuple(java_string_hash(t) for t in ("标签", "émoji😀"))


def test_build_sql92() -> None:
    sub = SubscriptionData.build("T", "a > 1", "SQL92", sub_version=7)
    assert (sub.sub_string, sub.expression_type, sub.sub_version, sub.tags_set) == ("a > 1", "SQL92", 7, ())
    with pytest.raises(SubscriptionParseError, match="Expression can't be null! SQL92"):
        SubscriptionData.build("T", "", "SQL92")


def test_subscription_json_form_and_equality() -> None:
    sub = SubscriptionData.build("T", "a||b", sub_version=3)
    assert sub.to_json() == {"classFilterMode": False, "codeSet": [97, 98], "expressionType": "TAG",
                             "subString": "a||b", "subVersion": 3, "tagsSet": ["a", "b"], "topic": "T"}
    assert sub == SubscriptionData.build("T", "a||b", sub_version=3)
    assert hash(sub) == hash(SubscriptionData.build("T", "a||b", sub_version=3))
    assert sub != SubscriptionData.build("T", "a||b", sub_version=4)
