"""`rmq bench produce|consume|e2e|client`: smoke runs against an embedded cluster (small counts) checking the JSON,
and the latency statistics and report helpers on known data."""
import json
import os
import subprocess
import sys

import pytest

from rmq_cli.client_report import (
    LatencyStats,
    Meter,
    RunResult,
    check_targets,
    nearest_rank,
    ratio,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LATENCY_KEYS = {"count", "mean", "min", "p50", "p90", "p99", "p99.9", "max"}


def _bench(tmp_path, *args):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rmq_cli", "bench", *args, "--json", str(out), "--data-dir", str(tmp_path)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert "Targets from the issue" in proc.stdout
    return json.loads(out.read_text()), proc.stdout


def _rows(doc, system, op):
    return [r for r in doc["rows"] if r["system"] == system and r["op"] == op]


def _check_measured(row, count=None):
    assert row["seconds"] > 0 and row["msgs_per_s"] > 0 and row["mb_per_s"] > 0
    if count is not None:
        assert row["count"] == count
    assert row["payload_bytes"] == row["count"] * row["size"]
    assert set(row["latency_us"]) == LATENCY_KEYS
    lat = row["latency_us"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert row["timeline"][0] == [0.0, 0] and row["timeline"][-1][1] == row["count"]


def _check_redis(doc, op, count=None):
    """Redis ran the same workload when it is installed; otherwise the table says why, and nothing failed."""
    status = doc["peers"]["redis"]
    rows = _rows(doc, "redis", op)
    assert len(rows) == 1
    if status["available"]:
        _check_measured(rows[0], count)
        ratios = [r for r in doc["ratios"] if r["op"] == op and r["peer"] == "redis"]
        assert ratios and ratios[0]["ratio"] > 0
    else:
        assert rows[0]["seconds"] is None and "not run" in rows[0]["note"]
        assert status["reason"]


def test_bench_produce_smoke(tmp_path):
    doc, _ = _bench(tmp_path, "produce", "--sizes", "128", "--count", "3000", "--batch", "100",
                    "--concurrency", "3", "--warmup", "0", "--peers", "redis")
    assert doc["benchmark"] == "client" and not doc["failures"]
    assert doc["config"]["ops"] == ["produce"] and doc["config"]["cluster"]["kind"] == "embedded"
    props = doc["config"]["cluster"]["broker_properties"]
    assert props["flushDiskType"] == "ASYNC_FLUSH" and int(props["maxTransferCountOnMessageInMemory"]) >= 1024
    (row,) = _rows(doc, "rmq", "produce")
    _check_measured(row, 3000)
    assert row["latency_us"]["count"] == 30               # one sample per batch of 100
    assert row["batches"] >= 30 and row["failed"] == 0
    _check_redis(doc, "produce", 3000)
    (target,) = doc["targets"]
    assert target["op"] == "produce" and target["size"] == 128 and target["value"] == row["msgs_per_s"]
    assert target["met"] is (row["msgs_per_s"] >= 525_000)
    assert "maxTransferCountOnMessageInMemory" in " ".join(doc["notes"])


def test_bench_consume_smoke(tmp_path):
    doc, _ = _bench(tmp_path, "consume", "--sizes", "1024", "--count", "5000", "--pull-batch", "500",
                    "--queues", "2", "--peers", "redis")
    assert not doc["failures"]
    (row,) = _rows(doc, "rmq", "consume")
    _check_measured(row, 5000)
    assert row["queues"] == 2 and row["stored"] == 5000 and row["pulls"] >= 10
    _check_redis(doc, "consume", 5000)
    assert [t["op"] for t in doc["targets"]] == ["consume"]


def test_bench_e2e_smoke_with_plot(tmp_path):
    plot = tmp_path / "bench.png"
    doc, _ = _bench(tmp_path, "e2e", "--sizes", "128", "--count", "600", "--rate", "2000", "--peers", "none",
                    "--plot", str(plot))
    assert not doc["failures"] and doc["config"]["peers"] == []
    (row,) = _rows(doc, "rmq", "e2e")
    _check_measured(row, 600)
    assert row["latency_us"]["count"] == 600              # one sample per message
    assert 500 < row["msgs_per_s"] < 4000                 # paced near --rate
    assert {t["metric"] for t in doc["targets"]} == {"p50_us", "p99_us"}
    assert plot.stat().st_size > 10_000


@pytest.mark.parametrize("command", ["client"])
def test_bench_client_smoke(tmp_path, command):
    doc, stdout = _bench(tmp_path, command, "--sizes", "128", "--count", "2000", "--warmup", "0",
                         "--e2e-count", "300", "--rate", "2000", "--peers", "none", "--flush", "SYNC_FLUSH")
    assert not doc["failures"] and doc["config"]["flush"] == "SYNC_FLUSH"
    assert doc["config"]["cluster"]["broker_properties"]["flushDiskType"] == "SYNC_FLUSH"
    assert [r["op"] for r in doc["rows"]] == ["produce", "consume", "e2e"]
    produce, consume, e2e = doc["rows"]
    _check_measured(produce, 2000)
    _check_measured(consume, 2000)                        # reads back exactly what was produced
    _check_measured(e2e, 300)
    assert {(t["op"], t["metric"]) for t in doc["targets"]} == {
        ("produce", "msgs_per_s"), ("consume", "msgs_per_s"), ("e2e", "p50_us"), ("e2e", "p99_us")}
    assert "rmq bench client" in stdout


# -- statistics and report helpers ------------------------------------------------------------------------


def test_nearest_rank_percentiles():
    assert nearest_rank(100, 50) == 49
    assert nearest_rank(100, 99) == 98
    assert nearest_rank(1000, 99.9) == 998                # not 999: 99.9 % of 1000 is exactly 999 samples
    assert nearest_rank(10, 99.9) == 9                    # fewer than 1,000 samples: p99.9 is the maximum
    assert nearest_rank(1, 50) == 0
    with pytest.raises(ValueError):
        nearest_rank(0, 50)
    with pytest.raises(ValueError):
        nearest_rank(10, 0)


def test_latency_stats_from_ns():
    samples = [i * 1000 for i in range(1000, 0, -1)]     # 1..1000 µs, unsorted
    stats = LatencyStats.from_ns(samples)
    assert stats.count == 1000
    assert (stats.min_us, stats.p50_us, stats.p90_us, stats.p99_us, stats.p999_us, stats.max_us) == (
        1.0, 500.0, 900.0, 990.0, 999.0, 1000.0)
    assert stats.mean_us == pytest.approx(500.5)
    assert LatencyStats.from_ns([]) is None
    one = LatencyStats.from_ns([1500])
    assert one.p50_us == one.p999_us == one.max_us == 1.5
    assert set(stats.to_json()) == LATENCY_KEYS


def test_meter_counts_samples_and_latencies():
    updates = []
    meter = Meter(lambda done, rate, final: updates.append((done, final)))
    meter.start()
    for _ in range(10):
        meter.add(5, 500, 1000)
    seconds = meter.finish()
    assert meter.count == 50 and meter.payload_bytes == 5000 and seconds > 0
    assert meter.latencies_ns == [1000] * 10
    assert meter.timeline[0] == (0.0, 0) and meter.timeline[-1][1] == 50
    assert updates[-1] == (50, True)
    row = RunResult.from_meter("rmq", "produce", 100, meter, latency_of="per batch")
    assert row.msgs_per_s == pytest.approx(50 / seconds) and row.latency.p50_us == 1.0
    assert row.latencies_ns == []                         # kept only for e2e histograms


def test_ratios_and_targets():
    def row(system, op, size, count, seconds, p50=None):
        lat = None if p50 is None else LatencyStats(1, p50, p50, p50, p50, p50 * 2, p50 * 2, p50 * 2)
        return RunResult(system, op, size, count, count * size, seconds, lat)

    rows = [row("rmq", "produce", 128, 600_000, 1.0), row("redis", "produce", 128, 200_000, 1.0),
            row("rmq", "e2e", 128, 5000, 1.0, p50=100.0), row("redis", "e2e", 128, 5000, 1.0, p50=80.0),
            row("rmq", "consume", 1024, 800_000, 1.0), RunResult.skipped("redis", "consume", 1024, "not run")]
    assert ratio(rows, rows[0], "redis") == (pytest.approx(3.0), "")
    assert ratio(rows, rows[2], "redis") == (pytest.approx(1.25), "p50")
    assert ratio(rows, rows[4], "redis") == (None, "")
    checks = {(c.target.op, c.target.size, c.target.metric): c.met for c in check_targets(rows)}
    assert checks == {("produce", 128, "msgs_per_s"): True, ("e2e", 128, "p50_us"): False,
                      ("e2e", 128, "p99_us"): True, ("consume", 1024, "msgs_per_s"): False}
