"""A target that flaps every 2 s, probed every 500 ms in the background: the counters see both
states in the right proportion and every flap, while a scrape-only module sees one probe per scrape."""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest

from exporter.config.loader import parse_config
from tests.helpers.eventually import eventually
from tests.helpers.metrics_text import samples, value

pytestmark = pytest.mark.slow

PERIOD = 2.0  # the listener is up for 2 s, then down (refused) for 2 s
INTERVAL = 0.5  # 4 background probes per period
SAMPLES = 64  # 16 up/down periods; the expected open share is exactly 1/2 (see below)


class FlappingListener:
    """A loopback port that accepts (and closes) connections for PERIOD seconds, then refuses them
    for PERIOD seconds, and so on; toggled at absolute times so the periods do not drift."""

    def __init__(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.toggles = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        step = 0
        while not self._stop.is_set():
            until = start + (step + 1) * PERIOD
            if step % 2 == 0:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", self.port))
                sock.listen(64)
                try:
                    while (left := until - time.monotonic()) > 0 and not self._stop.is_set():
                        ready, _, _ = select.select([sock], [], [], min(left, 0.2))
                        if ready:
                            conn, _ = sock.accept()
                            conn.close()
                finally:
                    sock.close()
            else:
                self._stop.wait(max(0.0, until - time.monotonic()))
            step += 1
            self.toggles += 1

    def __enter__(self) -> FlappingListener:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def results(text: str, module: str) -> dict[str, float]:
    return {
        dict(labels)["state"]: v
        for (name, labels), v in samples(text).items()
        if name == "probe_results_total" and ("module", module) in labels
    }


async def test_flapping_target_counted_in_proportion_while_scrape_only_sees_one_per_scrape(make_client):
    with FlappingListener() as flapping:
        target = f"127.0.0.1:{flapping.port}"
        client = await make_client(
            parse_config(f"""
modules:
  every_500ms: {{prober: tcp, interval: {int(INTERVAL * 1000)}ms, timeout: 1s}}
  on_scrape: {{prober: tcp, timeout: 1s}}
targets:
  - {{target: "{target}", module: every_500ms}}
  - {{target: "{target}", module: on_scrape}}
""")
        )
        scrapes = 0

        async def scrape() -> str:
            nonlocal scrapes
            scrapes += 1
            return await (await client.get("/metrics")).text()

        # One scrape a second, as Prometheus would, until the samples are there (32 s expected).
        text = await eventually(
            scrape,
            until=lambda text: sum(results(text, "every_500ms").values()) >= SAMPLES,
            what=f"{SAMPLES} background probes",
            timeout=240,
            interval=1.0,
        )
        counted = results(text, "every_500ms")
        total = sum(counted.values())
        assert total >= SAMPLES, f"only {total} background probes in time"

    # Each 2 s period holds exactly 4 ticks, 2 of them in each state, whatever the phase: the
    # open share is 1/2 up to the ~1 period at either end of the run and any tick that falls
    # within the scheduling jitter of a toggle (a few ms out of 500). ±10 % is the bound.
    open_share = counted["open"] / total
    assert 0.4 <= open_share <= 0.6, counted
    assert counted["refused"] + counted["open"] == total, counted  # nothing else happened
    # Every toggle the probes saw is a flap: one state change per period.
    changes = value(text, "probe_state_changes_total", module="every_500ms")
    periods = total / (PERIOD / INTERVAL)
    assert periods - 3 <= changes <= periods + 2, (changes, periods)

    # The scrape-only module probed once per scrape, no more: it cannot see what happened between.
    scrape_only = sum(
        v
        for (name, labels), v in samples(text).items()
        if name == "connectivity_exporter_probes_total" and ("module", "on_scrape") in labels
    )
    assert scrape_only == scrapes
    assert not results(text, "on_scrape")  # no background counters for a scrape-only module
    # The one default histogram holds every successful connect's time, no more.
    assert counted["open"] == value(text, "probe_tcp_connect_time_seconds_count", module="every_500ms")
