"""The Python floor (issue 25): the scrape's connects with as little Python as it takes, no results kept.

    python3 connect_floor.py MODE N INFLIGHT OPEN_PORT CLOSED_PORT -> "<open> <refused> <other> <elapsed> <cpu>"

The same N connects as ``connect_loop.c many`` (target i is bench/run.py's ``target_address(i)``, on CLOSED_PORT
when i % 5 == 4), INFLIGHT of them running, each closed as its outcome arrives; nothing is timed per connect,
classified beyond open/refused/other, or kept. What an exporter does beyond this (a result per target, the
connect time, the deadline timer, the exposition) can only add to it, so no Python exporter on this event loop
can make these connects faster than this floor. Modes:

- ``epoll``: a ``select.epoll`` loop in pure Python, the C loop's structure line for line;
- ``uvloop``: non-blocking sockets and one ``loop.add_writer`` callback each, on uvloop (the exporter's loop);
- ``uvloop-timer``: ``uvloop`` plus one ``loop.call_at`` deadline timer per connect, cancelled on the outcome
  (the least an exporter with a per-probe deadline must add);
- ``uvloop-epoll``: ``uvloop-timer``, but the sockets wait in one ``select.epoll`` set of the process's own that
  uvloop watches with a single ``add_reader`` (no libuv poll handle per socket).
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import sys
import time


def address(i: int) -> str:
    return f"127.{1 + i // 62500}.{i // 250 % 250 + 1}.{i % 250 + 1}"


def targets(n: int, open_port: int, closed_port: int) -> list[tuple[str, int]]:
    # Built before the clock starts: the C loop computes its addresses with three integer operations.
    return [(address(i), closed_port if i % 5 == 4 else open_port) for i in range(n)]


def run_epoll(todo: list[tuple[str, int]], inflight: int) -> tuple[int, int, int]:
    n = len(todo)
    opened = refused = other = 0
    started = done = 0
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    new = socket.socket
    flags = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    while done < n:
        while started < n and started - done < inflight:
            sock = new(socket.AF_INET, flags)
            code = sock.connect_ex(todo[started])
            started += 1
            if code == errno.EINPROGRESS:
                fd = sock.fileno()
                socks[fd] = sock
                ep.register(fd, select.EPOLLOUT)
            else:
                sock.close()
                done += 1
                if code == errno.ECONNREFUSED:
                    refused += 1
                else:
                    other += 1
        for fd, _ in ep.poll(5.0, 256):
            sock = socks.pop(fd)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            sock.close()  # also leaves the epoll set
            done += 1
            if code == 0:
                opened += 1
            elif code == errno.ECONNREFUSED:
                refused += 1
            else:
                other += 1
    ep.close()
    return opened, refused, other


def run_uvloop(todo: list[tuple[str, int]], inflight: int, timer: bool, own_epoll: bool) -> tuple[int, int, int]:
    import uvloop

    counts = [0, 0, 0]
    n = len(todo)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        state = {"next": 0, "done": 0}
        new = socket.socket
        flags = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
        ep = select.epoll()
        waiting: dict[int, object] = {}

        def ready() -> None:
            for fd, _ in ep.poll(0):
                callback = waiting.pop(fd, None)
                if callback is not None:
                    callback()  # type: ignore[operator]

        if own_epoll:
            loop.add_reader(ep.fileno(), ready)

        def outcome(code: int) -> None:
            counts[0 if code == 0 else 1 if code == errno.ECONNREFUSED else 2] += 1
            state["done"] += 1
            if state["done"] == n:
                finished.set_result(None)
            elif state["next"] < n:
                start()

        def start() -> None:
            i = state["next"]
            state["next"] = i + 1
            sock = new(socket.AF_INET, flags)
            code = sock.connect_ex(todo[i])
            if code != errno.EINPROGRESS:
                sock.close()
                outcome(code)
                return
            fd = sock.fileno()
            handle = loop.call_at(loop.time() + 5.0, lambda: None) if timer else None

            def writable() -> None:
                if not own_epoll:
                    loop.remove_writer(fd)
                if handle is not None:
                    handle.cancel()
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                sock.close()
                outcome(code)

            if own_epoll:
                waiting[fd] = writable
                ep.register(fd, select.EPOLLOUT)
            else:
                loop.add_writer(fd, writable)

        for _ in range(min(inflight, n)):
            start()
        await finished
        if own_epoll:
            loop.remove_reader(ep.fileno())
        ep.close()

    uvloop.run(main())
    return counts[0], counts[1], counts[2]


def main() -> int:
    mode, n, inflight, open_port, closed_port = sys.argv[1], *map(int, sys.argv[2:6])
    todo = targets(n, open_port, closed_port)
    cpu, began = time.process_time(), time.perf_counter()
    if mode == "epoll":
        opened, refused, other = run_epoll(todo, inflight)
    elif mode in ("uvloop", "uvloop-timer", "uvloop-epoll"):
        opened, refused, other = run_uvloop(todo, inflight, mode != "uvloop", mode == "uvloop-epoll")
    else:
        print(f"unknown mode {mode}", file=sys.stderr)
        return 2
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    print(opened, refused, other, f"{elapsed:.6f}", f"{cpu:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
