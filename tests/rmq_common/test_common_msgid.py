"""Tests of rmq_common.msgid: offset ids, host bytes and the unique id generator."""

from __future__ import annotations

import ipaddress
import os
import struct
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmq_common import msgid
from rmq_common.msgid import (
    OFFSET_MSG_ID_LENGTH_V4,
    OFFSET_MSG_ID_LENGTH_V6,
    UNIQUE_ID_LENGTH,
    UniqueIdGenerator,
    bytes_to_host,
    create_offset_msg_id,
    create_unique_id,
    decode_offset_msg_id,
    host_to_bytes,
    join_offset_msg_ids,
)

HEX_UPPER = set("0123456789ABCDEF")


# --- host bytes -------------------------------------------------------------------------------------------------


def test_host_to_bytes_ipv4() -> None:
    assert host_to_bytes("10.0.0.5") == bytes([10, 0, 0, 5])


def test_host_to_bytes_ipv6_and_brackets() -> None:
    assert host_to_bytes("::1") == bytes(15) + b"\x01"
    assert host_to_bytes("[::1]") == bytes(15) + b"\x01"


def test_host_to_bytes_collapses_ipv4_mapped() -> None:
    assert host_to_bytes("::ffff:192.168.1.7") == bytes([192, 168, 1, 7])


@pytest.mark.parametrize("bad", ["localhost", "", "1.2.3", "256.0.0.1", "::g", "[10.0.0.1"])
def test_host_to_bytes_rejects_non_literals(bad: str) -> None:
    with pytest.raises(ValueError, match="not a numeric IPv4/IPv6 address"):
        host_to_bytes(bad)


def test_bytes_to_host() -> None:
    assert bytes_to_host(b"\x0a\x00\x00\x05") == "10.0.0.5"
    assert bytes_to_host(bytearray(15) + b"\x01") == "::1"
    assert bytes_to_host(memoryview(b"\x7f\x00\x00\x01")) == "127.0.0.1"


@pytest.mark.parametrize("size", [0, 3, 5, 8, 15, 17])
def test_bytes_to_host_rejects_other_lengths(size: int) -> None:
    with pytest.raises(ValueError, match=f"got {size}"):
        bytes_to_host(bytes(size))


# --- offset message ids -----------------------------------------------------------------------------------------


def test_offset_msg_id_known_vector() -> None:
    # 10.0.0.5 -> 0A000005, port 10911 -> 00002A9F, offset 123 -> 000000000000007B
    assert create_offset_msg_id("10.0.0.5", 10911, 123) == "0A00000500002A9F000000000000007B"


def test_offset_msg_id_layout_v4() -> None:
    value = create_offset_msg_id("192.168.0.1", 10911, 1 << 40)
    assert len(value) == OFFSET_MSG_ID_LENGTH_V4 == 32
    assert set(value) <= HEX_UPPER
    assert bytes.fromhex(value) == bytes([192, 168, 0, 1]) + struct.pack(">iq", 10911, 1 << 40)


def test_offset_msg_id_layout_v6() -> None:
    value = create_offset_msg_id("2001:db8::7", 10911, 42)
    assert len(value) == OFFSET_MSG_ID_LENGTH_V6 == 56
    raw = bytes.fromhex(value)
    assert raw[:16] == ipaddress.IPv6Address("2001:db8::7").packed
    assert struct.unpack(">iq", raw[16:]) == (10911, 42)


def test_offset_msg_id_of_ipv4_mapped_host_is_v4() -> None:
    assert create_offset_msg_id("::ffff:10.0.0.5", 10911, 123) == "0A00000500002A9F000000000000007B"


@pytest.mark.parametrize(
    ("port", "offset", "message"),
    [(-1, 0, "port must be in 0..65535"), (65536, 0, "port"), (1, -1, "commitlog offset"), (1, 1 << 63, "offset")],
)
def test_create_offset_msg_id_rejects_out_of_range(port: int, offset: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_offset_msg_id("10.0.0.1", port, offset)


def test_create_offset_msg_id_rejects_host_names() -> None:
    with pytest.raises(ValueError, match="not a numeric"):
        create_offset_msg_id("broker-a.example", 10911, 0)


def test_decode_offset_msg_id() -> None:
    assert decode_offset_msg_id("0A00000500002A9F000000000000007B") == ("10.0.0.5", 10911, 123)


def test_decode_offset_msg_id_accepts_lower_case() -> None:
    assert decode_offset_msg_id("0a00000500002a9f000000000000007b") == ("10.0.0.5", 10911, 123)


def test_decode_offset_msg_id_v6() -> None:
    assert decode_offset_msg_id(create_offset_msg_id("fe80::1", 9876, 5)) == ("fe80::1", 9876, 5)


@pytest.mark.parametrize("bad", ["", "0A", "0A00000500002A9F000000000000007", "0A00000500002A9F000000000000007B0"])
def test_decode_offset_msg_id_rejects_bad_length(bad: str) -> None:
    with pytest.raises(ValueError, match=r"must be 32 \(IPv4\) or 56 \(IPv6\) hex characters, got"):
        decode_offset_msg_id(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "0A00000500002A9F000000000000007G",
        "0A 0000500002A9F000000000000007B",  # whitespace that bytes.fromhex would skip
        "0A00000500002A9F00000000000000\uff17B",  # a full-width digit
        "0x000005002A9F000000000000007B00",
    ],
)
def test_decode_offset_msg_id_rejects_non_hex(bad: str) -> None:
    assert len(bad) == 32
    with pytest.raises(ValueError, match="non-hex characters"):
        decode_offset_msg_id(bad)


def test_decode_offset_msg_id_rejects_impossible_values() -> None:
    bad_port = (bytes([10, 0, 0, 5]) + struct.pack(">iq", 70000, 1)).hex()
    with pytest.raises(ValueError, match="invalid port 70000"):
        decode_offset_msg_id(bad_port)
    negative_offset = (bytes([10, 0, 0, 5]) + struct.pack(">iq", 10911, -5)).hex()
    with pytest.raises(ValueError, match="negative commitlog offset -5"):
        decode_offset_msg_id(negative_offset)


def not_ipv4_mapped(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None)


hosts = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).filter(not_ipv4_mapped).map(str))


@given(hosts, st.integers(0, 65535), st.integers(0, (1 << 63) - 1))
def test_offset_msg_id_round_trip(host: str, port: int, offset: int) -> None:
    value = create_offset_msg_id(host, port, offset)
    assert set(value) <= HEX_UPPER
    assert len(value) == (32 if ":" not in host else 56)
    decoded_host, decoded_port, decoded_offset = decode_offset_msg_id(value)
    assert ipaddress.ip_address(decoded_host) == ipaddress.ip_address(host)
    assert (decoded_port, decoded_offset) == (port, offset)


@given(st.ip_addresses().map(str))
def test_host_bytes_round_trip(host: str) -> None:
    raw = host_to_bytes(host)
    assert len(raw) in (4, 16)
    back = ipaddress.ip_address(bytes_to_host(raw))
    original = ipaddress.ip_address(host)
    if isinstance(original, ipaddress.IPv6Address) and original.ipv4_mapped is not None:
        original = original.ipv4_mapped
    assert back == original


# --- unique ids -------------------------------------------------------------------------------------------------


def local_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(time.mktime((year, month, day, hour, minute, 0, 0, 0, -1))) * 1000


def split_unique_id(value: str) -> tuple[bytes, int, int, int, int]:
    raw = bytes.fromhex(value)
    assert len(raw) == 16
    pid, tag, elapsed, counter = struct.unpack(">HIIH", raw[4:])
    return raw[:4], pid, tag, elapsed, counter


def test_unique_id_layout() -> None:
    now = local_ms(2024, 3, 5, 12, 30) + 123
    gen = UniqueIdGenerator("10.1.2.3", pid=0x12345, process_tag=0xDEADBEEF, clock_ms=lambda: now)
    value = gen.next_id()
    assert len(value) == UNIQUE_ID_LENGTH == 32
    assert set(value) <= HEX_UPPER
    ip, pid, tag, elapsed, counter = split_unique_id(value)
    assert ip == bytes([10, 1, 2, 3])
    assert pid == 0x2345  # low 16 bits, as Java's overlapping ByteBuffer writes leave them
    assert tag == 0xDEADBEEF
    assert elapsed == now - local_ms(2024, 3, 1)
    assert counter == 0


def test_unique_id_exact_hex() -> None:
    start = local_ms(2024, 3, 1)
    gen = UniqueIdGenerator("10.1.2.3", pid=7, process_tag=1, clock_ms=lambda: start + 0x0102)
    assert gen.next_id() == "0A010203" + "0007" + "00000001" + "00000102" + "0000"
    assert gen() == "0A010203" + "0007" + "00000001" + "00000102" + "0001"


@pytest.mark.parametrize("host", ["127.0.0.1", "10.20.30.40", "::1", "2001:db8::7"])
def test_joined_offset_ids_equal_the_ids_one_by_one(host: str) -> None:
    import numpy as np

    for offsets in ([0], [1, 2, 0x7FFFFFFFFFFFFFFF], list(range(0, 256 * 170, 170))):
        expected = ",".join(create_offset_msg_id(host, 10911, p) for p in offsets)
        assert join_offset_msg_ids(host, 10911, offsets) == expected
        assert join_offset_msg_ids(host, 10911, np.array(offsets, np.int64)) == expected
    assert join_offset_msg_ids(host, 10911, []) == ""
    with pytest.raises(ValueError, match="commitlog offset"):
        join_offset_msg_ids(host, 10911, [5, -1])
    with pytest.raises(ValueError, match="port"):
        join_offset_msg_ids(host, 70000, [5])


def test_unique_ids_of_a_batch_continue_the_counter_and_wrap_like_next_id() -> None:
    start = local_ms(2024, 3, 1)
    gen = UniqueIdGenerator("10.1.2.3", pid=7, process_tag=1, clock_ms=lambda: start + 0x0102)
    gen._counter = 0xFFFE
    head = "0A010203" + "0007" + "00000001" + "00000102"
    assert gen.next_ids(3) == [head + "FFFE", head + "FFFF", head + "0000"]
    assert gen.next_id() == head + "0001"
    assert gen.next_ids(0) == [] and gen.next_id() == head + "0002"
    # Large batches are built as a byte matrix: the same ids as one at a time, across the counter's wrap.
    one_by_one = UniqueIdGenerator("10.1.2.3", pid=7, process_tag=1, clock_ms=lambda: start + 0x0102)
    gen._counter = one_by_one._counter = 0xFF00
    assert gen.next_ids(300) == [one_by_one.next_id() for _ in range(300)]
    assert gen.next_id() == one_by_one.next_id() == head + "002C"


def test_unique_id_negative_process_tag_is_twos_complement() -> None:
    gen = UniqueIdGenerator("10.1.2.3", pid=1, process_tag=-1, clock_ms=lambda: local_ms(2024, 3, 1))
    assert split_unique_id(gen.next_id())[2] == 0xFFFFFFFF


def test_unique_id_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="4-byte IPv4 address, got IPv6"):
        UniqueIdGenerator("::1")
    with pytest.raises(ValueError, match="not a numeric"):
        UniqueIdGenerator("myhost")
    with pytest.raises(ValueError, match="process_tag must fit in 32 bits"):
        UniqueIdGenerator("10.0.0.1", process_tag=1 << 32)


def test_unique_id_counter_increments_and_wraps() -> None:
    gen = UniqueIdGenerator("10.0.0.1", pid=1, process_tag=1, clock_ms=lambda: local_ms(2024, 5, 2))
    counters = [split_unique_id(gen.next_id())[4] for _ in range(65538)]
    assert counters[:3] == [0, 1, 2]
    assert counters[65535] == 65535
    assert counters[65536:] == [0, 1]


def test_unique_id_elapsed_wraps_like_java_int_cast() -> None:
    # 30 days into a 31-day month is more than 2**31 ms; Java's (int) cast keeps the low 32 bits.
    start = local_ms(2024, 1, 1)
    now = local_ms(2024, 1, 31)
    gen = UniqueIdGenerator("10.0.0.1", pid=1, process_tag=1, clock_ms=lambda: now)
    elapsed = split_unique_id(gen.next_id())[3]
    assert now - start > (1 << 31)
    assert elapsed == (now - start) & 0xFFFFFFFF


def test_unique_id_month_rollover() -> None:
    # The constructor reads the clock once, then each next_id reads it once.
    times = iter([local_ms(2024, 1, 31, 23, 59), local_ms(2024, 1, 31, 23, 59) + 5, local_ms(2024, 2, 1) + 7,
                  local_ms(2023, 12, 31, 22) + 9])
    gen = UniqueIdGenerator("10.0.0.1", pid=1, process_tag=1, clock_ms=lambda: next(times))
    assert split_unique_id(gen.next_id())[3] == local_ms(2024, 1, 31, 23, 59) + 5 - local_ms(2024, 1, 1)
    assert split_unique_id(gen.next_id())[3] == 7
    # A clock that steps back into an earlier month is measured against that month, not wrapped negative.
    assert split_unique_id(gen.next_id())[3] == local_ms(2023, 12, 31, 22) + 9 - local_ms(2023, 12, 1)


def test_unique_id_month_rollover_in_december() -> None:
    now = local_ms(2024, 12, 31, 23) + 1
    gen = UniqueIdGenerator("10.0.0.1", pid=1, process_tag=1, clock_ms=lambda: now)
    assert split_unique_id(gen.next_id())[3] == (now - local_ms(2024, 12, 1)) & 0xFFFFFFFF


def test_unique_id_thread_safety() -> None:
    gen = UniqueIdGenerator("10.0.0.1", pid=1, process_tag=1, clock_ms=lambda: local_ms(2024, 5, 2))
    results: list[list[str]] = [[] for _ in range(8)]

    def work(out: list[str]) -> None:
        for _ in range(5000):
            out.append(gen.next_id())

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [value for out in results for value in out]
    assert len(set(ids)) == 40000
    assert sorted(split_unique_id(value)[4] for value in ids) == list(range(40000))
    for out in results:  # each thread sees its own ids in increasing counter order
        counters = [split_unique_id(value)[4] for value in out]
        assert counters == sorted(counters)


def test_unique_id_defaults_describe_this_process() -> None:
    gen = UniqueIdGenerator()
    first, second = gen.next_id(), gen.next_id()
    assert first != second
    _, pid, tag, _, counter = split_unique_id(first)
    assert pid == os.getpid() & 0xFFFF
    assert split_unique_id(second)[2] == tag
    assert split_unique_id(second)[4] == counter + 1


def test_unique_id_elapsed_uses_wall_clock() -> None:
    before = time.time_ns() // 1_000_000
    value = UniqueIdGenerator("10.0.0.1").next_id()
    after = time.time_ns() // 1_000_000
    start, end = msgid._month_window(before)
    if after >= end:
        pytest.skip("the month changed while the test ran")
    assert before - start <= split_unique_id(value)[3] <= after - start


def test_create_unique_id_shares_one_generator() -> None:
    first, second = create_unique_id(), create_unique_id()
    assert first != second
    assert first[:20] == second[:20]  # same ip, pid and process tag
    assert len(first) == 32 and set(first) <= HEX_UPPER


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_create_unique_id_after_fork_uses_child_pid() -> None:
    parent_id = create_unique_id()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_fd)
            os.write(write_fd, f"{create_unique_id()} {os.getpid()}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child_id, child_pid = pipe.read().split()
    os.waitpid(child, 0)
    assert split_unique_id(child_id)[1] == int(child_pid) & 0xFFFF
    assert split_unique_id(parent_id)[1] == os.getpid() & 0xFFFF
    assert split_unique_id(child_id)[4] == 0  # a fresh counter, not the parent's
