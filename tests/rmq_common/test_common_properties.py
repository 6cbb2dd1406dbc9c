"""Tests of rmq_common.properties: the property string codec and key names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmq_common.properties import (
    KEY_SEPARATOR,
    MAX_PROPERTIES_LENGTH,
    NAME_VALUE_SEPARATOR,
    PROPERTY_SEPARATOR,
    SYSTEM_PROPERTY_KEYS,
    PropertiesTooLongError,
    PropertyKey,
    decode_properties,
    encode_properties,
)


def java_string2message_properties(properties: str) -> dict[str, str]:
    """A literal port of Java's MessageDecoder.string2messageProperties, index arithmetic and all."""
    result: dict[str, str] = {}
    length = len(properties)
    index = 0
    while index < length:
        new_index = properties.find("\u0002", index)
        if new_index < 0:
            new_index = length
        if new_index - index >= 3:
            kv_sep_index = properties.find("\u0001", index)
            if index < kv_sep_index < new_index - 1:
                result[properties[index:kv_sep_index]] = properties[kv_sep_index + 1 : new_index]
        index = new_index + 1
    return result


# Property names and values: any encodable text without the two separators.
pieces = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\u0001\u0002"), min_size=1, max_size=40)


def test_separators() -> None:
    assert NAME_VALUE_SEPARATOR == "\x01"
    assert PROPERTY_SEPARATOR == "\x02"
    assert KEY_SEPARATOR == " "
    assert MAX_PROPERTIES_LENGTH == 32767


def test_encode_writes_no_trailing_separator() -> None:
    encoded = encode_properties({"TAGS": "TagA", "KEYS": "k1 k2", "WAIT": "true"})
    assert encoded == b"TAGS\x01TagA\x02KEYS\x01k1 k2\x02WAIT\x01true"


def test_encode_empty_mapping() -> None:
    assert encode_properties({}) == b""


def test_encode_is_utf8() -> None:
    assert encode_properties({"名": "値😀"}) == "名\x01値😀".encode()


def test_encode_writes_empty_values_like_java() -> None:
    assert encode_properties({"A": "", "B": "1"}) == b"A\x01\x02B\x011"


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"": "v"}, "name must not be empty"),
        ({"A\x01B": "v"}, "property name 'A\\\\x01B' contains a reserved separator"),
        ({"A\x02B": "v"}, "reserved separator"),
        ({"A": "x\x01y"}, "property value of 'A' contains a reserved separator"),
        ({"A": "x\x02y"}, "reserved separator"),
    ],
)
def test_encode_rejects_unrepresentable_pairs(props: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_properties(props)


def test_encode_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="must be str"):
        encode_properties({"DELAY": 3})  # type: ignore[dict-item]


def test_encode_rejects_lone_surrogates() -> None:
    # A lone surrogate has no UTF-8 form; the UnicodeEncodeError is a ValueError like the other refusals.
    with pytest.raises(ValueError, match="surrogates not allowed"):
        encode_properties({"K": "\ud800"})


def test_encode_length_limit_is_in_bytes() -> None:
    at_limit = {"K": "v" * (MAX_PROPERTIES_LENGTH - 2)}
    assert len(encode_properties(at_limit)) == MAX_PROPERTIES_LENGTH
    with pytest.raises(PropertiesTooLongError, match="32768 bytes, more than the limit of 32767"):
        encode_properties({"K": "v" * (MAX_PROPERTIES_LENGTH - 1)})
    # 11,000 three-byte characters are far fewer characters than the limit but too many bytes.
    with pytest.raises(PropertiesTooLongError):
        encode_properties({"K": "値" * 11_000})


def test_too_long_is_a_value_error() -> None:
    assert issubclass(PropertiesTooLongError, ValueError)


def test_decode_plain() -> None:
    assert decode_properties(b"TAGS\x01TagA\x02KEYS\x01k1 k2") == {"TAGS": "TagA", "KEYS": "k1 k2"}


def test_decode_accepts_trailing_separator_cpp_style() -> None:
    assert decode_properties(b"TAGS\x01TagA\x02KEYS\x01k\x02") == {"TAGS": "TagA", "KEYS": "k"}


@pytest.mark.parametrize("data", ["", "\x02", "\x02\x02\x02", "AB", "A\x01", "\x01AB", "\x01", "NOSEP\x02X"])
def test_decode_ignores_malformed_pieces(data: str) -> None:
    assert decode_properties(data) == {}


def test_decode_skips_bad_pieces_but_keeps_good_ones() -> None:
    data = "\x02AB\x02K\x01v\x02\x01x\x02EMPTY\x01\x02LAST\x01ok\x02"
    assert decode_properties(data) == {"K": "v", "LAST": "ok"}


def test_decode_minimal_pair_of_three_chars() -> None:
    assert decode_properties("A\x01B") == {"A": "B"}


def test_decode_first_name_value_separator_splits() -> None:
    assert decode_properties("K\x01v\x01w\x01") == {"K": "v\x01w\x01"}


def test_decode_later_duplicate_wins() -> None:
    assert decode_properties("K\x011\x02K\x012") == {"K": "2"}


def test_decode_piece_without_separator_does_not_borrow_the_next_one() -> None:
    # Java's indexOf finds the U+0001 of the *next* piece; it must not be used for this one.
    assert decode_properties("ABC\x02K\x01v") == {"K": "v"}


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, lambda b: b.decode()])
def test_decode_input_types(kind) -> None:  # type: ignore[no-untyped-def]
    raw = "TAGS\x01é\x02KEYS\x01k".encode()
    assert decode_properties(kind(raw)) == {"TAGS": "é", "KEYS": "k"}


def test_decode_replaces_malformed_utf8() -> None:
    assert decode_properties(b"K\x01a\xffb\x02L\x01ok") == {"K": "a\ufffdb", "L": "ok"}


def test_decode_drops_empty_values_written_by_encode() -> None:
    assert decode_properties(encode_properties({"A": "", "B": "1"})) == {"B": "1"}


@given(st.dictionaries(pieces, pieces, max_size=20))
def test_round_trip(props: dict[str, str]) -> None:
    encoded = encode_properties(props)
    assert decode_properties(encoded) == props
    assert not encoded.endswith(b"\x02")


@given(st.dictionaries(pieces, pieces, min_size=1, max_size=10))
def test_round_trip_with_trailing_separators(props: dict[str, str]) -> None:
    legacy = "".join(f"{k}\x01{v}\x02" for k, v in props.items())
    assert decode_properties(legacy.encode()) == props


@given(st.text(alphabet=st.sampled_from(["a", "B", "\x01", "\x02", "é", "😀", " "]), max_size=30))
def test_decode_matches_java_algorithm(text: str) -> None:
    assert decode_properties(text) == java_string2message_properties(text)
    assert decode_properties(text.encode()) == java_string2message_properties(text)


EXPECTED_KEYS = {
    "KEYS": "KEYS",
    "TAGS": "TAGS",
    "WAIT": "WAIT",
    "DELAY": "DELAY",
    "RETRY_TOPIC": "RETRY_TOPIC",
    "REAL_TOPIC": "REAL_TOPIC",
    "REAL_QID": "REAL_QID",
    "TRAN_MSG": "TRAN_MSG",
    "PGROUP": "PGROUP",
    "MIN_OFFSET": "MIN_OFFSET",
    "MAX_OFFSET": "MAX_OFFSET",
    "ORIGIN_MESSAGE_ID": "ORIGIN_MESSAGE_ID",
    "RECONSUME_TIME": "RECONSUME_TIME",
    "MAX_RECONSUME_TIMES": "MAX_RECONSUME_TIMES",
    "UNIQ_CLIENT_MESSAGE_ID_KEYIDX": "UNIQ_KEY",
    "UNIQ_KEY": "UNIQ_KEY",
    "CONSUME_START_TIME": "CONSUME_START_TIME",
    "TRAN_PREPARED_QUEUE_OFFSET": "TRAN_PREPARED_QUEUE_OFFSET",
    "TRANSACTION_CHECK_TIMES": "TRANSACTION_CHECK_TIMES",
    "CHECK_IMMUNITY_TIME_IN_SECONDS": "CHECK_IMMUNITY_TIME_IN_SECONDS",
    "CLUSTER": "CLUSTER",
    "CORRELATION_ID": "CORRELATION_ID",
    "REPLY_TO_CLIENT": "REPLY_TO_CLIENT",
    "TTL": "TTL",
    "ARRIVE_TIME": "ARRIVE_TIME",
    "PUSH_REPLY_TIME": "PUSH_REPLY_TIME",
    "BUYER_ID": "BUYER_ID",
    "TRANSFER_FLAG": "TRANSFER_FLAG",
    "CORRECTION_FLAG": "CORRECTION_FLAG",
    "MQ2_FLAG": "MQ2_FLAG",
    "MSG_REGION": "MSG_REGION",
    "TRACE_ON": "TRACE_ON",
    "INSTANCE_ID": "INSTANCE_ID",
    "MSG_TYPE": "MSG_TYPE",
    "INNER_MULTI_DISPATCH": "INNER_MULTI_DISPATCH",
    "INNER_MULTI_QUEUE_OFFSET": "INNER_MULTI_QUEUE_OFFSET",
    "TIMER_DELIVER_MS": "TIMER_DELIVER_MS",
    "TIMER_DELAY_SEC": "TIMER_DELAY_SEC",
    "TIMER_DELAY_MS": "TIMER_DELAY_MS",
}


@pytest.mark.parametrize(("attr", "value"), sorted(EXPECTED_KEYS.items()))
def test_property_key_spelling(attr: str, value: str) -> None:
    assert getattr(PropertyKey, attr) == value


def test_property_key_has_nothing_unexpected() -> None:
    defined = {name for name in vars(PropertyKey) if name.isupper()}
    assert defined == set(EXPECTED_KEYS)


def test_system_property_keys() -> None:
    assert SYSTEM_PROPERTY_KEYS == frozenset(EXPECTED_KEYS.values())
    assert "UNIQ_KEY" in SYSTEM_PROPERTY_KEYS
    assert "my-business-prop" not in SYSTEM_PROPERTY_KEYS
