"""Golden tests of the stored-record layout (PROTOCOL.md §4.1, §4.8): the expected bytes are built by hand, field by
field, with struct.pack, and compared with the Cython codec and with what MessageStore.put writes."""
from __future__ import annotations

import ipaddress
import os
import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmq_common import _record
from rmq_common._record import (
    RecordError, decode_record, decode_records, encode_record, java_hash, masked_crc, set_crc_simd,
)
from rmq_common.hashing import java_string_hash
from rmq_common.properties import decode_properties

MAGIC_V1 = 0xDAA320A7
MAGIC_BLANK = 0xCBD43194


def host_field(host: tuple[str, int]) -> bytes:
    ip, port = host
    return ipaddress.ip_address(ip).packed + struct.pack(">i", port)


def golden_record(*, topic: str, body: bytes, queue_id: int = 0, flag: int = 0, queue_offset: int = 0,
                  phy_offset: int = 0, sys_flag: int = 0, born_timestamp: int = 0,
                  born_host=("127.0.0.1", 0), store_timestamp: int = 0, store_host=("127.0.0.1", 0),
                  reconsume_times: int = 0, prepared_transaction_offset: int = 0, properties: bytes = b"") -> bytes:
    """PROTOCOL.md §4.1, one field after the other."""
    bh, sh = host_field(born_host), host_field(store_host)
    if len(bh) == 20:
        sys_flag |= 0x10
    if len(sh) == 20:
        sys_flag |= 0x20
    t = topic.encode("utf-8")
    rest = b"".join([
        struct.pack(">I", MAGIC_V1),                        # 2 MAGICCODE
        struct.pack(">i", zlib.crc32(body) & 0x7FFFFFFF),   # 3 BODYCRC
        struct.pack(">i", queue_id),                        # 4 QUEUEID
        struct.pack(">i", flag),                            # 5 FLAG
        struct.pack(">q", queue_offset),                    # 6 QUEUEOFFSET
        struct.pack(">q", phy_offset),                      # 7 PHYSICALOFFSET
        struct.pack(">i", sys_flag),                        # 8 SYSFLAG
        struct.pack(">q", born_timestamp),                  # 9 BORNTIMESTAMP
        bh,                                                 # 10 BORNHOST (ip + int32 port)
        struct.pack(">q", store_timestamp),                 # 11 STORETIMESTAMP
        sh,                                                 # 12 STOREHOST
        struct.pack(">i", reconsume_times),                 # 13 RECONSUMETIMES
        struct.pack(">q", prepared_transaction_offset),     # 14 PREPARED TX OFFSET
        struct.pack(">i", len(body)), body,                 # 15 BODY
        struct.pack(">b", len(t)), t,                       # 16 TOPIC (v1: one signed byte)
        struct.pack(">h", len(properties)), properties,     # 17 PROPERTIES
    ])
    total = 4 + len(rest)
    # Total (v4 hosts, v1) = 84 + 4 + n + 1 + t + 2 + p, plus 12 per IPv6 host.
    assert total == 84 + 4 + len(body) + 1 + len(t) + 2 + len(properties) + (len(bh) - 8) + (len(sh) - 8)
    return struct.pack(">i", total) + rest                  # 1 TOTALSIZE


FIELDS = dict(
    topic="TopicTest", body=b"Hello RocketMQ \x00\xff", queue_id=3, flag=7, queue_offset=123456789012,
    phy_offset=987654321098, sys_flag=0x301, born_timestamp=1_700_000_000_123,
    born_host=("10.1.2.3", 54321), store_timestamp=1_700_000_000_456, store_host=("192.168.7.9", 10911),
    reconsume_times=2, prepared_transaction_offset=4242,
    properties="TAGS\x01TagA\x02KEYS\x01k1 k2\x02UNIQ_KEY\x01AC11000100002A9F0000000000000000".encode(),
)


def check_decoded(msg, f: dict, expected_sys_flag: int, raw: bytes) -> None:
    assert msg.store_size == len(raw)
    assert msg.magic == struct.unpack(">i", struct.pack(">I", MAGIC_V1))[0]
    assert msg.body_crc == zlib.crc32(f["body"]) & 0x7FFFFFFF
    assert msg.queue_id == f["queue_id"]
    assert msg.flag == f["flag"]
    assert msg.queue_offset == f["queue_offset"]
    assert msg.commit_log_offset == f["phy_offset"]
    assert msg.sys_flag == expected_sys_flag
    assert msg.born_timestamp == f["born_timestamp"]
    assert msg.born_host == (str(ipaddress.ip_address(f["born_host"][0])), f["born_host"][1])
    assert msg.store_timestamp == f["store_timestamp"]
    assert msg.store_host == (str(ipaddress.ip_address(f["store_host"][0])), f["store_host"][1])
    assert msg.reconsume_times == f["reconsume_times"]
    assert msg.prepared_transaction_offset == f["prepared_transaction_offset"]
    assert msg.body == f["body"]
    assert msg.topic == f["topic"]
    assert msg.properties == decode_properties(f["properties"])


def test_encode_record_matches_hand_built_layout():
    raw = encode_record(**FIELDS)
    assert raw == golden_record(**FIELDS)
    # Spot-check fixed offsets of the v4 layout drawn in PROTOCOL.md §4.1.
    assert struct.unpack_from(">I", raw, 4)[0] == MAGIC_V1
    assert struct.unpack_from(">q", raw, 20)[0] == FIELDS["queue_offset"]
    assert struct.unpack_from(">q", raw, 28)[0] == FIELDS["phy_offset"]
    assert struct.unpack_from(">q", raw, 56)[0] == FIELDS["store_timestamp"]
    assert struct.unpack_from(">q", raw, 76)[0] == FIELDS["prepared_transaction_offset"]
    assert struct.unpack_from(">i", raw, 84)[0] == len(FIELDS["body"])
    check_decoded(decode_record(raw), FIELDS, 0x301, raw)


def test_encode_record_edge_values():
    f = dict(FIELDS, body=b"", properties=b"", topic="T" * 127, queue_id=2**31 - 1, flag=-1,
             queue_offset=2**63 - 1, phy_offset=0, born_timestamp=-1, reconsume_times=-5,
             prepared_transaction_offset=-(2**63), sys_flag=0)
    raw = encode_record(**f)
    assert raw == golden_record(**f)
    check_decoded(decode_record(raw), f, 0, raw)
    with pytest.raises(ValueError):
        encode_record(**dict(f, topic="T" * 128))
    with pytest.raises(ValueError):
        encode_record(**dict(f, properties=b"x" * 32768))


@pytest.mark.parametrize("born,store,bits", [
    (("::1", 1234), ("127.0.0.1", 10911), 0x10),
    (("10.0.0.1", 1234), ("fe80::1:2:3:4", 10911), 0x20),
    (("2001:db8::ff00:42:8329", 65535), ("::ffff:1.2.3.4", 1), 0x30),
])
def test_ipv6_hosts_set_sysflag_bits_and_use_20_byte_fields(born, store, bits):
    f = dict(FIELDS, born_host=born, store_host=store, sys_flag=0x1)
    raw = encode_record(**f)
    assert raw == golden_record(**f)
    assert len(raw) == len(encode_record(**dict(FIELDS))) + (12 if bits & 0x10 else 0) + (12 if bits & 0x20 else 0)
    assert struct.unpack_from(">i", raw, 36)[0] == 0x1 | bits
    check_decoded(decode_record(raw), f, 0x1 | bits, raw)


def test_v6_bits_follow_the_host_addresses():
    # A caller's stale v6 bits are cleared for IPv4 hosts: the layout must match the bit.
    raw = encode_record(**dict(FIELDS, sys_flag=0x30 | 0x4))
    assert struct.unpack_from(">i", raw, 36)[0] == 0x4
    assert raw == golden_record(**dict(FIELDS, sys_flag=0x4))


def test_decode_rejects_bad_crc_and_bad_magic():
    raw = bytearray(encode_record(**FIELDS))
    body_at = 84 + 4
    raw[body_at] ^= 0x01
    with pytest.raises(RecordError, match="CRC"):
        decode_record(bytes(raw))
    msg = decode_record(bytes(raw), check_crc=False)
    assert msg.body[0] == FIELDS["body"][0] ^ 0x01
    raw[body_at] ^= 0x01
    raw[4] ^= 0xFF
    with pytest.raises(RecordError, match="magic"):
        decode_record(bytes(raw))
    with pytest.raises(RecordError):
        decode_record(bytes(encode_record(**FIELDS))[:-1])


def test_decode_records_of_concatenated_records_and_offsets():
    a = encode_record(**FIELDS)
    b = encode_record(**dict(FIELDS, body=b"second", phy_offset=FIELDS["phy_offset"] + len(a), queue_offset=1))
    both = a + b
    msgs = decode_records(both)
    assert [m.body for m in msgs] == [FIELDS["body"], b"second"]
    assert decode_record(both, len(a)).queue_offset == 1
    assert _record.record_spans(both) == ([0, len(a)], [len(a), len(b)])
    starts, ends = _record.body_spans(both)
    assert [both[s:e] for s, e in zip(starts, ends)] == [FIELDS["body"], b"second"]


# ---------------------------------------------------------------------------------------------------------------
# Through the store
# ---------------------------------------------------------------------------------------------------------------
def test_store_put_writes_the_hand_built_layout(make_config, open_store):
    store_host = ("192.168.0.7", 10911)
    store = open_store(make_config(store_host=store_host))
    props = "TAGS\x01TagA\x02KEYS\x01order-1 order-2".encode()
    expected_at = []
    # Enough messages to fill several files, so PHYSICALOFFSET and QUEUEOFFSET are far from 0.
    for i in range(200):
        body = os.urandom(i * 37 % 2000)
        r = store.put_batch("Golden", [body], 1, properties=props, flag=i, born_timestamp=1_600_000_000_000 + i,
                            born_host=("10.1.2.3", 5000 + i), reconsume_times=i % 3)
        expected_at.append((r, body, i))
    assert len(store.commitlog.files) >= 3
    for r, body, i in expected_at:
        rec = store.read_record(r.first_phy_offset)
        assert rec is not None
        want = golden_record(topic="Golden", body=body, queue_id=1, flag=i, queue_offset=r.first_queue_offset,
                             phy_offset=r.first_phy_offset, sys_flag=0, born_timestamp=1_600_000_000_000 + i,
                             born_host=("10.1.2.3", 5000 + i), store_timestamp=r.store_timestamp,
                             store_host=store_host, reconsume_times=i % 3, properties=props)
        assert rec.tobytes() == want
        assert r.first_queue_offset == i
        assert r.wrote_bytes == len(want)
    # The same bytes come back from a pull, concatenated verbatim.
    got = store.get_messages("Golden", 1, 0, max_count=5)
    assert got.to_bytes() == b"".join(store.read_record(r.first_phy_offset).tobytes() for r, _, _ in expected_at[:5])


def test_store_put_ipv6_hosts(make_config, open_store):
    store = open_store(make_config(store_host=("fe80::1", 10911)))
    r = store.put_batch("V6", [b"body"], 0, born_host=("2001:db8::1", 777), born_timestamp=5)
    raw = store.read_record(r.first_phy_offset).tobytes()
    assert raw == golden_record(topic="V6", body=b"body", phy_offset=r.first_phy_offset, born_timestamp=5,
                                born_host=("2001:db8::1", 777), store_timestamp=r.store_timestamp,
                                store_host=("fe80::1", 10911))
    assert struct.unpack_from(">i", raw, 36)[0] == 0x30
    msg = store.read_message(r.first_phy_offset)
    assert msg.born_host == ("2001:db8::1", 777) and msg.store_host == ("fe80::1", 10911)


def test_blank_marker_at_file_end(make_config, open_store):
    cfg = make_config()
    store = open_store(cfg)
    size = cfg.mapped_file_size_commitlog
    results = [store.put("Blank", os.urandom(1500), 0) for _ in range(90)]
    assert len(store.commitlog.files) >= 2
    first_in_second = next(r for r in results if r.first_phy_offset >= size)
    last_in_first = max((r for r in results if r.first_phy_offset < size), key=lambda r: r.first_phy_offset)
    end = last_in_first.first_phy_offset + last_in_first.wrote_bytes
    assert first_in_second.first_phy_offset == size      # records never straddle files
    store.flush()
    with open(os.path.join(cfg.store_path_root_dir, "commitlog", "%020d" % 0), "rb") as fh:
        data = fh.read()
    assert len(data) == size
    space_left = size - end
    assert space_left >= 8
    assert data[end:end + 8] == struct.pack(">iI", space_left, MAGIC_BLANK)
    assert data[end + 8:] == bytes(space_left - 8)
    # The next record did not fit: size + 8 > space left.
    assert first_in_second.wrote_bytes + 8 > space_left


# ---------------------------------------------------------------------------------------------------------------
# CRC and Java hash
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("simd", [True, False])
def test_masked_crc_equals_zlib(simd):
    rng = random.Random(1234 + simd)
    buf = os.urandom(5000 + 64)
    set_crc_simd(simd)
    try:
        lengths = list(range(0, 300)) + [rng.randrange(0, 5001) for _ in range(300)] + [4095, 4096, 4097, 5000]
        for n in lengths:
            off = rng.randrange(0, 64)           # unaligned starts too
            data = buf[off:off + n]
            assert masked_crc(data) == zlib.crc32(data) & 0x7FFFFFFF, (n, off)
            assert masked_crc(memoryview(buf)[off:off + n]) == zlib.crc32(data) & 0x7FFFFFFF
        assert masked_crc(b"") == 0
        assert masked_crc(b"\xff" * 4096) == zlib.crc32(b"\xff" * 4096) & 0x7FFFFFFF
    finally:
        set_crc_simd(True)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000), st.booleans())
def test_masked_crc_equals_zlib_hypothesis(data, simd):
    set_crc_simd(simd)
    try:
        assert masked_crc(data) == zlib.crc32(data) & 0x7FFFFFFF
    finally:
        set_crc_simd(True)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_java_hash_matches_reference(text):
    assert java_hash(text) == java_string_hash(text)
    assert java_hash(text.encode("utf-8")) == java_string_hash(text)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF), max_size=20))
def test_java_hash_astral_characters_hash_as_surrogate_pairs(text):
    assert java_hash(text) == java_string_hash(text)


@pytest.mark.parametrize("text,expected", [("", 0), ("a", 97), ("TagA", 2598919), ("Aa", 2112), ("BB", 2112),
                                           ("\U0001F600", 1772899)])
def test_java_hash_known_values(text, expected):
    assert java_hash(text) == expected == java_string_hash(text)
