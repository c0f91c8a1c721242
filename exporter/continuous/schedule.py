"""When a continuous target is probed: a fixed phase per target, absolute tick times.

Target ``t`` with interval ``I`` is probed at wall-clock times ``k * I + phase(t) * I`` (k an
integer), where the phase is a hash of its target and module in [0, 1). So 10,000 targets at 10 s
start ~1,000 probes every second, evenly, never in bursts; a target keeps its phase across
restarts and reloads; and the schedule never drifts, because each tick is the previous tick plus
the interval, not "the end of the last probe plus the interval".
"""

from __future__ import annotations

import hashlib
import math


def phase(target: str, module: str) -> float:
    """A stable pseudo-random fraction in [0, 1) for this target and module (not Python's
    ``hash``, which changes with every process)."""
    digest = hashlib.blake2b(f"{module}\0{target}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def first_tick(interval: float, target_phase: float, wall_now: float, loop_now: float) -> float:
    """The loop time of the first tick at or after now."""
    offset = target_phase * interval
    k = math.ceil((wall_now - offset) / interval)
    return loop_now + (k * interval + offset - wall_now)


def following_tick(tick: float, interval: float, loop_now: float) -> tuple[float, int]:
    """The tick after ``tick`` that is still in the future, and how many ticks were missed on the
    way (more than zero only when the event loop was stalled for longer than an interval)."""
    upcoming = tick + interval
    if upcoming > loop_now:
        return upcoming, 0
    missed = int((loop_now - upcoming) // interval) + 1
    return upcoming + missed * interval, missed
