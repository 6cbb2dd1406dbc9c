"""`rmq bench produce --ha`: a smoke run of both roles (tiny durations) and the SYNC/ASYNC grading on known rows."""
import json
import os
import subprocess
import sys

from rmq_cli.bench_ha import SYNC_TO_ASYNC_TARGET, compare, system_name
from rmq_cli.client_report import LatencyStats, RunResult

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_both_roles_measured_and_compared(tmp_path):
    out = tmp_path / "ha.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rmq_cli", "bench", "produce", "--ha", "both", "--sizes", "128", "--duration", "0.3",
         "--warmup", "0.1", "--batch", "32", "--concurrency", "2", "--queues", "2", "--peers", "none",
         "--json", str(out), "--data-dir", str(tmp_path)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    doc = json.loads(out.read_text())
    assert doc["config"]["roles"] == ["ASYNC_MASTER", "SYNC_MASTER"] and not doc["failures"]
    rows = {row["system"]: row for row in doc["rows"]}
    assert set(rows) == {"rmq ASYNC_MASTER", "rmq SYNC_MASTER"}
    for row in rows.values():
        assert row["count"] > 0 and row["msgs_per_s"] > 0 and row["latency_us"]["p50"] > 0
        assert row["failed"] == 0
    # The run waited for the slave before timing, so every SYNC batch was confirmed by it.
    assert rows["rmq SYNC_MASTER"]["not_ok_batches"] == {}
    (entry,) = doc["comparisons"]
    expected = rows["rmq SYNC_MASTER"]["msgs_per_s"] / rows["rmq ASYNC_MASTER"]["msgs_per_s"]
    assert abs(entry["throughput_ratio"] - expected) < 1e-9
    assert entry["verdict"] in ("PASS", "FAIL")
    assert "SYNC/ASYNC" in proc.stdout
    assert not [p for p in os.listdir(tmp_path) if p.startswith("rmq-bench-ha-")], "temp stores removed"


def test_ha_refuses_an_external_cluster(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rmq_cli", "bench", "produce", "--ha", "sync", "-n", "127.0.0.1:1",
                           "--json", str(tmp_path / "x.json")], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "leave out -n" in proc.stdout


def _row(role: str, msgs: int, p50_us: float, **extra) -> RunResult:
    latency = LatencyStats(1, p50_us, p50_us, p50_us, p50_us, p50_us, p50_us, p50_us)
    return RunResult(system_name(role), "produce", 128, count=msgs, payload_bytes=msgs * 128, seconds=1.0,
                     latency=latency, extra=dict(extra))


def test_grading_of_the_ratio():
    rows = [_row("ASYNC_MASTER", 1000, 100.0), _row("SYNC_MASTER", 500, 250.0, not_ok_batches={})]
    (entry,) = compare(rows, [128])
    assert entry["throughput_ratio"] == SYNC_TO_ASYNC_TARGET and entry["verdict"] == "PASS"
    assert entry["p50_latency_ratio"] == 2.5
    rows[1] = _row("SYNC_MASTER", 499, 250.0, not_ok_batches={})
    assert compare(rows, [128])[0]["verdict"] == "FAIL"
    rows[1] = _row("SYNC_MASTER", 900, 50.0, not_ok_batches={"SLAVE_NOT_AVAILABLE": 3})
    assert compare(rows, [128])[0]["verdict"].startswith("n/a")      # unconfirmed sends are not graded
    assert compare(rows[:1], [128])[0]["verdict"] == "n/a"
