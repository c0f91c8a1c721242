"""Process-level set-up shared by the serving process and the probe workers: the event loop and
the open-file limit. (Kept out of ``exporter.cli`` so that nothing imports the command line.)"""

from __future__ import annotations

import asyncio
import logging
import resource

log = logging.getLogger("exporter")

MAX_PROBE_PROCESSES = 64


class EventLoopUnavailable(Exception):
    """The event loop asked for cannot be had on this installation."""


def raise_fd_limit(max_concurrency: int) -> None:
    """Every probe in flight holds a socket: raise the soft fd limit to the hard one, warn if still low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    needed = max_concurrency + 256
    if soft < needed:
        log.warning(
            "the open file limit (%d) is below what max_concurrency=%d needs (%d): probes beyond it "
            "will fail with state 'error' (EMFILE); raise 'ulimit -n' or lower global.max_concurrency",
            soft,
            max_concurrency,
            needed,
        )


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise EventLoopUnavailable(
                    "--runtime.event-loop=uvloop: uvloop is not installed (pip install 'connectivity-exporter[fast]')"
                ) from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()
