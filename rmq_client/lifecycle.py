"""``AsyncLifecycle``: the start/close template every async client object (instance, producer, consumers,
admin) follows, so the subtle parts — rollback of a failed start, a shielded and bounded shutdown, idempotent
close, the caller's own exception seen unchanged through the nursery's wrapping — live in one place.

A subclass opens its resources on the ``AsyncExitStack`` it is handed in ``_open`` and releases what the stack
does not own in ``_shutdown``; the other hooks adjust its own state flags at fixed points:

``start``:  ``_begin_start`` (refuse a second start) → new stack → ``_open(stack)`` → ``_opened``.
            A failing ``_open`` runs ``_abort_start`` then closes the stack, and the error propagates.
``aclose`` / ``__aexit__``: idempotent; ``_shutdown`` runs shielded from cancellation (its own deadlines bound
            it) and an ``Exception`` from it is logged, not raised; then ``_stopping`` (cancels the nursery by
            default), the stack closes with the exit arguments, and ``_after_close`` runs however that went.
"""
from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any, Self

import trio

__all__ = ["AsyncLifecycle", "only_wraps"]

log = logging.getLogger("rmq_client")


def only_wraps(group: BaseExceptionGroup, exc: BaseException | None) -> bool:
    """True when ``group`` (nested groups included) holds nothing but ``exc``: the strict wrapping nurseries
    give the body's own exception, which the caller should see unchanged."""
    if exc is None:
        return False
    for inner in group.exceptions:
        if inner is exc:
            continue
        if isinstance(inner, BaseExceptionGroup) and only_wraps(inner, exc):
            continue
        return False
    return True


class AsyncLifecycle:
    """``async with`` / ``start`` + ``aclose`` over an ``AsyncExitStack`` (see the module docstring)."""

    _stack: AsyncExitStack | None = None
    #: The object's own nursery when it has one (opened on the stack in ``_open``); cancelled on close.
    _nursery: trio.Nursery | None = None

    # -- hooks ------------------------------------------------------------------------------------

    def _describe(self) -> str:
        """Who failed to shut down, for the log."""
        return type(self).__name__

    def _begin_start(self) -> None:
        """Raise when this object cannot start (it did already); runs before anything opens."""

    async def _open(self, stack: AsyncExitStack) -> None:
        """Open the resources; whatever is entered on ``stack`` is closed on failure and on close."""

    async def _abort_start(self) -> None:
        """``_open`` failed: undo what the stack will not, before the stack closes."""

    def _opened(self) -> None:
        """``_open`` succeeded and the stack is kept."""

    async def _shutdown(self) -> None:
        """The orderly part of closing, shielded from cancellation: bound every wait in it."""

    def _stopping(self) -> None:
        """After ``_shutdown`` (even a failed one), before the stack closes."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _after_close(self) -> None:
        """After the stack closed, whether or not that raised."""

    # -- template ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool | None:
        return await self._finish(exc_type, exc, tb)

    async def start(self) -> None:
        """Open everything; pair with ``aclose`` in the same task (``async with`` does both)."""
        self._begin_start()
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._open(stack)
        except BaseException:
            await self._abort_start()
            await stack.aclose()
            raise
        self._stack = stack
        self._opened()

    async def aclose(self) -> None:
        """Shut down and close (idempotent)."""
        await self._finish(None, None, None)

    async def _finish(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        suppress: bool | None = None
        try:
            try:
                with trio.CancelScope(shield=True):
                    await self._shutdown()
            except Exception:
                log.exception("%s: shutdown failed", self._describe())
        finally:
            self._stopping()
            try:
                suppress = await stack.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                # The nursery's strict wrapping of the body's own exception: let the caller see it unchanged.
                if not only_wraps(group, exc):
                    raise
                suppress = False
            finally:
                self._after_close()
        return suppress
