#!/usr/bin/env python3
"""The kernel's floor under one-frame-per-write delivery on this machine.

A writer process sends one 100-byte frame per write() to each of N loopback
TCP connections in turn, while a reader process waits in epoll on the other
ends and reads whatever arrives: the pattern of an edge fanning out to
clients on the same box. Prints one JSON line with the writer's *system*
CPU time per write (its user time is Python's and is not reported) and the
reader's total CPU per frame.

    python3 scripts/write_floor.py [--connections 2000] [--writes 200000]
"""
import argparse, json, os, select, socket, time

def cpu():
    t = os.times()
    return t.user, t.system

def reader(sock_fds, stop_fd):
    ep = select.epoll()
    socks = {}
    for fd in sock_fds:
        s = socket.socket(fileno=fd)
        s.setblocking(False)
        socks[fd] = s
        ep.register(fd, select.EPOLLIN)
    ep.register(stop_fd, select.EPOLLIN)
    got = 0
    while True:
        for fd, _ in ep.poll():
            if fd == stop_fd:
                u, s = cpu()
                os.write(stop_fd, json.dumps({"bytes": got, "user": u, "sys": s}).encode())
                os._exit(0)
            try:
                got += len(socks[fd].recv(65536))
            except BlockingIOError:
                pass

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--writes", type=int, default=200000)
    ap.add_argument("--size", type=int, default=100)
    a = ap.parse_args()
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    writers, readers = [], []
    for _ in range(a.connections):
        c = socket.create_connection(lst.getsockname())
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s, _ = lst.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writers.append(s)
        readers.append(c)
    ctl_parent, ctl_child = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        for w in writers: w.close()
        ctl_parent.close()
        reader([r.detach() for r in readers], ctl_child.fileno())
    for r in readers: r.close()
    ctl_child.close()
    time.sleep(0.5)
    frame = b"\x81" + bytes([a.size - 2]) + b"x" * (a.size - 2)
    u0, s0 = cpu()
    t0 = time.time()
    n = len(writers)
    for i in range(a.writes):
        writers[i % n].send(frame)
    wall = time.time() - t0
    u1, s1 = cpu()
    time.sleep(0.5)
    ctl_parent.send(b"x")
    rep = json.loads(ctl_parent.recv(4096).decode())
    os.waitpid(pid, 0)
    out = {
        "connections": a.connections,
        "writes": a.writes,
        "frame_bytes": a.size,
        "writer_sys_us_per_write": (s1 - s0) / a.writes * 1e6,
        "writer_wall_us_per_write": wall / a.writes * 1e6,
        "reader_cpu_us_per_frame": (rep["user"] + rep["sys"]) / a.writes * 1e6,
        "delivered_bytes": rep["bytes"],
    }
    print(json.dumps(out))

if __name__ == "__main__":
    main()
