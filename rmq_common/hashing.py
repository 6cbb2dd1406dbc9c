"""Java ``String.hashCode`` and the index-file key hash (PROTOCOL.md §6.2, §6.4, §3.4).

RocketMQ persists Java string hashes: the consume-queue tags code is ``TAGS.hashCode()``, index-file buckets come
from ``abs(key.hashCode())`` and subscriptions carry tag hash codes.  Files and wire data written by Java brokers and
clients are only usable if we compute the very same numbers, so these are exact re-implementations of Java's
definition.  They are the reference implementations the Cython fast path is tested against.
"""

from __future__ import annotations

import sys
from array import array
from typing import Final

__all__ = ["INT32_MIN", "java_string_hash", "index_key_hash"]

#: Java's Integer.MIN_VALUE.
INT32_MIN: Final = -(1 << 31)

_MASK32: Final = 0xFFFFFFFF
_NATIVE_UTF16: Final = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"


def java_string_hash(s: str) -> int:
    """Return Java's ``s.hashCode()``: ``sum(u[i] * 31**(n-1-i))`` over UTF-16 code units, as a signed int32.

    Java strings are UTF-16, so a character outside the BMP contributes two surrogate units; hashing Python code
    points instead would disagree with Java for emoji and rare CJK.  Lone surrogates (possible in a Python str) are
    hashed as the single unit Java would hold.
    """
    units = array("H", s.encode(_NATIVE_UTF16, "surrogatepass"))
    h = 0
    for unit in units:
        h = (31 * h + unit) & _MASK32
    return h - (1 << 32) if h & 0x80000000 else h


def index_key_hash(s: str) -> int:
    """Return the index-file hash of key ``s``: ``abs(java_string_hash(s))``, with Integer.MIN_VALUE mapped to 0.

    Java's ``Math.abs(Integer.MIN_VALUE)`` is still negative, and ``IndexFile.indexKeyHashMethod`` turns that case
    into 0 so the result is always a valid non-negative bucket source.
    """
    h = java_string_hash(s)
    if h == INT32_MIN:
        return 0
    return abs(h)
