"""The message property string codec and the well-known property names (PROTOCOL.md §4.3, §4.4).

A message's properties are stored and sent as one UTF-8 string: ``name U+0001 value`` pairs separated by U+0002.
The broker must store a producer's string as received and must read strings written by every client family, so the
decoder reproduces Java's ``MessageDecoder.string2messageProperties`` exactly, including what it silently skips,
while the encoder writes what R4 Java writes (no trailing separator).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "NAME_VALUE_SEPARATOR",
    "PROPERTY_SEPARATOR",
    "KEY_SEPARATOR",
    "MAX_PROPERTIES_LENGTH",
    "PropertiesTooLongError",
    "PropertyKey",
    "SYSTEM_PROPERTY_KEYS",
    "encode_properties",
    "decode_properties",
]

#: Separates a property name from its value.
NAME_VALUE_SEPARATOR: Final = "\u0001"
#: Separates one name/value pair from the next.
PROPERTY_SEPARATOR: Final = "\u0002"
#: Separates individual business keys inside the KEYS property (each is indexed on its own).
KEY_SEPARATOR: Final = " "
#: The stored record keeps the property length in a signed 16-bit field, so longer strings cannot be stored; the
#: R4 store answers PROPERTIES_SIZE_EXCEEDED (response code 13) instead.
MAX_PROPERTIES_LENGTH: Final = 32767


class PropertiesTooLongError(ValueError):
    """The encoded property string exceeds MAX_PROPERTIES_LENGTH bytes and cannot be stored."""


class PropertyKey:
    """Names of the properties RocketMQ itself reads or writes (``MessageConst.java``).

    Plain ``str`` constants, so they can be used directly as dictionary keys.  Attribute names follow the property
    names; the one exception is UNIQ_CLIENT_MESSAGE_ID_KEYIDX, which keeps Java's constant name for the
    ``UNIQ_KEY`` property (UNIQ_KEY is provided as an alias).
    """

    #: Space-separated business keys; each is indexed as ``topic#key``.
    KEYS: Final = "KEYS"
    #: Message tag; its Java hash is the consume-queue tags code.
    TAGS: Final = "TAGS"
    #: ``"true"`` (the default when absent): reply only after flush/replication as the broker role demands.
    WAIT: Final = "WAIT"
    #: Delay level, 1-based, into the broker's messageDelayLevel table.
    DELAY: Final = "DELAY"
    #: Original topic of a message sent back for retry.
    RETRY_TOPIC: Final = "RETRY_TOPIC"
    #: Original topic and queue of delayed and half (transactional) messages.
    REAL_TOPIC: Final = "REAL_TOPIC"
    REAL_QID: Final = "REAL_QID"
    #: ``"true"`` marks a half (prepared transactional) message.
    TRAN_MSG: Final = "TRAN_MSG"
    #: Producer group of a transactional message.
    PGROUP: Final = "PGROUP"
    #: Client-side copies of the queue bounds from the pull response header.
    MIN_OFFSET: Final = "MIN_OFFSET"
    MAX_OFFSET: Final = "MAX_OFFSET"
    #: Message id of the original message of a retry copy.
    ORIGIN_MESSAGE_ID: Final = "ORIGIN_MESSAGE_ID"
    #: Retry bookkeeping sent by clients.
    RECONSUME_TIME: Final = "RECONSUME_TIME"
    MAX_RECONSUME_TIMES: Final = "MAX_RECONSUME_TIMES"
    #: Client-generated unique id (``MessageClientIDSetter``); indexed as ``topic#id``.
    UNIQ_CLIENT_MESSAGE_ID_KEYIDX: Final = "UNIQ_KEY"
    UNIQ_KEY: Final = "UNIQ_KEY"
    #: Set by push consumers when consumption starts (used for consume timeouts).
    CONSUME_START_TIME: Final = "CONSUME_START_TIME"
    #: Transaction check bookkeeping.
    TRAN_PREPARED_QUEUE_OFFSET: Final = "TRAN_PREPARED_QUEUE_OFFSET"
    TRANSACTION_CHECK_TIMES: Final = "TRANSACTION_CHECK_TIMES"
    CHECK_IMMUNITY_TIME_IN_SECONDS: Final = "CHECK_IMMUNITY_TIME_IN_SECONDS"
    #: Cluster name, added by the broker to every stored message.
    CLUSTER: Final = "CLUSTER"
    #: Request-reply.
    CORRELATION_ID: Final = "CORRELATION_ID"
    REPLY_TO_CLIENT: Final = "REPLY_TO_CLIENT"
    TTL: Final = "TTL"
    ARRIVE_TIME: Final = "ARRIVE_TIME"
    PUSH_REPLY_TIME: Final = "PUSH_REPLY_TIME"
    #: Miscellaneous keys that clients and tools may carry.
    BUYER_ID: Final = "BUYER_ID"
    TRANSFER_FLAG: Final = "TRANSFER_FLAG"
    CORRECTION_FLAG: Final = "CORRECTION_FLAG"
    MQ2_FLAG: Final = "MQ2_FLAG"
    MSG_REGION: Final = "MSG_REGION"
    TRACE_ON: Final = "TRACE_ON"
    INSTANCE_ID: Final = "INSTANCE_ID"
    MSG_TYPE: Final = "MSG_TYPE"
    INNER_MULTI_DISPATCH: Final = "INNER_MULTI_DISPATCH"
    INNER_MULTI_QUEUE_OFFSET: Final = "INNER_MULTI_QUEUE_OFFSET"
    #: 5.x timer messages: absolute delivery time, or delay in seconds / milliseconds.
    TIMER_DELIVER_MS: Final = "TIMER_DELIVER_MS"
    TIMER_DELAY_SEC: Final = "TIMER_DELAY_SEC"
    TIMER_DELAY_MS: Final = "TIMER_DELAY_MS"


#: Every property name in PropertyKey: names RocketMQ reserves for itself (Java's ``putUserProperty`` refuses its
#: own list of system names), so a broker or tool can tell system properties from business ones.
SYSTEM_PROPERTY_KEYS: Final[frozenset[str]] = frozenset(
    value for name, value in vars(PropertyKey).items() if name.isupper() and isinstance(value, str)
)


def _check_piece(what: str, text: str, name: str) -> None:
    """Reject separators inside a name or value: they would silently split or merge pairs on the way back."""
    if NAME_VALUE_SEPARATOR in text or PROPERTY_SEPARATOR in text:
        raise ValueError(f"property {what} {name!r} contains a reserved separator character (U+0001 or U+0002)")


def encode_properties(props: Mapping[str, str]) -> bytes:
    """Encode ``props`` as the UTF-8 property string R4 Java writes (pairs in mapping order, no trailing U+0002).

    Raises TypeError for a name or value that is not a str; ValueError for an empty name or for a name or value
    containing U+0001 or U+0002 (neither would survive the round trip); PropertiesTooLongError when the result
    exceeds MAX_PROPERTIES_LENGTH bytes, since such a string cannot be stored.  An empty value is written (as Java
    does) but, like Java, decode_properties drops it.
    """
    parts: list[str] = []
    for name, value in props.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"property names and values must be str, got {name!r}: {value!r}")
        if not name:
            raise ValueError("property name must not be empty")
        _check_piece("name", name, name)
        _check_piece("value of", value, name)
        parts.append(f"{name}{NAME_VALUE_SEPARATOR}{value}")
    data = PROPERTY_SEPARATOR.join(parts).encode("utf-8")
    if len(data) > MAX_PROPERTIES_LENGTH:
        raise PropertiesTooLongError(
            f"encoded properties are {len(data)} bytes, more than the limit of {MAX_PROPERTIES_LENGTH}"
        )
    return data


def decode_properties(data: bytes | bytearray | memoryview | str) -> dict[str, str]:
    """Decode a property string as Java's ``string2messageProperties`` does.

    Tolerant by design, because every client family must be readable: a trailing U+0002 (CPP, older Java) is
    accepted; a piece is skipped when it has no U+0001, when the U+0001 is its first character (empty name) or its
    last (empty value); the first U+0001 of a piece splits name from value, so values may contain U+0001.  A later
    duplicate name wins.  Bytes are decoded as UTF-8 with malformed sequences replaced by U+FFFD, as
    ``new String(bytes, UTF_8)`` does, rather than failing a whole pull on one bad producer.
    """
    text = data if isinstance(data, str) else bytes(data).decode("utf-8", errors="replace")
    result: dict[str, str] = {}
    for piece in text.split(PROPERTY_SEPARATOR):
        cut = piece.find(NAME_VALUE_SEPARATOR)
        if 0 < cut < len(piece) - 1:
            result[piece[:cut]] = piece[cut + 1 :]
    return result
