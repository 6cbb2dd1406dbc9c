"""rmq_remoting: RocketMQ 4.x remoting — frames, commands, codes, fastjson bodies, trio server and client.

    from rmq_remoting import RemotingServer, RemotingClient, RemotingCommand, RequestCode, ResponseCode

    server = RemotingServer(9876)
    server.register(RequestCode.GET_ROUTEINFO_BY_TOPIC, handler)   # async def handler(conn, cmd)
    await nursery.start(server.serve)

    async with RemotingClient() as client:
        resp = await client.invoke("127.0.0.1:9876", RemotingCommand.request(105, {"topic": "T"}), 3000)

See docs/remoting.md for the wire format and limits.
"""
from rmq_remoting._frame import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame, split_frames
from rmq_remoting.client import RemotingClient
from rmq_remoting.codes import RequestCode, ResponseCode
from rmq_remoting.command import (CURRENT_VERSION, RPC_ONEWAY, RPC_RESPONSE, LanguageCode, MQVersion,
                                  RemotingCommand, SerializeType)
from rmq_remoting.connection import Connection, HandlerTable
from rmq_remoting.errors import (FrameError, RemotingCommandError, RemotingConnectError, RemotingError,
                                 RemotingTimeoutError)
from rmq_remoting.server import RemotingServer

__all__ = [
    "RemotingServer", "RemotingClient", "Connection", "HandlerTable", "RemotingCommand", "RequestCode",
    "ResponseCode", "LanguageCode", "SerializeType", "MQVersion", "CURRENT_VERSION", "RPC_RESPONSE",
    "RPC_ONEWAY", "RemotingError", "FrameError", "RemotingCommandError", "RemotingConnectError", "RemotingTimeoutError",
    "DEFAULT_MAX_FRAME", "FrameDecoder", "split_frames", "encode_frame",
]
