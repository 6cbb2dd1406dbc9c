"""Counters behind GET_BROKER_RUNTIME_INFO and the admin tools: totals and per-minute rates.

Kept deliberately cheap (two integer adds per send or pull) because it sits on the hot path;
rates are derived when asked, from one snapshot per ``sample()`` call (the runtime-info handler or
a monitoring scrape), not from a timer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rmq_broker.clock import BrokerClock

__all__ = ["BrokerStats"]


class BrokerStats:
    def __init__(self, clock: BrokerClock) -> None:
        self._clock = clock
        self.boot_ms = clock.now_ms()
        self.put_messages = 0
        self.put_bytes = 0
        self.get_messages = 0
        self.get_bytes = 0
        self._last_sample = (self.boot_ms, 0, 0)
        self.put_tps = 0.0
        self.get_tps = 0.0

    def on_put(self, count: int, nbytes: int) -> None:
        self.put_messages += count
        self.put_bytes += nbytes

    def on_get(self, count: int, nbytes: int) -> None:
        self.get_messages += count
        self.get_bytes += nbytes

    def sample(self) -> None:
        """Update the rates from the counts since the previous sample."""
        now = self._clock.now_ms()
        then, puts, gets = self._last_sample
        elapsed_s = max(1e-3, (now - then) / 1000)
        self.put_tps = (self.put_messages - puts) / elapsed_s
        self.get_tps = (self.get_messages - gets) / elapsed_s
        self._last_sample = (now, self.put_messages, self.get_messages)
