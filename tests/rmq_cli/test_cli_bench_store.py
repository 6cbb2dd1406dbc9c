"""`rmq bench store` end to end on a tiny workload: the command runs, prints its table and writes its JSON."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_store_small_run(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rmq_cli", "bench", "store", "--count", "3000", "--sizes", "128",
         "--lookups", "100", "--peers", "file,lmdb", "--dir", str(tmp_path), "--json", str(out), "--no-warmup"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "write async" in proc.stdout and "rmq" in proc.stdout
    result = json.loads(out.read_text())
    rows = {(r["store"], r["op"]): r for r in result["rows"]}
    for op in ("write async", "write durable", "seq read", "key lookup"):
        row = rows[("rmq", op)]
        assert row["count"] == (100 if op == "key lookup" else 3000), row
        assert row["msgs_per_s"] > 0
    assert rows[("lmdb", "write async")]["msgs_per_s"] > 0
    # the stores' directories were removed after the run
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def test_rmq_command_lists_subcommands():
    proc = subprocess.run([sys.executable, "-m", "rmq_cli", "--help"], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "bench" in proc.stdout
