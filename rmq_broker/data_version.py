"""DataVersion: the change stamp of a broker's metadata tables (Java ``DataVersion``, PROTOCOL.md §3.2).

A nameserver applies a broker's topic table only when the DataVersion in REGISTER_BROKER differs from
the one it holds (and answers QUERY_DATA_VERSION with ``changed``); a slave copies the master's topic
and subscription tables only when their versions differ. So every change to a table must produce a
version different from every earlier one: the counter always grows, and the timestamp records when.
Two versions are equal only if both fields are.

Wire and file form: ``{"counter":N,"timestamp":ms}`` (fastjson sorts the fields). RocketMQ 5 adds
``stateVersion``; it is accepted and ignored when read.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["DataVersion"]

_INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True, slots=True)
class DataVersion:
    timestamp_ms: int
    counter: int = 0

    def __post_init__(self) -> None:
        for name in ("timestamp_ms", "counter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"DataVersion.{name} must be an integer, not {value!r}")
        if self.counter < 0:
            raise ValueError(f"DataVersion.counter must not be negative, not {self.counter}")

    def next_version(self, now_ms: int) -> DataVersion:
        """The version after this one: counter + 1, stamped ``now_ms`` (Java ``nextVersion``)."""
        return DataVersion(int(now_ms), self.counter + 1)

    def to_json_dict(self) -> dict[str, int]:
        return {"counter": self.counter, "timestamp": self.timestamp_ms}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_json_dict())

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> DataVersion:
        """Read ``{"counter":N,"timestamp":ms}``; ValueError if a field is missing or not a whole number."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a DataVersion must be a JSON object, not {type(data).__name__}")
        try:
            timestamp, counter = data["timestamp"], data["counter"]
        except KeyError as exc:
            raise ValueError(f"DataVersion lacks the field {exc.args[0]!r}") from None
        return cls(_whole(timestamp, "timestamp"), _whole(counter, "counter"))

    @classmethod
    def from_json(cls, data: bytes | str) -> DataVersion:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"DataVersion is not JSON: {exc}") from None
        return cls.from_json_dict(parsed)


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"DataVersion.{name} must be a number, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    raise ValueError(f"DataVersion.{name} must be a whole number, not {value!r}")
