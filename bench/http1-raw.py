#!/usr/bin/env python3
"""One HTTP/1.1 keep-alive connection, one request at a time, as lean as a client gets.

Usage: python3 bench/http1-raw.py PORT PATH [REQUESTS]
PATH is `/health` (GET) or a stream path such as `/streams/account-1` (POST of a one-event
append, expected version `any`). Prints the p50 and p90 round trip, so that the server's
and the loopback's share of an HTTP append can be told from the Rust client's
(`concord --store http://… bench append --writers 1`). Used with `taskset` to place the
client and the server on the same core or on different ones (bench/results/HISTORY.md,
"Where one connection's HTTP overhead goes").
"""
import json
import socket
import sys
import time

port, path = int(sys.argv[1]), sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
body = json.dumps({"expected_version": "any", "events": [
    {"type": "Deposited", "data": {"amount": 1, "note": "x" * 100}}]}).encode()
if path == "/health":
    request = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"
else:
    request = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n"
               b"Content-Type: application/json\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
sock = socket.create_connection(("127.0.0.1", port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
latencies, buf = [], b""
for i in range(n):
    started = time.perf_counter()
    sock.sendall(request)
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        rest += sock.recv(65536)
    buf = rest[length:]
    status = head.split(b"\r\n")[0]
    if b" 20" not in status:
        sys.exit(f"unexpected answer: {status!r}")
    latencies.append(time.perf_counter() - started)
latencies.sort()
print(f"{path} p50 {latencies[n // 2] * 1000:.3f} ms p90 {latencies[int(n * 0.9)] * 1000:.3f} ms")
