"""Message ids: offset ids (store host + commitlog offset) and client unique ids (PROTOCOL.md §4.5).

Two id kinds coexist.  The *offset* id is what the broker returns as ``msgId`` in a send reply; clients decode it
and send VIEW_MESSAGE_BY_ID to the encoded address, so it must be the exact Java byte layout.  The *unique* id
(``UNIQ_KEY`` property) is made by producers; we generate it for tools and internal producers in the Java layout so
that ids from rmq look like every other RocketMQ id (consumers treat it as opaque).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

import numpy as np

__all__ = [
    "OFFSET_MSG_ID_LENGTH_V4",
    "OFFSET_MSG_ID_LENGTH_V6",
    "UNIQUE_ID_LENGTH",
    "host_to_bytes",
    "bytes_to_host",
    "create_offset_msg_id",
    "join_offset_msg_ids",
    "decode_offset_msg_id",
    "UniqueIdGenerator",
    "create_unique_ids",
    "create_unique_id",
]

#: Hex length of an offset id with an IPv4 store host: (4 + 4 + 8) bytes.
OFFSET_MSG_ID_LENGTH_V4: Final = 32
#: Hex length of an offset id with an IPv6 store host: (16 + 4 + 8) bytes.
OFFSET_MSG_ID_LENGTH_V6: Final = 56
#: Hex length of a unique id: ip 4 + pid 2 + process tag 4 + time 4 + counter 2 bytes.
UNIQUE_ID_LENGTH: Final = 32

_PORT_OFFSET: Final = struct.Struct(">iq")
_INT64_MAX: Final = (1 << 63) - 1
_PHY_OFFSET_BYTES: Final = 8
#: From this many ids on, ``next_ids`` builds them as one byte matrix (below, formatting each is cheaper).
_VECTOR_IDS_FROM: Final = 16
#: Strict hex: ``bytes.fromhex`` alone would also skip whitespace and yield a short buffer.
_HEX: Final = re.compile(r"[0-9A-Fa-f]*")


@functools.lru_cache(maxsize=1024)
def host_to_bytes(host: str) -> bytes:
    """Return the 4 (IPv4) or 16 (IPv6) address bytes of a numeric host, as stored in records and ids.

    Memoized: a broker answers every message of a batch with an offset id of its own store host, and parsing the
    address with ``ipaddress`` was most of the broker's time per batch (the same few hosts recur).

    IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``, what a dual-stack socket reports for IPv4 peers) collapse to
    4 bytes because Java's ``InetAddress`` does the same; otherwise we would write 20-byte hosts that CPP and Node
    clients cannot parse.  Brackets around IPv6 literals are accepted.  Raises ValueError for anything that is not
    an IP literal: host names would need DNS, and ids must not depend on it.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not a numeric IPv4/IPv6 address: {host!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.packed
    return addr.packed


def bytes_to_host(b: bytes | bytearray | memoryview) -> str:
    """Return the textual address for 4 or 16 address bytes; raises ValueError for any other length."""
    raw = bytes(b)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if len(raw) == 16:
        return str(ipaddress.IPv6Address(raw))
    raise ValueError(f"an address is 4 (IPv4) or 16 (IPv6) bytes, got {len(raw)}")


def create_offset_msg_id(host: str, port: int, phy_offset: int) -> str:
    """Return the offset message id for a record at commitlog offset ``phy_offset`` stored by ``host:port``.

    Layout (``MessageDecoder.createMessageId``): address bytes, int32 port, int64 offset, big-endian, as upper-case
    hex (``UtilAll.bytes2string``) -- 32 characters for IPv4, 56 for IPv6.  Raises ValueError for a port outside
    0..65535 or an offset outside 0..2**63-1, since such an id could never be resolved.
    """
    if not 0 <= phy_offset <= _INT64_MAX:
        raise ValueError(f"commitlog offset must be in 0..2**63-1, got {phy_offset}")
    return f"{_offset_msg_id_prefix(host, port)}{phy_offset:016X}"


def join_offset_msg_ids(host: str, port: int, phy_offsets: Iterable[int]) -> str:
    """The comma-joined offset ids of records stored by ``host:port`` (a batch send's reply ``msgId``), as
    ``",".join(create_offset_msg_id(host, port, p) for p in phy_offsets)`` gives them.

    Built as one byte matrix (a row per id: the cached address prefix, the offset's hex, a comma) instead of one
    string per id: a reply to a batch of 256 costs ~10 µs instead of ~90 µs.
    """
    offsets = np.asarray(phy_offsets, dtype=np.int64) if not isinstance(phy_offsets, np.ndarray) else phy_offsets
    count = len(offsets)
    if count == 0:
        return ""
    if offsets.min() < 0:
        raise ValueError(f"commitlog offset must be in 0..2**63-1, got {int(offsets.min())}")
    prefix = _offset_msg_id_prefix(host, port).encode("ascii")
    width = len(prefix) + 2 * _PHY_OFFSET_BYTES + 1
    rows = np.empty((count, width), np.uint8)
    rows[:, :len(prefix)] = np.frombuffer(prefix, np.uint8)
    offsets_hex = offsets.astype(">i8").tobytes().hex().upper().encode("ascii")
    rows[:, len(prefix):-1] = np.frombuffer(offsets_hex, np.uint8).reshape(count, 2 * _PHY_OFFSET_BYTES)
    rows[:, -1] = ord(",")
    return rows.tobytes()[:-1].decode("ascii")


@functools.lru_cache(maxsize=1024)
def _offset_msg_id_prefix(host: str, port: int) -> str:
    """The hex of an offset id's address and port: the same for every record a broker stores, so formatted once
    (a batch reply carries one id per message)."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port must be in 0..65535, got {port}")
    return (host_to_bytes(host) + port.to_bytes(4, "big")).hex().upper()


def decode_offset_msg_id(msg_id: str) -> tuple[str, int, int]:
    """Decode an offset message id into ``(host, port, commitlog offset)``.

    The address width is inferred from the length (32 or 56 hex characters); either hex case is accepted, as Java's
    ``UtilAll.string2bytes`` upper-cases first.  Raises ValueError naming the problem for a wrong length, non-hex
    characters, or a port/offset that cannot be real -- clients send us these ids, so they are untrusted input.
    """
    if len(msg_id) == OFFSET_MSG_ID_LENGTH_V4:
        addr_len = 4
    elif len(msg_id) == OFFSET_MSG_ID_LENGTH_V6:
        addr_len = 16
    else:
        raise ValueError(
            f"offset message id must be {OFFSET_MSG_ID_LENGTH_V4} (IPv4) or {OFFSET_MSG_ID_LENGTH_V6} (IPv6) "
            f"hex characters, got {len(msg_id)}: {msg_id!r}"
        )
    if _HEX.fullmatch(msg_id) is None:
        raise ValueError(f"offset message id contains non-hex characters: {msg_id!r}")
    raw = bytes.fromhex(msg_id)
    port, offset = _PORT_OFFSET.unpack_from(raw, addr_len)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"offset message id {msg_id!r} encodes an invalid port {port}")
    if offset < 0:
        raise ValueError(f"offset message id {msg_id!r} encodes a negative commitlog offset {offset}")
    return bytes_to_host(raw[:addr_len]), port, offset


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _month_window(now_ms: int) -> tuple[int, int]:
    """Return the local-time ms bounds ``[start, next)`` of the calendar month containing ``now_ms``."""
    lt = time.localtime(now_ms // 1000)
    year, month = lt.tm_year, lt.tm_mon
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    start = int(time.mktime((year, month, 1, 0, 0, 0, 0, 0, -1))) * 1000
    end = int(time.mktime((next_year, next_month, 1, 0, 0, 0, 0, 0, -1))) * 1000
    return start, end


def _fake_ip(now_ms: int) -> bytes:
    """Java's ``createFakeIP``: the low four bytes of the current time, used when no address can be found."""
    return (now_ms & 0xFFFFFFFF).to_bytes(4, "big")


def _local_ipv4() -> bytes | None:
    """Best-effort IPv4 address of this host, preferring the interface of the default route.

    Connecting a UDP socket sends nothing; it only asks the kernel which source address it would use.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))
            addr = ipaddress.IPv4Address(sock.getsockname()[0])
            if not addr.is_unspecified:
                return addr.packed
    except OSError:
        pass
    try:
        return ipaddress.IPv4Address(socket.gethostbyname(socket.gethostname())).packed
    except (OSError, ValueError):
        return None


class UniqueIdGenerator:
    """Thread-safe generator of ``UNIQ_KEY`` ids in the layout of Java's ``MessageClientIDSetter``.

    Sixteen bytes as 32 upper-case hex characters: IPv4 address (4), low 16 bits of the pid (2), a per-process
    int32 standing in for Java's class-loader hash (4), milliseconds since the start of the current month in local
    time (4, wrapping like Java's int cast), and a counter (2) that increases by one per id and wraps at 65536.
    The month base is cached and recomputed only when the clock leaves the cached month (Java recomputes only when
    it passes the month's end; we also do when the clock steps back, so the field never goes negative).

    The constructor arguments exist for tests and special set-ups; the defaults describe this process.
    """

    __slots__ = ("_prefix", "_clock", "_lock", "_counter", "_month_start", "_month_end")

    def __init__(
        self,
        ip: str | None = None,
        *,
        pid: int | None = None,
        process_tag: int | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        """Build a generator.

        ``ip`` must be an IPv4 literal (the Java layout has room for 4 bytes only; IPv4-mapped IPv6 is accepted);
        when omitted the host's address is detected, falling back to Java's time-based fake address.  ``pid``
        defaults to ``os.getpid()``, ``process_tag`` to a random int32, ``clock_ms`` to the wall clock in ms.
        """
        self._clock: Callable[[], int] = clock_ms if clock_ms is not None else _wall_clock_ms
        if ip is None:
            ip_bytes = _local_ipv4() or _fake_ip(self._clock())
        else:
            ip_bytes = host_to_bytes(ip)
            if len(ip_bytes) != 4:
                raise ValueError(f"unique ids hold a 4-byte IPv4 address, got IPv6 address {ip!r}")
        pid_value = os.getpid() if pid is None else pid
        tag = random.getrandbits(32) if process_tag is None else process_tag
        if not -(1 << 31) <= tag <= 0xFFFFFFFF:
            raise ValueError(f"process_tag must fit in 32 bits, got {tag}")
        self._prefix: str = (ip_bytes + struct.pack(">HI", pid_value & 0xFFFF, tag & 0xFFFFFFFF)).hex().upper()
        self._lock = threading.Lock()
        self._counter = 0
        self._month_start, self._month_end = _month_window(self._clock())

    def _elapsed_ms(self) -> int:
        """The month-relative time field (call with the lock held)."""
        now = self._clock()
        if not self._month_start <= now < self._month_end:
            self._month_start, self._month_end = _month_window(now)
        return (now - self._month_start) & 0xFFFFFFFF

    def next_id(self) -> str:
        """Return a new unique id (32 upper-case hex characters)."""
        with self._lock:
            elapsed = self._elapsed_ms()
            counter = self._counter
            self._counter = (counter + 1) & 0xFFFF
        return f"{self._prefix}{elapsed:08X}{counter:04X}"

    def next_ids(self, count: int) -> list[str]:
        """``count`` new unique ids at once: consecutive counters, one clock reading and one lock for all (the ids
        of a batch of messages)."""
        if count <= 0:
            return []
        with self._lock:
            elapsed = self._elapsed_ms()
            first = self._counter
            self._counter = (first + count) & 0xFFFF
        head = f"{self._prefix}{elapsed:08X}".encode("ascii")
        if count < _VECTOR_IDS_FROM:
            text = head.decode("ascii")
            return [f"{text}{(first + i) & 0xFFFF:04X}" for i in range(count)]
        # A byte matrix (a row per id: the shared head, then the counter's hex) sliced into strings: about half
        # the cost of formatting each id on its own.
        rows = np.empty((count, UNIQUE_ID_LENGTH), np.uint8)
        rows[:, :len(head)] = np.frombuffer(head, np.uint8)
        counters = ((np.arange(count, dtype=np.int64) + first) & 0xFFFF).astype(">u2")
        rows[:, len(head):] = np.frombuffer(counters.tobytes().hex().upper().encode("ascii"),
                                            np.uint8).reshape(count, 4)
        text = rows.tobytes().decode("ascii")
        return [text[i:i + UNIQUE_ID_LENGTH] for i in range(0, count * UNIQUE_ID_LENGTH, UNIQUE_ID_LENGTH)]

    __call__ = next_id


_default_lock = threading.Lock()
_default_generator: UniqueIdGenerator | None = None


def create_unique_id() -> str:
    """Return a new unique id from a process-wide generator created on first use.

    A forked child gets a fresh generator (its pid differs and it must not replay the parent's counter).
    """
    global _default_generator
    generator = _default_generator
    if generator is None:
        with _default_lock:
            if _default_generator is None:
                _default_generator = UniqueIdGenerator()
            generator = _default_generator
    return generator.next_id()


def create_unique_ids(count: int) -> list[str]:
    """``count`` new unique ids from the process-wide generator (see ``UniqueIdGenerator.next_ids``)."""
    generator = _default_generator
    if generator is None:
        create_unique_id()                      # creates it
        generator = _default_generator
        assert generator is not None
    return generator.next_ids(count)


def _forget_default_generator() -> None:
    global _default_generator, _default_lock
    _default_generator = None
    _default_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_default_generator)
