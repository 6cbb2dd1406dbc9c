"""The message model: a message as produced (Message) and a decoded stored record (MessageExt).

Java keeps most per-message metadata (tags, keys, delay level, unique id, ...) in the property map rather than in
fields, and brokers and clients exchange that map verbatim.  These classes do the same: ``properties`` is the single
source of truth and the accessors are thin views over it, so nothing can drift out of sync with what is stored or
sent (PROTOCOL.md §4.1, §4.3, §4.4).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from rmq_common.msgid import create_offset_msg_id
from rmq_common.properties import KEY_SEPARATOR, PropertyKey, encode_properties

__all__ = ["Message", "MessageExt"]

_JAVA_INT: Final = re.compile(r"[-+]?[0-9]+")


def _keys_of(props: Mapping[str, str]) -> list[str]:
    """Split KEYS like the broker's index service does: on single spaces, skipping empty tokens."""
    raw = props.get(PropertyKey.KEYS)
    if not raw:
        return []
    return [key for key in raw.split(KEY_SEPARATOR) if key]


def _set_optional(props: dict[str, str], name: str, value: str | None) -> None:
    """Store ``value`` under ``name``, or remove the property for None/empty (an empty value would not round-trip)."""
    if value:
        props[name] = value
    else:
        props.pop(name, None)


@dataclass(slots=True)
class Message:
    """A message as a producer builds it: topic, body, user flag and the property map.

    ``properties`` is kept in insertion order and encoded as is by properties_bytes().  ``body`` accepts any
    bytes-like object and is stored as ``bytes`` so records can be built from it without copies of copies.
    """

    topic: str
    body: bytes
    flag: int = 0
    properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Normalise bytes-like bodies and reject ``str`` bodies, a common mistake that would otherwise fail late."""
        if self.body.__class__ is bytes:        # the common case first: one check per message built
            return
        if isinstance(self.body, (bytearray, memoryview)):
            self.body = bytes(self.body)
        elif not isinstance(self.body, bytes):
            raise TypeError(f"message body must be bytes-like, got {type(self.body).__name__}")

    @property
    def tags(self) -> str | None:
        """The TAGS property (the consume-queue tags code is its Java hash), or None."""
        return self.properties.get(PropertyKey.TAGS)

    @tags.setter
    def tags(self, value: str | None) -> None:
        _set_optional(self.properties, PropertyKey.TAGS, value)

    @property
    def keys(self) -> list[str]:
        """The business keys of the KEYS property; each is indexed separately."""
        return _keys_of(self.properties)

    @keys.setter
    def keys(self, value: Iterable[str] | str | None) -> None:
        """Set KEYS from a list of keys (joined with spaces) or a raw space-separated string; empty removes it.

        A key containing a space, or an empty key in a list, raises ValueError: the index would split it into
        different keys, so a lookup by the key as given would never find the message.
        """
        if value is None or isinstance(value, str):
            _set_optional(self.properties, PropertyKey.KEYS, value)
            return
        keys = list(value)
        for key in keys:
            if not key:
                raise ValueError("message keys must not be empty")
            if KEY_SEPARATOR in key:
                raise ValueError(f"message key {key!r} contains the key separator {KEY_SEPARATOR!r}")
        _set_optional(self.properties, PropertyKey.KEYS, KEY_SEPARATOR.join(keys))

    @property
    def delay_time_level(self) -> int:
        """The DELAY level (1-based; 0 = not delayed).

        Raises ValueError for a value that is not a decimal integer, as Java's ``Integer.parseInt`` would fail.
        """
        raw = self.properties.get(PropertyKey.DELAY)
        if raw is None:
            return 0
        if _JAVA_INT.fullmatch(raw) is None:
            raise ValueError(f"DELAY property is not an integer: {raw!r}")
        return int(raw)

    @delay_time_level.setter
    def delay_time_level(self, level: int) -> None:
        """Set the delay level; 0 removes the property (the broker treats absent and 0 alike)."""
        if level < 0:
            raise ValueError(f"delay level must be >= 0, got {level}")
        if level == 0:
            self.properties.pop(PropertyKey.DELAY, None)
        else:
            self.properties[PropertyKey.DELAY] = str(level)

    @property
    def unique_key(self) -> str | None:
        """The client-generated unique id (UNIQ_KEY), or None."""
        return self.properties.get(PropertyKey.UNIQ_KEY)

    @unique_key.setter
    def unique_key(self, value: str | None) -> None:
        _set_optional(self.properties, PropertyKey.UNIQ_KEY, value)

    @property
    def wait_store_msg_ok(self) -> bool:
        """Whether the producer wants the reply only after flush/replication (WAIT; absent means True).

        Any value other than a case-insensitive ``"true"`` is False, as with Java's ``Boolean.parseBoolean``.
        """
        raw = self.properties.get(PropertyKey.WAIT)
        return True if raw is None else raw.lower() == "true"

    @wait_store_msg_ok.setter
    def wait_store_msg_ok(self, value: bool) -> None:
        self.properties[PropertyKey.WAIT] = "true" if value else "false"

    def properties_bytes(self) -> bytes:
        """The encoded property string (see encode_properties, including its length limit)."""
        return encode_properties(self.properties)


@dataclass(slots=True)
class MessageExt:
    """A decoded stored record (the commitlog layout of PROTOCOL.md §4.1), as returned by pulls and queries.

    Field names follow the record fields; hosts are ``(address, port)`` tuples.  The body is kept as stored,
    i.e. still compressed when ``sys_flag`` says so.
    """

    store_size: int
    magic: int
    body_crc: int
    queue_id: int
    flag: int
    queue_offset: int
    commit_log_offset: int
    sys_flag: int
    born_timestamp: int
    born_host: tuple[str, int]
    store_timestamp: int
    store_host: tuple[str, int]
    reconsume_times: int
    prepared_transaction_offset: int
    body: bytes
    topic: str
    properties: dict[str, str]

    @property
    def tags(self) -> str | None:
        """The TAGS property, or None."""
        return self.properties.get(PropertyKey.TAGS)

    @property
    def keys(self) -> list[str]:
        """The business keys of the KEYS property."""
        return _keys_of(self.properties)

    @property
    def unique_key(self) -> str | None:
        """The client-generated unique id (UNIQ_KEY), or None."""
        return self.properties.get(PropertyKey.UNIQ_KEY)

    @property
    def offset_msg_id(self) -> str:
        """The offset message id of this record: store host and commitlog offset (what a send reply returns)."""
        host, port = self.store_host
        return create_offset_msg_id(host, port, self.commit_log_offset)

    @property
    def msg_id(self) -> str:
        """The id clients show as ``msgId``: UNIQ_KEY when the producer set one, else the offset id."""
        return self.unique_key or self.offset_msg_id
