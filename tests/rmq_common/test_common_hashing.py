"""Tests of rmq_common.hashing against values Java's String.hashCode produces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmq_common.hashing import INT32_MIN, index_key_hash, java_string_hash


def reference_hash(s: str) -> int:
    """Java's closed form sum(u[i] * 31**(n-1-i)) mod 2**32 over UTF-16 units, computed independently."""
    raw = s.encode("utf-16-be", "surrogatepass")
    units = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    n = len(units)
    total = sum(u * pow(31, n - 1 - i, 1 << 32) for i, u in enumerate(units)) % (1 << 32)
    return total - (1 << 32) if total >= 1 << 31 else total


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 97),
        ("TagA", 2598919),
        ("hello", 99162322),
        ("Aa", 2112),
        ("BB", 2112),
        ("é", 233),
        ("中文", 646394),
        # U+1F600 is the surrogate pair D83D DE00 in UTF-16: 0xD83D * 31 + 0xDE00.
        ("😀", 0xD83D * 31 + 0xDE00),
        ("😀", 1772899),
        ("polygenelubricants", INT32_MIN),
        ("TopicTest#KEY1", -1656969516),
    ],
)
def test_known_java_values(text: str, expected: int) -> None:
    assert java_string_hash(text) == expected


def test_collision_like_java() -> None:
    assert java_string_hash("Aa") == java_string_hash("BB")
    assert java_string_hash("AaAa") == java_string_hash("BBBB") == java_string_hash("AaBB")


def test_non_bmp_counts_two_units() -> None:
    assert java_string_hash("😀") == java_string_hash("\ud83d\ude00")
    assert java_string_hash("😀") != ord("😀")


def test_lone_surrogate_is_one_unit() -> None:
    assert java_string_hash("\ud83d") == 0xD83D


def test_overflow_wraps_to_signed() -> None:
    value = java_string_hash("x" * 100)
    assert -(1 << 31) <= value < 1 << 31
    assert value == reference_hash("x" * 100)


@given(st.text(max_size=200))
def test_matches_reference(text: str) -> None:
    value = java_string_hash(text)
    assert value == reference_hash(text)
    assert -(1 << 31) <= value < 1 << 31


@pytest.mark.parametrize("text", ["polygenelubricants", "GydZG_", "DESIGNING WORKHOUSES"])
def test_index_key_hash_maps_min_value_to_zero(text: str) -> None:
    assert java_string_hash(text) == INT32_MIN
    assert index_key_hash(text) == 0


def test_index_key_hash_is_abs() -> None:
    assert index_key_hash("TopicTest#KEY1") == 1656969516
    assert index_key_hash("hello") == 99162322
    assert index_key_hash("") == 0


@given(st.text(max_size=100))
def test_index_key_hash_range(text: str) -> None:
    value = index_key_hash(text)
    assert 0 <= value <= (1 << 31) - 1
    java = java_string_hash(text)
    assert value == (0 if java == INT32_MIN else abs(java))
