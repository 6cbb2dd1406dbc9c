"""HEART_BEAT bodies (PROTOCOL.md §3.4) and subscriptions, as typed values.

A client heartbeats every broker every 30 s with one HeartbeatData: its client id, one ConsumerData per
consumer group it runs (with that group's subscriptions) and one ProducerData per producer group. The
broker keeps the subscriptions for filtering pulls that do not carry their own expression and the
channels for GET_CONSUMER_LIST_BY_GROUP and NOTIFY_CONSUMER_IDS_CHANGED.

Real clients disagree on the encoding (CAPTURES.md §3.11), so parsing is lenient where Java's fastjson is:

* enums (consumeType, messageModel, consumeFromWhere) as Java names or as ordinals (the C++ client),
  numeric strings included;
* ``subVersion`` and ``codeSet`` entries as JSON numbers or numeric strings; a missing ``subVersion`` is
  "now", as Java's field initialiser makes it;
* booleans as JSON booleans, 0/1 or ``"true"``/``"false"``;
* unknown keys ignored, missing sets empty, a missing/null ``expressionType`` is ``TAG``;
* a TAG subscription that arrives without ``tagsSet``/``codeSet`` (absent keys, not empty lists) gets them
  computed from ``subString`` as the Java client would have done; sets that are present are kept as sent,
  as the Java broker does.

It is strict about what would break the broker later: the body must be a JSON object, ``clientID``,
``groupName`` and ``topic`` must be non-empty strings, enum values must be known, integers must fit their
Java type. Any violation raises ``HeartbeatError`` naming the field (``consumerDataSet[0].messageModel:
...``); the processor answers SYSTEM_ERROR with that text.

Bounds: at most ``MAX_CONSUMER_DATA`` consumer groups, ``MAX_PRODUCER_DATA`` producer groups and
``MAX_SUBSCRIPTIONS`` subscriptions per group in one heartbeat (beyond: HeartbeatError); the body itself is
bounded by the remoting frame limit.

``SubscriptionData.build`` is upstream's ``FilterAPI.build``: ``*`` or empty subscribes to everything,
otherwise tags split on ``||`` (Java ``String.split`` semantics: trailing empty pieces dropped, and an
expression made only of separators is an error), trimmed as Java's ``String.trim`` does, empty pieces
skipped, ``codeSet`` = Java ``String.hashCode`` of each tag. SQL92 expressions are kept verbatim
(``subString`` + ``expressionType``): a heartbeat is accepted whatever they contain, as RocketMQ accepts it;
the pull processor compiles them (``rmq_broker.filter``) and refuses pulls that rely on a bad one.
"""
from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rmq_common._record import java_hash
from rmq_remoting import fastjson

__all__ = [
    "MAX_CONSUMER_DATA",
    "MAX_PRODUCER_DATA",
    "MAX_SUBSCRIPTIONS",
    "SUB_ALL",
    "ConsumeFromWhere",
    "ConsumeType",
    "ConsumerData",
    "ExpressionType",
    "HeartbeatData",
    "HeartbeatError",
    "MessageModel",
    "ProducerData",
    "SubscriptionData",
    "SubscriptionParseError",
    "parse_heartbeat",
]

SUB_ALL = "*"

MAX_CONSUMER_DATA = 10_000
MAX_PRODUCER_DATA = 10_000
MAX_SUBSCRIPTIONS = 10_000

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


class ConsumeType(enum.IntEnum):
    """``COM/protocol/heartbeat/ConsumeType``: pull (actively) or push (passively) consumer."""
    CONSUME_ACTIVELY = 0
    CONSUME_PASSIVELY = 1


class MessageModel(enum.IntEnum):
    """``COM/protocol/heartbeat/MessageModel``."""
    BROADCASTING = 0
    CLUSTERING = 1


class ConsumeFromWhere(enum.IntEnum):
    """``COM/consumer/ConsumeFromWhere`` (three deprecated values keep their ordinals)."""
    CONSUME_FROM_LAST_OFFSET = 0
    CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST = 1
    CONSUME_FROM_MIN_OFFSET = 2
    CONSUME_FROM_MAX_OFFSET = 3
    CONSUME_FROM_FIRST_OFFSET = 4
    CONSUME_FROM_TIMESTAMP = 5


class ExpressionType:
    """``COM/filter/ExpressionType``: plain strings on the wire, not an enum."""
    TAG = "TAG"
    SQL92 = "SQL92"

    @staticmethod
    def is_tag_type(value: str | None) -> bool:
        return value is None or value == "" or value == ExpressionType.TAG


class HeartbeatError(ValueError):
    """A HEART_BEAT body that cannot be used; the message names the offending field."""


class SubscriptionParseError(ValueError):
    """A subscription expression that cannot be parsed (SUBSCRIPTION_PARSE_FAILED, 23, on a pull)."""


def _java_trim(text: str) -> str:
    """Java ``String.trim``: strip every char <= U+0020 from both ends (not Unicode whitespace)."""
    start, end = 0, len(text)
    while start < end and text[start] <= " ":
        start += 1
    while end > start and text[end - 1] <= " ":
        end -= 1
    return text[start:end]


def _java_split_tags(sub_string: str) -> list[str]:
    """``subString.split("\\\\|\\\\|")``: non-overlapping left-to-right, trailing empty pieces dropped."""
    pieces = sub_string.split("||")
    while pieces and pieces[-1] == "":
        pieces.pop()
    return pieces


class SubscriptionData:
    """One topic subscription of a consumer group (``COM/protocol/heartbeat/SubscriptionData``).

    Immutable once built; ``tags_set``/``code_set`` are tuples in first-seen order without duplicates.
    ``all_tags`` is True when the pull filter must let every tags code through (``*`` or class-filter
    mode), which is what the store's tag filter needs to know.
    """

    __slots__ = (
        "class_filter_mode",
        "code_set",
        "expression_type",
        "sub_string",
        "sub_version",
        "tags_set",
        "topic",
    )

    def __init__(self, topic: str, sub_string: str = SUB_ALL, *, tags_set: tuple[str, ...] = (),
                 code_set: tuple[int, ...] = (), sub_version: int = 0, expression_type: str = ExpressionType.TAG,
                 class_filter_mode: bool = False) -> None:
        self.topic = topic
        self.sub_string = sub_string
        self.tags_set = tuple(tags_set)
        self.code_set = tuple(code_set)
        self.sub_version = sub_version
        self.expression_type = expression_type
        self.class_filter_mode = class_filter_mode

    @classmethod
    def build(cls, topic: str, sub_string: str | None, expression_type: str | None = ExpressionType.TAG, *,
              sub_version: int = 0) -> SubscriptionData:
        """Upstream ``FilterAPI.build``; raises SubscriptionParseError for an unusable expression."""
        if not ExpressionType.is_tag_type(expression_type):
            if not sub_string:
                raise SubscriptionParseError(f"Expression can't be null! {expression_type}")
            return cls(topic, sub_string, sub_version=sub_version, expression_type=expression_type)
        if not sub_string or sub_string == SUB_ALL:
            return cls(topic, SUB_ALL, sub_version=sub_version)
        pieces = _java_split_tags(sub_string)
        if not pieces:
            raise SubscriptionParseError(f"subString split error: {sub_string!r}")
        tags: dict[str, None] = {}
        for piece in pieces:
            tag = _java_trim(piece)
            if tag:
                tags[tag] = None
        return cls(topic, sub_string, tags_set=tuple(tags), code_set=_codes(tags), sub_version=sub_version)

    @property
    def all_tags(self) -> bool:
        """True when every message of the topic matches by tags code (``*``, or class-filter mode)."""
        return self.class_filter_mode or self.sub_string == SUB_ALL

    @property
    def is_tag_type(self) -> bool:
        return ExpressionType.is_tag_type(self.expression_type)

    def to_json(self) -> dict[str, Any]:
        """The Java JSON form (for admin bodies such as ConsumerConnection)."""
        return {"classFilterMode": self.class_filter_mode, "codeSet": list(self.code_set),
                "expressionType": self.expression_type, "subString": self.sub_string,
                "subVersion": self.sub_version, "tagsSet": list(self.tags_set), "topic": self.topic}

    def _key(self) -> tuple:
        return (self.topic, self.sub_string, self.tags_set, self.code_set, self.sub_version,
                self.expression_type, self.class_filter_mode)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SubscriptionData):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"SubscriptionData(topic={self.topic!r}, sub_string={self.sub_string!r}, tags={self.tags_set!r}, "
                f"codes={self.code_set!r}, sub_version={self.sub_version}, type={self.expression_type!r})")


def _codes(tags: Any) -> tuple[int, ...]:
    seen: dict[int, None] = {}
    for tag in tags:
        seen[java_hash(tag)] = None
    return tuple(seen)


class ConsumerData:
    """One consumer group's entry in a heartbeat (``COM/protocol/heartbeat/ConsumerData``)."""

    __slots__ = (
        "consume_from_where",
        "consume_type",
        "group_name",
        "message_model",
        "subscriptions",
        "unit_mode",
    )

    def __init__(self, group_name: str, consume_type: ConsumeType | None = ConsumeType.CONSUME_PASSIVELY,
                 message_model: MessageModel | None = MessageModel.CLUSTERING,
                 consume_from_where: ConsumeFromWhere | None = ConsumeFromWhere.CONSUME_FROM_LAST_OFFSET, *,
                 unit_mode: bool = False, subscriptions: tuple[SubscriptionData, ...] = ()) -> None:
        self.group_name = group_name
        self.consume_type = consume_type
        self.message_model = message_model
        self.consume_from_where = consume_from_where
        self.unit_mode = unit_mode
        self.subscriptions = tuple(subscriptions)

    def __repr__(self) -> str:
        return (f"ConsumerData(group={self.group_name!r}, {_name(self.consume_type)}, {_name(self.message_model)}, "
                f"{_name(self.consume_from_where)}, unit_mode={self.unit_mode}, subscriptions={list(self.subscriptions)!r})")


class ProducerData:
    """One producer group's entry in a heartbeat."""

    __slots__ = ("group_name",)

    def __init__(self, group_name: str) -> None:
        self.group_name = group_name

    def __repr__(self) -> str:
        return f"ProducerData({self.group_name!r})"


class HeartbeatData:
    """A parsed HEART_BEAT body."""

    __slots__ = ("client_id", "consumers", "producers")

    def __init__(self, client_id: str, consumers: tuple[ConsumerData, ...] = (),
                 producers: tuple[ProducerData, ...] = ()) -> None:
        self.client_id = client_id
        self.consumers = tuple(consumers)
        self.producers = tuple(producers)

    def __repr__(self) -> str:
        return f"HeartbeatData(client_id={self.client_id!r}, consumers={list(self.consumers)!r}, producers={list(self.producers)!r})"


def _name(value: enum.Enum | None) -> str:
    return "None" if value is None else value.name


# -- parsing ---------------------------------------------------------------------------------------

def _fail(path: str, what: str, value: Any) -> HeartbeatError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return HeartbeatError(f"bad HEART_BEAT body: {path}: {what} (got {shown})")


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise _fail(path, "expected an integer", value)
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            result = int(text, 10)
        except ValueError:
            raise _fail(path, "expected an integer", value) from None
    else:
        raise _fail(path, "expected an integer", value)
    if not lo <= result <= hi:
        raise _fail(path, "integer out of range", value)
    return result


def _bool(value: Any, path: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise _fail(path, "expected a boolean", value)


def _str(value: Any, path: str, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise _fail(path, "missing", value)
        return None
    if not isinstance(value, str):
        raise _fail(path, "expected a string", value)
    if required and not value:
        raise _fail(path, "must not be empty", value)
    return value


_E = TypeVar("_E", bound=enum.IntEnum)


def _enum(cls: type[_E], value: Any, path: str) -> _E | None:
    if value is None:
        return None
    if isinstance(value, str):
        name = value.strip()
        member = cls.__members__.get(name)
        if member is not None:
            return member
        if not (name.isdigit() or name.startswith("-") and name[1:].isdigit()):
            raise _fail(path, f"unknown {cls.__name__}", value)
        value = int(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected a {cls.__name__} name or ordinal", value)
    try:
        return cls(value)
    except ValueError:
        raise _fail(path, f"unknown {cls.__name__} ordinal", value) from None


def _list(value: Any, path: str, limit: int | None = None) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(path, "expected an array", value)
    if limit is not None and len(value) > limit:
        raise _fail(path, f"more than {limit} entries", f"{len(value)} entries")
    return value


def _obj(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(path, "expected an object", value)
    return value


def _subscription(raw: Any, path: str, now_ms: int) -> SubscriptionData:
    obj = _obj(raw, path)
    topic = _str(obj.get("topic"), f"{path}.topic", required=True)
    sub_string = _str(obj.get("subString"), f"{path}.subString", required=False)
    expression_type = _str(obj.get("expressionType"), f"{path}.expressionType", required=False)
    if not expression_type:
        expression_type = ExpressionType.TAG
    version = obj.get("subVersion")
    sub_version = now_ms if version is None else _int(version, f"{path}.subVersion", _INT64_MIN, _INT64_MAX)
    class_filter = _bool(obj.get("classFilterMode"), f"{path}.classFilterMode")
    has_tags, has_codes = "tagsSet" in obj, "codeSet" in obj
    tags: dict[str, None] = {}
    for i, tag in enumerate(_list(obj.get("tagsSet"), f"{path}.tagsSet")):
        if tag is not None:
            tags[_str(tag, f"{path}.tagsSet[{i}]", required=False)] = None
    codes: dict[int, None] = {}
    for i, code in enumerate(_list(obj.get("codeSet"), f"{path}.codeSet")):
        if code is not None:
            codes[_int(code, f"{path}.codeSet[{i}]", _INT32_MIN, _INT32_MAX)] = None
    if ExpressionType.is_tag_type(expression_type) and not has_tags and not has_codes:
        try:
            built = SubscriptionData.build(topic, sub_string, expression_type, sub_version=sub_version)
        except SubscriptionParseError as exc:
            raise _fail(f"{path}.subString", str(exc), sub_string) from None
        return SubscriptionData(topic, built.sub_string, tags_set=built.tags_set, code_set=built.code_set,
                                sub_version=sub_version, expression_type=expression_type,
                                class_filter_mode=class_filter)
    if has_tags and not has_codes:
        codes = dict.fromkeys(_codes(tags))
    return SubscriptionData(topic, SUB_ALL if sub_string is None else sub_string, tags_set=tuple(tags),
                            code_set=tuple(codes), sub_version=sub_version, expression_type=expression_type,
                            class_filter_mode=class_filter)


def _consumer(raw: Any, path: str, now_ms: int) -> ConsumerData:
    obj = _obj(raw, path)
    group = _str(obj.get("groupName"), f"{path}.groupName", required=True)
    subs = tuple(_subscription(s, f"{path}.subscriptionDataSet[{i}]", now_ms)
                 for i, s in enumerate(_list(obj.get("subscriptionDataSet"), f"{path}.subscriptionDataSet",
                                             MAX_SUBSCRIPTIONS)))
    return ConsumerData(group,
                        _enum(ConsumeType, obj.get("consumeType"), f"{path}.consumeType"),
                        _enum(MessageModel, obj.get("messageModel"), f"{path}.messageModel"),
                        _enum(ConsumeFromWhere, obj.get("consumeFromWhere"), f"{path}.consumeFromWhere"),
                        unit_mode=_bool(obj.get("unitMode"), f"{path}.unitMode"), subscriptions=subs)


def parse_heartbeat(body: bytes | bytearray | memoryview | str | None, *,
                    clock_ms: Callable[[], int] | None = None) -> HeartbeatData:
    """Parse a HEART_BEAT body; raises HeartbeatError with the offending field on anything unusable.

    ``clock_ms`` supplies "now" for subscriptions without a ``subVersion`` (default: wall clock).
    """
    if body is None or len(body) == 0:
        raise HeartbeatError("bad HEART_BEAT body: empty (HeartbeatData expected)")
    try:
        doc = fastjson.loads(body)
    except (fastjson.FastjsonError, UnicodeDecodeError, RecursionError) as exc:
        raise HeartbeatError(f"bad HEART_BEAT body: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _fail("$", "expected a HeartbeatData object", doc)
    now_ms = clock_ms() if clock_ms is not None else int(time.time() * 1000)
    client_id = _str(doc.get("clientID"), "clientID", required=True)
    consumers = tuple(_consumer(c, f"consumerDataSet[{i}]", now_ms)
                      for i, c in enumerate(_list(doc.get("consumerDataSet"), "consumerDataSet", MAX_CONSUMER_DATA)))
    producers = []
    for i, p in enumerate(_list(doc.get("producerDataSet"), "producerDataSet", MAX_PRODUCER_DATA)):
        obj = _obj(p, f"producerDataSet[{i}]")
        producers.append(ProducerData(_str(obj.get("groupName"), f"producerDataSet[{i}].groupName", required=True)))
    return HeartbeatData(client_id, consumers, tuple(producers))
