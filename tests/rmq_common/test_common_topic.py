"""Tests of rmq_common.topic: validation, system names, retry/DLQ topics and delay levels."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmq_common import topic
from rmq_common.topic import (
    DEFAULT_DELAY_LEVELS,
    DLQ_GROUP_TOPIC_PREFIX,
    NOT_ALLOWED_SEND_TOPICS,
    RETRY_GROUP_TOPIC_PREFIX,
    SYSTEM_GROUPS,
    SYSTEM_TOPICS,
    TOPIC_MAX_LENGTH,
    InvalidTopicError,
    dlq_topic,
    is_dlq_topic,
    is_not_allowed_send_topic,
    is_retry_topic,
    is_system_group,
    is_system_topic,
    parse_delay_levels,
    reply_topic,
    retry_topic,
    validate_topic,
)

LEGAL_CHARS = "%|abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


# --- validation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["TopicTest", "a", "%RETRY%group-1", "%DLQ%g", "x|y", "T_1-2", "TBW102", "1" * TOPIC_MAX_LENGTH]
)
def test_valid_topics(name: str) -> None:
    validate_topic(name)


def test_topic_max_length() -> None:
    assert TOPIC_MAX_LENGTH == 127


def test_empty_topic() -> None:
    with pytest.raises(InvalidTopicError, match="topic name is empty"):
        validate_topic("")


def test_too_long_topic() -> None:
    with pytest.raises(InvalidTopicError, match="128 characters long, more than the maximum of 127"):
        validate_topic("a" * 128)


@pytest.mark.parametrize(
    ("name", "char", "position"),
    [
        ("Topic A", " ", 5),
        ("topic.a", ".", 5),
        ("Thé", "é", 2),
        ("a/b", "/", 1),
        ("#", "#", 0),
        ("tab\t", "\t", 3),
        ("ok\n", "\n", 2),
        ("\uff21", "\uff21", 0),  # full-width A is not an ASCII letter
    ],
)
def test_illegal_characters(name: str, char: str, position: int) -> None:
    with pytest.raises(InvalidTopicError) as excinfo:
        validate_topic(name)
    message = str(excinfo.value)
    assert f"illegal character {char!r} at position {position}" in message
    assert "allowed are only %, |, ASCII letters, digits, _ and -" in message


def test_length_is_reported_before_characters() -> None:
    with pytest.raises(InvalidTopicError, match="more than the maximum"):
        validate_topic(" " * 200)


def test_invalid_topic_error_is_value_error() -> None:
    assert issubclass(InvalidTopicError, ValueError)


@given(st.text(alphabet=LEGAL_CHARS, min_size=1, max_size=TOPIC_MAX_LENGTH))
def test_any_legal_name_passes(name: str) -> None:
    validate_topic(name)


@given(st.text(min_size=1, max_size=TOPIC_MAX_LENGTH).filter(lambda s: any(c not in LEGAL_CHARS for c in s)))
def test_any_illegal_character_fails(name: str) -> None:
    with pytest.raises(InvalidTopicError, match="illegal character"):
        validate_topic(name)


# --- names ------------------------------------------------------------------------------------------------------


def test_system_topic_names() -> None:
    assert topic.DEFAULT_TOPIC == "TBW102"
    assert topic.SCHEDULE_TOPIC == "SCHEDULE_TOPIC_XXXX"
    assert topic.RMQ_SYS_TRANS_HALF_TOPIC == "RMQ_SYS_TRANS_HALF_TOPIC"
    assert topic.RMQ_SYS_TRANS_OP_HALF_TOPIC == "RMQ_SYS_TRANS_OP_HALF_TOPIC"
    assert topic.TRANS_CHECK_MAX_TIME_TOPIC == "TRANS_CHECK_MAX_TIME_TOPIC"
    assert topic.RMQ_SYS_TRACE_TOPIC == "RMQ_SYS_TRACE_TOPIC"
    assert topic.SELF_TEST_TOPIC == "SELF_TEST_TOPIC"
    assert topic.OFFSET_MOVED_EVENT == "OFFSET_MOVED_EVENT"
    assert topic.BENCHMARK_TOPIC == "BenchmarkTest"
    assert topic.SYSTEM_TOPIC_PREFIX == "rmq_sys_"
    assert len(SYSTEM_TOPICS) == 9
    for name in SYSTEM_TOPICS:
        validate_topic(name)


def test_group_names() -> None:
    assert topic.CLIENT_INNER_PRODUCER_GROUP == "CLIENT_INNER_PRODUCER"
    assert topic.TOOLS_CONSUMER_GROUP == "TOOLS_CONSUMER"
    assert topic.CID_RMQ_SYS_TRANS_GROUP == "CID_RMQ_SYS_TRANS"
    assert topic.DEFAULT_PRODUCER_GROUP == "DEFAULT_PRODUCER"
    assert topic.DEFAULT_CONSUMER_GROUP == "DEFAULT_CONSUMER"
    assert SYSTEM_GROUPS == {
        "CLIENT_INNER_PRODUCER",
        "TOOLS_CONSUMER",
        "CID_RMQ_SYS_TRANS",
        "DEFAULT_PRODUCER",
        "DEFAULT_CONSUMER",
    }
    assert is_system_group("TOOLS_CONSUMER")
    assert not is_system_group("my-group")


def test_retry_and_dlq_topics() -> None:
    assert RETRY_GROUP_TOPIC_PREFIX == "%RETRY%"
    assert DLQ_GROUP_TOPIC_PREFIX == "%DLQ%"
    assert retry_topic("GroupA") == "%RETRY%GroupA"
    assert dlq_topic("GroupA") == "%DLQ%GroupA"
    assert is_retry_topic("%RETRY%GroupA")
    assert not is_retry_topic("GroupA")
    assert not is_retry_topic("%DLQ%GroupA")
    assert is_dlq_topic("%DLQ%GroupA")
    assert not is_dlq_topic("%RETRY%GroupA")
    assert not is_dlq_topic("DLQ")


@pytest.mark.parametrize("make", [retry_topic, dlq_topic])
def test_retry_and_dlq_need_a_group(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="consumer group name is empty"):
        make("")


def test_reply_topic() -> None:
    assert reply_topic("DefaultCluster") == "DefaultCluster_REPLY_TOPIC"
    with pytest.raises(ValueError, match="cluster name is empty"):
        reply_topic("")


@pytest.mark.parametrize("name", [*sorted(SYSTEM_TOPICS), "rmq_sys_anything"])
def test_is_system_topic(name: str) -> None:
    assert is_system_topic(name)


@pytest.mark.parametrize("name", ["TopicTest", "%RETRY%G", "%DLQ%G", "RMQ_SYS_", "tbw102", "DefaultCluster"])
def test_is_not_system_topic(name: str) -> None:
    assert not is_system_topic(name)


def test_is_system_topic_with_broker_names() -> None:
    extra = {"DefaultCluster", "broker-a", reply_topic("DefaultCluster")}
    assert is_system_topic("DefaultCluster", extra)
    assert is_system_topic("DefaultCluster_REPLY_TOPIC", extra)
    assert is_system_topic(topic.SCHEDULE_TOPIC, extra)
    assert not is_system_topic("TopicTest", extra)


def test_not_allowed_send_topics() -> None:
    assert NOT_ALLOWED_SEND_TOPICS <= SYSTEM_TOPICS
    assert is_not_allowed_send_topic("SCHEDULE_TOPIC_XXXX")
    assert is_not_allowed_send_topic("RMQ_SYS_TRANS_HALF_TOPIC")
    # Producers do send to these system topics.
    assert not is_not_allowed_send_topic("TBW102")
    assert not is_not_allowed_send_topic("RMQ_SYS_TRACE_TOPIC")
    assert not is_not_allowed_send_topic("BenchmarkTest")


# --- delay levels -----------------------------------------------------------------------------------------------


def test_default_delay_levels() -> None:
    assert DEFAULT_DELAY_LEVELS == "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
    seconds = [1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200]
    assert parse_delay_levels(DEFAULT_DELAY_LEVELS) == [s * 1000 for s in seconds]


def test_all_units() -> None:
    assert parse_delay_levels("2s 3m 4h 1d 0s") == [2_000, 180_000, 14_400_000, 86_400_000, 0]


def test_extra_whitespace_is_tolerated() -> None:
    assert parse_delay_levels("  1s   5s\t10s\n") == [1_000, 5_000, 10_000]


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_delay_levels(text: str) -> None:
    with pytest.raises(ValueError, match="delay level list is empty"):
        parse_delay_levels(text)


@pytest.mark.parametrize(
    ("text", "position", "token"),
    [
        ("5", 1, "5"),
        ("s", 1, "s"),
        ("1s 5x", 2, "5x"),
        ("1s 5S", 2, "5S"),
        ("-5s", 1, "-5s"),
        ("+5s", 1, "+5s"),
        ("1.5s", 1, "1.5s"),
        ("1s 2m 1ms", 3, "1ms"),
        ("\uff15s", 1, "\uff15s"),
        ("1_0s", 1, "1_0s"),
    ],
)
def test_bad_delay_levels(text: str, position: int, token: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_delay_levels(text)
    message = str(excinfo.value)
    assert f"bad delay level {position} {token!r}" in message
    assert "unit s, m, h or d" in message


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from("smhd")), min_size=1, max_size=30))
def test_delay_levels_round_trip(levels: list[tuple[int, str]]) -> None:
    text = " ".join(f"{n}{unit}" for n, unit in levels)
    factor = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    assert parse_delay_levels(text) == [n * factor[unit] for n, unit in levels]
