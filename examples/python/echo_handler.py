#!/usr/bin/env python3
"""An ExProto echo handler in Python: every chunk a device sends comes back.

Uses Debian's python3-grpcio and python3-protobuf. exproto_pb2.py is
generated from proto/exproto.proto by protoc (committed; regenerate with
`protoc --proto_path=proto --python_out=examples/python proto/exproto.proto`);
the gRPC glue is grpcio's generic API, so no grpc_tools plugin is needed.

    python3 examples/python/echo_handler.py --listen 127.0.0.1:9001 --adapter 127.0.0.1:9100
"""
import argparse
import os
import signal
import sys
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import exproto_pb2 as pb  # noqa: E402

PKG = "emqx.exproto.v1"


class Adapter:
    """Calls exgate's ConnectionAdapter."""

    def __init__(self, channel, token=""):
        self._meta = [("authorization", "Bearer " + token)] if token else None
        self._send = channel.unary_unary(f"/{PKG}.ConnectionAdapter/Send",
                                         request_serializer=pb.SendBytesRequest.SerializeToString,
                                         response_deserializer=pb.CodeResponse.FromString)

    def send(self, conn, data):
        resp = self._send(pb.SendBytesRequest(conn=conn, bytes=data), metadata=self._meta, timeout=10)
        return resp.code == pb.SUCCESS


class EchoHandler:
    """The five callbacks of ConnectionUnaryHandler."""

    def __init__(self, adapter):
        self.adapter = adapter

    def OnSocketCreated(self, req, ctx):
        print(f"{req.conn}: connected from {req.conninfo.peername.host}:{req.conninfo.peername.port}", flush=True)
        return pb.EmptySuccess()

    def OnReceivedBytes(self, req, ctx):
        self.adapter.send(req.conn, req.bytes)  # one Send per chunk: the device sees its bytes back
        return pb.EmptySuccess()

    def OnTimerTimeout(self, req, ctx):
        return pb.EmptySuccess()

    def OnReceivedMessages(self, req, ctx):
        for m in req.messages:  # every message of the batch
            self.adapter.send(req.conn, m.payload)
        return pb.EmptySuccess()

    def OnSocketClosed(self, req, ctx):
        print(f"{req.conn}: closed {req.reason}", flush=True)
        return pb.EmptySuccess()


def service(handler):
    requests = {"OnSocketCreated": pb.SocketCreatedRequest, "OnReceivedBytes": pb.ReceivedBytesRequest,
                "OnTimerTimeout": pb.TimerTimeoutRequest, "OnReceivedMessages": pb.ReceivedMessagesRequest,
                "OnSocketClosed": pb.SocketClosedRequest}
    methods = {name: grpc.unary_unary_rpc_method_handler(getattr(handler, name),
                                                          request_deserializer=req.FromString,
                                                          response_serializer=pb.EmptySuccess.SerializeToString)
               for name, req in requests.items()}
    return grpc.method_handlers_generic_handler(f"{PKG}.ConnectionUnaryHandler", methods)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:9001")
    ap.add_argument("--adapter", default="127.0.0.1:9100")
    ap.add_argument("--token", default="")
    args = ap.parse_args()
    adapter = Adapter(grpc.insecure_channel(args.adapter), args.token)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((service(EchoHandler(adapter)),))
    server.add_insecure_port(args.listen)
    server.start()
    print(f"python echo handler on {args.listen}, calling exgate at {args.adapter}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(1))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
