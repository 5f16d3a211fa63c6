import sys, struct
SOCKP, PIDP = sys.argv[1], sys.argv[2]
sys.argv = [sys.argv[0], SOCKP, PIDP]
exec(open("/work/wt-review2/review/nbd_hostile.py").read().split("which = sys.argv")[0])
s = connect(); handshake(s)
before = open("/tmp/rv.img", "rb").read(8192)
for name, cmd, flags, ln, data in [("write", 1, 0, 512, b"Z"*512), ("write FUA", 1, 1, 512, b"Z"*512),
        ("write unaligned", 1, 0, 7, b"Z"*7), ("write zeroes", 6, 0, 4096, b""), ("write zeroes no-hole", 6, 2, 4096, b""),
        ("trim", 4, 0, 4096, b""), ("flush", 3, 0, 0, b"")]:
    req(s, cmd, 1, 0, ln, data, flags)
    err, h, _ = reply(s)
    print(name, "errno", err)
print("image unchanged:", open("/tmp/rv.img", "rb").read(8192) == before)
