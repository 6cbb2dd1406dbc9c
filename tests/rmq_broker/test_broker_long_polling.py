"""PullHoldService.notify asks the reader to let the pulls it woke answer before the send's acknowledgement, and
only when it woke one."""
import trio
import trio.testing

from rmq_broker.long_polling import PullHoldService
from rmq_remoting import connection


def test_notify_marks_urgent_only_when_it_wakes_a_pull():
    async def main():
        holds = PullHoldService()
        results: list[bool] = []

        async def hold(offset: int) -> None:
            results.append(await holds.wait("T", 0, offset, 5.0))

        connection._clear_yield_before_flush()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold, 3)
            await trio.testing.wait_all_tasks_blocked()
            assert holds.held == 1
            holds.notify("T", 0, 3)                 # the queue ends at 3: the pull at offset 3 still waits
            holds.notify("T", 1, 10)                # another queue: nobody waits there
            assert not connection._yield_before_flush and holds.held == 1
            holds.notify("T", 0, 4)
            assert connection._yield_before_flush
        connection._clear_yield_before_flush()
        assert results == [True] and holds.held == 0

    trio.run(main)
