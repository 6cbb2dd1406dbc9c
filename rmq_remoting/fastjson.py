"""Reading and writing RocketMQ's fastjson-style JSON bodies (PROTOCOL.md §1.6).

fastjson 1.x writes non-string map keys bare (``{0:"10.0.0.5:10911"}``) and object-keyed maps with an
object in key position (``{{"brokerName":"b","queueId":0,"topic":"T"}:12}``); standard parsers reject
both. ``loads`` tries orjson first (most bodies are standard JSON) and falls back to a tolerant
recursive-descent parser that accepts, in key position, strings, numbers, objects, arrays, literals and
bare identifiers. Bare numeric keys come back as ``int``, object keys as hashable ``FrozenDict``; a
quoted ``"0"`` stays ``str`` so callers can see which form the peer used and convert per schema.

``dumps`` writes RocketMQ's form: keys sorted, null map values omitted, non-string keys bare, enums by
name, compact. ``standard=True`` gives the BrowserCompatible form the nameserver sends to clients that
ask for it: every key quoted and non-ASCII escaped as ``\\uXXXX``.
"""
from __future__ import annotations

import base64
import dataclasses
import enum
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

__all__ = ["FastjsonError", "FrozenDict", "loads", "dumps"]

MAX_DEPTH = 128          # RocketMQ bodies nest a handful of levels; deeper input is hostile

_WS = re.compile(r"[ \t\n\r\f]*")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_DQ_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_SQ_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'", re.S)
_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_LITERALS = {"true": True, "false": False, "null": None}
# orjson turns integers beyond 64 bits into floats; such documents take the exact (slow) path.
_LONG_DIGITS = re.compile(rb"\d{20}")


class FastjsonError(ValueError):
    """The text is not JSON even by fastjson's lenient rules."""


class FrozenDict(Mapping):
    """An immutable, hashable mapping: what an object in key position parses to (e.g. a MessageQueue)."""

    __slots__ = ("_d", "_hash")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._d: dict = dict(*args, **kwargs)
        self._hash: int | None = None

    def __getitem__(self, key: Any) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._d.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenDict({self._d!r})"


def _freeze(value: Any) -> Any:
    """Make a parsed value hashable so it can serve as a dict key."""
    if isinstance(value, dict):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


class _Parser:
    """Lenient JSON reader over a str; positions in errors are character offsets."""

    __slots__ = ("s", "pos", "depth")

    def __init__(self, s: str) -> None:
        self.s = s
        self.pos = 0
        self.depth = 0

    def fail(self, what: str) -> FastjsonError:
        return FastjsonError(f"{what} at offset {self.pos}")

    def ws(self) -> None:
        self.pos = _WS.match(self.s, self.pos).end()

    def peek(self) -> str:
        self.ws()
        if self.pos >= len(self.s):
            raise self.fail("unexpected end of input")
        return self.s[self.pos]

    def document(self) -> Any:
        value = self.value()
        self.ws()
        if self.pos != len(self.s):
            raise self.fail("trailing characters")
        return value

    def value(self) -> Any:
        c = self.peek()
        if c == "{":
            return self.obj()
        if c == "[":
            return self.arr()
        if c == '"' or c == "'":
            return self.string(c)
        m = _NUMBER.match(self.s, self.pos)
        if m:
            self.pos = m.end()
            return self.number(m)
        m = _IDENT.match(self.s, self.pos)
        if m and m.group(0) in _LITERALS:
            self.pos = m.end()
            return _LITERALS[m.group(0)]
        raise self.fail(f"unexpected character {c!r}")

    def key(self) -> Any:
        c = self.peek()
        if c == '"' or c == "'":
            return self.string(c)
        if c == "{":
            return _freeze(self.obj())
        if c == "[":
            return _freeze(self.arr())
        m = _NUMBER.match(self.s, self.pos)
        if m:
            self.pos = m.end()
            return self.number(m)
        m = _IDENT.match(self.s, self.pos)
        if m:
            self.pos = m.end()
            word = m.group(0)
            return _LITERALS.get(word, word)
        raise self.fail(f"unexpected character {c!r} in key position")

    def number(self, m: re.Match) -> int | float:
        text = m.group(0)
        if m.group(1) is None and m.group(2) is None:
            return int(text)
        return float(text)

    def string(self, quote: str) -> str:
        m = (_DQ_STRING if quote == '"' else _SQ_STRING).match(self.s, self.pos)
        if m is None:
            raise self.fail("unterminated string")
        self.pos = m.end()
        body = m.group(1)
        if "\\" not in body:
            return body
        if quote == "'":
            body = body.replace("\\'", "'").replace('"', '\\"')
        try:
            return json.loads(f'"{body}"', strict=False)
        except ValueError as exc:
            raise self.fail(f"bad string escape ({exc})") from None

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH}")

    def obj(self) -> dict:
        self.enter()
        self.pos += 1
        result: dict = {}
        while True:
            if self.peek() == "}":
                self.pos += 1
                break
            key = self.key()
            if self.peek() != ":":
                raise self.fail("expected ':'")
            self.pos += 1
            result[key] = self.value()
            c = self.peek()
            self.pos += 1
            if c == "}":
                break
            if c != ",":
                raise self.fail("expected ',' or '}'")
        self.depth -= 1
        return result

    def arr(self) -> list:
        self.enter()
        self.pos += 1
        result: list = []
        while True:
            if self.peek() == "]":
                self.pos += 1
                break
            result.append(self.value())
            c = self.peek()
            self.pos += 1
            if c == "]":
                break
            if c != ",":
                raise self.fail("expected ',' or ']'")
        self.depth -= 1
        return result


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse a fastjson body (bare or standard form) into Python objects; raises FastjsonError."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
    try:
        return _Parser(text).document()
    except RecursionError:
        raise FastjsonError("nesting too deep for the Python stack") from None


def _sort_key(key: Any) -> tuple:
    if isinstance(key, bool) or key is None:
        return (2, str(key))
    if isinstance(key, (int, float)):
        return (0, key, "")
    if isinstance(key, str):
        return (1, key)
    return (2, repr(key))


def _write_key(key: Any, out: list[str], standard: bool) -> None:
    if isinstance(key, str):
        out.append(orjson.dumps(key).decode())
    elif not standard:
        _write(key, out, standard)
    else:
        inner: list[str] = []
        _write(key, inner, standard)
        text = "".join(inner)
        out.append(text if text.startswith('"') else orjson.dumps(text).decode())


def _write_mapping(items: Any, out: list[str], standard: bool) -> None:
    pairs = [(k, v) for k, v in items if v is not None]
    try:
        pairs.sort(key=lambda kv: _sort_key(kv[0]))
    except TypeError:
        pass
    out.append("{")
    first = True
    for key, value in pairs:
        if not first:
            out.append(",")
        first = False
        _write_key(key, out, standard)
        out.append(":")
        _write(value, out, standard)
    out.append("}")


def _write(obj: Any, out: list[str], standard: bool) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif type(obj) is str:
        out.append(orjson.dumps(obj).decode())
    elif type(obj) is int:
        out.append(str(obj))
    elif isinstance(obj, enum.Enum):
        if isinstance(obj, int):
            out.append(str(int(obj)))                      # IntEnum: a number on the wire (codes)
        else:
            out.append(orjson.dumps(obj.name).decode())    # Java enums travel by name
    elif isinstance(obj, str):
        out.append(orjson.dumps(str(obj)).decode())
    elif isinstance(obj, int):
        out.append(str(int(obj)))
    elif isinstance(obj, float):
        out.append(orjson.dumps(obj).decode())
    elif isinstance(obj, Mapping):
        _write_mapping(obj.items(), out, standard)
    elif isinstance(obj, (list, tuple)):
        _write_array(obj, out, standard)
    elif isinstance(obj, (set, frozenset)):
        items = list(obj)
        try:
            items.sort(key=_sort_key)
        except TypeError:
            pass
        _write_array(items, out, standard)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        out.append('"' + base64.b64encode(bytes(obj)).decode() + '"')   # fastjson's byte[] form
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _write_mapping(((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)), out, standard)
    else:
        raise TypeError(f"cannot write {type(obj).__name__} as fastjson")


def _write_array(items: Any, out: list[str], standard: bool) -> None:
    out.append("[")
    first = True
    for item in items:
        if not first:
            out.append(",")
        first = False
        _write(item, out, standard)
    out.append("]")


def _escape_non_ascii(m: re.Match) -> str:
    code = ord(m.group(0))
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def dumps(obj: Any, *, standard: bool = False) -> bytes:
    """Serialize like RocketMQ's RemotingSerializable (bare keys), or standard JSON when asked."""
    out: list[str] = []
    _write(obj, out, standard)
    text = "".join(out)
    if standard:
        text = _NON_ASCII.sub(_escape_non_ascii, text)
    return text.encode()
