"""Decoding PULL_MESSAGE bodies on the client (PROTOCOL.md §4.1, §5.2), batch first.

A FOUND pull response's body is the matching stored records concatenated verbatim. The decoders here walk it
once in C (``rmq_client._decode``, over rmq_common._record's record parser) and differ only in how much they
build per record:

======================  ==========================================================================================
``decode_pull_bodies``  ``list[bytes]``: the bodies alone.
``decode_pull_batch``   ``PullBatch``: the bodies as a list; offsets, timestamps and the other numeric fields as
                        numpy columns on demand; topic, properties, tags, keys, ids and whole messages per index,
                        read from the retained pull body only when asked.
``decode_pull_body``    ``list[PulledMessage]``: MessageExt objects (same public fields) filled from C, their
                        property string decoded into ``properties`` on first access; ``tags``, ``unique_key``,
                        ``keys`` and ``msg_id`` read their one property without building the dict.
======================  ==========================================================================================

All three take ``decompress=True`` (compressed bodies are inflated per SYSFLAG with rmq_client.compression,
bounded by ``max_size``, and the compression bits are cleared from ``sys_flag``), ``check_crc=False`` (Java's
client does not check; the broker did on store), and ``tags=None``: an iterable of tag values to keep, the exact
re-filter Java's client applies after the broker matched tag hash codes (None or empty keeps everything,
records without TAGS are dropped by a filter). A malformed body raises ``RecordError`` (a ValueError) naming the
first bad record's index and byte offset; nothing is returned for a partly bad body.

Measured on the 2-core CI-class box, 32 records per body (a broker's default pull cap), realistic properties
(UNIQ_KEY, KEYS, TAGS, CLUSTER): ``decode_pull_bodies`` ≈ 30 ns/msg at 128 B and 80 ns/msg at 1 KiB,
``decode_pull_batch`` ≈ 40 / 90 ns/msg, ``decode_pull_body`` ≈ 210 / 250 ns/msg (+ ≈ 250 ns when ``properties``
is read, + ≈ 120 ns for ``msg_id``). ``rmq_common._record.decode_records`` takes ≈ 6.5 µs/msg for the same.
"""

from __future__ import annotations

from rmq_client._decode import (
    PullBatch,
    PulledMessage,
    decode_properties,
    decode_pull_batch,
    decode_pull_bodies,
    decode_pull_body,
    fast_path_enabled,
)
from rmq_common._record import RecordError

__all__ = [
    "PullBatch",
    "PulledMessage",
    "RecordError",
    "decode_properties",
    "decode_pull_batch",
    "decode_pull_bodies",
    "decode_pull_body",
    "fast_path_enabled",
]
