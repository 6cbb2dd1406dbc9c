"""Topic and group naming: validation, system names, retry/DLQ topics and delay levels (PROTOCOL.md §6.6).

Clients and the broker agree on these names by convention only (``TopicValidator``, ``MixAll``,
``ScheduleMessageService`` in Java), so every string here is copied exactly; a typo would make retries, DLQ
routing or delayed delivery silently go to the wrong topic.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final

__all__ = [
    "TOPIC_MAX_LENGTH",
    "InvalidTopicError",
    "validate_topic",
    "DEFAULT_TOPIC",
    "SCHEDULE_TOPIC",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "RMQ_SYS_TRACE_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
    "BENCHMARK_TOPIC",
    "SYSTEM_TOPIC_PREFIX",
    "SYSTEM_TOPICS",
    "NOT_ALLOWED_SEND_TOPICS",
    "REPLY_TOPIC_POSTFIX",
    "RETRY_GROUP_TOPIC_PREFIX",
    "DLQ_GROUP_TOPIC_PREFIX",
    "retry_topic",
    "dlq_topic",
    "is_retry_topic",
    "is_dlq_topic",
    "reply_topic",
    "is_system_topic",
    "is_not_allowed_send_topic",
    "CLIENT_INNER_PRODUCER_GROUP",
    "TOOLS_CONSUMER_GROUP",
    "CID_RMQ_SYS_TRANS_GROUP",
    "DEFAULT_PRODUCER_GROUP",
    "DEFAULT_CONSUMER_GROUP",
    "SYSTEM_GROUPS",
    "is_system_group",
    "DEFAULT_DELAY_LEVELS",
    "parse_delay_levels",
]

#: R4 rejects longer topics: the stored record keeps the topic length in a signed byte.
TOPIC_MAX_LENGTH: Final = 127

_BAD_TOPIC_CHAR: Final = re.compile(r"[^%|a-zA-Z0-9_-]")


class InvalidTopicError(ValueError):
    """A topic name that RocketMQ would refuse; the message says why."""


def validate_topic(name: str) -> None:
    """Raise InvalidTopicError unless ``name`` is a legal topic name.

    Legal means non-empty, at most TOPIC_MAX_LENGTH characters, and only ``%``, ``|``, ASCII letters, digits, ``_``
    and ``-`` (Java's ``^[%|a-zA-Z0-9_-]+$``).  The message names the first offending character and its position,
    because a broker passes it back to the producer as the error remark.
    """
    if not name:
        raise InvalidTopicError("topic name is empty")
    if len(name) > TOPIC_MAX_LENGTH:
        raise InvalidTopicError(
            f"topic name is {len(name)} characters long, more than the maximum of {TOPIC_MAX_LENGTH}"
        )
    bad = _BAD_TOPIC_CHAR.search(name)
    if bad is not None:
        raise InvalidTopicError(
            f"topic name {name!r} contains the illegal character {bad.group()!r} at position {bad.start()}; "
            "allowed are only %, |, ASCII letters, digits, _ and -"
        )


#: Route template for auto-created topics (perm 7 including INHERIT, 8 queues).
DEFAULT_TOPIC: Final = "TBW102"
#: Delayed messages wait here, one queue per delay level.
SCHEDULE_TOPIC: Final = "SCHEDULE_TOPIC_XXXX"
#: Half (prepared) transactional messages and their commit/rollback op records.
RMQ_SYS_TRANS_HALF_TOPIC: Final = "RMQ_SYS_TRANS_HALF_TOPIC"
RMQ_SYS_TRANS_OP_HALF_TOPIC: Final = "RMQ_SYS_TRANS_OP_HALF_TOPIC"
#: Half messages that exceeded the transaction check limit.
TRANS_CHECK_MAX_TIME_TOPIC: Final = "TRANS_CHECK_MAX_TIME_TOPIC"
#: Default message-trace topic.
RMQ_SYS_TRACE_TOPIC: Final = "RMQ_SYS_TRACE_TOPIC"
SELF_TEST_TOPIC: Final = "SELF_TEST_TOPIC"
OFFSET_MOVED_EVENT: Final = "OFFSET_MOVED_EVENT"
#: Benchmark topic (1024 queues).
BENCHMARK_TOPIC: Final = "BenchmarkTest"
#: Any topic starting with this prefix is a system topic too.
SYSTEM_TOPIC_PREFIX: Final = "rmq_sys_"

#: The fixed system topics.  A broker also treats its cluster name, its broker name and the cluster's reply topic
#: as system topics; pass those to is_system_topic as ``extra``.
SYSTEM_TOPICS: Final[frozenset[str]] = frozenset(
    {
        DEFAULT_TOPIC,
        SCHEDULE_TOPIC,
        RMQ_SYS_TRANS_HALF_TOPIC,
        RMQ_SYS_TRANS_OP_HALF_TOPIC,
        TRANS_CHECK_MAX_TIME_TOPIC,
        RMQ_SYS_TRACE_TOPIC,
        SELF_TEST_TOPIC,
        OFFSET_MOVED_EVENT,
        BENCHMARK_TOPIC,
    }
)

#: Topics producers may not send to (the broker answers NO_PERMISSION), because only the broker writes them.
NOT_ALLOWED_SEND_TOPICS: Final[frozenset[str]] = frozenset(
    {
        SCHEDULE_TOPIC,
        RMQ_SYS_TRANS_HALF_TOPIC,
        RMQ_SYS_TRANS_OP_HALF_TOPIC,
        TRANS_CHECK_MAX_TIME_TOPIC,
        SELF_TEST_TOPIC,
        OFFSET_MOVED_EVENT,
    }
)

#: Request-reply topic of a cluster is ``<cluster>_REPLY_TOPIC``.
REPLY_TOPIC_POSTFIX: Final = "REPLY_TOPIC"
#: Per-consumer-group retry topic prefix (``MixAll.RETRY_GROUP_TOPIC_PREFIX``).
RETRY_GROUP_TOPIC_PREFIX: Final = "%RETRY%"
#: Per-consumer-group dead-letter topic prefix (``MixAll.DLQ_GROUP_TOPIC_PREFIX``).
DLQ_GROUP_TOPIC_PREFIX: Final = "%DLQ%"


def _require_group(group: str) -> None:
    if not group:
        raise ValueError("consumer group name is empty")


def retry_topic(group: str) -> str:
    """Return the retry topic of consumer group ``group`` (``%RETRY%<group>``); ValueError if ``group`` is empty."""
    _require_group(group)
    return RETRY_GROUP_TOPIC_PREFIX + group


def dlq_topic(group: str) -> str:
    """Return the dead-letter topic of consumer group ``group`` (``%DLQ%<group>``); ValueError if it is empty."""
    _require_group(group)
    return DLQ_GROUP_TOPIC_PREFIX + group


def is_retry_topic(name: str) -> bool:
    """True for a ``%RETRY%`` topic (retry copies carry the original topic in the RETRY_TOPIC property)."""
    return name.startswith(RETRY_GROUP_TOPIC_PREFIX)


def is_dlq_topic(name: str) -> bool:
    """True for a ``%DLQ%`` topic."""
    return name.startswith(DLQ_GROUP_TOPIC_PREFIX)


def reply_topic(cluster: str) -> str:
    """Return the request-reply topic of ``cluster`` (``<cluster>_REPLY_TOPIC``, as ``MixAll.getReplyTopic``)."""
    if not cluster:
        raise ValueError("cluster name is empty")
    return f"{cluster}_{REPLY_TOPIC_POSTFIX}"


def is_system_topic(name: str, extra: Collection[str] = ()) -> bool:
    """True if ``name`` is a system topic: one of SYSTEM_TOPICS, prefixed ``rmq_sys_``, or listed in ``extra``.

    ``extra`` lets a broker add the names it registers at start-up (cluster name, broker name, reply topic) without
    global mutable state.  Retry and DLQ topics are not system topics, as in Java.
    """
    return name in SYSTEM_TOPICS or name.startswith(SYSTEM_TOPIC_PREFIX) or name in extra


def is_not_allowed_send_topic(name: str) -> bool:
    """True if producers must not send to ``name`` (see NOT_ALLOWED_SEND_TOPICS)."""
    return name in NOT_ALLOWED_SEND_TOPICS


#: Group of the producer every client instance uses internally (e.g. for sending messages back).
CLIENT_INNER_PRODUCER_GROUP: Final = "CLIENT_INNER_PRODUCER"
#: Group used by admin tools.
TOOLS_CONSUMER_GROUP: Final = "TOOLS_CONSUMER"
#: Group the broker uses for transactional half messages.
CID_RMQ_SYS_TRANS_GROUP: Final = "CID_RMQ_SYS_TRANS"
#: Default group names of clients that did not set one.
DEFAULT_PRODUCER_GROUP: Final = "DEFAULT_PRODUCER"
DEFAULT_CONSUMER_GROUP: Final = "DEFAULT_CONSUMER"

SYSTEM_GROUPS: Final[frozenset[str]] = frozenset(
    {
        CLIENT_INNER_PRODUCER_GROUP,
        TOOLS_CONSUMER_GROUP,
        CID_RMQ_SYS_TRANS_GROUP,
        DEFAULT_PRODUCER_GROUP,
        DEFAULT_CONSUMER_GROUP,
    }
)


def is_system_group(name: str) -> bool:
    """True for one of the SYSTEM_GROUPS names."""
    return name in SYSTEM_GROUPS


#: R4's default ``messageDelayLevel``: 18 levels; level L (1-based) maps to SCHEDULE_TOPIC queue L-1.
DEFAULT_DELAY_LEVELS: Final = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"

_UNIT_MS: Final = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_LEVEL: Final = re.compile(r"([0-9]+)([smhd])")


def parse_delay_levels(text: str) -> list[int]:
    """Parse a ``messageDelayLevel`` string into delays in milliseconds, index 0 being level 1.

    Tokens are whitespace-separated ``<digits><unit>`` with unit ``s``, ``m``, ``h`` or ``d`` (lower case, as in
    ``ScheduleMessageService.parseDelayLevel``).  Raises ValueError naming the bad token, or for an empty string:
    a broker must refuse a mistyped configuration rather than deliver delayed messages at the wrong time.
    """
    tokens = text.split()
    if not tokens:
        raise ValueError("delay level list is empty")
    levels: list[int] = []
    for position, token in enumerate(tokens, start=1):
        match = _LEVEL.fullmatch(token)
        if match is None:
            raise ValueError(
                f"bad delay level {position} {token!r}: expected a number followed by a unit s, m, h or d (e.g. '5s')"
            )
        levels.append(int(match.group(1)) * _UNIT_MS[match.group(2)])
    return levels
