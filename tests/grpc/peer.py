"""A real gRPC server and client (grpcio) for perfproxy's tests.

    peer.py server PORT          serve test.Echo on 127.0.0.1:PORT until killed
    peer.py client HOST:PORT     run every call through HOST:PORT, print JSON
    peer.py call HOST:PORT MSG [TIMEOUT_S]   one unary call, print its status name
    peer.py cancel HOST:PORT     cancel a server stream after 3 messages, print "cancelled"

Messages are raw bytes (no protobuf), so no generated code is needed:
- /test.Echo/Unary: echoes the request; `fail:N` aborts with status N,
  `sleep:MS` answers after MS milliseconds. Trailing metadata x-trailer: kept.
- /test.Echo/Count (server streaming): a request `N` gets N messages.
- /test.Echo/Join (client streaming): the messages joined with "+".
- /test.Echo/Chat (bidirectional): each message echoed, upper-cased.
"""
import json
import sys
import time
from concurrent import futures

import grpc


def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "kept"),))
    if request.startswith(b"fail:"):
        context.abort(grpc.StatusCode(_code(int(request[5:]))), "failed as asked")
    if request.startswith(b"sleep:"):
        time.sleep(int(request[6:]) / 1000)
    return request


def _code(n):
    return next(c for c in grpc.StatusCode if c.value[0] == n).value


def count(request, context):
    for i in range(int(request)):
        yield b"message %d" % i


def join(requests, context):
    return b"+".join(requests)


def chat(requests, context):
    for r in requests:
        yield r.upper()


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Join": grpc.stream_unary_rpc_method_handler(join),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


def client(target):
    out = {}
    with grpc.insecure_channel(target) as ch:
        u = ch.unary_unary("/test.Echo/Unary")
        reply, call = u.with_call(b"hello", timeout=10)
        out["unary"] = reply.decode()
        out["trailers"] = {k: v for k, v in call.trailing_metadata()}
        out["unary_code"] = call.code().name
        for n in (13, 5):
            try:
                u(b"fail:%d" % n, timeout=10)
                out["fail_%d" % n] = "OK"
            except grpc.RpcError as e:
                out["fail_%d" % n] = e.code().name
        try:
            u(b"sleep:3000", timeout=0.5)
            out["deadline"] = "OK"
        except grpc.RpcError as e:
            out["deadline"] = e.code().name
        out["count"] = [m.decode() for m in ch.unary_stream("/test.Echo/Count")(b"5", timeout=10)]
        out["join"] = ch.stream_unary("/test.Echo/Join")(iter([b"x", b"y", b"z"]), timeout=10).decode()
        chat = ch.stream_stream("/test.Echo/Chat")
        out["chat"] = [m.decode() for m in chat(iter([b"a", b"b", b"c"]), timeout=10)]
    print(json.dumps(out), flush=True)


def call(target, message, timeout):
    with grpc.insecure_channel(target) as ch:
        try:
            ch.unary_unary("/test.Echo/Unary")(message.encode(), timeout=timeout)
            print("OK", flush=True)
        except grpc.RpcError as e:
            print(e.code().name, e.details(), flush=True)


def cancel(target):
    with grpc.insecure_channel(target) as ch:
        stream = ch.unary_stream("/test.Echo/Count")(b"100000", timeout=30)
        for i, _ in enumerate(stream):
            if i == 2:
                stream.cancel()
                break
        time.sleep(0.5)
    print("cancelled", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "cancel":
        cancel(sys.argv[2])
    elif sys.argv[1] == "call":
        call(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 10.0)
    else:
        client(sys.argv[2])
