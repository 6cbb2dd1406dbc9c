"""One clock for every timed mechanism of the broker (delays, expiry scans, persistence timers).

Timestamps are wall-clock milliseconds (they are stored in records and compared with clients'
times); waiting is trio's. Under ``trio.testing.MockClock`` both come from the mock: ``now_ms`` is the
wall time at construction plus the mock's elapsed time, and ``trio.sleep`` jumps — so a 2-hour delay
level can be tested in milliseconds. ``now_ms`` may be called from any thread (the store's retention
thread reads it).
"""
from __future__ import annotations

import time
from typing import Protocol

import trio

__all__ = ["BrokerClock", "TrioClockLike"]


class TrioClockLike(Protocol):
    def current_time(self) -> float: ...


class BrokerClock:
    def __init__(self, trio_clock: TrioClockLike | None = None) -> None:
        self._trio_clock = trio_clock
        self._base_ms = int(time.time() * 1000)
        self._start = trio_clock.current_time() if trio_clock is not None else 0.0

    @property
    def simulated(self) -> bool:
        return self._trio_clock is not None

    def now_ms(self) -> int:
        if self._trio_clock is None:
            return int(time.time() * 1000)
        return self._base_ms + int((self._trio_clock.current_time() - self._start) * 1000)

    async def sleep_ms(self, ms: float) -> None:
        await trio.sleep(max(0.0, ms) / 1000)

    async def sleep_until_ms(self, deadline_ms: int) -> None:
        await self.sleep_ms(deadline_ms - self.now_ms())
