"""Exceptions of the remoting layer.

One hierarchy so callers can catch ``RemotingError`` for "the peer or the wire failed" and still tell
the cases apart: a broken frame (the connection is unusable), a failed connection (safe to retry
elsewhere, as RocketMQ clients do) and a timeout (the request may still have been executed).
"""
from __future__ import annotations


class RemotingError(Exception):
    """Base class of every error raised by rmq_remoting."""


class FrameError(RemotingError, ValueError):
    """A frame or header violates the wire format (PROTOCOL.md §1); the connection must be closed."""


class RemotingConnectError(RemotingError, ConnectionError):
    """Could not connect, or the connection died before the answer arrived."""


class RemotingTimeoutError(RemotingError, TimeoutError):
    """No answer within the call's timeout; the peer may still execute the request."""


class RemotingCommandError(RemotingError, ValueError):
    """A well-framed request whose header fields are missing or invalid (RocketMQ's
    RemotingCommandException): answered with SYSTEM_ERROR and this message as the remark; the
    connection stays open. ``field`` names the offending header field when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
