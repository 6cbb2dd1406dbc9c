"""Micro-benchmarks of the batch body codec (rmq_common._record.decode_batch_body / encode_batch_body).

Run with ``pytest bench/test_batch_bench.py --benchmark-only`` (``make bench`` runs every bench file).  No timing
assertions.  The workload is one SEND_BATCH_MESSAGE body of 64 items of 128 B, each with a realistic client
property string (TAGS, KEYS, UNIQ_KEY, WAIT); decoding appends ``CLUSTER`` as the broker does, so every item's
stored property string is built too.  Divide the mean by 64 for the cost per item.
"""

from __future__ import annotations

from typing import Any

import pytest

_record = pytest.importorskip("rmq_common._record", reason="rmq's Cython core is not built (make build)")

ITEMS = 64
SIZE = 128
ROUNDS = 2000
CLUSTER = b"CLUSTER\x01DefaultCluster"


def _workload() -> tuple[list[bytes], list[bytes], bytes]:
    bodies = [bytes([i]) * SIZE for i in range(ITEMS)]
    props = [
        f"TAGS\x01TagA\x02KEYS\x01order-{i}\x02UNIQ_KEY\x01AC110001000018B4AAC2{i:012X}\x02WAIT\x01true".encode()
        for i in range(ITEMS)
    ]
    return bodies, props, _record.encode_batch_body(bodies, props)


@pytest.mark.benchmark(group=f"batch body {ITEMS} x {SIZE} B")
def test_decode_batch_body(benchmark: Any) -> None:
    bodies, props, data = _workload()
    out = benchmark.pedantic(_record.decode_batch_body, args=(data, CLUSTER), rounds=ROUNDS, iterations=10)
    assert out[0] == bodies
    assert out[1][0] == props[0] + b"\x02" + CLUSTER


@pytest.mark.benchmark(group=f"batch body {ITEMS} x {SIZE} B")
def test_decode_batch_body_no_extra(benchmark: Any) -> None:
    bodies, _, data = _workload()
    out = benchmark.pedantic(_record.decode_batch_body, args=(data,), rounds=ROUNDS, iterations=10)
    assert out[0] == bodies


@pytest.mark.benchmark(group=f"batch body {ITEMS} x {SIZE} B")
def test_encode_batch_body(benchmark: Any) -> None:
    bodies, props, data = _workload()
    out = benchmark.pedantic(_record.encode_batch_body, args=(bodies, props), rounds=ROUNDS, iterations=10)
    assert out == data
