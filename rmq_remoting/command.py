"""RemotingCommand: one request or response, and its JSON / ROCKETMQ header codecs (PROTOCOL.md §1).

Decoding is deliberately tolerant because real clients are sloppy: CPP and ONS send extFields values as
JSON numbers and booleans (coerced to strings, as fastjson does for ``HashMap<String,String>``), CPP and
5.x clients add header keys we do not know (ignored), and any missing field takes RocketMQ's default.
Only what makes a header unusable — not JSON, not an object, an int field that is no int — raises
FrameError, and the server then closes that one connection as Java does.

Encoding mirrors Java: JSON keys sorted, nulls omitted, ``extFields`` always present, compact; the
binary form is written by the Cython codec. A response is always written in the serialization of the
request it answers (CPP cannot parse binary headers).
"""
from __future__ import annotations

import itertools
from enum import IntEnum
from typing import Annotated, Any, Optional

import msgspec
import orjson

from rmq_remoting import _frame, fastjson
from rmq_remoting.codes import ResponseCode
from rmq_remoting.errors import FrameError

__all__ = [
    "RemotingCommand", "LanguageCode", "SerializeType", "MQVersion", "CURRENT_VERSION",
    "RPC_RESPONSE", "RPC_ONEWAY", "next_opaque",
]

RPC_RESPONSE = 0x1      # flag bit0: this command is a response
RPC_ONEWAY = 0x2        # flag bit1: a request that must not be answered

_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1


class SerializeType(IntEnum):
    """High byte of the header-length word (``REM/protocol/SerializeType.java``)."""

    JSON = 0
    ROCKETMQ = 1


class LanguageCode(IntEnum):
    """``REM/protocol/LanguageCode.java``: the byte in binary headers; JSON headers carry the name."""

    JAVA = 0
    CPP = 1
    DOTNET = 2
    PYTHON = 3
    DELPHI = 4
    ERLANG = 5
    RUBY = 6
    OTHER = 7
    HTTP = 8
    GO = 9
    PHP = 10
    OMS = 11
    RUST = 12
    NODE_JS = 13


class MQVersion:
    """Ordinals of ``COM/MQVersion.java`` Version that matter on the wire (§1.5)."""

    V4_6_0 = 333        # sent by CPP
    V4_9_4 = 401        # nameserver answers standard-JSON routes from here on
    V4_9_7 = 407        # Java CURRENT_VERSION of 4.9.7; we stamp it on everything we send
    V5_3_3 = 479
    GO_CLIENT = 317
    ONS_CLIENT = 121


CURRENT_VERSION = MQVersion.V4_9_7

_LANGUAGE_NAMES: tuple[str, ...] = tuple(m.name for m in LanguageCode)
_LANGUAGE_CODES: dict[str, int] = {m.name: m.value for m in LanguageCode}

_Int32 = Annotated[int, msgspec.Meta(ge=_INT32_MIN, le=_INT32_MAX)]


class _JsonHeader(msgspec.Struct):
    """A JSON header in its canonical form: what Java and our own encoder write.

    Decoding into it is the fast path of ``from_frame`` (one C call, no per-field Python); anything it
    does not accept exactly — numeric strings, null values, non-string extFields values, fastjson's bare
    keys, a non-object — goes through the tolerant path, which alone decides what is legal.
    """

    code: _Int32 = 0
    extFields: dict[str, str] = {}              # noqa: N815 (the wire name)
    flag: _Int32 = 0
    language: str = "JAVA"
    opaque: _Int32 = 0
    remark: Optional[str] = None
    version: _Int32 = 0


_decode_json_header = msgspec.json.Decoder(_JsonHeader).decode
_MsgspecError = msgspec.MsgspecError
_dumps = orjson.dumps


_all_str = _frame.is_str_dict        # a dict of str to str: nothing to coerce


# Java's RemotingCommand.requestId is one process-wide counter; opaques stay positive int32.
_opaque_counter = itertools.count(1)


def next_opaque() -> int:
    """A fresh request id (wraps within positive int32, like CPP's masked counter)."""
    return next(_opaque_counter) & 0x7FFFFFFF


def _coerce_value(value: Any) -> str | None:
    """fastjson's castToString for an extFields value of any JSON type (None = drop the entry)."""
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (dict, list)):
        return fastjson.dumps(value).decode()
    return str(value)


def _coerce_ext(ext: Any) -> dict[str, str]:
    """extFields as dict[str, str]: values coerced, null values dropped."""
    if ext is None:
        return {}
    if not isinstance(ext, dict):
        raise FrameError(f"extFields must be an object, got {type(ext).__name__}")
    for k, v in ext.items():
        if type(v) is not str or type(k) is not str:
            break
    else:
        return ext
    out: dict[str, str] = {}
    for k, v in ext.items():
        s = _coerce_value(v)
        if s is not None:
            out[k if type(k) is str else str(k)] = s
    return out


def _as_int32(value: Any, name: str, default: int = 0) -> int:
    """An int header field as fastjson would bind it: numbers, numeric strings, booleans."""
    if type(value) is int:
        if _INT32_MIN <= value <= _INT32_MAX:
            return value
    elif value is None:
        return default
    else:
        try:
            if isinstance(value, float):
                if value != int(value):
                    raise ValueError
                value = int(value)
            elif isinstance(value, str):
                value = int(value.strip())
            elif isinstance(value, bool):
                value = int(value)
            else:
                raise ValueError
        except (ValueError, OverflowError):
            raise FrameError(f"header field {name!r} is not an integer: {value!r}") from None
        if _INT32_MIN <= value <= _INT32_MAX:
            return value
    raise FrameError(f"header field {name!r} out of int32 range: {value!r}")


def _as_language(value: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return "JAVA"
    if type(value) is int and 0 <= value < len(_LANGUAGE_NAMES):
        return _LANGUAGE_NAMES[value]
    return "OTHER"


def _language_name(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, LanguageCode):
        return value.name
    raise TypeError(f"language must be a LanguageCode name, got {value!r}")


def _check_int32(value: int, name: str) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be int, got {type(value).__name__}")
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise FrameError(f"{name} {value} out of int32 range")
    return int(value)


class RemotingCommand:
    """A request or response as RocketMQ's RemotingCommand.

    ``language`` is the enum name as sent in JSON headers (unknown names are kept verbatim);
    ``ext_fields`` maps str to str; ``body`` is any bytes-like object or None (decoded bodies are
    zero-copy memoryviews into the receive buffer — copy them to keep them beyond the handler).
    """

    __slots__ = ("code", "language", "version", "opaque", "flag", "remark", "ext_fields", "body",
                 "serialize_type")

    def __init__(self, code: int = 0, *, language: str = "JAVA", version: int = CURRENT_VERSION,
                 opaque: int = 0, flag: int = 0, remark: str | None = None,
                 ext_fields: dict[str, str] | None = None, body: bytes | bytearray | memoryview | None = None,
                 serialize_type: int = SerializeType.JSON) -> None:
        self.code = code
        self.language = language
        self.version = version
        self.opaque = opaque
        self.flag = flag
        self.remark = remark
        self.ext_fields: dict[str, str] = {} if ext_fields is None else ext_fields
        self.body = body
        self.serialize_type = serialize_type

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def request(cls, code: int, ext_fields: dict[str, str] | None = None, body: Any = None, *,
                oneway: bool = False, serialize_type: int = SerializeType.JSON) -> RemotingCommand:
        """A new request with a fresh opaque (senders may replace it when they send)."""
        return cls(code, opaque=next_opaque(), flag=RPC_ONEWAY if oneway else 0, ext_fields=ext_fields,
                   body=body, serialize_type=serialize_type)

    def create_response(self, code: int = ResponseCode.SUCCESS, remark: str | None = None,
                        ext_fields: dict[str, str] | None = None, body: Any = None) -> RemotingCommand:
        """The response to this request: same opaque and serialization, response flag, our version."""
        return RemotingCommand(code, opaque=self.opaque, flag=RPC_RESPONSE, remark=remark,
                               ext_fields=ext_fields, body=body, serialize_type=self.serialize_type)

    # -- flags --------------------------------------------------------------------------------

    @property
    def is_response(self) -> bool:
        return bool(self.flag & RPC_RESPONSE)

    @property
    def is_oneway(self) -> bool:
        return bool(self.flag & RPC_ONEWAY)

    def mark_response(self) -> None:
        self.flag |= RPC_RESPONSE

    def mark_oneway(self) -> None:
        self.flag |= RPC_ONEWAY

    # -- headers ------------------------------------------------------------------------------

    def header_dict(self) -> dict[str, Any]:
        """The JSON header as Java's fastjson writes it: keys sorted, nulls omitted."""
        d: dict[str, Any] = {
            "code": _check_int32(self.code, "code"),
            "extFields": _coerce_ext(self.ext_fields),
            "flag": _check_int32(self.flag, "flag"),
            "language": _language_name(self.language),
            "opaque": _check_int32(self.opaque, "opaque"),
        }
        if self.remark is not None:
            d["remark"] = self.remark
        d["serializeTypeCurrentRPC"] = "JSON"
        d["version"] = _check_int32(self.version, "version")
        return d

    def encode_header(self) -> bytes:
        """The header bytes in this command's serialization."""
        if self.serialize_type == SerializeType.JSON:
            code, flag, opaque, version, language, ext = (self.code, self.flag, self.opaque, self.version,
                                                          self.language, self.ext_fields)
            if type(code) is not int and isinstance(code, int):
                code = int(code)                # RequestCode / ResponseCode members, as header_dict does
            if (type(code) is int and type(flag) is int and type(opaque) is int and type(version) is int
                    and type(language) is str and _INT32_MIN <= code <= _INT32_MAX
                    and _INT32_MIN <= flag <= _INT32_MAX and _INT32_MIN <= opaque <= _INT32_MAX
                    and _INT32_MIN <= version <= _INT32_MAX and _all_str(ext)):
                # The common case, already in canonical form: the same bytes as header_dict() gives.
                remark = self.remark
                if remark is None:
                    return _dumps({"code": code, "extFields": ext, "flag": flag, "language": language,
                                   "opaque": opaque, "serializeTypeCurrentRPC": "JSON", "version": version})
                if type(remark) is str:
                    return _dumps({"code": code, "extFields": ext, "flag": flag, "language": language,
                                   "opaque": opaque, "remark": remark, "serializeTypeCurrentRPC": "JSON",
                                   "version": version})
            return _dumps(self.header_dict())
        if self.serialize_type == SerializeType.ROCKETMQ:
            ext = self.ext_fields
            language = self.language
            return _frame.encode_rocketmq_header(
                self.code,
                _LANGUAGE_CODES.get(language if type(language) is str else _language_name(language),
                                    LanguageCode.OTHER),
                self.version, self.opaque, self.flag, self.remark or None,
                ext if _all_str(ext) else _coerce_ext(ext))
        raise FrameError(f"unknown serialize type {self.serialize_type}")

    def encode(self, max_frame: int = _frame.DEFAULT_MAX_FRAME) -> bytes:
        """The whole frame in one buffer."""
        return _frame.encode_frame(self.encode_header(), self.body, self.serialize_type, max_frame)

    def encode_parts(self, max_frame: int = _frame.DEFAULT_MAX_FRAME) -> list:
        """The frame as ``[prefix+header, body]`` so large bodies are written without a copy."""
        return _frame.encode_frame_parts(self.encode_header(), self.body, self.serialize_type, max_frame)

    # -- decoding -----------------------------------------------------------------------------

    @classmethod
    def from_header_dict(cls, fields: Any, serialize_type: int = SerializeType.JSON) -> RemotingCommand:
        """Bind a parsed JSON header tolerantly (unknown keys ignored, defaults for missing ones)."""
        if not isinstance(fields, dict):
            raise FrameError(f"header is not a JSON object but {type(fields).__name__}")
        cmd = cls.__new__(cls)
        get = fields.get
        cmd.code = _as_int32(get("code"), "code")
        cmd.language = _as_language(get("language"))
        cmd.version = _as_int32(get("version"), "version")
        cmd.opaque = _as_int32(get("opaque"), "opaque")
        cmd.flag = _as_int32(get("flag"), "flag")
        remark = get("remark")
        cmd.remark = remark if remark is None or type(remark) is str else _coerce_value(remark)
        cmd.ext_fields = _coerce_ext(get("extFields"))
        cmd.body = None
        cmd.serialize_type = serialize_type
        return cmd

    @classmethod
    def _from_json_tolerant(cls, header: bytes | memoryview) -> RemotingCommand:
        try:
            fields = orjson.loads(header)
        except orjson.JSONDecodeError:
            try:
                fields = fastjson.loads(header)     # fastjson-isms are legal in Java headers too
            except fastjson.FastjsonError as exc:
                raise FrameError(f"header is not JSON: {exc}") from None
        return cls.from_header_dict(fields)

    @classmethod
    def from_frame(cls, header: bytes | memoryview, serialize_type: int,
                   body: bytes | memoryview | None) -> RemotingCommand:
        """Build a command from what the frame splitter returns."""
        if serialize_type == SerializeType.JSON:
            try:
                h = _decode_json_header(header)
            except _MsgspecError:
                cmd = cls._from_json_tolerant(header)
            else:
                cmd = cls.__new__(cls)
                cmd.code = h.code
                cmd.language = h.language
                cmd.version = h.version
                cmd.opaque = h.opaque
                cmd.flag = h.flag
                cmd.remark = h.remark
                cmd.ext_fields = h.extFields
                cmd.serialize_type = SerializeType.JSON
        elif serialize_type == SerializeType.ROCKETMQ:
            code, lang, version, opaque, flag, remark, ext = _frame.decode_rocketmq_header(header)
            cmd = cls.__new__(cls)
            cmd.code = code
            cmd.language = _LANGUAGE_NAMES[lang] if lang < len(_LANGUAGE_NAMES) else "OTHER"
            cmd.version = version
            cmd.opaque = opaque
            cmd.flag = flag
            cmd.remark = remark
            cmd.ext_fields = ext
            cmd.serialize_type = SerializeType.ROCKETMQ
        else:
            raise FrameError(f"unknown serialize type {serialize_type}")
        cmd.body = body if body is not None and len(body) else None
        return cmd

    @classmethod
    def decode(cls, frame: bytes | bytearray | memoryview,
               max_frame: int = _frame.DEFAULT_MAX_FRAME) -> RemotingCommand:
        """Decode exactly one whole frame (length word included), as produced by ``encode``."""
        frames, consumed = _frame.split_frames(frame, 0, max_frame)
        if len(frames) != 1 or consumed != len(frame):
            raise FrameError(f"expected exactly one frame of {len(frame)} bytes, found {len(frames)} "
                             f"frame(s) covering {consumed}")
        return cls.from_frame(*frames[0])

    # -- comparison and display -----------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemotingCommand):
            return NotImplemented
        return (self.code == other.code and self.language == other.language and self.version == other.version
                and self.opaque == other.opaque and self.flag == other.flag and self.remark == other.remark
                and self.ext_fields == other.ext_fields and self.serialize_type == other.serialize_type
                and bytes(self.body or b"") == bytes(other.body or b""))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kind = "response" if self.is_response else ("oneway" if self.is_oneway else "request")
        body = len(self.body) if self.body is not None else 0
        return (f"RemotingCommand({kind} code={self.code} opaque={self.opaque} flag={self.flag} "
                f"lang={self.language} v={self.version} ser={int(self.serialize_type)} "
                f"remark={self.remark!r} ext={self.ext_fields!r} body={body}B)")
