"""MessageSysFlag bits of a stored record and a send request (PROTOCOL.md §4.2).

The SYSFLAG word travels in the SEND_MESSAGE header (``sysFlag`` / ``f``) and is stored verbatim in every commitlog
record.  Several independent facts share it: whether the body is compressed and with which codec, the transaction
state, whether the born/store hosts are IPv6 (which changes the record layout) and batch internals.  Keeping the masks
in one place, with helpers that change one field without disturbing the others, avoids the classic bug of clobbering
the host-width bits while rewriting the transaction state.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "COMPRESSED_FLAG",
    "MULTI_TAGS_FLAG",
    "TRANSACTION_NOT_TYPE",
    "TRANSACTION_PREPARED_TYPE",
    "TRANSACTION_COMMIT_TYPE",
    "TRANSACTION_ROLLBACK_TYPE",
    "TRANSACTION_TYPE_MASK",
    "BORNHOST_V6_FLAG",
    "STOREHOSTADDRESS_V6_FLAG",
    "NEED_UNWRAP_FLAG",
    "INNER_BATCH_FLAG",
    "COMPRESSION_TYPE_MASK",
    "LZ4",
    "ZSTD",
    "ZLIB",
    "transaction_value",
    "reset_transaction_value",
    "compression_type",
    "with_compression",
]

#: The body is compressed; the codec is given by the COMPRESSION_TYPE_MASK bits.
COMPRESSED_FLAG: Final = 0x1
#: Set by the broker when the topic's filter type is MULTI_TAG.
MULTI_TAGS_FLAG: Final = 0x2

#: Transaction state, a 2-bit field (not independent flags): ROLLBACK (0xC) is PREPARED | COMMIT numerically.
TRANSACTION_NOT_TYPE: Final = 0x0
TRANSACTION_PREPARED_TYPE: Final = 0x4
TRANSACTION_COMMIT_TYPE: Final = 0x8
TRANSACTION_ROLLBACK_TYPE: Final = 0xC
#: Mask of the transaction field; numerically equal to TRANSACTION_ROLLBACK_TYPE, as in Java.
TRANSACTION_TYPE_MASK: Final = 0xC

#: BORNHOST is 16 address bytes + port (20 bytes) instead of 4 + port (8 bytes).
BORNHOST_V6_FLAG: Final = 0x10
#: STOREHOST is 16 address bytes + port (20 bytes) instead of 4 + port (8 bytes).
STOREHOSTADDRESS_V6_FLAG: Final = 0x20
#: Batch internals (inner batch / envelope that must be unwrapped).
NEED_UNWRAP_FLAG: Final = 0x40
INNER_BATCH_FLAG: Final = 0x80

#: Compression codec field.  A value of 0 under COMPRESSED_FLAG means ZLIB: CPP clients and Java before the codec
#: field existed set only 0x1.
COMPRESSION_TYPE_MASK: Final = 0x700
LZ4: Final = 0x100
ZSTD: Final = 0x200
ZLIB: Final = 0x300

_TRANSACTION_TYPES: Final = frozenset(
    {TRANSACTION_NOT_TYPE, TRANSACTION_PREPARED_TYPE, TRANSACTION_COMMIT_TYPE, TRANSACTION_ROLLBACK_TYPE}
)
_COMPRESSION_TYPES: Final = frozenset({LZ4, ZSTD, ZLIB})


def transaction_value(sysflag: int) -> int:
    """Return the transaction state of ``sysflag``: one of the ``TRANSACTION_*_TYPE`` constants.

    The broker decides from this whether a record gets a consume-queue unit (prepared and rollback records do not).
    """
    return sysflag & TRANSACTION_TYPE_MASK


def reset_transaction_value(sysflag: int, tx_type: int) -> int:
    """Return ``sysflag`` with its transaction field replaced by ``tx_type``, all other bits kept.

    Used when a half message is committed or rolled back: the copy keeps compression and host-width bits.
    Raises ValueError if ``tx_type`` is not one of the four ``TRANSACTION_*_TYPE`` values, because OR-ing an
    arbitrary value in would silently corrupt neighbouring fields.
    """
    if tx_type not in _TRANSACTION_TYPES:
        raise ValueError(
            f"invalid transaction type {tx_type:#x}: expected one of 0x0 (NOT), 0x4 (PREPARED), "
            "0x8 (COMMIT), 0xC (ROLLBACK)"
        )
    return (sysflag & ~TRANSACTION_TYPE_MASK) | tx_type


def compression_type(sysflag: int) -> int:
    """Return the compression codec of ``sysflag`` as LZ4, ZSTD or ZLIB.

    A zero codec field means ZLIB (legacy senders set only COMPRESSED_FLAG).  The answer is meaningful only when
    COMPRESSED_FLAG is set; callers check that first.  Raises ValueError for the undefined codes 0x400..0x700, as
    Java's ``CompressionType.findByValue`` does, since guessing a codec would hand consumers garbage.
    """
    kind = sysflag & COMPRESSION_TYPE_MASK
    if kind == 0:
        return ZLIB
    if kind not in _COMPRESSION_TYPES:
        raise ValueError(f"unknown compression type {kind:#x} in sysflag {sysflag:#x}")
    return kind


def with_compression(sysflag: int, kind: int) -> int:
    """Return ``sysflag`` marked as compressed with codec ``kind`` (LZ4, ZSTD or ZLIB).

    Sets COMPRESSED_FLAG and replaces any previous codec bits, matching what the R4 Java producer sends
    (``0x1 | 0x300`` for ZLIB).  Raises ValueError for any other ``kind``.
    """
    if kind not in _COMPRESSION_TYPES:
        raise ValueError(f"invalid compression type {kind:#x}: expected LZ4 (0x100), ZSTD (0x200) or ZLIB (0x300)")
    return (sysflag & ~COMPRESSION_TYPE_MASK) | COMPRESSED_FLAG | kind
