"""The classic RocketMQ HA wire format (PROTOCOL.md §7; Java ``HAConnection`` / ``HAService.HAClient``).

There is no handshake, no framing header and no request code: the HA port carries two byte streams.

    slave → master   int64 offset                      repeated; each value is the slave's commitlog max
                     ├──── 8 bytes ────┤               offset (its acknowledgement); only the last complete
                                                       8 bytes count
    master → slave   int64 offset │ int32 size │ size bytes of raw commitlog from ``offset``
                     ├─ 8 bytes ──┼─ 4 bytes ──┼─ ≤ haTransferBatchSize (32 KiB), never across a file,
                                                  not aligned to records; size 0 = heartbeat

All integers are big-endian (Java's ByteBuffer default).
"""
from __future__ import annotations

import struct

__all__ = ["FRAME_HEADER", "FRAME_HEADER_BYTES", "OFFSET_REPORT", "OFFSET_REPORT_BYTES", "MAX_FRAME_BODY_BYTES"]

#: master → slave frame header: commitlog offset of the first byte, number of bytes that follow
FRAME_HEADER = struct.Struct(">qi")
FRAME_HEADER_BYTES = FRAME_HEADER.size          # 12
#: slave → master: the slave's commitlog max offset
OFFSET_REPORT = struct.Struct(">q")
OFFSET_REPORT_BYTES = OFFSET_REPORT.size        # 8
#: Largest body a slave accepts in one frame. A master sends ≤ haTransferBatchSize (32 KiB by default);
#: Java's slave reads into a 4 MiB buffer, so a larger frame could never be processed there either.
MAX_FRAME_BODY_BYTES = 4 * 1024 * 1024
