# Makes IPVS connections from local clients inside the VM: listeners on the
# wildcard address (DR and local NAT deliver to this host), then clients with
# their own source addresses. Keeps its sockets open until killed.
import socket, sys, threading, time, os

SO_MARK = 36
def log(*a): print("traffic:", *a, file=sys.stderr, flush=True)

def tcp_listener(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port)); s.listen(64)
    held = []
    def run():
        while True:
            c, a = s.accept(); held.append(c)
    threading.Thread(target=run, daemon=True).start()

def udp_listener(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    def run():
        while True:
            d, a = s.recvfrom(2048); s.sendto(d, a)
    threading.Thread(target=run, daemon=True).start()

for p in (80, 443, 8080, 9000, 9001, 65535):
    tcp_listener(p)
for p in (53, 5353, 65535):
    udp_listener(p)

kept = []
def tcp(dst, port, src, mark=None, close=False):
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    if mark: s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    s.settimeout(3)
    s.bind((src, 0))
    try:
        s.connect((dst, port)); log("tcp ok", dst, port, "mark", mark)
        s.send(b"x")
    except Exception as e:
        log("tcp", dst, port, "mark", mark, e)
    if close: s.close()
    else: kept.append(s)

def udp(dst, port, src):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind((src, 0)); s.settimeout(2)
    s.sendto(b"q", (dst, port))
    try: s.recvfrom(100); log("udp ok", dst, port)
    except Exception as e: log("udp", dst, port, e)
    kept.append(s)

C6, C4 = "2001:db8::20", "10.0.0.20"
tcp("10.0.0.100", 80, C4)
tcp("10.0.0.100", 80, C4, close=True)
for i in range(5):
    tcp("2001:db8::1", 80, C6, close=(i % 2 == 1))
tcp("2001:db8::2", 443, C6)
tcp("2001:db8::2", 443, C6)
udp("2001:db8::1", 53, C6)
udp("2001:db8::1", 53, C6)
udp("2001:db8:ffff:ffff:ffff:ffff:ffff:fff1", 65535, C6)
tcp("2001:db8::3", 8080, C6)
tcp("10.0.0.200", 9000, C4, mark=1)
tcp("2001:db8::4", 9000, C6, mark=2)
tcp("2001:db8::4", 9001, C6, mark=4)
open(sys.argv[1], "w").write("ready\n")
log("ready")
time.sleep(600)
