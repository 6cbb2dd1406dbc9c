"""Building messages: ``make_message`` and the setters of RocketMQ's well-known properties.

A message is ``rmq_common.message.Message`` (topic, body, flag, properties); tags, keys, delay level and the
unique id live in its property map, as in Java (PROTOCOL.md §4.4). These helpers only set properties:

    from rmq_client import make_message
    msg = make_message("Orders", b"...", tags="created", keys=["order-42"], deliver_time_ms=t)

Delivery at a chosen time uses RocketMQ 5.x's timer properties (``TIMER_DELIVER_MS`` absolute ms since the
epoch, ``TIMER_DELAY_MS`` / ``TIMER_DELAY_SEC`` relative): rmq and 5.x brokers honour them, a 4.x broker stores
the message at once. A delay level (``DELAY``, 1-based into the broker's messageDelayLevel table, by default
``1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h``) works on every broker.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from rmq_common.message import Message, MessageExt
from rmq_common.properties import PropertyKey

__all__ = [
    "Message", "MessageExt", "make_message", "set_deliver_time_ms", "set_delay_ms", "set_delay_sec",
    "set_sharding_key",
]


def set_deliver_time_ms(msg: Message, deliver_time_ms: int) -> None:
    """Deliver at ``deliver_time_ms`` (ms since the epoch): TIMER_DELIVER_MS."""
    if deliver_time_ms <= 0:
        raise ValueError(f"deliver_time_ms must be positive, got {deliver_time_ms}")
    msg.properties[PropertyKey.TIMER_DELIVER_MS] = str(int(deliver_time_ms))


def set_delay_ms(msg: Message, delay_ms: int) -> None:
    """Deliver ``delay_ms`` after the broker received it: TIMER_DELAY_MS."""
    if delay_ms <= 0:
        raise ValueError(f"delay_ms must be positive, got {delay_ms}")
    msg.properties[PropertyKey.TIMER_DELAY_MS] = str(int(delay_ms))


def set_delay_sec(msg: Message, delay_sec: int) -> None:
    """Deliver ``delay_sec`` seconds after the broker received it: TIMER_DELAY_SEC."""
    if delay_sec <= 0:
        raise ValueError(f"delay_sec must be positive, got {delay_sec}")
    msg.properties[PropertyKey.TIMER_DELAY_SEC] = str(int(delay_sec))


def set_sharding_key(msg: Message, key: str) -> None:
    """RocketMQ 5.x's ``__SHARDINGKEY`` property (informational for 4.x brokers; ordering uses the selector)."""
    msg.properties["__SHARDINGKEY"] = key


def make_message(topic: str, body: bytes | bytearray | memoryview | str, *, tags: str | None = None,
                 keys: Iterable[str] | str | None = None, flag: int = 0, delay_level: int = 0,
                 deliver_time_ms: int | None = None, delay_ms: int | None = None,
                 wait_store_msg_ok: bool | None = None,
                 properties: Mapping[str, str] | None = None) -> Message:
    """A Message with the usual properties set; a ``str`` body is encoded as UTF-8.

    ``keys`` is a list of business keys (each indexed for queries) or one space-separated string;
    ``properties`` are user properties added first. ``delay_level`` and ``deliver_time_ms``/``delay_ms``
    are alternatives (a broker applies the delay level when both are present).
    """
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    msg = Message(topic, data, flag, dict(properties or {}))
    if tags is not None:
        msg.tags = tags
    if keys is not None:
        msg.keys = keys
    if delay_level:
        msg.delay_time_level = delay_level
    if deliver_time_ms is not None:
        set_deliver_time_ms(msg, deliver_time_ms)
    if delay_ms is not None:
        set_delay_ms(msg, delay_ms)
    if wait_store_msg_ok is not None:
        msg.wait_store_msg_ok = wait_store_msg_ok
    return msg
