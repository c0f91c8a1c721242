"""Python stand-ins for bench/native/*.c, used (and labelled as such) when gcc is missing.

python3 bench/fallback.py acceptor PORT MAX_SECONDS
python3 bench/fallback.py connect-loop PORT SECONDS
"""

from __future__ import annotations

import contextlib
import errno
import select
import signal
import socket
import sys
import time


def acceptor(port: int, max_seconds: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(65535)
    signal.alarm(max_seconds)  # a hard bound on the loop below
    print("ready", flush=True)
    while True:
        with contextlib.suppress(ConnectionAbortedError, InterruptedError):
            listener.accept()[0].close()


def connect_loop(port: int, seconds: float) -> None:
    connects = failures = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((f"127.2.0.{1 + (connects + failures) % 250}", port))
        if code == errno.EINPROGRESS:
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if poller.poll(5000) else errno.ETIMEDOUT
        sock.close()
        if code == 0:
            connects += 1
        else:
            failures += 1
    print(connects, failures, f"{time.perf_counter() - start:.6f}")


if __name__ == "__main__":
    mode, port, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "acceptor":
        acceptor(port, int(seconds))
    else:
        connect_loop(port, float(seconds))
