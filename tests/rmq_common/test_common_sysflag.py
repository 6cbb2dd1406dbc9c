"""Tests of rmq_common.sysflag: constant values from MessageSysFlag.java and the field helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmq_common import sysflag
from rmq_common.sysflag import (
    BORNHOST_V6_FLAG,
    COMPRESSED_FLAG,
    COMPRESSION_TYPE_MASK,
    INNER_BATCH_FLAG,
    LZ4,
    MULTI_TAGS_FLAG,
    NEED_UNWRAP_FLAG,
    STOREHOSTADDRESS_V6_FLAG,
    TRANSACTION_COMMIT_TYPE,
    TRANSACTION_NOT_TYPE,
    TRANSACTION_PREPARED_TYPE,
    TRANSACTION_ROLLBACK_TYPE,
    ZLIB,
    ZSTD,
    compression_type,
    reset_transaction_value,
    transaction_value,
    with_compression,
)

TX_TYPES = [TRANSACTION_NOT_TYPE, TRANSACTION_PREPARED_TYPE, TRANSACTION_COMMIT_TYPE, TRANSACTION_ROLLBACK_TYPE]
KINDS = [LZ4, ZSTD, ZLIB]
sysflags = st.integers(min_value=0, max_value=0x7FFFFFFF)


def test_constant_values_match_java() -> None:
    assert COMPRESSED_FLAG == 0x1
    assert MULTI_TAGS_FLAG == 0x2
    assert TRANSACTION_NOT_TYPE == 0
    assert TRANSACTION_PREPARED_TYPE == 0x4
    assert TRANSACTION_COMMIT_TYPE == 0x8
    assert TRANSACTION_ROLLBACK_TYPE == 0xC
    assert sysflag.TRANSACTION_TYPE_MASK == 0xC
    assert BORNHOST_V6_FLAG == 0x10
    assert STOREHOSTADDRESS_V6_FLAG == 0x20
    assert NEED_UNWRAP_FLAG == 0x40
    assert INNER_BATCH_FLAG == 0x80
    assert COMPRESSION_TYPE_MASK == 0x700
    assert (LZ4, ZSTD, ZLIB) == (0x100, 0x200, 0x300)


def test_single_bit_flags_do_not_overlap() -> None:
    flags = [COMPRESSED_FLAG, MULTI_TAGS_FLAG, BORNHOST_V6_FLAG, STOREHOSTADDRESS_V6_FLAG, NEED_UNWRAP_FLAG,
             INNER_BATCH_FLAG]
    combined = 0
    for flag in flags:
        assert flag & combined == 0
        assert flag & sysflag.TRANSACTION_TYPE_MASK == 0
        assert flag & COMPRESSION_TYPE_MASK == 0
        combined |= flag


@pytest.mark.parametrize("tx", TX_TYPES)
def test_transaction_value_reads_the_field(tx: int) -> None:
    flags = COMPRESSED_FLAG | BORNHOST_V6_FLAG | ZLIB | tx
    assert transaction_value(flags) == tx


def test_reset_transaction_value_keeps_other_bits() -> None:
    flags = COMPRESSED_FLAG | ZLIB | STOREHOSTADDRESS_V6_FLAG | TRANSACTION_PREPARED_TYPE
    committed = reset_transaction_value(flags, TRANSACTION_COMMIT_TYPE)
    assert committed == COMPRESSED_FLAG | ZLIB | STOREHOSTADDRESS_V6_FLAG | TRANSACTION_COMMIT_TYPE
    assert reset_transaction_value(committed, TRANSACTION_NOT_TYPE) == COMPRESSED_FLAG | ZLIB | STOREHOSTADDRESS_V6_FLAG


@pytest.mark.parametrize("bad", [1, 2, 3, 0x10, -4, 0x14])
def test_reset_transaction_value_rejects_unknown_types(bad: int) -> None:
    with pytest.raises(ValueError, match="invalid transaction type"):
        reset_transaction_value(0, bad)


@given(sysflags, st.sampled_from(TX_TYPES))
def test_reset_then_read_round_trip(flags: int, tx: int) -> None:
    updated = reset_transaction_value(flags, tx)
    assert transaction_value(updated) == tx
    assert updated & ~sysflag.TRANSACTION_TYPE_MASK == flags & ~sysflag.TRANSACTION_TYPE_MASK


def test_compression_type_zero_means_zlib() -> None:
    assert compression_type(COMPRESSED_FLAG) == ZLIB
    assert compression_type(0) == ZLIB


@pytest.mark.parametrize("kind", KINDS)
def test_compression_type_reads_codec(kind: int) -> None:
    assert compression_type(COMPRESSED_FLAG | kind | TRANSACTION_COMMIT_TYPE | BORNHOST_V6_FLAG) == kind


@pytest.mark.parametrize("bits", [0x400, 0x500, 0x600, 0x700])
def test_compression_type_rejects_undefined_codecs(bits: int) -> None:
    with pytest.raises(ValueError, match=f"unknown compression type {bits:#x}"):
        compression_type(COMPRESSED_FLAG | bits)


def test_with_compression_matches_java_producer() -> None:
    # R4 Java sends 0x1 | 0x300 for a zlib-compressed body.
    assert with_compression(0, ZLIB) == 0x301
    assert with_compression(TRANSACTION_PREPARED_TYPE, LZ4) == 0x105


def test_with_compression_replaces_previous_codec() -> None:
    assert with_compression(with_compression(0, ZSTD), LZ4) == COMPRESSED_FLAG | LZ4


@pytest.mark.parametrize("bad", [0, 0x1, 0x400, 0x700, 0x101])
def test_with_compression_rejects_unknown_kinds(bad: int) -> None:
    with pytest.raises(ValueError, match="invalid compression type"):
        with_compression(0, bad)


@given(sysflags, st.sampled_from(KINDS))
def test_with_compression_round_trip(flags: int, kind: int) -> None:
    updated = with_compression(flags, kind)
    assert updated & COMPRESSED_FLAG
    assert compression_type(updated) == kind
    untouched = ~(COMPRESSION_TYPE_MASK | COMPRESSED_FLAG)
    assert updated & untouched == flags & untouched
