import socket, struct, sys, time, subprocess
sys.argv = [sys.argv[0], sys.argv[1], sys.argv[2]]
exec(open("/work/wt-review2/review/nbd_hostile.py").read().split("which = sys.argv")[0])
socks = []
for i in range(4):
    s = connect(); handshake(s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    payload = b"".join(struct.pack(">IHHQQI", REQ, 0, 0, k, 0, 32 << 20) for k in range(8))
    try: s.sendall(payload)
    except BlockingIOError: pass
    socks.append(s)
time.sleep(2)
t = time.time()
r = subprocess.run(["timeout", "60", "nbdcopy", f"nbd+unix:///e1.0?socket={SOCK}", "/tmp/rv_back2.bin"])
print("nbdcopy beside 4 stuck clients: rc", r.returncode, "secs", round(time.time() - t, 1), "RSS", rss(), "MiB")
# also one that sends writes, then never reads
s = connect(); handshake(s); s.setblocking(False)
sent = 0
try:
    for k in range(2000):
        s.send(struct.pack(">IHHQQI", REQ, 0, 1, k, (k % 100) * 4096, 4096) + b"w" * 4096); sent += 1
except BlockingIOError: pass
time.sleep(2)
print("writer-never-reads sent", sent, "RSS", rss(), "threads", nthreads())
for s in socks: s.close()
