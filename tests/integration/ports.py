"""Ports for the servers the tests start (scenecomp, redis-server, nginx).

A port from bind(("127.0.0.1", 0)) is free only until the socket closes: the
kernel hands ports of that ephemeral range to every outgoing connection too
(the tests' own HTTP clients, curl inside scenecomp), and to the other xdist
workers, so the server that binds it a moment later can find it taken. Here
each xdist worker takes ports from its own slice of 20000-32767, below the
ephemeral range (see /proc/sys/net/ipv4/ip_local_port_range, 32768 up by
default), and skips any port something else already holds."""
import os
import socket

_LOW, _HIGH = 20000, 32768
_SLICE = 400
_next = None


def _slice():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(worker[2:]) if worker[2:].isdigit() else 0
    slices = (_HIGH - _LOW) // _SLICE
    # two test runs at once (another checkout) land on other slices
    start = _LOW + ((n + os.getppid()) % slices) * _SLICE
    return start, start + _SLICE


def free_port():
    """A 127.0.0.1 TCP port nobody listens on, from this worker's slice."""
    global _next
    lo, hi = _slice()
    if _next is None or not lo <= _next < hi:
        _next = lo
    for _ in range(_SLICE):
        port, _next = _next, (_next + 1 if _next + 1 < hi else lo)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in %d-%d" % (lo, hi))
