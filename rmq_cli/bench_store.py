"""``rmq bench store``: rmq's MessageStore against a plain file, LMDB and sqlite, in one run on one disk.

For each payload size the messages are built once, then every store in turn appends them with one flush at the
end (async), reads them back sequentially, looks up random keys, and appends them again into a fresh directory
with an fsync per batch (durable).  Each phase runs after gc.collect() with the collector disabled, timed with
perf_counter.  The report is one table with rmq/peer ratios, the issue's targets, and a JSON file under
bench/results/.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, TypeVar

from rich.console import Console

from rmq_cli.bench_common import parse_peers, parse_sizes, positive_int
from rmq_cli.store_report import (
    Row,
    best_of,
    check_targets,
    render_table,
    render_targets,
    results_document,
)
from rmq_cli.store_runners import (
    BATCH,
    OP_LOOKUP,
    OP_WRITE_ASYNC,
    OP_WRITE_DURABLE,
    PEERS,
    BenchError,
    RmqRunner,
    Runner,
    Tally,
    Workload,
    build_workload,
    rmq_unavailable_reason,
)

if TYPE_CHECKING:
    from rmq_cli.main import SubParsers

T = TypeVar("T")

DEFAULT_COUNT: Final = 1_000_000
QUICK_COUNT: Final = 100_000
DEFAULT_SIZES: Final = (128, 1024)
DEFAULT_LOOKUPS: Final = 10_000
#: --quick gives rmq 256 MiB commitlog files instead of 1 GiB: the 100,000-message runs fit either way, and each
#: store open pre-faults its file plus the next one, which at 1 GiB was most of a smoke run's time.
QUICK_RMQ_CONFIG: Final[dict[str, Any]] = {"mapped_file_size_commitlog": 256 << 20}
#: File systems that live in memory: timing fsync there would flatter every store and measure nothing.
MEMORY_FILESYSTEMS: Final = frozenset({"tmpfs", "ramfs"})
#: Scratch bytes written (and deleted) before each timed write, per message on top of the payload: covers rmq's
#: stored-record header, topic and properties plus its consume-queue and index entries, the largest overhead here.
WARMUP_OVERHEAD_PER_MESSAGE: Final = 256
_WARMUP_CHUNK: Final = bytes(1 << 20)
#: Where results go by default: the repository's bench/results when running from a checkout.
RESULTS_DIR: Final = Path(__file__).resolve().parent.parent / "bench" / "results"


def register(benchmarks: SubParsers) -> None:
    """Add ``store`` to ``rmq bench``."""
    parser = benchmarks.add_parser(
        "store",
        help="time the message store against a plain file, LMDB and sqlite",
        description=(
            "Append, read back and look up messages in rmq's store and in a plain file, LMDB and sqlite, "
            "and report rmq's throughput relative to each against the issue's targets."
        ),
    )
    parser.add_argument(
        "--count", type=positive_int, default=None,
        help=f"messages per size (default {DEFAULT_COUNT:,}; {QUICK_COUNT:,} with --quick)",
    )
    parser.add_argument(
        "--sizes", type=parse_sizes, default=DEFAULT_SIZES,
        help="comma-separated payload sizes in bytes (default 128,1024)",
    )
    parser.add_argument(
        "--lookups", type=positive_int, default=DEFAULT_LOOKUPS,
        help=f"random keys looked up per store (default {DEFAULT_LOOKUPS:,})",
    )
    parser.add_argument(
        "--peers", type=parse_peers(PEERS), default=tuple(PEERS),
        help=f"comma-separated peers to compare with, or 'none' (default {','.join(PEERS)})",
    )
    parser.add_argument(
        "--dir", type=Path, default=None,
        help="directory the stores are created in (default: a new temp dir on a disk-backed file system)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, dest="json_path", metavar="PATH",
        help="write the results here instead of bench/results/store-<UTC timestamp>.json and store-latest.json",
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=1,
        help="run every store this many times and report the fastest run of each phase (default 1)",
    )
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_COUNT:,} messages per size")
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false",
        help="skip writing and deleting a scratch file before each timed write (see warm_page_cache)",
    )
    parser.set_defaults(handler=run)


class Progress:
    """A rich status line while a phase runs and one dim line when it ends, so a long run shows where it is."""

    def __init__(self, console: Console) -> None:
        self.console = console

    @contextmanager
    def phase(self, text: str) -> Iterator[None]:
        with self.console.status(text):
            yield

    def done(self, row: Row) -> None:
        rate = "n/a" if row.msgs_per_s is None else f"{row.msgs_per_s:>12,.0f} msgs/s"
        self.console.print(f"[dim]  {row.size:>5} B  {row.store:<6} {row.op:<22} {rate}[/dim]")


def timed(work: Callable[[], T]) -> tuple[float, T]:
    """Run ``work`` once with a clean heap and no collector pauses; return (seconds, result)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = perf_counter()
        result = work()
        seconds = perf_counter() - start
    finally:
        if was_enabled:
            gc.enable()
    return seconds, result


def _fs_type(path: Path) -> str:
    """The file system type of the mount holding ``path`` (longest matching mount point in /proc/mounts)."""
    target = str(path.resolve())
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, fstype = mount, fields[2]
    except OSError:
        pass
    return fstype


def _disk_backed_parent() -> Path:
    """The system temp dir unless it is in memory (then /var/tmp, then the current directory)."""
    for candidate in (Path(tempfile.gettempdir()), Path("/var/tmp"), Path.cwd()):
        if candidate.is_dir() and _fs_type(candidate) not in MEMORY_FILESYSTEMS:
            return candidate
    return Path.cwd()


@contextmanager
def work_root(requested: Path | None) -> Iterator[Path]:
    """A fresh directory for this run's stores, under ``requested`` or on disk; removed (with its stores) after."""
    parent = requested if requested is not None else _disk_backed_parent()
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="rmq-bench-store-", dir=parent))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def store_dir(root: Path, name: str, size: int, mode: str) -> Iterator[Path]:
    """A fresh, empty directory for one store instance; deleted afterwards so stores never share page cache."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-{size}-{mode}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def warm_page_cache(root: Path, nbytes: int) -> None:
    """Write ``nbytes`` to a scratch file in ``root`` and delete it, just before a timed write.

    On this kind of VM, page-cache growth after a pause (such as building a store's inputs) runs up to 8x slower
    than growth right after page-cache pages were freed: buffered writes of 1 GiB measured 1.4-1.8 s after a
    3 s pause against 0.2 s straight after a scratch file was written and unlinked (touching anonymous memory
    does not help).  Unwarmed, the order of the stores and the length of their untimed preparation would decide
    the write numbers; warmed, every store starts in the same state.  The scratch data is never synced, so no
    disk work carries over into the timed phase.
    """
    scratch = root / "page-cache-warmup"
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        chunk = _WARMUP_CHUNK
        for _ in range(-(-nbytes // len(chunk))):
            os.write(fd, chunk)
    finally:
        os.close(fd)
        scratch.unlink()


def _phase(runner: Runner, op: str, work: Callable[[], Tally], expected: Tally, progress: Progress) -> Row:
    """Time one phase and refuse its numbers unless the store did all of the work."""
    w = runner.workload
    with progress.phase(f"{w.size} B · {runner.name}: {op} ({expected.count:,} messages)"):
        seconds, tally = timed(work)
    if (tally.count, tally.payload_bytes) != (expected.count, expected.payload_bytes):
        raise BenchError(
            f"{runner.name} {op} at {w.size} B handled {tally.count:,} messages / {tally.payload_bytes:,} payload "
            f"bytes, expected {expected.count:,} / {expected.payload_bytes:,}"
        )
    row = Row(
        runner.name, op, w.size, tally.count, tally.payload_bytes, seconds, runner.notes[op], tally.flush_seconds
    )
    progress.done(row)
    return row


def run_store(
    runner_type: type[Runner],
    workload: Workload,
    root: Path,
    progress: Progress,
    warmup: bool = True,
    options: Mapping[str, Any] | None = None,
) -> list[Row]:
    """All phases of one store at one size: async write, reads and lookups on that data, then a durable write.

    ``options`` are passed to the runner's constructor (rmq's take StoreConfig fields).
    """
    with progress.phase(f"{workload.size} B · {runner_type.name}: preparing inputs"):
        runner = runner_type(workload, **(options or {}))
    warmup_bytes = workload.count * (workload.size + WARMUP_OVERHEAD_PER_MESSAGE)

    def open_fresh(path: Path, durable: bool) -> None:
        with progress.phase(f"{workload.size} B · {runner.name}: opening"):
            runner.open(path, durable=durable)
            runner.settle()
        if warmup:
            with progress.phase(f"{workload.size} B · {runner.name}: warming the page cache"):
                warm_page_cache(root, warmup_bytes)

    everything = Tally(workload.count, workload.payload_bytes)
    found = Tally(len(workload.lookup_indices), len(workload.lookup_indices) * workload.size)
    rows: list[Row] = []
    with store_dir(root, runner.name, workload.size, "async") as path:
        open_fresh(path, durable=False)
        try:
            rows.append(_phase(runner, OP_WRITE_ASYNC, runner.write, everything, progress))
            for op in runner.read_ops:
                rows.append(_phase(runner, op, lambda op=op: runner.read(op), everything, progress))
            if runner.has_index:
                rows.append(_phase(runner, OP_LOOKUP, runner.lookup, found, progress))
            else:
                rows.append(Row(runner.name, OP_LOOKUP, workload.size, 0, 0, None, runner.notes[OP_LOOKUP]))
        finally:
            runner.close()
    with store_dir(root, runner.name, workload.size, "durable") as path:
        open_fresh(path, durable=True)
        try:
            rows.append(_phase(runner, OP_WRITE_DURABLE, runner.write, everything, progress))
        finally:
            runner.close()
    return rows


def _load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _make_console() -> Console:
    """Rich's console; wide enough for the table when output goes to a file or CI log (rich assumes 80 there)."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    return console


def _write_results(document: dict[str, Any], json_path: Path | None, stamp: str) -> list[Path]:
    """Write the JSON where asked, else as bench/results/store-<stamp>.json plus store-latest.json."""
    text = json.dumps(document, indent=2) + "\n"
    if json_path is not None:
        paths = [json_path]
    else:
        paths = [RESULTS_DIR / f"store-{stamp}.json", RESULTS_DIR / "store-latest.json"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return paths


def measure(
    stores: Sequence[type[Runner]],
    sizes: Sequence[int],
    count: int,
    lookups: int,
    repeat: int,
    root: Path,
    progress: Progress,
    warmup: bool,
    options: Mapping[str, Mapping[str, Any]],
) -> tuple[list[Row], list[dict[str, Any]]]:
    """Every store at every size, ``repeat`` times; returns all rows (every repetition) and the failures.

    ``options`` maps a store name to the keyword arguments its runner is built with.

    Repetitions go round all the stores before starting again, so a slow spell of the machine hits every store
    rather than all the samples of one.  A store that fails is reported and skipped; the others still run.
    """
    rows: list[Row] = []
    failures: list[dict[str, Any]] = []
    for size in sizes:
        with progress.phase(f"{size} B: building {count:,} payloads"):
            workload = build_workload(size, count, lookups)
        for repetition in range(repeat):
            for runner_type in stores:
                if any(f["store"] == runner_type.name and f["size"] == size for f in failures):
                    continue
                try:
                    rows += run_store(
                        runner_type, workload, root, progress, warmup=warmup, options=options.get(runner_type.name)
                    )
                except Exception as exc:  # one broken store must not hide the others' numbers
                    progress.console.print_exception(max_frames=8)
                    failures.append(
                        {"store": runner_type.name, "size": size, "repetition": repetition,
                         "error": f"{type(exc).__name__}: {exc}"}
                    )
        del workload
    return rows, failures


def run(args: argparse.Namespace) -> int:
    """The ``rmq bench store`` handler.  Exit status 1 when rmq's store could not run or any store failed."""
    console = _make_console()
    progress = Progress(console)
    count: int = args.count or (QUICK_COUNT if args.quick else DEFAULT_COUNT)
    sizes: Sequence[int] = args.sizes
    peers: Sequence[str] = args.peers
    rmq_error = rmq_unavailable_reason()
    if rmq_error is not None:
        console.print(f"[bold red]rmq store unavailable[/bold red] ({rmq_error}); running the peers only")
    stores: list[type[Runner]] = ([] if rmq_error else [RmqRunner]) + [PEERS[name] for name in peers]
    if not stores:
        console.print("[bold red]nothing to run[/bold red]: rmq's store is unavailable and no peers were chosen")
        return 1
    options = {RmqRunner.name: QUICK_RMQ_CONFIG} if args.quick else {}
    load_before = _load_average()
    if load_before is not None and load_before >= 0.5 * (os.cpu_count() or 1):
        console.print(
            f"[yellow]warning[/yellow]: load average {load_before:.2f} on {os.cpu_count()} CPUs before starting; "
            "other work on the machine will show up in the numbers"
        )
    started = _utc_now()
    with work_root(args.dir) as root:
        fs_type = _fs_type(root)
        console.print(
            f"rmq bench store: {count:,} messages x sizes {', '.join(f'{s} B' for s in sizes)}, batch {BATCH:,}, "
            f"{args.lookups:,} lookups, best of {args.repeat}; stores in {root} ({fs_type})"
        )
        if fs_type in MEMORY_FILESYSTEMS:
            console.print(f"[yellow]warning[/yellow]: {root} is on {fs_type}; fsync costs nothing there")
        samples, failures = measure(
            stores, sizes, count, args.lookups, args.repeat, root, progress, warmup=args.warmup, options=options
        )
    finished = _utc_now()
    rows = best_of(samples)
    checks = check_targets(rows, sizes)
    render_table(console, rows, peers, args.repeat)
    render_targets(console, checks)
    config = {
        "count": count,
        "sizes": list(sizes),
        "lookups": args.lookups,
        "batch": BATCH,
        "repeat": args.repeat,
        "peers": list(peers),
        "dir": str(root.parent),
        "fs_type": fs_type,
        "page_cache_warmup": args.warmup,
        "runner_options": options,
        # 1-minute load averages: a busy machine (a parallel build, a test run) explains otherwise odd numbers.
        "load_average_before": load_before,
        "load_average_after": _load_average(),
    }
    document = results_document(
        started=started.isoformat(),
        finished=finished.isoformat(),
        config=config,
        rmq_error=rmq_error,
        rows=rows,
        peers=peers,
        checks=checks,
        failures=failures,
    )
    for path in _write_results(document, args.json_path, started.strftime("%Y%m%dT%H%M%SZ")):
        console.print(f"results: {path}")
    return 1 if rmq_error or failures else 0
