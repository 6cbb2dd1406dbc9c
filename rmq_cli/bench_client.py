"""``rmq bench produce|consume|e2e|client``: rmq's client and broker against Redis Streams, in one run.

* ``produce`` — batches (SEND_BATCH_MESSAGE) of ``--batch`` messages, ``--concurrency`` in flight on one
  connection, for ``--duration`` seconds (or ``--count`` messages);
* ``consume`` — fills a topic with ``--count`` messages (untimed), then pulls it back, ``--pull-batch`` messages
  per pull, one pull in flight per queue, decoded with ``decode_pull_batch``;
* ``e2e`` — end-to-end latency: a producer process sends at ``--rate`` messages/s with a timestamp in the body, a
  consumer with held pulls (long polling) measures receipt minus stamp;
* ``client`` — all three, one size after the other: produce, consume what was produced, e2e.

Against ``-n ADDR`` (any RocketMQ-compatible nameserver) or, without it, an embedded nameserver + broker in a
child process (free ports, temp data dir, ``--flush`` mode, pull limits raised) so the client and the broker each
have a core. Redis Streams runs the same workloads (``bench/peers.py``) when ``redis-server`` is installed; the
table shows rmq/Redis per row and grades the issue's absolute targets. JSON goes to ``bench/results/`` (or
``--json``), and ``--plot`` draws throughput over time and the latency histogram.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from rmq_cli.bench_common import parse_peers, parse_sizes

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from rmq_cli.client_report import Meter, RunResult
    from rmq_cli.main import SubParsers

OPS: Final = ("produce", "consume", "e2e")
DEFAULT_SIZES: Final = (128, 1024)
DEFAULT_BATCH: Final = 256
DEFAULT_CONCURRENCY: Final = 8
DEFAULT_QUEUES: Final = 8
DEFAULT_PULL_BATCH: Final = 1024
DEFAULT_PRODUCE_SECONDS: Final = 3.0
DEFAULT_WARMUP_SECONDS: Final = 0.5
DEFAULT_FILL: Final = 1_000_000
DEFAULT_RATE: Final = 5000.0
DEFAULT_E2E_COUNT: Final = 25_000
#: Pause after a produce phase: the brokers flush what was just written (rmq's ASYNC_FLUSH every 500 ms, Redis's AOF
#: every second, then the kernel's writeback), hundreds of MB at 1 KiB; without it that work lands in the next phase.
SETTLE_SECONDS: Final = 3.0
#: Warm-up messages of the e2e producer before the measured ones (0.2 s at the default rate).
E2E_WARMUP_SECONDS: Final = 0.2
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS_DIR: Final = REPO_ROOT / "bench" / "results"
PEERS_FILE: Final = REPO_ROOT / "bench" / "peers.py"
KNOWN_PEERS: Final = ("redis",)


def register(benchmarks: SubParsers) -> None:
    """Add ``produce``, ``consume``, ``e2e`` and ``client`` to ``rmq bench``."""
    helps = {
        "produce": "batched send throughput and latency over one connection, against Redis Streams",
        "consume": "pull throughput (large pulls, batch decoding) over one connection, against Redis Streams",
        "e2e": "end-to-end latency at a fixed rate with long polling, against Redis Streams",
        "client": "produce, consume and e2e at 128 B and 1 KiB, against Redis Streams (what 'make run' runs)",
    }
    for name, text in helps.items():
        parser = benchmarks.add_parser(name, help=text, description=(__doc__ or "").split("\n\n")[0] + " " + text)
        _add_common(parser)
        ops = OPS if name == "client" else (name,)
        if "produce" in ops or "consume" in ops:
            parser.add_argument("--batch", type=_positive_int, default=DEFAULT_BATCH,
                                help=f"messages per SEND_BATCH_MESSAGE / XADD pipeline (default {DEFAULT_BATCH})")
            parser.add_argument("--concurrency", type=_positive_int, default=DEFAULT_CONCURRENCY,
                                help=f"batches in flight on the producer's connection (default {DEFAULT_CONCURRENCY})")
        if name in ("produce", "client"):
            amount = parser.add_mutually_exclusive_group()
            amount.add_argument("--duration", type=_positive_float, default=None,
                                help=f"seconds of produce per size (default {DEFAULT_PRODUCE_SECONDS:g})")
            amount.add_argument("--count", type=_positive_int, default=None, help="messages to produce instead")
            parser.add_argument("--warmup", type=_non_negative_float, default=DEFAULT_WARMUP_SECONDS,
                                help=f"untimed produce seconds first (default {DEFAULT_WARMUP_SECONDS:g})")
        if name == "produce":
            parser.add_argument("--ha", choices=("none", "async", "sync", "both"), default="none",
                                help="instead of one broker, a master + slave group per role as separate processes: "
                                     "ASYNC_MASTER, SYNC_MASTER, or both with the SYNC/ASYNC throughput ratio "
                                     "(rmq_cli/bench_ha.py; default none)")
        if name == "consume":
            parser.add_argument("--count", type=_positive_int, default=DEFAULT_FILL,
                                help=f"messages stored (untimed) and then consumed (default {DEFAULT_FILL:,})")
        if "consume" in ops:
            parser.add_argument("--pull-batch", type=_positive_int, default=DEFAULT_PULL_BATCH,
                                help=f"messages asked per pull / XREAD (default {DEFAULT_PULL_BATCH}); the "
                                     "embedded broker's maxTransferCountOnMessageInMemory is raised to match")
        if "e2e" in ops:
            parser.add_argument("--rate", type=_positive_float, default=DEFAULT_RATE,
                                help=f"e2e messages per second (default {DEFAULT_RATE:,.0f})")
            if name == "e2e":
                amount = parser.add_mutually_exclusive_group()
                amount.add_argument("--count", type=_positive_int, default=None,
                                    help=f"measured e2e messages (default {DEFAULT_E2E_COUNT:,})")
                amount.add_argument("--duration", type=_positive_float, default=None,
                                    help="seconds of e2e instead (count = rate x duration)")
            else:
                parser.add_argument("--e2e-count", type=_positive_int, default=DEFAULT_E2E_COUNT,
                                    help=f"measured e2e messages per size (default {DEFAULT_E2E_COUNT:,})")
        parser.set_defaults(handler=run, bench_ops=ops, bench_name=name)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namesrv-addr", metavar="ADDRS", default=None,
                        help="nameserver(s) of a running cluster, 'host:port;host:port' (default: start an embedded "
                             "nameserver + broker in a child process)")
    parser.add_argument("--sizes", type=parse_sizes, default=DEFAULT_SIZES,
                        help="comma-separated message body sizes in bytes (default 128,1024)")
    parser.add_argument("--flush", choices=("ASYNC_FLUSH", "SYNC_FLUSH"), default="ASYNC_FLUSH",
                        help="flushDiskType of the embedded broker (default ASYNC_FLUSH); Redis gets appendfsync "
                             "everysec / always to match")
    parser.add_argument("--queues", type=_positive_int, default=DEFAULT_QUEUES,
                        help=f"queues of each benchmark topic per broker (default {DEFAULT_QUEUES})")
    parser.add_argument("--peers", type=parse_peers(KNOWN_PEERS), default=KNOWN_PEERS,
                        help="comma-separated peers to run the same workloads against, or 'none' (default redis)")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="parent directory of the embedded broker's and Redis's temp dirs (default: system temp "
                             "dir when it is disk-backed)")
    parser.add_argument("--json", type=Path, default=None, dest="json_path", metavar="FILE",
                        help="write the results here instead of bench/results/client-<UTC timestamp>.json and "
                             "client-latest.json")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="draw throughput over time and the e2e latency histogram (matplotlib) into this PNG")


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def load_peers() -> ModuleType | None:
    """``bench/peers.py`` of this checkout (the peers live beside the other benchmarks, not in the package)."""
    if not PEERS_FILE.is_file():
        return None
    name = "rmq_bench_peers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PEERS_FILE)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- progress --------------------------------------------------------------------------------------------------


class LiveProgress:
    """A rich progress bar per run, refreshed by the run's Meter (no refresh thread competing for the GIL)."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.progress: Progress = Progress(
            TextColumn("{task.description:<24}"), BarColumn(bar_width=30), TaskProgressColumn(),
            TextColumn("{task.fields[msgs]:>11,} msgs"), TextColumn("{task.fields[rate]:>11,.0f} msg/s"),
            TimeElapsedColumn(), console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def meter(self, description: str, *, count: int | None = None, duration: float | None = None) -> Meter:
        """A Meter whose updates move a new bar: towards ``count`` messages, or ``duration`` seconds."""

        from rmq_cli.client_report import Meter

        progress = self.progress
        task = progress.add_task(description, total=100.0, msgs=0, rate=0.0)
        started = [0.0]

        def update(done: int, rate: float, final: bool) -> None:
            if not started[0]:
                started[0] = time.perf_counter()
            if final:
                pct = 100.0
            elif count:
                pct = 100.0 * done / count
            elif duration:
                pct = 100.0 * (time.perf_counter() - started[0]) / duration
            else:
                pct = 0.0
            progress.update(task, completed=min(100.0, pct), msgs=done, rate=rate)
            progress.refresh()

        meter = Meter(update)
        progress.refresh()
        return meter


# -- the run ---------------------------------------------------------------------------------------------------


def _make_console() -> Console:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=230)
    return console


@contextmanager
def _cluster(args: argparse.Namespace, console: Console) -> Iterator[dict[str, Any]]:
    """The cluster to measure: ``-n`` as given, or an embedded one in a child process."""
    if args.namesrv_addr:
        yield {"kind": "external", "namesrv_addr": args.namesrv_addr, "broker_properties": None}
        return
    from rmq_cli.bench_store import _disk_backed_parent
    from rmq_cli.client_runners import embedded_cluster_process, embedded_properties

    pull_batch = getattr(args, "pull_batch", DEFAULT_PULL_BATCH)
    props = embedded_properties(args.flush, pull_batch, max(args.sizes))
    parent = args.data_dir or _disk_backed_parent()
    parent.mkdir(parents=True, exist_ok=True)
    with console.status("starting an embedded nameserver + broker in a child process"):
        cm = embedded_cluster_process(props, parent)
        info = cm.__enter__()
    try:
        yield {"kind": "embedded", "namesrv_addr": info.namesrv_addr, "broker_addr": info.broker_addr,
               "data_dir": info.data_dir, "broker_properties": props}
    finally:
        with console.status("stopping the embedded cluster"):
            cm.__exit__(None, None, None)


def run(args: argparse.Namespace) -> int:
    """The handler of all four sub-commands; exit status 1 when an rmq run failed (peer failures are reported)."""
    from rmq_cli.bench_store import _disk_backed_parent
    from rmq_cli.client_report import (
        RMQ,
        RunResult,
        check_targets,
        render_table,
        render_targets,
        results_document,
        write_plot,
    )
    from rmq_cli.client_runners import E2EPlan, ProducePlan, RmqSide

    console = _make_console()
    if getattr(args, "ha", "none") != "none":
        from rmq_cli.bench_ha import run_ha

        if args.namesrv_addr:
            console.print("[bold red]--ha starts its own master + slave groups; leave out -n[/bold red]")
            return 2
        return run_ha(args, console)
    ops: Sequence[str] = args.bench_ops
    sizes: Sequence[int] = args.sizes
    started = datetime.now(timezone.utc)
    rows: list[RunResult] = []
    failures: list[dict[str, Any]] = []
    peer_status: dict[str, Any] = {}
    notes: list[str] = []

    batch = getattr(args, "batch", DEFAULT_BATCH)
    concurrency = getattr(args, "concurrency", DEFAULT_CONCURRENCY)
    pull_batch = getattr(args, "pull_batch", DEFAULT_PULL_BATCH)
    rate = getattr(args, "rate", DEFAULT_RATE)
    produce_count = getattr(args, "count", None) if args.bench_name in ("produce", "client") else None
    produce_seconds = None if produce_count else (getattr(args, "duration", None) or DEFAULT_PRODUCE_SECONDS)
    warmup = getattr(args, "warmup", DEFAULT_WARMUP_SECONDS)
    fill = getattr(args, "count", DEFAULT_FILL) if args.bench_name == "consume" else None
    if args.bench_name == "e2e":
        e2e_count = args.count or (int(args.duration * rate) if args.duration else DEFAULT_E2E_COUNT)
    else:
        e2e_count = getattr(args, "e2e_count", DEFAULT_E2E_COUNT)

    peers_module = load_peers() if args.peers else None
    peer_types: dict[str, Any] = {}
    for name in args.peers:
        reason = None
        if peers_module is None:
            reason = f"{PEERS_FILE} not found (peers run from a checkout of the repository)"
        else:
            reason = peers_module.PEERS[name].unavailable_reason()
        if reason:
            peer_status[name] = {"available": False, "reason": reason}
            console.print(f"[yellow]{name} not measured[/yellow]: {reason}")
        else:
            peer_types[name] = peers_module.PEERS[name]     # type: ignore[union-attr]

    console.print(f"rmq bench {args.bench_name}: {', '.join(ops)} at {', '.join(f'{s} B' for s in sizes)}; "
                  f"{os.cpu_count()} CPUs; client in this process, broker in "
                  f"{'the cluster at ' + args.namesrv_addr if args.namesrv_addr else 'a child process'}")
    failed_rmq = False
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(_cluster(args, console))
        except Exception as exc:
            console.print(f"[bold red]the cluster did not start[/bold red]: {exc}")
            return 1
        rmq = RmqSide(cluster["namesrv_addr"], args.queues, pull_batch)
        peers: dict[str, Any] = {}
        parent = args.data_dir or _disk_backed_parent()
        for name, peer_type in peer_types.items():
            try:
                with console.status(f"starting {name}"):
                    peers[name] = stack.enter_context(peer_type(args.flush, parent))
                peer_status[name] = {"available": True, "description": peers[name].description}
            except Exception as exc:
                peer_status[name] = {"available": False, "reason": f"did not start: {exc}"}
                failures.append({"system": name, "op": "start", "error": f"{type(exc).__name__}: {exc}"})
                console.print(f"[red]{name} did not start[/red]: {exc}")
        systems: list[tuple[str, Any]] = [(RMQ, rmq), *peers.items()]
        broken: set[str] = set()

        def attempt(system: str, op: str, size: int, work: Callable[[], Any]) -> Any:
            nonlocal failed_rmq
            if system in broken:
                return None
            try:
                return work()
            except Exception as exc:  # one failing side must not hide the others' numbers
                console.print(f"[bold red]{system} {op} {size} B failed[/bold red]: {type(exc).__name__}: {exc}")
                failures.append({"system": system, "op": op, "size": size, "error": f"{type(exc).__name__}: {exc}"})
                rows.append(RunResult.skipped(system, op, size, f"failed: {exc}"))
                if system == RMQ:
                    failed_rmq = True
                return None

        with LiveProgress(console) as live:
            for size in sizes:
                sources: dict[str, tuple[str, int]] = {}
                if "produce" in ops:
                    plan = ProducePlan(size, batch, concurrency, produce_seconds, produce_count, warmup)
                    for system, side in systems:
                        meter = live.meter(f"{system} produce {size} B", count=produce_count,
                                           duration=produce_seconds)
                        out = attempt(system, "produce", size, partial(side.produce, plan, meter))
                        if out is not None:
                            row, topic = out
                            rows.append(row)
                            sources[system] = (topic, row.count)
                    if len(ops) > 1:
                        with console.status(f"letting the brokers flush what was produced ({SETTLE_SECONDS:g} s)"):
                            time.sleep(SETTLE_SECONDS)
                if "consume" in ops:
                    for system, side in systems:
                        if system not in sources:
                            count = fill or DEFAULT_FILL
                            meter = live.meter(f"{system} fill {size} B (untimed)", count=count)
                            # rmq's producer keeps --concurrency batches in flight; Redis's pipeline is its batch
                            how = (size, count, batch, concurrency) if system == RMQ else (size, count, batch)
                            topic = attempt(system, "fill", size, partial(side.fill, *how, meter))
                            if topic is None:
                                continue
                            sources[system] = (topic, meter.count)
                        topic, produced = sources[system]
                        meter = live.meter(f"{system} consume {size} B", count=produced)
                        how = (topic, size) if system == RMQ else (topic, size, pull_batch)
                        row = attempt(system, "consume", size, partial(side.consume, *how, meter, produced))
                        if row is not None:
                            rows.append(row)
                elif "produce" in ops:
                    for system, side in systems:
                        if system != RMQ and system in sources:
                            side.drop(sources[system][0])
                if "e2e" in ops:
                    warm = max(1, int(rate * E2E_WARMUP_SECONDS))
                    e2e_plan = E2EPlan(size, rate, e2e_count, warm)
                    for system, side in systems:
                        meter = live.meter(f"{system} e2e {size} B", count=e2e_count)
                        row = attempt(system, "e2e", size, partial(side.e2e, e2e_plan, meter))
                        if row is not None:
                            rows.append(row)
    finished = datetime.now(timezone.utc)

    for name in args.peers:
        if not peer_status.get(name, {}).get("available"):
            for op in ops:
                for size in sizes:
                    rows.append(RunResult.skipped(name, op, size, f"not run: {peer_status[name]['reason']}"))
    if cluster["kind"] == "embedded":
        props = cluster["broker_properties"]
        notes.append(f"embedded broker ({args.flush}): maxTransferCountOnMessageInMemory="
                     f"{props['maxTransferCountOnMessageInMemory']} and maxTransferBytesOnMessageInMemory="
                     f"{props['maxTransferBytesOnMessageInMemory']:,} (RocketMQ's defaults: 32 and 262,144), "
                     f"{props['mappedFileSizeCommitLog'] >> 20} MiB commitlog files")
    else:
        notes.append(f"cluster at {args.namesrv_addr} as configured (--flush does not apply)")
    for name, status in peer_status.items():
        if status.get("available"):
            notes.append(f"{name}: {status['description']}")
    if "produce" in ops:
        notes.append("produce: fresh Message objects per batch (UNIQ_KEY, properties and batch body built by the "
                     "client); latency = one batch sent and acknowledged")
    if "e2e" in ops:
        notes.append(f"e2e: producer process paced at {rate:,.0f} msg/s, evenly spaced; latency = CLOCK_MONOTONIC at "
                     "receipt minus the stamp taken just before the send")
    title = (f"rmq bench {args.bench_name}: Python client, one connection, {os.cpu_count()} CPUs "
             f"({'embedded broker in a child process' if cluster['kind'] == 'embedded' else args.namesrv_addr})")
    render_table(console, rows, list(args.peers), title)
    for note in notes:
        console.print(f"[dim]  {note}[/dim]")
    checks = check_targets(rows)
    render_targets(console, checks)
    config = {
        "command": args.bench_name, "ops": list(ops), "sizes": list(sizes), "batch": batch,
        "concurrency": concurrency, "queues": args.queues, "pull_batch": pull_batch,
        "produce_seconds": produce_seconds, "produce_count": produce_count, "warmup_seconds": warmup,
        "fill_count": fill, "e2e_rate": rate, "e2e_count": e2e_count, "flush": args.flush,
        "peers": list(args.peers), "cluster": {k: v for k, v in cluster.items() if k != "data_dir"},
    }
    document = results_document(started=started.isoformat(), finished=finished.isoformat(), config=config,
                                rows=rows, peers=list(args.peers), peer_status=peer_status, failures=failures,
                                notes=notes)
    for path in _write_results(document, args.json_path, started.strftime("%Y%m%dT%H%M%SZ")):
        console.print(f"results: {path}")
    if args.plot is not None:
        try:
            write_plot(args.plot, rows, title)
            console.print(f"plot: {args.plot}")
        except ImportError as exc:
            console.print(f"[yellow]no plot[/yellow]: matplotlib is not installed ({exc})")
    return 1 if failed_rmq else 0


def _write_results(document: dict[str, Any], json_path: Path | None, stamp: str) -> list[Path]:
    import json

    text = json.dumps(document, indent=2) + "\n"
    paths = [json_path] if json_path is not None else [
        RESULTS_DIR / f"client-{stamp}.json", RESULTS_DIR / "client-latest.json"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return paths
