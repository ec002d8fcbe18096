#!/usr/bin/env python3
"""Which consumer-group cycles are slow, and when: seeds N events (ten streams of one
category) through a running `concord serve`, creates a group over `all` with that
category, runs 4 consumers (poll up to 100, ack them) and prints the 15 slowest cycles
with when they happened and how much was acked by then.

    concord --store redis://127.0.0.1:6390/0 serve --addr 127.0.0.1:2298 --no-projections &
    python3 bench/group-stalls.py [N=200000] [BASE=http://127.0.0.1:2298]

Standard library only; a diagnostic, not a benchmark (urllib's per-request cost is in
every figure)."""
import json, sys, threading, time, urllib.request, uuid

BASE = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:2298"

def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        t = r.read()
        return json.loads(t) if t else None
run = uuid.uuid4().hex[:8]
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
for s in range(N // 1000):
    call("POST", f"/streams/st_{run}-{s % 10}", {"expected_version": "any", "events": [{"type": "T", "data": {"n": i}} for i in range(1000)]})
call("PUT", f"/groups/g{run}", {"source": {"all": {"category": f"st_{run}"}}, "from": "start"})
t0 = time.time(); lat = []; lock = threading.Lock(); acked = [0]
def worker(w):
    while acked[0] < N:
        s = time.time()
        m = call("POST", f"/groups/g{run}/poll", {"consumer": f"c{w}", "max": 100, "wait_ms": 100})["messages"]
        if not m: continue
        p = time.time()
        n = call("POST", f"/groups/g{run}/ack", {"ack_ids": [x["ack_id"] for x in m]})["acked"]
        e = time.time()
        with lock:
            acked[0] += n; lat.append((s - t0, p - s, e - p, acked[0]))
ts = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
lat.sort(key=lambda x: -(x[1] + x[2]))
print("cycles", len(lat), "elapsed %.1f s" % (time.time() - t0))
for l in lat[:15]: print("at %.3f s: poll %.1f ms ack %.1f ms (acked so far %d)" % (l[0], l[1]*1000, l[2]*1000, l[3]))
