"""Exceptions of rmq_client.

``ClientError`` is what the client itself refuses or cannot do (Java's MQClientException): an invalid
message, no route for a topic, a client used after it was closed. ``BrokerError`` is a broker's refusal,
with the response code and remark (Java's MQBrokerException). Failures of the wire — a refused connection,
a timeout — stay ``rmq_remoting`` errors (``RemotingConnectError``, ``RemotingTimeoutError``, both
``RemotingError``), re-exported here so one import covers what a send can raise.

A send that failed on every attempt raises the exception of its last attempt, with a note (PEP 678)
listing the attempts.
"""
from __future__ import annotations

from rmq_remoting.errors import RemotingConnectError, RemotingError, RemotingTimeoutError

__all__ = [
    "ClientError", "BrokerError", "NoRouteError", "RemotingError", "RemotingConnectError", "RemotingTimeoutError",
]


class ClientError(Exception):
    """The client refused a request or could not carry it out (not a broker's answer, not the wire)."""


class NoRouteError(ClientError):
    """No nameserver knows a writable queue of the topic (and auto-creation through TBW102 was not possible)."""

    def __init__(self, topic: str, detail: str = "") -> None:
        super().__init__(f"No route info of this topic: {topic}" + (f" ({detail})" if detail else ""))
        self.topic = topic


class BrokerError(ClientError):
    """A broker (or nameserver) answered with an error code."""

    def __init__(self, code: int, remark: str | None, addr: str | None = None) -> None:
        where = f" from {addr}" if addr else ""
        super().__init__(f"CODE: {code} DESC: {remark}{where}")
        self.code = code
        self.remark = remark
        self.addr = addr
