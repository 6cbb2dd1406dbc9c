"""Tests of rmq_client.codec: decoding PULL_MESSAGE bodies (stored records concatenated, PROTOCOL.md §4.1, §5.2).

Golden records are built field by field with struct.pack from the layout table, independently of the encoder;
hypothesis-generated records (IPv4/IPv6 hosts, compressed with each codec or not) round-trip through
rmq_common._record.encode_record and must decode to what rmq_common._record.decode_records (the eager reference)
returns, with bodies decompressed; every truncated or corrupt body raises RecordError naming the bad record's
index and offset; the lazy property decoding equals rmq_common.properties.decode_properties on any bytes.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import ipaddress
import pickle
import re
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmq_client.codec import (
    PullBatch,
    PulledMessage,
    RecordError,
    decode_properties,
    decode_pull_batch,
    decode_pull_bodies,
    decode_pull_body,
    fast_path_enabled,
)
from rmq_client.compression import compress
from rmq_common._record import (
    MAGIC_CODE_V1,
    MAGIC_CODE_V2,
    decode_record,
    decode_records,
    encode_record,
    masked_crc,
)
from rmq_common.message import MessageExt
from rmq_common.properties import decode_properties as eager_properties
from rmq_common.properties import encode_properties

BLANK = struct.pack(">iI", 8, 0xCBD43194)
PROPS = b"UNIQ_KEY\x01AC110001000018B4AAC2000000002A\x02KEYS\x01order-42 order-43\x02TAGS\x01TagA\x02CLUSTER\x01c1"


def host_field(ip: str, port: int) -> bytes:
    return ipaddress.ip_address(ip).packed + struct.pack(">i", port)


def golden_record(*, topic: bytes = b"TopicTest", body: bytes = b"hello", props: bytes = PROPS, queue_id: int = 3,
                  flag: int = 7, queue_offset: int = 42, phy: int = 123_456_789, sys_flag: int = 0,
                  born_ts: int = 1_700_000_000_000, born: tuple[str, int] = ("192.168.0.10", 52344),
                  store_ts: int = 1_700_000_000_123, store: tuple[str, int] = ("10.0.0.5", 10911),
                  reconsume: int = 1, prepared: int = 0, magic: int = MAGIC_CODE_V1) -> bytes:
    """One stored record, field after field as in PROTOCOL.md §4.1 (v2: 2-byte topic length)."""
    born_b, store_b = host_field(*born), host_field(*store)
    sys_flag |= (0x10 if len(born_b) == 20 else 0) | (0x20 if len(store_b) == 20 else 0)
    topic_len = struct.pack(">h", len(topic)) if magic == MAGIC_CODE_V2 else struct.pack(">b", len(topic))
    rest = b"".join([
        struct.pack(">i", magic),
        struct.pack(">i", zlib.crc32(body) & 0x7FFFFFFF),
        struct.pack(">i", queue_id),
        struct.pack(">i", flag),
        struct.pack(">q", queue_offset),
        struct.pack(">q", phy),
        struct.pack(">i", sys_flag),
        struct.pack(">q", born_ts),
        born_b,
        struct.pack(">q", store_ts),
        store_b,
        struct.pack(">i", reconsume),
        struct.pack(">q", prepared),
        struct.pack(">i", len(body)), body,
        topic_len, topic,
        struct.pack(">h", len(props)), props,
    ])
    return struct.pack(">i", 4 + len(rest)) + rest


def offsets_of(records: list[bytes]) -> list[int]:
    out, pos = [], 0
    for r in records:
        out.append(pos)
        pos += len(r)
    return out


# ---------------------------------------------------------------------------------------------
# Golden bytes
# ---------------------------------------------------------------------------------------------

def test_golden_record_fields() -> None:
    data = golden_record()
    assert data == encode_record(topic="TopicTest", body=b"hello", queue_id=3, flag=7, queue_offset=42,
                                 phy_offset=123_456_789, born_timestamp=1_700_000_000_000,
                                 born_host=("192.168.0.10", 52344), store_timestamp=1_700_000_000_123,
                                 store_host=("10.0.0.5", 10911), reconsume_times=1, properties=PROPS)
    [m] = decode_pull_body(data)
    assert type(m) is PulledMessage and isinstance(m, MessageExt)
    assert (m.store_size, m.magic, m.body_crc) == (len(data), MAGIC_CODE_V1, masked_crc(b"hello"))
    assert (m.queue_id, m.flag, m.queue_offset, m.commit_log_offset, m.sys_flag) == (3, 7, 42, 123_456_789, 0)
    assert (m.born_timestamp, m.born_host) == (1_700_000_000_000, ("192.168.0.10", 52344))
    assert (m.store_timestamp, m.store_host) == (1_700_000_000_123, ("10.0.0.5", 10911))
    assert (m.reconsume_times, m.prepared_transaction_offset) == (1, 0)
    assert (m.body, m.topic) == (b"hello", "TopicTest")
    assert m.tags == "TagA"
    assert m.keys == ["order-42", "order-43"]
    assert m.unique_key == m.msg_id == "AC110001000018B4AAC2000000002A"
    assert m.properties == {"UNIQ_KEY": "AC110001000018B4AAC2000000002A", "KEYS": "order-42 order-43",
                            "TAGS": "TagA", "CLUSTER": "c1"}
    assert m == decode_record(data)


def test_golden_ipv6_hosts() -> None:
    data = golden_record(born=("2001:db8::1", 40000), store=("fe80::1:2", 10911), sys_flag=0x8)
    [m] = decode_pull_body(data)
    assert m.sys_flag == 0x8 | 0x10 | 0x20
    assert m.born_host == ("2001:db8::1", 40000)
    assert m.store_host == ("fe80::1:2", 10911)
    assert m.offset_msg_id == decode_record(data).offset_msg_id
    assert len(m.offset_msg_id) == 56
    only_born = golden_record(born=("::1", 1), store=("127.0.0.1", 2))
    [m] = decode_pull_body(only_born)
    assert (m.sys_flag, m.born_host, m.store_host) == (0x10, ("::1", 1), ("127.0.0.1", 2))
    assert m == decode_record(only_born)


def test_golden_v2_record_with_long_topic() -> None:
    topic = b"%RETRY%" + b"g" * 193          # 200 bytes: RocketMQ 5.x writes such a record as v2
    data = golden_record(topic=topic, magic=MAGIC_CODE_V2)
    for m in (decode_pull_body(data)[0], decode_pull_batch(data).message(0)):
        assert m.magic == MAGIC_CODE_V2
        assert m.topic == topic.decode()
        assert (m.body, m.tags, m.queue_offset) == (b"hello", "TagA", 42)
    assert decode_pull_bodies(data + golden_record()) == [b"hello", b"hello"]
    bad = bytearray(data)
    struct.pack_into(">h", bad, len(data) - len(PROPS) - 2 - len(topic) - 2, -1)
    with pytest.raises(RecordError, match="record 0 at offset 0: inconsistent sizes"):
        decode_pull_body(bytes(bad))


def test_non_ascii_topic_and_properties() -> None:
    props = encode_properties({"TAGS": "标签", "KEYS": "ключ", "ünï": "cödé"})
    data = golden_record(topic="主题".encode(), props=props)
    [m] = decode_pull_body(data)
    assert m.topic == "主题"
    assert (m.tags, m.keys) == ("标签", ["ключ"])
    assert m.properties == {"TAGS": "标签", "KEYS": "ключ", "ünï": "cödé"}
    assert decode_pull_batch(data).topic(0) == "主题"


def test_empty_and_none_bodies() -> None:
    for empty in (b"", bytearray(), memoryview(b""), None):
        assert decode_pull_body(empty) == []
        assert decode_pull_bodies(empty) == []
        batch = decode_pull_batch(empty)
        assert len(batch) == 0 and batch.bodies == [] and batch.scanned == 0
        assert batch.first_queue_offset is None and batch.last_queue_offset is None
        assert batch.queue_offsets.shape == (0,)


def test_buffer_kinds() -> None:
    data = golden_record() + golden_record(queue_offset=43)
    arena = bytearray(b"\xee" * 10) + bytearray(data) + bytearray(b"\xee" * 10)
    view = memoryview(arena)[10:10 + len(data)]
    for buf in (data, bytearray(data), memoryview(data), view):
        assert [m.queue_offset for m in decode_pull_body(buf)] == [42, 43]
        assert decode_pull_bodies(buf) == [b"hello", b"hello"]
        assert list(decode_pull_batch(buf).queue_offsets) == [42, 43]


def test_fast_path_is_used() -> None:
    assert fast_path_enabled()


# ---------------------------------------------------------------------------------------------
# Round trips against encode_record / decode_records
# ---------------------------------------------------------------------------------------------

_COMPRESSIONS = [None, "zlib", "lz4", "zstd", "legacy"]
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x01\x02"), min_size=1, max_size=12)

record_args = st.fixed_dictionaries({
    "topic": st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
    .filter(lambda t: len(t.encode()) <= 127),
    "body": st.binary(max_size=600) | st.sampled_from([b"", b"x" * 5000, bytes(range(256)) * 20]),
    "queue_id": st.integers(0, 2**31 - 1),
    "flag": st.integers(-(2**31), 2**31 - 1),
    "queue_offset": st.integers(0, 2**63 - 1),
    "phy_offset": st.integers(0, 2**63 - 1),
    "sys_flag": st.integers(0, 0xFF).map(lambda f: f & ~0x31),
    "born_timestamp": st.integers(-(2**63), 2**63 - 1),
    "born_host": st.tuples(st.ip_addresses().map(str), st.integers(-(2**31), 2**31 - 1)),
    "store_timestamp": st.integers(0, 2**63 - 1),
    "store_host": st.tuples(st.ip_addresses().map(str), st.integers(0, 65535)),
    "reconsume_times": st.integers(-(2**31), 2**31 - 1),
    "prepared_transaction_offset": st.integers(-(2**63), 2**63 - 1),
    "properties": st.dictionaries(_text, _text, max_size=5).map(encode_properties),
    "compression": st.sampled_from(_COMPRESSIONS),
})


def build(args: dict) -> tuple[bytes, bytes]:
    """(record, original body) for generated arguments, compressing the body as a producer would."""
    args = dict(args)
    kind = args.pop("compression")
    original = args["body"]
    if kind == "legacy":
        args["body"], _ = compress(original, "zlib")
        args["sys_flag"] |= 0x1
    elif kind is not None:
        args["body"], bits = compress(original, kind)
        args["sys_flag"] |= bits
    return encode_record(**args), original


@settings(max_examples=120, deadline=None)
@given(st.lists(record_args, min_size=1, max_size=8))
def test_round_trip_matches_the_eager_decoder(many: list[dict]) -> None:
    built = [build(a) for a in many]
    data = b"".join(r for r, _ in built)
    reference = decode_records(data)
    originals = [o for _, o in built]

    raw = decode_pull_body(data, decompress=False, check_crc=True)
    assert raw == reference
    assert reference == raw
    assert [m.properties for m in raw] == [m.properties for m in reference]

    messages = decode_pull_body(memoryview(data))
    assert [m.body for m in messages] == originals
    for m, ref in zip(messages, reference):
        expected_flag = ref.sys_flag & ~0x701 if ref.sys_flag & 0x1 else ref.sys_flag
        assert m.sys_flag == expected_flag
        assert dataclasses.replace(m, body=ref.body, sys_flag=ref.sys_flag) == ref
        assert (m.tags, m.keys, m.unique_key, m.msg_id) == (ref.tags, ref.keys, ref.unique_key, ref.msg_id)

    assert decode_pull_bodies(data) == originals
    assert decode_pull_bodies(data, decompress=False) == [m.body for m in reference]

    batch = decode_pull_batch(data)
    assert len(batch) == batch.scanned == len(many)
    assert batch.bodies == originals
    assert batch.messages() == messages
    assert list(batch.queue_offsets) == [m.queue_offset for m in reference]
    assert list(batch.store_timestamps) == [m.store_timestamp for m in reference]
    for name in ("store_size", "body_crc", "queue_id", "flag", "queue_offset", "commit_log_offset", "sys_flag",
                 "born_timestamp", "store_timestamp", "reconsume_times", "prepared_transaction_offset"):
        assert list(batch.column(name)) == [getattr(m, name) for m in messages], name
    assert list(batch.column("record_offset")) == offsets_of([r for r, _ in built])
    for i, ref in enumerate(reference):
        assert batch.topic(i) == ref.topic
        assert batch.properties(i) == ref.properties
        assert (batch.tags(i), batch.keys(i), batch.unique_key(i), batch.msg_id(i)) == \
            (ref.tags, ref.keys, ref.unique_key, ref.msg_id)
        assert batch.queue_offset(i) == ref.queue_offset


# ---------------------------------------------------------------------------------------------
# Lazy properties
# ---------------------------------------------------------------------------------------------

_prop_bytes = st.lists(
    st.sampled_from([b"\x01", b"\x02", b"TAGS", b"KEYS", b"UNIQ_KEY", b"CLUSTER", b"a", b"b c", b" ", b"\xff",
                     b"\xe2\x82", b"\xc3", "é".encode(), "€".encode(), b"\xf0\x9f\x98\x80"]),
    max_size=40,
).map(b"".join) | st.binary(max_size=200)


@settings(max_examples=400, deadline=None)
@given(_prop_bytes)
def test_lazy_properties_equal_the_eager_decode(raw: bytes) -> None:
    eager = eager_properties(raw)
    assert decode_properties(raw) == eager
    assert list(decode_properties(raw)) == list(eager)        # same order
    data = encode_record(topic="T", body=b"b", properties=raw)
    reference = decode_record(data)
    # Single-property readers before the dict exists, then after.
    for touch_dict_first in (False, True):
        [m] = decode_pull_body(data)
        if touch_dict_first:
            assert m.properties == eager
        assert m.tags == reference.tags
        assert m.unique_key == reference.unique_key
        assert m.keys == reference.keys
        assert m.msg_id == reference.msg_id
        assert m.properties == eager
    batch = decode_pull_batch(data)
    assert batch.properties(0) == eager
    assert (batch.tags(0), batch.unique_key(0), batch.keys(0)) == (reference.tags, reference.unique_key,
                                                                   reference.keys)


def test_properties_decoded_once_and_settable() -> None:
    [m] = decode_pull_body(golden_record())
    first = m.properties
    assert m.properties is first
    first["EXTRA"] = "1"
    assert m.properties["EXTRA"] == "1"
    m.properties = {"TAGS": "other"}
    assert (m.tags, m.unique_key, m.keys) == ("other", None, [])
    assert m.msg_id == m.offset_msg_id


def test_messages_are_untracked_by_the_gc_until_given_a_new_dict() -> None:
    [m] = decode_pull_body(golden_record())
    assert not gc.is_tracked(m)
    assert m.properties["TAGS"] == "TagA"
    m.properties = {"a": "b"}
    assert gc.is_tracked(m)
    gc.collect()
    assert m.properties == {"a": "b"}


def test_pulled_message_behaves_like_a_message_ext() -> None:
    data = golden_record()
    [m] = decode_pull_body(data)
    ref = decode_record(data)
    assert m == ref and ref == m
    assert (m != ref) is False
    assert m != dataclasses.replace(ref, queue_offset=1)
    assert m != "not a message"
    assert dataclasses.asdict(m) == dataclasses.asdict(ref)
    assert [f.name for f in dataclasses.fields(m)] == [f.name for f in dataclasses.fields(ref)]
    assert pickle.loads(pickle.dumps(m)) == ref
    assert copy.copy(m) == ref and copy.deepcopy(m) == ref
    replaced = dataclasses.replace(m, body=b"other")
    assert type(replaced) is PulledMessage and replaced.body == b"other" and replaced.tags == "TagA"
    assert repr(m).startswith("PulledMessage(store_size=")
    with pytest.raises(TypeError):
        hash(m)
    with pytest.raises(AttributeError):
        m.not_a_field = 1  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Compressed records
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, flag", [("zlib", 0x301), ("lz4", 0x101), ("zstd", 0x201)])
def test_compressed_records_per_codec(kind: str, flag: int) -> None:
    original = b'{"order": 1, "status": "PAID"}' * 300
    packed, bits = compress(original, kind)
    assert bits == flag
    data = golden_record(body=packed, sys_flag=bits | 0x8) + golden_record(queue_offset=43)
    [m, plain] = decode_pull_body(data)
    assert m.body == original and m.sys_flag == 0x8
    assert m.body_crc == masked_crc(packed) and m.store_size == len(data) - len(golden_record(queue_offset=43))
    assert plain.body == b"hello"
    [raw, _] = decode_pull_body(data, decompress=False)
    assert raw.body == packed and raw.sys_flag == bits | 0x8
    batch = decode_pull_batch(data)
    assert batch.bodies == [original, b"hello"]
    assert list(batch.column("sys_flag")) == [0x8, 0]
    assert batch.message(0) == m
    assert decode_pull_batch(data, decompress=False).bodies == [packed, b"hello"]
    assert decode_pull_bodies(data) == [original, b"hello"]


def test_legacy_compressed_flag_is_zlib() -> None:
    original = b"legacy " * 1000
    data = golden_record(body=zlib.compress(original), sys_flag=0x1)
    assert decode_pull_body(data)[0].body == original
    assert decode_pull_bodies(data) == [original]


def test_corrupt_compressed_body_names_record_and_codec() -> None:
    good = golden_record()
    data = good + golden_record(body=b"not zlib at all", sys_flag=0x301)
    for decode in (decode_pull_body, decode_pull_bodies, decode_pull_batch):
        with pytest.raises(RecordError, match=rf"^record 1 at offset {len(good)}: ZLIB: corrupt"):
            decode(data)
        decode(data, decompress=False)
    data = golden_record(body=b"xx", sys_flag=0x501)
    with pytest.raises(RecordError, match=r"^record 0 at offset 0: unknown compression type 0x500"):
        decode_pull_body(data)


def test_decompressed_size_is_bounded() -> None:
    bomb, bits = compress(bytes(1 << 20), "zstd")
    data = golden_record(body=bomb, sys_flag=bits)
    for decode in (decode_pull_body, decode_pull_bodies, decode_pull_batch):
        with pytest.raises(RecordError, match=r"^record 0 at offset 0: ZSTD: decompressed body exceeds max_size=4096"):
            decode(data, max_size=4096)
    assert decode_pull_bodies(data, max_size=1 << 20) == [bytes(1 << 20)]


# ---------------------------------------------------------------------------------------------
# Malformed bodies
# ---------------------------------------------------------------------------------------------

DECODERS = [decode_pull_body, decode_pull_bodies, decode_pull_batch]


def test_every_truncation_names_the_broken_record() -> None:
    records = [golden_record(), golden_record(body=b"x" * 50, born=("::1", 5)), golden_record(props=b"")]
    data = b"".join(records)
    starts = offsets_of(records)
    for cut in range(1, len(data)):
        index = max(i for i, s in enumerate(starts) if s <= cut)
        chunk = data[:cut]
        if cut == starts[index]:
            assert len(decode_pull_body(chunk)) == index
            assert len(decode_pull_batch(chunk)) == index
            continue
        for decode in DECODERS:
            with pytest.raises(RecordError, match=rf"^record {index} at offset {starts[index]}: "):
                decode(chunk)


@pytest.mark.parametrize("decode", DECODERS)
def test_corruptions(decode) -> None:
    first = golden_record()
    second = golden_record(queue_offset=43)
    off = len(first)
    bad_magic = bytearray(first + second)
    struct.pack_into(">i", bad_magic, off + 4, 0x12345678)
    with pytest.raises(RecordError, match=rf"^record 1 at offset {off}: bad magic code"):
        decode(bytes(bad_magic))
    with pytest.raises(RecordError, match=rf"^record 1 at offset {off}: blank file-tail marker"):
        decode(first + BLANK)
    with pytest.raises(RecordError, match=rf"^record 1 at offset {off}: no record \(zero size\)"):
        decode(first + bytes(16))
    short_size = bytearray(first)
    struct.pack_into(">i", short_size, 0, 20)
    with pytest.raises(RecordError, match=r"^record 0 at offset 0: inconsistent sizes"):
        decode(bytes(short_size))
    grown = bytearray(first + second)
    struct.pack_into(">i", grown, 0, len(first) + 1)         # TOTALSIZE disagrees with the field lengths
    with pytest.raises(RecordError, match=r"^record 0 at offset 0: inconsistent sizes"):
        decode(bytes(grown))
    neg_body = bytearray(first)
    struct.pack_into(">i", neg_body, 84, -5)
    with pytest.raises(RecordError, match=r"^record 0 at offset 0: inconsistent sizes"):
        decode(bytes(neg_body))
    too_big = bytearray(first)
    struct.pack_into(">i", too_big, 0, 1 << 30)
    with pytest.raises(RecordError, match=r"^record 0 at offset 0: record extends past the end"):
        decode(bytes(too_big))
    with pytest.raises(RecordError, match=rf"^record 2 at offset {2 * off}: "):
        decode(first + first + b"\x00\x00\x01")


def test_crc_is_checked_only_when_asked() -> None:
    first = golden_record()
    damaged = bytearray(first + first)
    damaged[len(first) + 88] ^= 0x01                          # first body byte of record 1
    for decode in DECODERS:
        decode(bytes(damaged))
        decode(bytes(damaged), check_crc=False)
        with pytest.raises(RecordError, match=rf"^record 1 at offset {len(first)}: body CRC mismatch"):
            decode(bytes(damaged), check_crc=True)


def test_record_error_is_a_value_error() -> None:
    assert issubclass(RecordError, ValueError)
    with pytest.raises(ValueError):
        decode_pull_body(b"\x00\x00\x00")


# ---------------------------------------------------------------------------------------------
# Tag re-filter
# ---------------------------------------------------------------------------------------------

def tagged(tags: str | None, offset: int) -> bytes:
    props = {"UNIQ_KEY": f"ID{offset}"}
    if tags is not None:
        props["TAGS"] = tags
    return golden_record(queue_offset=offset, props=encode_properties(props), body=f"b{offset}".encode())


def test_tags_filter_keeps_exact_matches_only() -> None:
    data = b"".join(tagged(t, i) for i, t in enumerate(["TagA", "TagB", None, "TagA", "TagAB", "标签"]))
    assert [m.queue_offset for m in decode_pull_body(data, tags={"TagA"})] == [0, 3]
    assert [m.queue_offset for m in decode_pull_body(data, tags=["TagB", "标签"])] == [1, 5]
    assert decode_pull_bodies(data, tags=("TagA",)) == [b"b0", b"b3"]
    assert decode_pull_bodies(data, tags="TagB") == [b"b1"]
    assert decode_pull_bodies(data, tags=[b"TagAB"]) == [b"b4"]
    batch = decode_pull_batch(data, tags={"TagA", "TagB"})
    assert (len(batch), batch.scanned) == (3, 6)
    assert list(batch.queue_offsets) == [0, 1, 3]
    assert [batch.unique_key(i) for i in range(3)] == ["ID0", "ID1", "ID3"]
    assert batch.message(2).queue_offset == 3 and batch.bodies == [b"b0", b"b1", b"b3"]
    # None or an empty collection means no filter ("*"), as Java's empty tag set does.
    assert len(decode_pull_body(data, tags=None)) == len(decode_pull_body(data, tags=set())) == 6
    assert decode_pull_body(data, tags={"nope"}) == []


def test_tags_filter_uses_the_value_the_dict_would_keep() -> None:
    # Duplicate TAGS: the later valid pair wins; an empty value is not a pair.
    data = golden_record(props=b"TAGS\x01first\x02TAGS\x01second\x02TAGS\x01")
    assert decode_pull_bodies(data, tags={"second"}) == [b"hello"]
    assert decode_pull_bodies(data, tags={"first"}) == []
    assert decode_pull_body(data)[0].tags == "second"


# ---------------------------------------------------------------------------------------------
# PullBatch
# ---------------------------------------------------------------------------------------------

def test_pull_batch_access() -> None:
    data = b"".join(golden_record(queue_offset=100 + i, store_ts=5000 + i, body=bytes([i]) * 3) for i in range(5))
    batch = decode_pull_batch(data)
    assert isinstance(batch, PullBatch)
    assert len(batch) == 5 and batch.scanned == 5
    assert (batch.first_queue_offset, batch.last_queue_offset) == (100, 104)
    offsets = batch.queue_offsets
    assert offsets.dtype == np.int64 and list(offsets) == [100, 101, 102, 103, 104]
    assert batch.queue_offsets is offsets                     # computed once
    assert not offsets.flags.writeable
    assert list(batch.store_timestamps) == [5000, 5001, 5002, 5003, 5004]
    assert batch[-1].queue_offset == 104 and batch[0].body == b"\x00" * 3
    assert batch.message(-2).queue_offset == 103
    assert [m.queue_offset for m in batch] == [100, 101, 102, 103, 104]
    with pytest.raises(IndexError):
        batch.message(5)
    with pytest.raises(IndexError):
        batch.topic(-6)
    with pytest.raises(KeyError, match="no column 'nope'"):
        batch.column("nope")
    assert re.fullmatch(r"PullBatch\(5 records, queue offsets 100\.\.104\)", repr(batch))
    assert batch.messages() == decode_pull_body(data)
    assert batch.msg_id(0) == "AC110001000018B4AAC2000000002A"
    no_uniq = decode_pull_batch(golden_record(props=b""))
    assert no_uniq.msg_id(0) == no_uniq.message(0).offset_msg_id


def test_pull_batch_keeps_its_buffer_alive() -> None:
    data = bytearray(golden_record() + golden_record(queue_offset=9))
    batch = decode_pull_batch(memoryview(data))
    del data
    gc.collect()
    assert batch.topic(1) == "TopicTest" and batch.message(1).queue_offset == 9


def test_pull_batch_survives_a_resized_bodies_list() -> None:
    batch = decode_pull_batch(golden_record() + golden_record(queue_offset=9))
    batch.bodies.pop()
    with pytest.raises(RuntimeError, match="resized"):
        batch.message(0)


# ---------------------------------------------------------------------------------------------
# The descriptor path (used where slot offsets cannot be trusted) gives the same messages
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def descriptor_path():
    from rmq_client import _decode

    assert _decode._set_fast_path(False) is False
    try:
        yield
    finally:
        assert _decode._set_fast_path(True) is True


@pytest.mark.usefixtures("descriptor_path")
def test_descriptor_path_gives_equal_messages() -> None:
    assert not fast_path_enabled()
    packed, bits = compress(b"zipped " * 1000, "lz4")
    data = golden_record() + golden_record(body=packed, sys_flag=bits, born=("::1", 7)) + golden_record(props=b"")
    messages = decode_pull_body(data)
    reference = decode_records(data)
    assert messages[0] == reference[0] and messages[2] == reference[2]
    assert messages[1].body == b"zipped " * 1000 and messages[1].sys_flag == 0x10
    assert [m.tags for m in messages] == ["TagA", "TagA", None]
    assert messages[0].properties == reference[0].properties
    assert gc.is_tracked(messages[0])
    assert decode_pull_batch(data).messages() == messages
    messages[0].properties = {"TAGS": "x"}
    assert messages[0].tags == "x"
