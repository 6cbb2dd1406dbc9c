"""Micro-benchmarks of the client's pull-body decoders (rmq_client.codec) and body compression.

Run with ``pytest bench/test_client_codec_bench.py --benchmark-only`` (``make bench`` runs every bench file). No
timing assertions. A pull body holds 32 stored records (a broker's default cap per pull) of 128 B or 1 KiB
bodies, each with the properties a Java producer and the broker leave (UNIQ_KEY, KEYS, TAGS, CLUSTER);
``extra_info["ns_per_msg"]`` is the mean divided by 32. The compression cases time one 4 KiB and one 64 KiB
text-like (JSON lines) body per codec.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

codec = pytest.importorskip("rmq_client.codec", reason="rmq's Cython core is not built (make build)")
from rmq_client.compression import compress, decompress
from rmq_common._record import decode_records, encode_record

RECORDS = 32
ROUNDS = 2000


def pull_body(size: int, count: int = RECORDS) -> bytes:
    """``count`` stored records as a broker returns them to a pull."""
    records = []
    for i in range(count):
        props = (f"UNIQ_KEY\x01AC110001000018B4AAC2{i:012X}\x02KEYS\x01order-{i}\x02TAGS\x01TagA"
                 f"\x02CLUSTER\x01DefaultCluster").encode()
        records.append(encode_record(
            topic="BenchTopic", body=bytes([i % 251]) * size, queue_id=3, queue_offset=10_000 + i,
            phy_offset=5_000_000 + i * (size + 200), born_timestamp=1_700_000_000_000 + i,
            born_host=("10.1.2.3", 52344), store_timestamp=1_700_000_000_100 + i,
            store_host=("10.1.2.4", 10911), properties=props))
    return b"".join(records)


def _bench_decode(benchmark: Any, fn: Callable[[Any], Any], size: int) -> Any:
    body = memoryview(pull_body(size))             # the remoting layer hands bodies over as memoryviews
    out = benchmark.pedantic(fn, args=(body,), rounds=ROUNDS, iterations=5)
    if benchmark.stats is not None:
        benchmark.extra_info["ns_per_msg"] = round(benchmark.stats.stats.mean / RECORDS * 1e9, 1)
    return out


@pytest.mark.parametrize("size", [128, 1024])
def test_decode_pull_bodies(benchmark: Any, size: int) -> None:
    benchmark.group = f"pull body decode, {RECORDS} x {size} B"
    out = _bench_decode(benchmark, codec.decode_pull_bodies, size)
    assert len(out) == RECORDS and len(out[0]) == size


@pytest.mark.parametrize("size", [128, 1024])
def test_decode_pull_batch(benchmark: Any, size: int) -> None:
    benchmark.group = f"pull body decode, {RECORDS} x {size} B"
    out = _bench_decode(benchmark, codec.decode_pull_batch, size)
    assert len(out) == RECORDS


@pytest.mark.parametrize("size", [128, 1024])
def test_decode_pull_batch_with_offsets(benchmark: Any, size: int) -> None:
    benchmark.group = f"pull body decode, {RECORDS} x {size} B"
    out = _bench_decode(benchmark, lambda b: codec.decode_pull_batch(b).queue_offsets, size)
    assert out[0] == 10_000


@pytest.mark.parametrize("size", [128, 1024])
def test_decode_pull_body(benchmark: Any, size: int) -> None:
    benchmark.group = f"pull body decode, {RECORDS} x {size} B"
    out = _bench_decode(benchmark, codec.decode_pull_body, size)
    assert out[-1].queue_offset == 10_000 + RECORDS - 1


@pytest.mark.parametrize("size", [128, 1024])
def test_decode_pull_body_read_properties(benchmark: Any, size: int) -> None:
    benchmark.group = f"pull body decode, {RECORDS} x {size} B"
    out = _bench_decode(benchmark, lambda b: [m.properties for m in codec.decode_pull_body(b)], size)
    assert out[0]["TAGS"] == "TagA"


@pytest.mark.parametrize("size", [128])
def test_decode_records_reference(benchmark: Any, size: int) -> None:
    """rmq_common._record.decode_records, the eager reference decoder, for comparison."""
    benchmark.group = f"pull body decode, {RECORDS} x {size} B"
    body = pull_body(size)
    out = benchmark.pedantic(decode_records, args=(body, False), rounds=100, iterations=1)
    benchmark.extra_info["ns_per_msg"] = round(benchmark.stats.stats.mean / RECORDS * 1e9, 1)
    assert len(out) == RECORDS


def text_payload(size: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < size:
        out += f'{{"order":{i},"user":"u{i * 7919 % 1000}","status":"PAID","amount":{i * 13 % 997}.50}}\n'.encode()
        i += 1
    return bytes(out[:size])


@pytest.mark.parametrize("kind", ["zlib", "lz4", "zstd"])
@pytest.mark.parametrize("size", [4096, 65536])
def test_compress(benchmark: Any, kind: str, size: int) -> None:
    benchmark.group = f"compress {size} B text"
    payload = text_payload(size)
    data, _ = benchmark.pedantic(compress, args=(payload, kind), rounds=300, iterations=3)
    benchmark.extra_info["ratio"] = round(len(payload) / len(data), 2)
    benchmark.extra_info["MB_per_s"] = round(size / benchmark.stats.stats.mean / 1e6, 1)


@pytest.mark.parametrize("kind", ["zlib", "lz4", "zstd"])
@pytest.mark.parametrize("size", [4096, 65536])
def test_decompress(benchmark: Any, kind: str, size: int) -> None:
    benchmark.group = f"decompress {size} B text"
    payload = text_payload(size)
    data, bits = compress(payload, kind)
    out = benchmark.pedantic(decompress, args=(data, bits), rounds=300, iterations=3)
    benchmark.extra_info["MB_per_s"] = round(size / benchmark.stats.stats.mean / 1e6, 1)
    assert out == payload
