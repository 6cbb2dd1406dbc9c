"""Tests of rmq_common.message: Message accessors over the property map and MessageExt ids."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmq_common.message import Message, MessageExt
from rmq_common.msgid import create_offset_msg_id
from rmq_common.properties import PropertiesTooLongError, PropertyKey, decode_properties


def make_ext(**overrides: object) -> MessageExt:
    fields: dict[str, object] = {
        "store_size": 200,
        "magic": -626843481,
        "body_crc": 12345,
        "queue_id": 1,
        "flag": 0,
        "queue_offset": 7,
        "commit_log_offset": 123,
        "sys_flag": 0,
        "born_timestamp": 1_700_000_000_000,
        "born_host": ("10.0.0.9", 53211),
        "store_timestamp": 1_700_000_000_005,
        "store_host": ("10.0.0.5", 10911),
        "reconsume_times": 0,
        "prepared_transaction_offset": 0,
        "body": b"hello",
        "topic": "TopicTest",
        "properties": {},
    }
    fields.update(overrides)
    return MessageExt(**fields)  # type: ignore[arg-type]


# --- Message ----------------------------------------------------------------------------------------------------


def test_message_defaults() -> None:
    msg = Message("TopicTest", b"body")
    assert (msg.topic, msg.body, msg.flag, msg.properties) == ("TopicTest", b"body", 0, {})
    assert msg.tags is None
    assert msg.keys == []
    assert msg.delay_time_level == 0
    assert msg.unique_key is None
    assert msg.wait_store_msg_ok is True
    assert msg.properties_bytes() == b""


def test_message_defaults_are_not_shared() -> None:
    a, b = Message("T", b""), Message("T", b"")
    a.tags = "x"
    assert b.properties == {}


def test_message_uses_slots() -> None:
    msg = Message("T", b"")
    assert not hasattr(msg, "__dict__")
    with pytest.raises(AttributeError):
        msg.nonexistent = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("body", [bytearray(b"abc"), memoryview(b"abc")])
def test_message_body_is_normalised_to_bytes(body: bytearray | memoryview) -> None:
    msg = Message("T", body)  # type: ignore[arg-type]
    assert type(msg.body) is bytes
    assert msg.body == b"abc"


def test_message_rejects_str_body() -> None:
    with pytest.raises(TypeError, match="message body must be bytes-like, got str"):
        Message("T", "text")  # type: ignore[arg-type]


def test_tags() -> None:
    msg = Message("T", b"")
    msg.tags = "TagA"
    assert msg.properties == {"TAGS": "TagA"}
    assert msg.tags == "TagA"
    msg.tags = None
    assert msg.properties == {}
    msg.tags = ""
    assert "TAGS" not in msg.properties


def test_keys_from_list() -> None:
    msg = Message("T", b"")
    msg.keys = ["order-1", "user-9"]
    assert msg.properties[PropertyKey.KEYS] == "order-1 user-9"
    assert msg.keys == ["order-1", "user-9"]
    msg.keys = []
    assert PropertyKey.KEYS not in msg.properties


def test_keys_from_raw_string_and_generator() -> None:
    msg = Message("T", b"")
    msg.keys = "a b"
    assert msg.keys == ["a", "b"]
    msg.keys = (k for k in ["x"])
    assert msg.keys == ["x"]
    msg.keys = None
    assert msg.keys == []


def test_keys_split_like_the_index_service() -> None:
    msg = Message("T", b"", properties={"KEYS": " a  b "})
    assert msg.keys == ["a", "b"]


@pytest.mark.parametrize(("keys", "message"), [(["a b"], "contains the key separator"), (["a", ""], "not be empty")])
def test_keys_rejects_ambiguous_keys(keys: list[str], message: str) -> None:
    msg = Message("T", b"")
    with pytest.raises(ValueError, match=message):
        msg.keys = keys
    assert msg.properties == {}


def test_delay_time_level() -> None:
    msg = Message("T", b"")
    msg.delay_time_level = 3
    assert msg.properties == {"DELAY": "3"}
    assert msg.delay_time_level == 3
    msg.delay_time_level = 0
    assert msg.properties == {}
    with pytest.raises(ValueError, match="delay level must be >= 0, got -1"):
        msg.delay_time_level = -1


@pytest.mark.parametrize(("raw", "level"), [("18", 18), ("+2", 2), ("-1", -1), ("007", 7)])
def test_delay_time_level_parses_like_java(raw: str, level: int) -> None:
    assert Message("T", b"", properties={"DELAY": raw}).delay_time_level == level


@pytest.mark.parametrize("raw", ["", "x", "1.5", " 3", "1_0", "\uff13"])
def test_delay_time_level_rejects_junk(raw: str) -> None:
    with pytest.raises(ValueError, match="DELAY property is not an integer"):
        _ = Message("T", b"", properties={"DELAY": raw}).delay_time_level


def test_unique_key() -> None:
    msg = Message("T", b"")
    msg.unique_key = "0A0000050000000000000000000000AB"
    assert msg.properties == {"UNIQ_KEY": "0A0000050000000000000000000000AB"}
    assert msg.unique_key == "0A0000050000000000000000000000AB"
    msg.unique_key = None
    assert msg.properties == {}


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("TRUE", True), ("false", False), ("yes", False)])
def test_wait_store_msg_ok_parses_like_java(raw: str, expected: bool) -> None:
    assert Message("T", b"", properties={"WAIT": raw}).wait_store_msg_ok is expected


def test_wait_store_msg_ok_setter() -> None:
    msg = Message("T", b"")
    msg.wait_store_msg_ok = False
    assert msg.properties == {"WAIT": "false"}
    msg.wait_store_msg_ok = True
    assert msg.properties == {"WAIT": "true"}


def test_properties_bytes() -> None:
    msg = Message("T", b"")
    msg.tags = "TagA"
    msg.keys = ["k1", "k2"]
    msg.wait_store_msg_ok = True
    assert msg.properties_bytes() == b"TAGS\x01TagA\x02KEYS\x01k1 k2\x02WAIT\x01true"


def test_properties_bytes_enforces_the_limit() -> None:
    msg = Message("T", b"", properties={"BIG": "x" * 40_000})
    with pytest.raises(PropertiesTooLongError):
        msg.properties_bytes()


@given(
    st.text(alphabet="abcXYZ019_-", min_size=1, max_size=20),
    st.lists(st.text(alphabet="abc123-_.", min_size=1, max_size=10), max_size=5),
    st.integers(0, 18),
)
def test_accessors_round_trip_through_encoding(tags: str, keys: list[str], level: int) -> None:
    msg = Message("T", b"")
    msg.tags = tags
    msg.keys = keys
    msg.delay_time_level = level
    decoded = Message("T", b"", properties=decode_properties(msg.properties_bytes()))
    assert decoded.tags == tags
    assert decoded.keys == keys
    assert decoded.delay_time_level == level


# --- MessageExt -------------------------------------------------------------------------------------------------


def test_message_ext_fields_are_exactly_the_record_fields() -> None:
    assert [f.name for f in dataclasses.fields(MessageExt)] == [
        "store_size",
        "magic",
        "body_crc",
        "queue_id",
        "flag",
        "queue_offset",
        "commit_log_offset",
        "sys_flag",
        "born_timestamp",
        "born_host",
        "store_timestamp",
        "store_host",
        "reconsume_times",
        "prepared_transaction_offset",
        "body",
        "topic",
        "properties",
    ]
    assert not hasattr(make_ext(), "__dict__")


def test_message_ext_accessors() -> None:
    ext = make_ext(properties={"TAGS": "TagA", "KEYS": "k1 k2", "UNIQ_KEY": "ABC"})
    assert ext.tags == "TagA"
    assert ext.keys == ["k1", "k2"]
    assert ext.unique_key == "ABC"
    empty = make_ext()
    assert (empty.tags, empty.keys, empty.unique_key) == (None, [], None)


def test_message_ext_offset_msg_id() -> None:
    ext = make_ext()
    assert ext.offset_msg_id == "0A00000500002A9F000000000000007B"


def test_message_ext_offset_msg_id_ipv6_store_host() -> None:
    ext = make_ext(store_host=("2001:db8::1", 10911), commit_log_offset=1 << 33)
    assert ext.offset_msg_id == create_offset_msg_id("2001:db8::1", 10911, 1 << 33)
    assert len(ext.offset_msg_id) == 56


def test_message_ext_msg_id_prefers_unique_key() -> None:
    assert make_ext().msg_id == "0A00000500002A9F000000000000007B"
    assert make_ext(properties={"UNIQ_KEY": "C0A8000100002A9F0000000000001234"}).msg_id == (
        "C0A8000100002A9F0000000000001234"
    )
