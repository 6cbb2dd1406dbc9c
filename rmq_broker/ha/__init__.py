"""Master/slave replication of the commitlog over the classic RocketMQ HA protocol (PROTOCOL.md §7).

``service.HAService`` is what the broker holds (``broker.ha``); ``master`` serves slaves, ``slave``
replicates from a master, ``sync`` holds SYNC_MASTER sends until a slave has their bytes, ``wire`` is the
byte format. See docs/ha.md.
"""
from rmq_broker.ha.service import HAService

__all__ = ["HAService"]
