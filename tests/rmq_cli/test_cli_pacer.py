"""The e2e benchmark's metronome: every tick once, in order, never before its due time, late ticks not lost."""
import time

import pytest
import trio

from rmq_cli import pacer as pacer_mod
from rmq_cli.pacer import Pacer


def _run(pacer: Pacer) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        with trio.fail_after(5):
            await pacer.run(lambda i: seen.append((i, time.monotonic_ns())))

    trio.run(main)
    return seen


@pytest.mark.parametrize("kernel_timer", [True, False])
def test_every_tick_in_order_and_not_early(monkeypatch, kernel_timer):
    if not kernel_timer:
        monkeypatch.setattr(pacer_mod, "_libc", lambda: None)
    pacer = Pacer(4000.0, 60, time.monotonic_ns() + 1_000_000)
    if kernel_timer and not pacer.precise:
        pytest.skip("no timerfd on this platform")
    assert pacer.precise is kernel_timer
    seen = _run(pacer)
    assert [i for i, _ in seen] == list(range(60))
    assert all(at >= pacer.due_ns(i) for i, at in seen)
    assert pacer.due_ns(59) - pacer.due_ns(0) == 59 * 250_000


def test_a_late_start_sends_the_overdue_ticks_at_once():
    # The 20 due times (1 ms apart) all lie 11 ms or more in the past: every one is overdue, none is skipped.
    pacer = Pacer(1000.0, 20, time.monotonic_ns() - 30_000_000)
    seen = _run(pacer)
    assert [i for i, _ in seen] == list(range(20))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="rate"):
        Pacer(0, 1, 0)
    with pytest.raises(ValueError, match="count"):
        Pacer(10.0, -1, 0)
    assert _run(Pacer(10.0, 0, time.monotonic_ns())) == []
