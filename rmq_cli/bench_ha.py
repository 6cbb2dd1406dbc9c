"""``rmq bench produce --ha async|sync|both``: what synchronous replication costs, in one run.

For each role asked (``both`` = ASYNC_MASTER then SYNC_MASTER) a fresh group is started as separate processes
(``rmq_testing.ProcessCluster``: one ``rmq nameserver``, a master with that brokerRole and one SLAVE replicating
it, in a temp dir under ``--data-dir``), the same produce workload as ``rmq bench produce`` runs against it
(``send_batch`` of ``--batch`` messages, ``--concurrency`` in flight), and the group is stopped. The table has one
row per role and size and, with ``both``, a SYNC/ASYNC row: the throughput ratio graded against the issue's
target (SYNC_MASTER keeps at least 50 % of ASYNC_MASTER's throughput with batching) and the latency ratio.

A SYNC_MASTER answers SLAVE_NOT_AVAILABLE at once while its slave is not connected, which would flatter it: the
run first waits until a probe send is confirmed by the slave (SEND_OK), and every timed batch that was not
confirmed is counted and shown; a SYNC row with such batches is not graded.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from rich.console import Console

    from rmq_cli.client_report import RunResult

HA_CHOICES: Final = ("none", "async", "sync", "both")
HA_ROLES: Final = {"async": ("ASYNC_MASTER",), "sync": ("SYNC_MASTER",), "both": ("ASYNC_MASTER", "SYNC_MASTER")}
#: The issue's target: SYNC_MASTER throughput at least this share of ASYNC_MASTER's (with batching).
SYNC_TO_ASYNC_TARGET: Final = 0.5
#: How long a SYNC_MASTER's slave gets to connect and confirm a probe before the run is given up.
REPLICATION_READY_TIMEOUT_S: Final = 60.0
GROUP: Final = "bench-ha"


def system_name(role: str) -> str:
    return f"rmq {role}"


def run_ha(args: argparse.Namespace, console: Console) -> int:
    """Measure produce against a master + slave group per role; exit status 1 when a run failed."""
    from rmq_cli.bench_client import (
        DEFAULT_PRODUCE_SECONDS,
        DEFAULT_PULL_BATCH,
        LiveProgress,
        _write_results,
    )
    from rmq_cli.bench_store import _disk_backed_parent
    from rmq_cli.client_report import RunResult
    from rmq_cli.client_runners import ProducePlan, RmqSide, embedded_properties
    from rmq_testing.processes import ProcessCluster

    roles = HA_ROLES[args.ha]
    sizes = list(args.sizes)
    produce_seconds = None if args.count else (args.duration or DEFAULT_PRODUCE_SECONDS)
    props = embedded_properties(args.flush, DEFAULT_PULL_BATCH, max(sizes))
    parent = Path(args.data_dir) if args.data_dir else _disk_backed_parent()
    parent.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    rows: list[RunResult] = []
    failures: list[dict[str, Any]] = []
    if args.peers:
        console.print("[dim]--ha compares rmq with itself; peers are not run[/dim]")
    console.print(f"rmq bench produce --ha {args.ha}: {', '.join(roles)} with one slave each, "
                  f"{', '.join(f'{s} B' for s in sizes)}; {os.cpu_count()} CPUs; nameserver, master and slave are "
                  "separate processes, the client runs in this one")
    with LiveProgress(console) as live:
        for role in roles:
            root = tempfile.mkdtemp(prefix=f"rmq-bench-ha-{role.lower()}-", dir=parent)
            try:
                with ProcessCluster(root) as cluster:
                    try:
                        with console.status(f"starting a nameserver and a {role} + SLAVE group"):
                            cluster.start_nameserver()
                            cluster.start_group(GROUP, role=role, slaves=1, properties=props)
                            cluster.wait_registered()
                            if role == "SYNC_MASTER":
                                _wait_replicating(cluster.namesrv_addr)
                    except Exception as exc:
                        failures.append({"system": system_name(role), "op": "start",
                                         "error": f"{type(exc).__name__}: {exc}"})
                        console.print(f"[bold red]{role} group did not start[/bold red]: {exc}")
                        rows += [RunResult.skipped(system_name(role), "produce", s, f"failed: {exc}") for s in sizes]
                        continue
                    side = RmqSide(cluster.namesrv_addr, args.queues, DEFAULT_PULL_BATCH)
                    for size in sizes:
                        plan = ProducePlan(size, args.batch, args.concurrency, produce_seconds, args.count,
                                           args.warmup)
                        meter = live.meter(f"{role} produce {size} B", count=args.count, duration=produce_seconds)
                        try:
                            row, _ = side.produce(plan, meter)
                        except Exception as exc:
                            failures.append({"system": system_name(role), "op": "produce", "size": size,
                                             "error": f"{type(exc).__name__}: {exc}"})
                            console.print(f"[bold red]{role} produce {size} B failed[/bold red]: {exc}")
                            rows.append(RunResult.skipped(system_name(role), "produce", size, f"failed: {exc}"))
                            continue
                        row.system = system_name(role)
                        not_ok = row.extra.get("not_ok_batches") or {}
                        row.note = f"{row.note}; slave: 1 SLAVE process" + (
                            f"; NOT CONFIRMED batches: {not_ok}" if not_ok else "")
                        rows.append(row)
            finally:
                shutil.rmtree(root, ignore_errors=True)
    finished = datetime.now(timezone.utc)

    comparisons = compare(rows, sizes) if len(roles) == 2 else []
    render(console, rows, comparisons, args)
    document = {
        "benchmark": "rmq bench produce --ha", "started": started.isoformat(), "finished": finished.isoformat(),
        "config": {"ha": args.ha, "roles": list(roles), "sizes": sizes, "batch": args.batch,
                   "concurrency": args.concurrency, "queues": args.queues, "produce_seconds": produce_seconds,
                   "produce_count": args.count, "warmup_seconds": args.warmup, "flush": args.flush,
                   "broker_properties": props, "cpus": os.cpu_count()},
        "rows": [row.to_json() for row in rows],
        "comparisons": comparisons,
        "target": {"sync_to_async_throughput_min": SYNC_TO_ASYNC_TARGET},
        "failures": failures,
    }
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    json_path = args.json_path
    paths = _write_results(document, json_path, stamp) if json_path else _write_ha_results(document, stamp)
    for path in paths:
        console.print(f"results: {path}")
    return 1 if failures else 0


def _write_ha_results(document: dict[str, Any], stamp: str) -> list[Path]:
    import json

    from rmq_cli.bench_client import RESULTS_DIR

    text = json.dumps(document, indent=2) + "\n"
    paths = [RESULTS_DIR / f"ha-{stamp}.json", RESULTS_DIR / "ha-latest.json"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return paths


def _wait_replicating(namesrv_addr: str) -> None:
    """Until a probe send to the SYNC_MASTER is SEND_OK: its slave is connected and confirming."""
    import trio

    from rmq_client import ClientConfig, ClientInstance, Producer, make_message
    from rmq_cli.client_runners import create_topic, topic_name

    async def probe() -> None:
        topic = topic_name("haprobe", 0)
        async with ClientInstance(ClientConfig(namesrv_addr=namesrv_addr).with_unique_instance_name()) as inst:
            await create_topic(inst, topic, 1)
        async with Producer("rmq_bench_ha_probe", namesrv_addr, retry_times_when_send_failed=0) as producer:
            deadline = time.monotonic() + REPLICATION_READY_TIMEOUT_S
            last = None
            while time.monotonic() < deadline:
                result = await producer.send(make_message(topic, b"probe"))
                if result.status.name == "SEND_OK":
                    return
                last = result.status.name
                await trio.sleep(0.2)
            raise RuntimeError(f"the slave did not confirm a probe within {REPLICATION_READY_TIMEOUT_S:g} s "
                               f"(last status {last})")

    trio.run(probe)


def compare(rows: list[RunResult], sizes: list[int]) -> list[dict[str, Any]]:
    """Per size: SYNC_MASTER over ASYNC_MASTER throughput (graded) and p50 latency."""
    out = []
    for size in sizes:
        by_role = {row.system: row for row in rows if row.size == size and row.seconds}
        a, s = by_role.get(system_name("ASYNC_MASTER")), by_role.get(system_name("SYNC_MASTER"))
        entry: dict[str, Any] = {"size": size, "throughput_ratio": None, "p50_latency_ratio": None,
                                 "target": SYNC_TO_ASYNC_TARGET, "verdict": "n/a"}
        if a is not None and s is not None and a.msgs_per_s and s.msgs_per_s:
            entry["throughput_ratio"] = s.msgs_per_s / a.msgs_per_s
            if a.latency is not None and s.latency is not None and a.latency.p50_us:
                entry["p50_latency_ratio"] = s.latency.p50_us / a.latency.p50_us
            if s.extra.get("not_ok_batches"):
                entry["verdict"] = "n/a: SYNC_MASTER batches not confirmed by the slave"
            else:
                entry["verdict"] = "PASS" if entry["throughput_ratio"] >= SYNC_TO_ASYNC_TARGET else "FAIL"
        out.append(entry)
    return out


def render(console: Console, rows: list[RunResult], comparisons: list[dict[str, Any]],
           args: argparse.Namespace) -> None:
    from rich.table import Table

    table = Table(title=f"rmq bench produce --ha {args.ha}: batches of {args.batch}, {args.concurrency} in flight, "
                        f"{args.queues} queues, {args.flush}", title_justify="left")
    for name, justify in (("group", "left"), ("size", "right"), ("msgs/s", "right"), ("MB/s", "right"),
                          ("p50 µs", "right"), ("p99 µs", "right"), ("max µs", "right"), ("note", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in sorted(rows, key=lambda r: (r.size, r.system)):
        lat = row.latency
        table.add_row(row.system, f"{row.size:,}", _num(row.msgs_per_s), _num(row.mb_per_s, ".1f"),
                      _num(lat and lat.p50_us), _num(lat and lat.p99_us), _num(lat and lat.max_us), row.note)
    for entry in comparisons:
        ratio = entry["throughput_ratio"]
        lat_ratio = entry["p50_latency_ratio"]
        table.add_row("SYNC/ASYNC", f"{entry['size']:,}", "n/a" if ratio is None else f"{ratio:.0%}", "",
                      "n/a" if lat_ratio is None else f"{lat_ratio:.2f}x", "", "",
                      f"target SYNC >= {SYNC_TO_ASYNC_TARGET:.0%} of ASYNC: {entry['verdict']}")
    console.print(table)


def _num(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)
