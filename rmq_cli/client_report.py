"""Results of ``rmq bench produce|consume|e2e|client``: latency statistics, the live meter, the graded table,
the JSON document and the plot.

Shared by rmq's runners (``rmq_cli.client_runners``) and the peers' (``bench/peers.py``), so both sides are
measured and reported the same way: a run counts messages and payload bytes between ``Meter.start()`` and
``Meter.finish()`` (perf_counter), samples the running count every ``SAMPLE_INTERVAL`` for the throughput-over-time
plot, and records one latency per request (produce: one batch sent and acknowledged; consume: one pull answered)
or per message (end-to-end: consumer's receipt minus the producer's CLOCK_MONOTONIC stamp in the body).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from rich.console import Console
from rich.table import Table

OP_PRODUCE: Final = "produce"
OP_CONSUME: Final = "consume"
OP_E2E: Final = "e2e"
OP_ORDER: Final = (OP_PRODUCE, OP_CONSUME, OP_E2E)
RMQ: Final = "rmq"
#: MB/s counts payload bytes in units of 10**6 (as ``rmq bench store``).
MB: Final = 1_000_000
#: Percentiles every latency summary carries (p99.9 as 99.9).
PERCENTILES: Final = (50.0, 90.0, 99.0, 99.9)
#: Seconds between two samples of a run's count (the throughput-over-time plot).
SAMPLE_INTERVAL: Final = 0.1
#: Seconds between two refreshes of the live progress bar.
REFRESH_INTERVAL: Final = 0.25


# -- latency statistics ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Summary of latency samples in microseconds: count, mean, p50/p90/p99/p99.9 and the extremes.

    Percentiles are nearest-rank (the smallest sample with at least p % of the samples at or below it), so every
    reported value is a latency that was actually observed; p99.9 of fewer than 1,000 samples is the maximum.
    """

    count: int
    mean_us: float
    min_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float

    @classmethod
    def from_ns(cls, samples_ns: Iterable[int] | Any) -> LatencyStats | None:
        """Statistics of latencies given in nanoseconds (any iterable or numpy array); None when empty."""
        import numpy as np

        values = np.sort(np.asarray(samples_ns, dtype=np.int64))
        n = len(values)
        if n == 0:
            return None
        pct = [float(values[nearest_rank(n, p)]) / 1000.0 for p in PERCENTILES]
        return cls(n, float(values.mean()) / 1000.0, float(values[0]) / 1000.0, *pct, float(values[-1]) / 1000.0)

    def to_json(self) -> dict[str, float | int]:
        return {"count": self.count, "mean": self.mean_us, "min": self.min_us, "p50": self.p50_us,
                "p90": self.p90_us, "p99": self.p99_us, "p99.9": self.p999_us, "max": self.max_us}


def nearest_rank(n: int, percentile: float) -> int:
    """Index (0-based, into ``n`` sorted samples) of the nearest-rank ``percentile``: ceil(p/100 * n) - 1."""
    if n <= 0:
        raise ValueError("no samples")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    # round() first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point, whose ceiling would skip a rank.
    return max(0, min(n - 1, math.ceil(round(percentile / 100.0 * n, 9)) - 1))


# -- the live meter ----------------------------------------------------------------------------------------


class Meter:
    """Counts one run's messages, samples the count over time, keeps latencies, and drives the progress bar.

    ``update(done, rate, final)`` is called at most every REFRESH_INTERVAL with the messages so far and the current
    rate, and once more by ``finish`` (``final`` True, the run's mean rate); the runner calls ``add`` after each
    request and ``tick`` whenever it may (both are cheap between samples).
    """

    __slots__ = ("count", "payload_bytes", "latencies_ns", "timeline", "started", "finished", "_next_sample",
                 "_next_refresh", "_update", "_last_refresh_count", "_last_refresh_t", "rate")

    def __init__(self, update: Callable[[int, float, bool], None] | None = None) -> None:
        self.count = 0
        self.payload_bytes = 0
        self.latencies_ns: list[int] = []
        #: (seconds since start, messages so far), every SAMPLE_INTERVAL.
        self.timeline: list[tuple[float, int]] = []
        self.started = 0.0
        self.finished = 0.0
        self._next_sample = math.inf
        self._next_refresh = math.inf
        self._update = update
        self._last_refresh_count = 0
        self._last_refresh_t = 0.0
        self.rate = 0.0

    def start(self) -> None:
        now = time.perf_counter()
        self.count = self.payload_bytes = 0
        self.latencies_ns = []
        self.timeline = [(0.0, 0)]
        self.started = now
        self.finished = 0.0
        self._next_sample = now + SAMPLE_INTERVAL
        self._next_refresh = now + REFRESH_INTERVAL
        self._last_refresh_t = now
        self._last_refresh_count = 0

    def add(self, messages: int, payload_bytes: int, latency_ns: int | None = None) -> None:
        self.count += messages
        self.payload_bytes += payload_bytes
        if latency_ns is not None:
            self.latencies_ns.append(latency_ns)
        self.tick()

    def tick(self) -> None:
        now = time.perf_counter()
        if now < self._next_sample:
            return
        while self._next_sample <= now:
            self._next_sample += SAMPLE_INTERVAL
        self.timeline.append((now - self.started, self.count))
        if now >= self._next_refresh:
            self.rate = (self.count - self._last_refresh_count) / (now - self._last_refresh_t)
            self._last_refresh_count, self._last_refresh_t = self.count, now
            self._next_refresh = now + REFRESH_INTERVAL
            if self._update is not None:
                self._update(self.count, self.rate, False)

    def finish(self) -> float:
        """Stop the clock; returns the seconds measured."""
        self.finished = time.perf_counter()
        seconds = self.finished - self.started
        if not self.timeline or self.timeline[-1][1] != self.count:
            self.timeline.append((seconds, self.count))
        if self._update is not None:
            self._update(self.count, self.count / seconds if seconds > 0 else 0.0, True)
        return seconds

    @property
    def seconds(self) -> float:
        end = self.finished or time.perf_counter()
        return end - self.started


# -- results -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    """One workload on one system at one size: a row of the table (``seconds`` None: not run, see ``note``)."""

    system: str
    op: str
    size: int
    count: int = 0
    payload_bytes: int = 0
    seconds: float | None = None
    latency: LatencyStats | None = None
    #: What one latency sample is (``per batch of 128 sends``, ``per pull``, ``per message``).
    latency_of: str = ""
    note: str = ""
    timeline: list[tuple[float, int]] = field(default_factory=list)
    #: Raw latencies (ns) kept for the histogram of end-to-end runs; not written to the JSON.
    latencies_ns: list[int] = field(default_factory=list, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_meter(cls, system: str, op: str, size: int, meter: Meter, *, latency_of: str, note: str = "",
                   keep_latencies: bool = False, **extra: Any) -> RunResult:
        seconds = meter.seconds
        return cls(system, op, size, meter.count, meter.payload_bytes, seconds,
                   LatencyStats.from_ns(meter.latencies_ns), latency_of, note, list(meter.timeline),
                   list(meter.latencies_ns) if keep_latencies else [], dict(extra))

    @classmethod
    def skipped(cls, system: str, op: str, size: int, reason: str) -> RunResult:
        return cls(system, op, size, note=reason)

    @property
    def msgs_per_s(self) -> float | None:
        return None if not self.seconds else self.count / self.seconds

    @property
    def mb_per_s(self) -> float | None:
        return None if not self.seconds else self.payload_bytes / self.seconds / MB

    def to_json(self) -> dict[str, Any]:
        return {"system": self.system, "op": self.op, "size": self.size, "count": self.count,
                "payload_bytes": self.payload_bytes, "seconds": self.seconds, "msgs_per_s": self.msgs_per_s,
                "mb_per_s": self.mb_per_s, "latency_us": None if self.latency is None else self.latency.to_json(),
                "latency_of": self.latency_of, "note": self.note,
                "timeline": [[round(t, 4), n] for t, n in self.timeline], **self.extra}


# -- targets -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """An absolute target of the issue for rmq at one size: ``metric`` at least (or at most) ``limit``."""

    label: str
    op: str
    size: int
    metric: str          # "msgs_per_s", "p50_us" or "p99_us"
    limit: float
    higher_is_better: bool


#: The issue's targets on the 2-core box (Python client, one connection): Redis's native and Python-client figures.
TARGETS: Final = (
    Target("produce 128 B >= 525,000 msg/s", OP_PRODUCE, 128, "msgs_per_s", 525_000, True),
    Target("produce 1 KiB >= 230,000 msg/s", OP_PRODUCE, 1024, "msgs_per_s", 230_000, True),
    Target("consume 128 B >= 1,200,000 msg/s", OP_CONSUME, 128, "msgs_per_s", 1_200_000, True),
    Target("consume 1 KiB >= 900,000 msg/s", OP_CONSUME, 1024, "msgs_per_s", 900_000, True),
    Target("e2e 128 B @ 5k msg/s p50 <= 81 µs", OP_E2E, 128, "p50_us", 81, False),
    Target("e2e 128 B @ 5k msg/s p99 <= 211 µs", OP_E2E, 128, "p99_us", 211, False),
    Target("e2e 1 KiB @ 5k msg/s p50 <= 81 µs", OP_E2E, 1024, "p50_us", 81, False),
    Target("e2e 1 KiB @ 5k msg/s p99 <= 211 µs", OP_E2E, 1024, "p99_us", 211, False),
)


@dataclass(frozen=True, slots=True)
class TargetCheck:
    target: Target
    value: float | None

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        t = self.target
        return self.value >= t.limit if t.higher_is_better else self.value <= t.limit


def metric(row: RunResult, name: str) -> float | None:
    if name == "msgs_per_s":
        return row.msgs_per_s
    if row.latency is None:
        return None
    return {"p50_us": row.latency.p50_us, "p99_us": row.latency.p99_us}[name]


def find(rows: Sequence[RunResult], system: str, op: str, size: int) -> RunResult | None:
    for row in rows:
        if (row.system, row.op, row.size) == (system, op, size) and row.seconds is not None:
            return row
    return None


def check_targets(rows: Sequence[RunResult]) -> list[TargetCheck]:
    """The targets whose workload and size were run (by rmq)."""
    checks = []
    for target in TARGETS:
        ran = any((r.system, r.op, r.size) == (RMQ, target.op, target.size) for r in rows)
        if not ran:
            continue
        row = find(rows, RMQ, target.op, target.size)
        checks.append(TargetCheck(target, None if row is None else metric(row, target.metric)))
    return checks


def ratio(rows: Sequence[RunResult], row: RunResult, peer: str) -> tuple[float | None, str]:
    """rmq over ``peer`` for rmq's ``row``: msgs/s for produce and consume, p50 latency for e2e (lower is better)."""
    other = find(rows, peer, row.op, row.size)
    if other is None or row.seconds is None:
        return None, ""
    if row.op == OP_E2E:
        if row.latency is None or other.latency is None or not other.latency.p50_us:
            return None, ""
        return row.latency.p50_us / other.latency.p50_us, "p50"
    mine, theirs = row.msgs_per_s, other.msgs_per_s
    return (None, "") if mine is None or not theirs else (mine / theirs, "")


# -- rendering ---------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _fmt_us(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def sort_rows(rows: Iterable[RunResult], systems: Sequence[str]) -> list[RunResult]:
    def key(row: RunResult) -> tuple[int, int, int]:
        op = OP_ORDER.index(row.op) if row.op in OP_ORDER else len(OP_ORDER)
        system = systems.index(row.system) if row.system in systems else len(systems)
        return op, row.size, system

    return sorted(rows, key=key)


def render_table(console: Console, rows: Sequence[RunResult], peers: Sequence[str], title: str) -> None:
    """One table: every run, rmq first in each (op, size) group, with rmq/peer ratios and the target verdict."""
    checks = {(c.target.op, c.target.size): [] for c in check_targets(rows)}
    for c in check_targets(rows):
        checks[(c.target.op, c.target.size)].append(c)
    table = Table(title=title, title_justify="left")
    for name, justify in (("system", "left"), ("op", "left"), ("size", "right"), ("msgs/s", "right"),
                          ("MB/s", "right"), ("p50 µs", "right"), ("p90 µs", "right"), ("p99 µs", "right"),
                          ("p99.9 µs", "right"), ("max µs", "right")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for peer in peers:
        table.add_column(f"rmq/{peer}", justify="right", no_wrap=True)
    table.add_column("target", no_wrap=True)
    table.add_column("note", overflow="fold")
    previous: tuple[str, int] | None = None
    for row in sort_rows(rows, [RMQ, *peers]):
        group = (row.op, row.size)
        if previous is not None and group != previous:
            table.add_section()
        previous = group
        lat = row.latency
        ratios = []
        for peer in peers:
            if row.system != RMQ:
                ratios.append("")
                continue
            value, what = ratio(rows, row, peer)
            ratios.append("n/a" if value is None else f"{what} {value:.2f}x".strip())
        verdicts = []
        if row.system == RMQ:
            for check in checks.get(group, []):
                if check.met is None:
                    verdicts.append("[dim]not run[/dim]")
                else:
                    word = "[green]met[/green]" if check.met else "[red]missed[/red]"
                    what = {"msgs_per_s": "", "p50_us": "p50 ", "p99_us": "p99 "}[check.target.metric]
                    verdicts.append(f"{what}{word}")
        note = row.note
        if lat is not None and row.latency_of:
            note = f"latency {row.latency_of}" + (f"; {note}" if note else "")
        table.add_row(
            row.system, row.op, f"{row.size} B", _fmt(row.msgs_per_s, ",.0f"), _fmt(row.mb_per_s, ",.1f"),
            _fmt_us(lat and lat.p50_us), _fmt_us(lat and lat.p90_us), _fmt_us(lat and lat.p99_us),
            _fmt_us(lat and lat.p999_us), _fmt_us(lat and lat.max_us), *ratios, ", ".join(verdicts), note,
            style="bold" if row.system == RMQ else None,
        )
    console.print(table)


def render_targets(console: Console, checks: Sequence[TargetCheck]) -> None:
    if not checks:
        return
    console.print("[bold]Targets from the issue[/bold] (2-core box, Python client, one connection)")
    for check in checks:
        if check.met is None:
            verdict = "[dim]not run[/dim]"
        elif check.met:
            verdict = "[green]met[/green]    "
        else:
            verdict = "[red]missed[/red] "
        spec = ",.0f" if check.target.metric == "msgs_per_s" else ",.1f"
        unit = " msg/s" if check.target.metric == "msgs_per_s" else " µs"
        value = "n/a" if check.value is None else format(check.value, spec) + unit
        console.print(f"  {verdict}  {check.target.label:<40} measured {value}")
    graded = [c for c in checks if c.met is not None]
    if graded:
        console.print(f"  {sum(bool(c.met) for c in graded)} of {len(graded)} measured targets met")


# -- JSON and plot -----------------------------------------------------------------------------------------


def results_document(*, started: str, finished: str, config: dict[str, Any], rows: Sequence[RunResult],
                     peers: Sequence[str], peer_status: dict[str, Any], failures: Sequence[dict[str, Any]],
                     notes: Sequence[str]) -> dict[str, Any]:
    from rmq_cli.store_report import machine_info

    ordered = sort_rows(rows, [RMQ, *peers])
    ratios = []
    for row in ordered:
        if row.system != RMQ:
            continue
        for peer in peers:
            value, what = ratio(rows, row, peer)
            ratios.append({"op": row.op, "size": row.size, "peer": peer, "ratio": value,
                           "of": "p50 latency" if what else "msgs/s"})
    return {
        "benchmark": "client",
        "started_utc": started,
        "finished_utc": finished,
        "units": {"msgs_per_s": "messages / second", "mb_per_s": "payload bytes / 10**6 per second",
                  "latency_us": "microseconds", "ratio": "rmq / peer (msgs/s; p50 latency for e2e)"},
        "config": config,
        "machine": machine_info(),
        "peers": peer_status,
        "rows": [r.to_json() for r in ordered],
        "ratios": ratios,
        "targets": [{"label": c.target.label, "op": c.target.op, "size": c.target.size,
                     "metric": c.target.metric, "limit": c.target.limit, "value": c.value, "met": c.met}
                    for c in check_targets(rows)],
        "notes": list(notes),
        "failures": list(failures),
    }


def write_plot(path: str | os.PathLike[str], rows: Sequence[RunResult], title: str) -> None:
    """Throughput over time of every produce/consume run, and the end-to-end latency histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_produce, ax_consume, ax_hist) = plt.subplots(3, 1, figsize=(11, 12))
    for op, ax in ((OP_PRODUCE, ax_produce), (OP_CONSUME, ax_consume)):
        plotted = False
        for row in rows:
            if row.op != op or len(row.timeline) < 2:
                continue
            t = np.array([p[0] for p in row.timeline], dtype=float)
            n = np.array([p[1] for p in row.timeline], dtype=float)
            dt = np.diff(t)
            keep = dt >= SAMPLE_INTERVAL / 2          # a short last interval would be a spike of noise
            if not keep.any():
                continue
            rate = np.diff(n)[keep] / dt[keep]
            style = "-" if row.system == RMQ else "--"
            ax.plot(t[1:][keep], rate, style, marker=".", label=f"{row.system} {row.op} {row.size} B")
            plotted = True
        ax.set_xlabel("seconds since the run started")
        ax.set_ylabel("messages / s")
        ax.set_title(f"{op} throughput over time (per {SAMPLE_INTERVAL:g} s)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {op} run", ha="center", va="center", transform=ax.transAxes)
    hist_rows = [r for r in rows if r.op == OP_E2E and r.latencies_ns]
    if hist_rows:
        all_us = np.concatenate([np.asarray(r.latencies_ns, dtype=float) / 1000.0 for r in hist_rows])
        lo, hi = max(1.0, float(all_us.min())), max(2.0, float(np.percentile(all_us, 99.99)))
        bins = np.logspace(np.log10(lo), np.log10(hi), 80)
        for row in hist_rows:
            us = np.asarray(row.latencies_ns, dtype=float) / 1000.0
            p50 = row.latency.p50_us if row.latency else float("nan")
            p99 = row.latency.p99_us if row.latency else float("nan")
            ax_hist.hist(us, bins=bins, histtype="step", linewidth=1.5,
                         label=f"{row.system} {row.size} B (p50 {p50:.0f} µs, p99 {p99:.0f} µs)")
        ax_hist.set_xscale("log")
        ax_hist.legend(fontsize=8)
    else:
        ax_hist.text(0.5, 0.5, "no end-to-end run", ha="center", va="center", transform=ax_hist.transAxes)
    ax_hist.set_xlabel("end-to-end latency, µs (log scale)")
    ax_hist.set_ylabel("messages")
    ax_hist.set_title("end-to-end latency histogram")
    ax_hist.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
