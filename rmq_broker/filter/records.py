"""Message properties straight from a stored record, for filters that read them (SQL92)."""
from __future__ import annotations

import struct

from rmq_common.properties import decode_properties
from rmq_common.sysflag import BORNHOST_V6_FLAG, STOREHOSTADDRESS_V6_FLAG

__all__ = ["record_properties"]

_I32 = struct.Struct(">i").unpack_from
_I16 = struct.Struct(">h").unpack_from


def record_properties(record: bytes | bytearray | memoryview) -> dict[str, str]:
    """Every property of one stored record (PROTOCOL.md §4.1 layout), decoded as Java's
    ``MessageDecoder.decodeProperties``; the body is skipped, not copied. A record too short for its own
    length fields has no properties (the store has already checked its size and magic)."""
    try:
        sys_flag = _I32(record, 36)[0]
        pos = 56 + (20 if sys_flag & BORNHOST_V6_FLAG else 8) + (20 if sys_flag & STOREHOSTADDRESS_V6_FLAG else 8)
        body_len = _I32(record, pos + 12)[0]
        if body_len < 0:
            return {}
        pos += 17 + body_len + record[pos + 16 + body_len]
        props_len = _I16(record, pos)[0]
    except (IndexError, struct.error):
        return {}
    if props_len <= 0:
        return {}
    return decode_properties(record[pos + 2:pos + 2 + props_len])
