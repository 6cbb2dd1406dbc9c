"""A fixed-rate metronome for a trio task, with microsecond precision and no helper thread.

The e2e benchmark sends message ``i`` at ``start + i / rate`` (every 200 µs at 5,000 msg/s). trio's own
timers cannot do that: the loop's ``epoll_wait`` timeout has millisecond granularity, so due times 200 µs
apart would leave in 1 ms bursts. A helper thread sleeping to each due time and waking the loop works, but
every tick then costs a thread wake-up, a GIL hand-over, a write to trio's wake-up socket and its drain —
about a third of the producer process's CPU at 5,000 msg/s, taken from the broker and consumer it measures.

On Linux a periodic ``timerfd`` (CLOCK_MONOTONIC) is the metronome instead: the kernel fires it every
``1 / rate`` seconds and the loop waits for it in the same ``epoll_wait`` as its sockets; one read tells how
many periods passed (more than one when the process fell behind, so no due message is lost). Elsewhere
(no timerfd) the pacer falls back to ``trio.sleep_until``, which keeps the rate but sends in millisecond
bursts — ``Pacer.precise`` says which one runs.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import sys
import time
from collections.abc import Callable
from typing import Final

import trio

__all__ = ["Pacer"]

CLOCK_MONOTONIC: Final = 1
TFD_NONBLOCK: Final = os.O_NONBLOCK
TFD_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0o2000000)
TFD_TIMER_ABSTIME: Final = 1
NS_PER_S: Final = 1_000_000_000
#: A timerfd read: the number of expirations since the last read, unsigned 64 bits, native order.
_EXPIRATIONS: Final = struct.Struct("=Q")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timespec(ns: int) -> _Timespec:
    return _Timespec(ns // NS_PER_S, ns % NS_PER_S)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                         ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return libc


class Pacer:
    """Calls ``tick(i)`` for i = 0, 1, ..., ``count - 1``, each no earlier than ``start_ns + i * period_ns``
    (CLOCK_MONOTONIC ns; ``period_ns`` is 1e9 / rate rounded to whole ns, the timer's own granularity).

    Usage: ``await Pacer(rate, count, start_ns).run(tick)``; ``tick`` must not block (hand the work to another
    task). A tick that is late (the loop was busy) is called as soon as the loop gets to it, never skipped.
    """

    def __init__(self, rate: float, count: int, start_ns: int) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 messages per second, not {rate!r}")
        if count < 0:
            raise ValueError(f"count must be >= 0, not {count}")
        self.rate = rate
        self.count = count
        self.start_ns = start_ns
        self.period_ns = max(1, round(NS_PER_S / rate))
        self._libc = _libc()

    @property
    def precise(self) -> bool:
        """True when a kernel timer paces (µs precision); False for trio's millisecond timers."""
        return self._libc is not None

    def due_ns(self, i: int) -> int:
        return self.start_ns + i * self.period_ns

    async def run(self, tick: Callable[[int], None]) -> None:
        if self._libc is None:
            await self._run_on_trio_timers(tick)
            return
        fd = self._libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"timerfd_create: {os.strerror(ctypes.get_errno())}")
        try:
            # The kernel fires at start + k * period exactly the due times below, so a wake-up is never a
            # period early; the read count is not used, the due times are (so nothing drifts or is lost).
            spec = _Itimerspec(_timespec(self.period_ns), _timespec(max(1, self.start_ns)))
            if self._libc.timerfd_settime(fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
                raise OSError(ctypes.get_errno(), f"timerfd_settime: {os.strerror(ctypes.get_errno())}")
            i = 0
            while i < self.count:
                while time.monotonic_ns() >= self.due_ns(i):
                    tick(i)
                    i += 1
                    if i >= self.count:
                        return
                await trio.lowlevel.wait_readable(fd)
                try:
                    os.read(fd, _EXPIRATIONS.size)     # only to re-arm readiness: the count is recomputed
                except BlockingIOError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.EAGAIN:
                        raise
        finally:
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    async def _run_on_trio_timers(self, tick: Callable[[int], None]) -> None:
        # trio.current_time() and CLOCK_MONOTONIC differ by an offset: translate due times once.
        offset_s = trio.current_time() - time.monotonic()
        for i in range(self.count):
            due_s = self.due_ns(i) / NS_PER_S
            if time.monotonic() < due_s:
                await trio.sleep_until(due_s + offset_s)
            tick(i)
