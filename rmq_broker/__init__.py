"""rmq_broker: the RocketMQ-compatible broker — topic/group/offset managers, client management, processors."""
