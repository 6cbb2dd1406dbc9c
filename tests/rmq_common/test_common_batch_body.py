"""Tests of the batch body codec in rmq_common._record (PROTOCOL.md §4.6): decode_batch_body / encode_batch_body.

Golden bytes are built by hand with struct.pack from the item layout (TOTALSIZE, MAGIC 0, BODYCRC 0, FLAG,
bodyLen + body, propertiesLen + properties), including the bytes rocketmq-client-cpp sends (CAPTURES.md item 4);
every malformed case must raise BatchBodyError (a ValueError) naming the item; a decoded batch stored through
MessageStore.put_batch must read back with the original bodies and the merged property strings.
"""
from __future__ import annotations

import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmq_common._record import (
    BATCH_ITEM_FIXED_LENGTH,
    BATCH_MAX_BODY,
    BATCH_MAX_ITEMS,
    PROPERTIES_MAX_LENGTH,
    BatchBodyError,
    decode_batch_body,
    decode_records,
    encode_batch_body,
)
from rmq_common.properties import decode_properties

CLUSTER = b"CLUSTER\x01DefaultCluster"


def item(body: bytes, props: bytes = b"", flag: int = 0, *, total: int | None = None, magic: int = 0,
         body_crc: int = 0, body_len: int | None = None, props_len: int | None = None) -> bytes:
    """One batch item, field after field (MessageDecoder.encodeMessage); the keyword overrides forge bad items."""
    size = 4 + 4 + 4 + 4 + 4 + len(body) + 2 + len(props)
    return b"".join([
        struct.pack(">i", size if total is None else total),                # TOTALSIZE (includes itself)
        struct.pack(">i", magic),                                           # MAGICCODE
        struct.pack(">i", body_crc),                                        # BODYCRC
        struct.pack(">i", flag),                                            # FLAG
        struct.pack(">i", len(body) if body_len is None else body_len), body,
        struct.pack(">h", len(props) if props_len is None else props_len), props,
    ])


def stored_props(props: bytes, extra: bytes) -> bytes:
    """R4's CommitLog batch encoder: item props, U+0002 if item props are non-empty and lack a trailing one, extra."""
    if not extra:
        return props
    sep = b"\x02" if props and not props.endswith(b"\x02") else b""
    return props + sep + extra


def raises_at(index: int, what: str):
    """pytest.raises for a BatchBodyError naming batch item ``index`` and matching ``what``."""
    return pytest.raises(BatchBodyError, match=rf"^batch item {index}\b.*{what}")


# ---------------------------------------------------------------------------------------------------------------
# Golden bytes
# ---------------------------------------------------------------------------------------------------------------

GOLDEN_2 = (
    # item 0: TOTALSIZE 22+5+9 = 36, magic 0, bodyCRC 0, flag 7, body "hello", props "TAGS\x01TagA" (9 bytes)
    struct.pack(">iiiii", 36, 0, 0, 7, 5) + b"hello" + struct.pack(">h", 9) + b"TAGS\x01TagA"
    # item 1: TOTALSIZE 22+0+0 = 22, flag -1, empty body, empty properties
    + struct.pack(">iiiii", 22, 0, 0, -1, 0) + struct.pack(">h", 0)
)


def test_constants() -> None:
    assert BATCH_ITEM_FIXED_LENGTH == 22
    assert BATCH_MAX_BODY == 4 * 1024 * 1024
    assert BATCH_MAX_ITEMS == 65536
    assert issubclass(BatchBodyError, ValueError)


def test_golden_two_items_decode() -> None:
    assert len(GOLDEN_2) == 36 + 22
    assert decode_batch_body(GOLDEN_2) == ([b"hello", b""], [b"TAGS\x01TagA", b""], [7, -1])


def test_golden_two_items_encode() -> None:
    assert encode_batch_body([b"hello", b""], [b"TAGS\x01TagA", b""], [7, -1]) == GOLDEN_2
    assert encode_batch_body([b"hello", b""], [b"TAGS\x01TagA", None], [7, -1]) == GOLDEN_2
    assert encode_batch_body([b"hello", b""], ["TAGS\x01TagA", ""], [7, -1]) == GOLDEN_2


def test_golden_two_items_with_cluster() -> None:
    bodies, props, flags = decode_batch_body(GOLDEN_2, CLUSTER)
    assert bodies == [b"hello", b""]
    # Item 0 has no trailing U+0002, so one is added; item 1 has no properties, so it gets just the extra.
    assert props == [b"TAGS\x01TagA\x02" + CLUSTER, CLUSTER]
    assert flags == [7, -1]


def cpp_props(props: dict[str, str]) -> bytes:
    """rocketmq-client-cpp MQDecoder::messageProperties2String: std::map order, every pair ends with U+0002."""
    return "".join(f"{k}\x01{v}\x02" for k, v in sorted(props.items())).encode()


def test_cpp_client_batch() -> None:
    """The body rocketmq-client-cpp 0.4.4 (librocketmq BatchMessage::encode) sends as SEND_MESSAGE with batch "1"
    (CAPTURES.md item 4): per item TOTALSIZE = 20 + bodyLen + 2 + propLen, magic 0, bodyCRC 0, flag, body, props
    with KEYS/TAGS/UNIQ_KEY/WAIT (and the harness' user property), each pair ending in U+0002."""
    run = "aa1695fb"
    items, expect_props = [], []
    for i in range(3):
        body = f"body-{run}-{i}-\u00e9".encode()
        props = cpp_props({
            "KEYS": f"K{run}-{i}", "TAGS": f"Tag{i % 3}", "WAIT": "true", "harness": "py-cpp",
            "UNIQ_KEY": f"0100007F3E5A0000B1C2D3E4F5A6{i:04X}",
        })
        assert props.startswith(b"KEYS\x01") and props.endswith(b"\x02")
        raw = (struct.pack(">i", 20 + len(body) + 2 + len(props)) + struct.pack(">i", 0) + struct.pack(">i", 0)
               + struct.pack(">i", 0) + struct.pack(">i", len(body)) + body + struct.pack(">h", len(props)) + props)
        items.append(raw)
        expect_props.append(props)
    data = b"".join(items)
    # The broker appends the header's properties ("WAIT\x01true\x02" from the capture, re-serialised by R4 without the
    # trailing separator) and CLUSTER; the items already end with U+0002, so nothing is inserted.
    extra = b"WAIT\x01true\x02" + CLUSTER
    bodies, props, flags = decode_batch_body(data, extra)
    assert bodies == [f"body-{run}-{i}-\u00e9".encode() for i in range(3)]
    assert props == [p + extra for p in expect_props]
    assert flags == [0, 0, 0]
    for i, p in enumerate(props):
        d = decode_properties(p)
        assert d["KEYS"] == f"K{run}-{i}" and d["TAGS"] == f"Tag{i}" and d["WAIT"] == "true"
        assert d["UNIQ_KEY"] == f"0100007F3E5A0000B1C2D3E4F5A6{i:04X}"
        assert d["CLUSTER"] == "DefaultCluster" and d["harness"] == "py-cpp"
    # Our encoder writes the same bytes from the same parts.
    assert encode_batch_body(bodies, expect_props) == data


def test_java_client_item_gets_separator() -> None:
    """R4 Java writes properties without a trailing U+0002: the broker inserts one before the appended ones."""
    data = item(b"x", b"TAGS\x01A\x02UNIQ_KEY\x01AC1100010001")
    assert decode_batch_body(data, CLUSTER)[1] == [b"TAGS\x01A\x02UNIQ_KEY\x01AC1100010001\x02" + CLUSTER]


# ---------------------------------------------------------------------------------------------------------------
# Appending the extra properties
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("props", "extra", "expected"), [
    (b"TAGS\x01A", CLUSTER, b"TAGS\x01A\x02" + CLUSTER),              # no trailing separator: one is added
    (b"TAGS\x01A\x02", CLUSTER, b"TAGS\x01A\x02" + CLUSTER),          # trailing separator: kept, none added
    (b"", CLUSTER, CLUSTER),                                          # empty: just the extra
    (b"TAGS\x01A", b"", b"TAGS\x01A"),                                # no extra: unchanged, no separator
    (b"TAGS\x01A\x02", b"", b"TAGS\x01A\x02"),
    (b"", b"", b""),
    (b"\x02", CLUSTER, b"\x02" + CLUSTER),                            # a lone separator counts as a trailing one
    (b"K\x01v\x02\x02", CLUSTER, b"K\x01v\x02\x02" + CLUSTER),
    (b"TAGS\x01A", b"WAIT\x01true\x02" + CLUSTER, b"TAGS\x01A\x02WAIT\x01true\x02" + CLUSTER),
])
def test_extra_properties_rules(props: bytes, extra: bytes, expected: bytes) -> None:
    assert stored_props(props, extra) == expected          # the model used by the property tests below
    data = item(b"body", props) + item(b"", props, 3)
    bodies, out, flags = decode_batch_body(data, extra)
    assert bodies == [b"body", b""]
    assert out == [expected, expected]
    assert flags == [0, 3]


def test_extra_properties_types() -> None:
    data = item(b"b", b"A\x01x")
    expect = [b"A\x01x\x02" + CLUSTER]
    assert decode_batch_body(data, bytearray(CLUSTER))[1] == expect
    assert decode_batch_body(data, memoryview(CLUSTER))[1] == expect
    assert decode_batch_body(data, CLUSTER.decode())[1] == expect
    assert decode_batch_body(data, None)[1] == [b"A\x01x"]
    with pytest.raises(TypeError):
        decode_batch_body(data, 5)


def test_merged_properties_limit() -> None:
    """The stored property string (item + separator + extra) must fit the record's int16 length."""
    room = PROPERTIES_MAX_LENGTH - len(CLUSTER) - 1
    ok = b"K\x01" + b"v" * (room - 2)                      # + separator + CLUSTER = exactly 32767
    assert len(decode_batch_body(item(b"", ok), CLUSTER)[1][0]) == PROPERTIES_MAX_LENGTH
    too_long = ok + b"v"
    data = item(b"a", b"") + item(b"b", too_long)
    with raises_at(1, "stored properties would be 32768 bytes"):
        decode_batch_body(data, CLUSTER)
    assert decode_batch_body(data)[1][1] == too_long         # no extra: the item's own string fits


# ---------------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------------

bodies_st = st.lists(st.binary(max_size=300), min_size=1, max_size=20)
props_st = st.binary(max_size=120)
flag_st = st.integers(-(2**31), 2**31 - 1)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_round_trip_per_item(data) -> None:
    bodies = data.draw(bodies_st)
    props = data.draw(st.lists(st.one_of(st.none(), props_st), min_size=len(bodies), max_size=len(bodies)))
    flags = data.draw(st.lists(flag_st, min_size=len(bodies), max_size=len(bodies)))
    encoded = encode_batch_body(bodies, props, flags)
    assert len(encoded) == sum(22 + len(b) + len(p or b"") for b, p in zip(bodies, props))
    plain = [p or b"" for p in props]
    assert decode_batch_body(encoded) == (bodies, plain, flags)
    # And back: what decode returns encodes to the same bytes.
    assert encode_batch_body(*decode_batch_body(encoded)) == encoded
    extra = data.draw(st.binary(max_size=40))
    assert decode_batch_body(encoded, extra) == (bodies, [stored_props(p, extra) for p in plain], flags)


@given(bodies_st, props_st, flag_st)
@settings(max_examples=200, deadline=None)
def test_round_trip_shared(bodies, props, flag) -> None:
    encoded = encode_batch_body(bodies, props, flag)
    assert encoded == b"".join(item(b, props, flag) for b in bodies)
    assert decode_batch_body(encoded) == (bodies, [props] * len(bodies), [flag] * len(bodies))


@given(st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_decode_arbitrary_bytes_never_crashes(data) -> None:
    try:
        bodies, props, flags = decode_batch_body(data)
    except BatchBodyError as exc:
        assert re.match(r"^(batch item \d+ at offset \d+: |empty batch)", str(exc))
    else:
        assert encode_batch_body(bodies, props, flags) == data


def test_every_truncation_names_the_cut_item() -> None:
    items = [item(b"first", b"A\x01a"), item(b"", b""), item(b"third-body" * 3, b"TAGS\x01T\x02KEYS\x01k1 k2")]
    data = b"".join(items)
    starts = [0, len(items[0]), len(items[0]) + len(items[1])]
    for cut in range(1, len(data)):
        if cut in starts:      # a cut between items leaves a shorter, valid batch
            assert len(decode_batch_body(data[:cut])[0]) == starts.index(cut)
            continue
        index = max(i for i, s in enumerate(starts) if s < cut)
        with raises_at(index, f"at offset {starts[index]}: truncated"):
            decode_batch_body(data[:cut])


def test_decode_accepts_buffers() -> None:
    frame = b"HEADER" + GOLDEN_2 + b"TAIL"
    view = memoryview(frame)[6:6 + len(GOLDEN_2)]
    assert decode_batch_body(view) == decode_batch_body(GOLDEN_2)
    assert decode_batch_body(bytearray(GOLDEN_2)) == decode_batch_body(GOLDEN_2)


def test_magic_and_body_crc_are_ignored() -> None:
    """R4 reads MAGICCODE and BODYCRC of an item and drops them; so do we."""
    data = item(b"x", b"", magic=-626843481, body_crc=12345) + item(b"y", magic=1)
    assert decode_batch_body(data) == ([b"x", b"y"], [b"", b""], [0, 0])


# ---------------------------------------------------------------------------------------------------------------
# Malformed batches
# ---------------------------------------------------------------------------------------------------------------

GOOD = item(b"ok", b"A\x01b")


@pytest.mark.parametrize(("data", "index", "what"), [
    (GOOD + GOOD[:10], 1, "truncated item or trailing garbage: 10 bytes left"),
    (GOOD + b"\x00", 1, "1 byte left"),
    (GOOD + item(b"abcdef")[:-3], 1, "truncated: body of 6 bytes"),
    (GOOD + item(b"ab", b"K\x01value")[:-2], 1,
     "truncated: body of 2 bytes and properties of 7 bytes need 31 bytes, 29 left"),
    (GOOD + item(b"ab", total=100), 1, "TOTALSIZE 100 does not match the item's actual size 24"),
    (GOOD + item(b"ab", total=23), 1, "TOTALSIZE 23 does not match"),
    (GOOD + item(b"ab", total=0), 1, "TOTALSIZE 0 does not match"),
    (GOOD + item(b"ab", total=-24), 1, "TOTALSIZE -24 does not match"),
    (GOOD + item(b"ab", body_len=-1), 1, "negative body length -1"),
    (GOOD + item(b"ab", b"K\x01v", props_len=-3), 1, "negative properties length -3"),
    (GOOD + GOOD + item(b"x" * 11), 2, "body of 11 bytes exceeds max_body 10"),
    (GOOD + item(b"ab", body_len=2**31 - 1), 1, "body of 2147483647 bytes exceeds max_body"),
    (GOOD + GOOD + b"\x00" * 30, 2, "TOTALSIZE 0 does not match the item's actual size 22"),   # zero padding
    (GOOD + GOOD + GOOD, 2, "more than max_items=2 items"),
])
def test_malformed(data: bytes, index: int, what: str) -> None:
    max_body = 10 if "max_body 10" in what else BATCH_MAX_BODY
    max_items = 2 if "max_items=2" in what else BATCH_MAX_ITEMS
    with raises_at(index, what):
        decode_batch_body(data, max_items=max_items, max_body=max_body)
    with raises_at(index, what):
        decode_batch_body(data, CLUSTER, max_items=max_items, max_body=max_body)


def test_body_too_large_with_default_limit() -> None:
    big = b"\x00" * (BATCH_MAX_BODY + 1)
    with raises_at(0, f"body of {BATCH_MAX_BODY + 1} bytes exceeds max_body {BATCH_MAX_BODY}"):
        decode_batch_body(item(big))
    assert decode_batch_body(item(big[:-1]))[0] == [big[:-1]]


def test_offset_is_reported() -> None:
    with pytest.raises(BatchBodyError, match=r"^batch item 1 at offset 27: TOTALSIZE 5 "):
        decode_batch_body(GOOD + item(b"", total=5))


def test_empty_batch() -> None:
    for empty in (b"", bytearray(), memoryview(b"")):
        with pytest.raises(BatchBodyError, match="empty batch"):
            decode_batch_body(empty)


def test_max_items_boundary() -> None:
    data = GOOD * 5
    assert len(decode_batch_body(data, max_items=5)[0]) == 5
    with raises_at(4, "at offset 108: more than max_items=4 items"):
        decode_batch_body(data + GOOD, max_items=4)


def test_limit_arguments() -> None:
    with pytest.raises(ValueError, match="max_items"):
        decode_batch_body(GOOD, max_items=0)
    with pytest.raises(ValueError, match="max_body"):
        decode_batch_body(GOOD, max_body=-1)
    with pytest.raises(ValueError, match="max_body"):
        encode_batch_body([b"x"], max_body=2**31)
    with pytest.raises(TypeError):
        decode_batch_body("not bytes")


# ---------------------------------------------------------------------------------------------------------------
# Encoder validation
# ---------------------------------------------------------------------------------------------------------------

def test_encode_defaults_and_buffer_types() -> None:
    assert encode_batch_body([b"a"]) == item(b"a")
    assert encode_batch_body((b"a", bytearray(b"b"), memoryview(b"c"))) == item(b"a") + item(b"b") + item(b"c")
    assert encode_batch_body([b"a", b"b"], "K\x01v") == item(b"a", b"K\x01v") + item(b"b", b"K\x01v")
    assert encode_batch_body([b"a"], [bytearray(b"K\x01v")], [5]) == item(b"a", b"K\x01v", 5)
    assert encode_batch_body([b"a"], ["名\x01値"]) == item(b"a", "名\x01値".encode())
    assert encode_batch_body([b"a"], None, True) == item(b"a", flag=1)
    assert encode_batch_body((b for b in [b"a", b"b"]), None, iter([1, 2])) == item(b"a", flag=1) + item(b"b", flag=2)


def test_encode_does_not_modify_caller_lists() -> None:
    bodies, props = [b"a", bytearray(b"b")], [b"x", "y"]
    encode_batch_body(bodies, props)
    assert bodies == [b"a", bytearray(b"b")] and type(bodies[1]) is bytearray
    assert props == [b"x", "y"]


def test_encode_errors() -> None:
    with pytest.raises(BatchBodyError, match="empty batch"):
        encode_batch_body([])
    with pytest.raises(BatchBodyError, match="^batch item 1: properties are 32768 bytes"):
        encode_batch_body([b"a", b"b"], [b"", b"p" * 32768])
    with pytest.raises(BatchBodyError, match="^batch item 0: properties are 32768 bytes"):
        encode_batch_body([b"a", b"b"], b"p" * 32768)
    assert encode_batch_body([b"a"], [b"p" * 32767])                       # the limit itself is fine
    with pytest.raises(BatchBodyError, match="^batch item 1: body of 11 bytes exceeds max_body 10"):
        encode_batch_body([b"a", b"b" * 11], max_body=10)
    with pytest.raises(BatchBodyError, match="^batch item 3: more than max_items=3 items"):
        encode_batch_body([b"a"] * 4, max_items=3)
    with pytest.raises(ValueError, match="1 property strings for 2 bodies"):
        encode_batch_body([b"a", b"b"], [b""])
    with pytest.raises(ValueError, match="3 flags for 2 bodies"):
        encode_batch_body([b"a", b"b"], None, [1, 2, 3])
    with pytest.raises(BatchBodyError, match="^batch item 1: flag 2147483648 does not fit"):
        encode_batch_body([b"a", b"b"], None, [0, 2**31])
    with pytest.raises(BatchBodyError, match="^batch item 0: flag -2147483649 does not fit"):
        encode_batch_body([b"a"], None, -(2**31) - 1)
    with pytest.raises(BatchBodyError, match=f"^batch item 2: flag {2**100} does not fit"):
        encode_batch_body([b"a"] * 3, None, (f for f in [0, 1, 2**100]))
    with pytest.raises(TypeError, match="^batch item 1: body must be bytes-like, not str"):
        encode_batch_body([b"a", "b"])
    with pytest.raises(TypeError, match="^batch item 0: body must be bytes-like, not int"):
        encode_batch_body([3])
    with pytest.raises(TypeError, match="^batch item 0: body must be bytes-like, not NoneType"):
        encode_batch_body([None])
    with pytest.raises(TypeError, match="^batch item 1: properties must be bytes-like, not int"):
        encode_batch_body([b"a", b"b"], [b"", 7])
    with pytest.raises(TypeError, match="^batch item 0: flag must be an int"):
        encode_batch_body([b"a"], None, ["1"])


def test_encode_then_decode_at_limits() -> None:
    bodies = [b"z" * 10] * 3
    data = encode_batch_body(bodies, [b"p" * PROPERTIES_MAX_LENGTH] * 3, [-(2**31), 0, 2**31 - 1],
                             max_items=3, max_body=10)
    got = decode_batch_body(data, max_items=3, max_body=10)
    assert got == (bodies, [b"p" * PROPERTIES_MAX_LENGTH] * 3, [-(2**31), 0, 2**31 - 1])


# ---------------------------------------------------------------------------------------------------------------
# Through the store
# ---------------------------------------------------------------------------------------------------------------

def record_properties(record: bytes) -> bytes:
    """The raw PROPERTIES field of a stored record with IPv4 hosts (PROTOCOL.md §4.1)."""
    body_len = struct.unpack_from(">i", record, 84)[0]
    topic_len = record[88 + body_len]
    off = 88 + body_len + 1 + topic_len
    props_len = struct.unpack_from(">h", record, off)[0]
    assert off + 2 + props_len == len(record)
    return record[off + 2:off + 2 + props_len]


def test_decoded_batch_stored_and_read_back(tmp_path) -> None:
    from rmq_store import MessageStore, StoreConfig

    java_item = b"TAGS\x01TagA\x02KEYS\x01order-1 order-2\x02UNIQ_KEY\x01AC11000100002A9F0000000000000001"
    cpp_item = cpp_props({"KEYS": "k-cpp", "TAGS": "TagB", "UNIQ_KEY": "0100007F3E5A0000B1C2D3E4F5A60002",
                          "WAIT": "true"})
    src_bodies = [b"java body", "cpp body \u00e9".encode(), b"", b"\x00\x01\x02" * 100]
    src_props = [java_item, cpp_item, b"", b"KEYS\x01bin"]
    data = b"".join(item(b, p) for b, p in zip(src_bodies, src_props))
    extra = b"WAIT\x01true\x02" + CLUSTER
    bodies, props, flags = decode_batch_body(data, extra)
    assert bodies == src_bodies and flags == [0, 0, 0, 0]

    config = StoreConfig(store_path_root_dir=str(tmp_path / "store"), mapped_file_size_commitlog=64 * 1024,
                         mapped_file_size_consume_queue=20 * 100, clean_resource_interval_ms=3_600_000)
    with MessageStore(config) as store:
        result = store.put_batch("BatchTopic", bodies, 2, properties=props)
        assert result.ok and result.count == 4
        got = store.get_messages("BatchTopic", 2, 0, max_count=32)
        assert got.count == 4
        raw = [bytes(r) for r in got.records()]
        messages = decode_records(got.to_bytes())
        got.release()
        assert [m.body for m in messages] == src_bodies
        assert [m.queue_offset for m in messages] == [0, 1, 2, 3]
        assert [m.queue_id for m in messages] == [2, 2, 2, 2]
        assert [m.topic for m in messages] == ["BatchTopic"] * 4
        assert [record_properties(r) for r in raw] == [stored_props(p, extra) for p in src_props]
        assert [m.properties for m in messages] == [decode_properties(stored_props(p, extra)) for p in src_props]
        assert messages[0].properties["KEYS"] == "order-1 order-2"
        assert messages[1].properties["UNIQ_KEY"] == "0100007F3E5A0000B1C2D3E4F5A60002"
        assert all(m.properties["CLUSTER"] == "DefaultCluster" for m in messages)
        assert messages[2].properties == {"WAIT": "true", "CLUSTER": "DefaultCluster"}
        # The index has every item's keys and UNIQ_KEY.
        assert len(store.query_message("BatchTopic", "order-2").records) == 1
        assert len(store.query_message("BatchTopic", "0100007F3E5A0000B1C2D3E4F5A60002").records) == 1
        assert len(store.query_message("BatchTopic", "bin").records) == 1
