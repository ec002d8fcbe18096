import socket, sys, time, os, json, urllib.request
port=int(sys.argv[1]); n=int(sys.argv[2]); pid=int(sys.argv[3])
def rss():
    d={}
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(("VmRSS","VmHWM")): k,v=l.split(":"); d[k]=int(v.split()[0])//1024
    return d
def post(body):
    req=urllib.request.Request(f"http://127.0.0.1:{port}/streams/load-1", data=json.dumps(body).encode(), method="POST")
    return urllib.request.urlopen(req).status
print("before", rss())
socks=[]
for i in range(n):
    s=socket.create_connection(("127.0.0.1",port))
    s.sendall(f"GET /subscribe/all HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    socks.append(s)
time.sleep(3)
first=socks[0].recv(4096).decode(errors="replace").split("\r\n")[0]
print("first response line:", first)
print(f"{n} idle subscribers", rss())
# the subscribers never read from now on; write 20 MiB of events
big="x"*8000
for i in range(int(sys.argv[4])):
    post({"events":[{"type":"Filled","data":{"pad":big}}]})
time.sleep(2)
print(f"after {sys.argv[4]} events of 8 KB with none of the subscribers reading", rss())
