"""`rmq bench remoting` end to end on a tiny workload: the command runs, grades its targets and writes its JSON."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_remoting_small_run(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rmq_cli", "bench", "remoting", "--count", "300", "--inflight", "16", "--repeat", "2", "--no-codec",
         "--json", str(out)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert "ping-pong" in proc.stdout and "bare echo" in proc.stdout and "Targets" in proc.stdout
    result = json.loads(out.read_text())
    assert result["benchmark"] == "remoting" and not result["failures"]
    for kind in ("rmq", "echo"):
        rpc = result["rpc"][kind]
        assert rpc["ping_pong_requests"] == 300 and rpc["pipelined_requests"] == 300
        assert rpc["ping_pong_rtt_p50_us"] > 0 and rpc["pipelined_req_per_s"] > 0
        assert len(rpc["ping_pong_rtt_p50_us_samples"]) == 2 and len(rpc["pipelined_req_per_s_samples"]) == 2
        assert rpc["ping_pong_rtt_p50_us"] == min(rpc["ping_pong_rtt_p50_us_samples"])
    assert result["rpc"]["echo-batch"]["pipelined_requests"] == 300
    assert [t["label"] for t in result["targets"]] == [
        "pipelined req/s >= 0.5x bare echo", "ping-pong RTT p50 <= 1.5x bare echo"]
    assert all(t["ratio"] > 0 for t in result["targets"])


def test_bench_remoting_codec_rows():
    import rmq_cli.bench_remoting as bench
    from rmq_cli.bench_remoting import measure_codec

    saved = bench.CODEC_SECONDS, bench.CODEC_REPEAT
    bench.CODEC_SECONDS, bench.CODEC_REPEAT = 0.01, 1
    try:
        rows, sizes = measure_codec(128)
    finally:
        bench.CODEC_SECONDS, bench.CODEC_REPEAT = saved
    assert [r.op for r in rows][:3] == ["encode request", "decode one frame", "decode batch of 256"]
    assert all(r.json_per_s > 0 and r.rocketmq_per_s > 0 for r in rows)
    assert sizes["json"] > sizes["rocketmq"] > 128
