"""AsyncLifecycle: the start/close template the client objects share (rollback, shield, idempotence, errors)."""
from __future__ import annotations

import logging
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from rmq_client.lifecycle import AsyncLifecycle, only_wraps


class Recorder(AsyncLifecycle):
    """Records the order of the hooks; ``fail_open`` / ``fail_shutdown`` make those steps raise."""

    def __init__(self, *, fail_open: bool = False, fail_shutdown: bool = False) -> None:
        self.events: list[str] = []
        self.fail_open = fail_open
        self.fail_shutdown = fail_shutdown

    @asynccontextmanager
    async def _resource(self):
        self.events.append("resource open")
        try:
            yield
        finally:
            self.events.append("resource closed")

    def _begin_start(self) -> None:
        if self._stack is not None:
            raise RuntimeError("started already")
        self.events.append("begin")

    async def _open(self, stack: AsyncExitStack) -> None:
        await stack.enter_async_context(self._resource())
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._nursery.start_soon(trio.sleep_forever)
        if self.fail_open:
            raise ValueError("open failed")

    async def _abort_start(self) -> None:
        self.events.append("abort")
        if self._nursery is not None:       # the stack would wait for its tasks otherwise
            self._nursery.cancel_scope.cancel()

    def _opened(self) -> None:
        self.events.append("opened")

    async def _shutdown(self) -> None:
        self.events.append("shutdown")
        # Shielded: a checkpoint here must not raise Cancelled even when the caller was cancelled.
        await trio.lowlevel.checkpoint()
        if self.fail_shutdown:
            raise OSError("shutdown failed")

    def _stopping(self) -> None:
        super()._stopping()
        self.events.append("stopping")

    def _after_close(self) -> None:
        self.events.append("closed")


def test_start_then_close_runs_hooks_in_order_and_close_is_idempotent():
    async def main():
        obj = Recorder()
        async with obj as entered:
            assert entered is obj
            with pytest.raises(RuntimeError, match="started already"):
                await obj.start()
        await obj.aclose()                      # a second close does nothing
        return obj.events

    assert trio.run(main) == ["begin", "resource open", "opened", "shutdown", "stopping", "resource closed",
                              "closed"]


def test_failed_open_aborts_closes_the_stack_and_propagates():
    async def main():
        obj = Recorder(fail_open=True)
        with pytest.raises(BaseException) as info:
            await obj.start()
        await obj.aclose()                      # never started: nothing to close
        return obj, info.value

    obj, error = trio.run(main)
    assert isinstance(error, ValueError) or (isinstance(error, BaseExceptionGroup)
                                             and error.subgroup(ValueError) is not None)
    assert obj.events == ["begin", "resource open", "abort", "resource closed"]
    assert obj._stack is None


def test_shutdown_error_is_logged_and_close_still_completes(caplog):
    async def main():
        obj = Recorder(fail_shutdown=True)
        await obj.start()
        await obj.aclose()
        return obj.events

    with caplog.at_level(logging.ERROR, logger="rmq_client"):
        events = trio.run(main)
    assert events[-3:] == ["stopping", "resource closed", "closed"]
    assert "Recorder: shutdown failed" in caplog.text


def test_body_exception_reaches_the_caller_unwrapped_and_shutdown_is_shielded():
    async def main():
        obj = Recorder()
        with pytest.raises(KeyError):
            async with obj:
                raise KeyError("body")
        cancelled_obj = Recorder()
        with trio.move_on_after(0) as scope:
            async with cancelled_obj:
                await trio.sleep_forever()
        return obj.events, cancelled_obj.events, scope.cancelled_caught

    events, cancelled_events, caught = trio.run(main)
    assert events[-4:] == ["shutdown", "stopping", "resource closed", "closed"]
    assert caught
    assert cancelled_events[-4:] == ["shutdown", "stopping", "resource closed", "closed"]


def test_only_wraps_sees_through_nested_groups_only_for_the_same_exception():
    exc = KeyError("x")
    assert only_wraps(BaseExceptionGroup("g", [exc, BaseExceptionGroup("h", [exc])]), exc)
    assert not only_wraps(BaseExceptionGroup("g", [exc, ValueError()]), exc)
    assert not only_wraps(BaseExceptionGroup("g", [exc]), None)
