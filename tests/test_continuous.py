"""Continuous probing: schedule, counters and histograms, scrapes that only read, no overlap,
reload handover, config rules and the status page; real loopback servers, the real app."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.config.loader import ConfigError, load_config, parse_config
from exporter.continuous.schedule import first_tick, following_tick, phase
from exporter.core.histogram import (
    DEFAULT_CONNECT_BUCKETS,
    HistogramBuckets,
    Layout,
    TargetTally,
    quantile,
    render_tallies,
)
from exporter.web.app import create_app
from tests.helpers.eventually import eventually
from tests.helpers.metrics_text import samples, value

INVALID = sorted((Path(__file__).parent / "configs" / "invalid").glob("continuous_*.yml"))


# --- schedule ------------------------------------------------------------------------------------


def test_phases_spread_10000_targets_evenly_over_the_interval():
    # 10,000 targets at 10 s: every 1-second slot of the interval starts ~1,000 probes, no burst.
    # Phases are hashes, so a slot's count is binomial (sd ~30): 850-1150 is 5 sd; a burst would be
    # thousands in one slot and none in others.
    slots = Counter(int(phase(f"127.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}:9", "tcp") * 10) for i in range(10_000))
    assert sorted(slots) == list(range(10))
    assert all(850 <= count <= 1150 for count in slots.values()), slots
    finer = Counter(int(phase(f"10.0.{i // 250}.{i % 250}:25", "smtp") * 100) for i in range(10_000))
    assert max(finer.values()) <= 150  # 100 expected per 100 ms slot


def test_phase_is_stable_and_depends_on_target_and_module():
    assert phase("a:1", "m") == phase("a:1", "m")
    assert 0 <= phase("a:1", "m") < 1
    assert len({phase("a:1", "m"), phase("a:2", "m"), phase("a:1", "n")}) == 3


def test_ticks_sit_on_the_phase_and_never_drift():
    interval, target_phase = 10.0, 0.25
    # Wall clock 1003.0 -> the next tick at wall 1012.5 (= 101 * 10 + 2.5), 9.5 s from now.
    tick = first_tick(interval, target_phase, wall_now=1003.0, loop_now=50.0)
    assert tick == pytest.approx(59.5)
    start = tick
    for _step in range(1, 10_001):
        tick, missed = following_tick(tick, interval, loop_now=tick)
        assert missed == 0
    assert tick == pytest.approx(start + 10_000 * interval, abs=1e-6)


def test_a_stalled_loop_skips_past_ticks_and_counts_them():
    tick, missed = following_tick(100.0, 1.0, loop_now=103.5)
    assert (tick, missed) == (104.0, 3)


# --- counters and histograms ---------------------------------------------------------------------


def layout(buckets=HistogramBuckets(connect=(0.001, 0.01, 0.1)), banner=False):
    return Layout(("open", "refused", "timeout", "error"), buckets, with_banner=banner, fallback_state="error")


def test_tally_counts_states_flaps_and_failures_in_a_row():
    tally = TargetTally(layout())
    for state in ["open", "open", "refused", "refused", "refused", "open", "timeout", "bogus"]:
        tally.observe(state, state == "open", 0.002 if state == "open" else None, None, 0.003)
    assert [tally.state_count(s) for s in ("open", "refused", "timeout", "error")] == [3, 3, 1, 1]
    assert tally.state_changes == 4  # open->refused, refused->open, open->timeout, timeout->error
    assert tally.consecutive_failures == 2
    assert tally.buckets(0) == [0, 3, 0, 0]  # connect times of successes only


def test_a_value_on_a_bound_falls_in_that_bucket():
    tally = TargetTally(layout())
    for connect in (0.001, 0.0010001, 0.1, 7.0):
        tally.observe("open", True, connect, None, 0.0)
    assert tally.buckets(0) == [1, 1, 1, 1]


def test_rendered_families_parse_as_conventional_histograms_and_counters():
    every = HistogramBuckets(histograms=("connect", "banner", "duration"))
    open_tally, smtp_tally = TargetTally(layout()), TargetTally(layout(every, banner=True))
    for connect in (0.0005, 0.005, 0.005, 0.05, 2.0):
        open_tally.observe("open", True, connect, None, connect + 0.001)
    smtp_tally.observe("open", True, 0.004, 0.3, 0.5)
    open_tally.skip()
    text = "".join(
        render_tallies([('target="a:1",module="t"', open_tally), ('target="b:25",module="s",site="x\\"y"', smtp_tally)])
    )
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["probe_results"].type == "counter"
    assert families["probe_tcp_connect_time_seconds"].type == "histogram"
    found = samples(text)
    a = frozenset({("target", "a:1"), ("module", "t")})
    assert found[("probe_tcp_connect_time_seconds_bucket", a | {("le", "0.001")})] == 1
    assert found[("probe_tcp_connect_time_seconds_bucket", a | {("le", "0.01")})] == 3
    assert found[("probe_tcp_connect_time_seconds_bucket", a | {("le", "0.1")})] == 4
    assert found[("probe_tcp_connect_time_seconds_bucket", a | {("le", "+Inf")})] == 5
    assert found[("probe_tcp_connect_time_seconds_count", a)] == 5
    assert found[("probe_tcp_connect_time_seconds_sum", a)] == pytest.approx(2.0605)
    assert found[("probe_results_total", a | {("state", "open")})] == 5
    assert found[("probe_results_total", a | {("state", "timeout")})] == 0
    assert found[("probe_skipped_total", a)] == 1
    b = frozenset({("target", "b:25"), ("module", "s"), ("site", 'x"y')})
    assert ("probe_skipped_total", b) not in found  # absent until a tick is skipped
    # The banner and duration histograms only where the module lists them (opt-in); a label value
    # with a quote survives.
    banner = [labels for name, labels in found if name == "probe_smtp_banner_time_seconds_count"]
    assert banner == [b]
    duration = [labels for name, labels in found if name == "probe_total_time_seconds_count"]
    assert duration == [b]
    if shutil.which("promtool"):
        checked = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_quantile_interpolates_as_prometheus_does():
    bounds = (0.1, 0.2, 0.4)
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [0, 10, 0, 0]) == pytest.approx(0.15)
    assert quantile(0.75, bounds, [10, 0, 10, 0]) == pytest.approx(0.3)
    assert quantile(0.99, bounds, [1, 0, 0, 9]) == 0.4  # the overflow bucket: the highest bound


# --- config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_continuous_config_reports_exact_errors(path: Path):
    expected = [
        line.removeprefix("# expect: ").replace("{file}", str(path))
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]
    assert expected
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.errors == expected


def test_interval_per_module_or_per_target_and_default_buckets():
    config = parse_config("""
modules:
  every_5s: {prober: tcp, interval: 5s, histogram_buckets: {connect: [0.001, 0.01]}}
  on_scrape: {prober: smtp}
targets:
  - {target: "127.0.0.1:1", module: every_5s}
  - {target: "127.0.0.1:2", module: every_5s, interval: 1m}
  - {target: "127.0.0.1:3", module: on_scrape, interval: 250ms}
  - {target: "127.0.0.1:4", module: on_scrape}
""")
    from exporter.probing.plan import build_plan

    plan = build_plan(config)
    assert [(str(t.address), interval) for t, interval in plan.continuous] == [
        ("127.0.0.1:1", 5.0),
        ("127.0.0.1:2", 60.0),
        ("127.0.0.1:3", 0.25),
    ]
    assert [str(t.address) for t in plan.targets] == ["127.0.0.1:4"]
    assert config.modules["every_5s"].histogram_buckets.connect == (0.001, 0.01)
    assert config.modules["every_5s"].histogram_buckets.duration[0] == 0.001
    assert config.modules["every_5s"].histogram_buckets.histograms == ("connect",)  # the default: one histogram
    assert config.modules["on_scrape"].histogram_buckets is None
    assert HistogramBuckets().connect == DEFAULT_CONNECT_BUCKETS


def test_histograms_other_than_connect_are_opt_in():
    config = parse_config("""
modules:
  smtp_every_1m: {prober: smtp, interval: 1m, histograms: [connect, banner], histogram_buckets: {banner: [1, 5]}}
  tcp_timed: {prober: tcp, interval: 10s, histograms: [duration]}
""")
    smtp = config.modules["smtp_every_1m"].histogram_buckets
    assert (smtp.histograms, smtp.banner) == (("connect", "banner"), (1.0, 5.0))
    assert config.modules["tcp_timed"].histogram_buckets.histograms == ("duration",)


# --- the running exporter ------------------------------------------------------------------------


class CountingServer:
    """A loopback TCP server that counts the connections it accepts (and closes them)."""

    def __init__(self, greeting: bytes | None = b""):
        self.accepted = 0
        self.greeting = greeting  # None: say nothing and wait for the client to hang up
        self.server: asyncio.base_events.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            if self.greeting is None:
                await reader.read()  # until the prober gives up and closes
        finally:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def scrape(client) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()


def results_total(text: str, **labels: str) -> float:
    wanted = frozenset(labels.items())
    return sum(v for (name, lab), v in samples(text).items() if name == "probe_results_total" and wanted <= lab)


async def test_a_scrape_of_continuous_targets_never_probes(make_client):
    server = CountingServer()
    port = await server.start()
    try:
        # A day's interval: the first tick is at a hashed phase of the day, within these few seconds
        # with a chance of ~1 in 40,000.
        client = await make_client(
            parse_config(f"""
modules:
  daily: {{prober: tcp, interval: 1d}}
targets:
  - {{target: "127.0.0.1:{port}", module: daily}}
""")
        )
        texts = [await scrape(client) for _ in range(3)]
        assert server.accepted == 0
        text = texts[-1]
        assert results_total(text) == 0
        assert value(text, "probe_results_total", state="open") == 0
        assert value(text, "probe_tcp_connect_time_seconds_count") == 0
        assert ("probe_success", frozenset({("target", f"127.0.0.1:{port}"), ("module", "daily")})) not in samples(
            text
        )  # no latest result yet: no gauges rather than invented ones
        assert value(text, "connectivity_exporter_continuous_targets") == 1
    finally:
        server.close()


async def test_background_probes_are_counted_and_read_by_scrapes(make_client, closed_port):
    server = CountingServer()
    port = await server.start()
    try:
        client = await make_client(
            parse_config(f"""
modules:
  fast: {{prober: tcp, interval: 200ms, timeout: 2s}}
targets:
  - {{target: "127.0.0.1:{port}", module: fast}}
  - {{target: "127.0.0.1:{closed_port}", module: fast, labels: {{site: lab}}}}
""")
        )

        async def enough():
            text = await scrape(client)
            return (
                text
                if results_total(text, target=f"127.0.0.1:{closed_port}") >= 5
                and results_total(text, target=f"127.0.0.1:{port}") >= 5
                else None
            )

        text = await eventually(enough, what="5 background probes of each target")
        opened = value(text, "probe_results_total", target=f"127.0.0.1:{port}", state="open")
        assert opened == results_total(text, target=f"127.0.0.1:{port}")
        assert value(text, "probe_tcp_connect_time_seconds_count", target=f"127.0.0.1:{port}") == opened
        assert server.accepted >= opened  # every counted success was a real connection
        refused = value(text, "probe_results_total", target=f"127.0.0.1:{closed_port}", state="refused")
        assert refused == results_total(text, target=f"127.0.0.1:{closed_port}")
        assert value(text, "probe_consecutive_failures", target=f"127.0.0.1:{closed_port}", site="lab") >= 5
        assert value(text, "probe_consecutive_failures", target=f"127.0.0.1:{port}") == 0
        assert value(text, "probe_tcp_connect_time_seconds_count", target=f"127.0.0.1:{closed_port}") == 0
        assert value(text, "probe_success", target=f"127.0.0.1:{closed_port}") == 0
        assert value(text, "probe_success", target=f"127.0.0.1:{port}") == 1
        # The exporter's own probe counter includes background probes.
        assert value(text, "connectivity_exporter_probes_total", module="fast", state="refused") >= 5

        page = await (await client.get("/")).text()
        table = page[page.index("<table id=continuous>") :]
        table = table[: table.index("</table>")]
        assert f"127.0.0.1:{closed_port}" in table and "100.0 %" in table
        assert table.index(f"127.0.0.1:{closed_port}") < table.index(f"127.0.0.1:{port}")  # worst first
    finally:
        server.close()


async def test_a_probe_longer_than_its_interval_never_overlaps_itself(make_client):
    # An SMTP server that never greets: each probe lasts its whole 1 s timeout, 5 intervals.
    server = CountingServer(greeting=None)
    port = await server.start()
    try:
        client = await make_client(
            parse_config(f"""
modules:
  slow: {{prober: smtp, interval: 200ms, timeout: 1s, histograms: [connect, banner, duration]}}
targets:
  - {{target: "127.0.0.1:{port}", module: slow}}
""")
        )

        async def three_probes():
            text = await scrape(client)
            return text if results_total(text) >= 3 else None

        text = await eventually(three_probes, what="three probes of the silent server")
        probes = results_total(text)
        assert value(text, "probe_results_total", state="banner_timeout") == probes
        skipped = value(text, "probe_skipped_total")
        assert skipped >= 2 * (probes - 1)  # at least ~4 ticks pass during each 1 s probe
        assert server.accepted <= probes + 1  # one connection per probe (plus one in flight)
        assert value(text, "probe_smtp_banner_time_seconds_count") == 0  # no banner ever came
        assert value(text, "probe_total_time_seconds_count") == probes
    finally:
        server.close()


async def test_reload_keeps_unchanged_targets_counters_and_drops_removed_ones(aiohttp_client, tmp_path, closed_port):
    server = CountingServer()
    port = await server.start()
    kept, removed = f"127.0.0.1:{port}", f"127.0.0.1:{closed_port}"
    config = tmp_path / "config.yml"

    def write(*targets: str, buckets: str = "") -> None:
        lines = "".join(f"  - {{target: '{t}', module: fast}}\n" for t in targets)
        config.write_text(
            f"modules:\n  fast: {{prober: tcp, interval: 200ms, timeout: 2s{buckets}}}\ntargets:\n{lines}"
        )

    write(kept, removed)
    try:
        client = await aiohttp_client(create_app(load_config(str(config)), registry=CollectorRegistry()))

        async def probed(n: int):
            text = await scrape(client)
            return text if results_total(text, target=kept) >= n and results_total(text, target=removed) >= 1 else None

        before = await eventually(lambda: probed(4), what="four probes before the reload")
        kept_before = results_total(before, target=kept)

        write(kept, "127.0.0.1:1")
        response = await client.post("/-/reload")
        assert response.status == 200, await response.text()
        after = await scrape(client)
        assert results_total(after, target=kept) >= kept_before  # not reset
        assert value(after, "probe_tcp_connect_time_seconds_count", target=kept) >= kept_before
        assert not [key for key in samples(after) if ("target", removed) in key[1]]  # every series gone
        assert results_total(after, target="127.0.0.1:1") >= 0

        # Changing the module's buckets makes the old histogram meaningless: it restarts, the counters stay.
        counted = results_total(after, target=kept)
        write(kept, buckets=", histogram_buckets: {connect: [0.5, 1]}")
        assert (await client.post("/-/reload")).status == 200
        text = await scrape(client)
        assert results_total(text, target=kept) >= counted
        assert value(text, "probe_tcp_connect_time_seconds_count", target=kept) < counted
        assert (
            "probe_tcp_connect_time_seconds_bucket",
            frozenset({("target", kept), ("module", "fast"), ("le", "0.5")}),
        ) in samples(text)
    finally:
        server.close()


async def test_a_scrape_only_module_beside_continuous_ones_is_unchanged(make_client, listener):
    client = await make_client(
        parse_config(f"""
modules:
  on_scrape: {{prober: tcp}}
  background: {{prober: tcp, interval: 1h}}
targets:
  - {{target: "127.0.0.1:{listener}", module: on_scrape}}
  - {{target: "127.0.0.1:{listener}", module: background}}
""")
    )
    for expected in (1, 2, 3):
        text = await scrape(client)
        assert value(text, "connectivity_exporter_probes_total", module="on_scrape", state="open") == expected
    assert value(text, "probe_success", module="on_scrape") == 1
    assert not [key for key in samples(text) if key[0] == "probe_results_total" and ("module", "on_scrape") in key[1]]


def test_with_probe_workers_continuous_targets_run_in_the_serving_process(tmp_path, listener, closed_port):
    """--runtime.probe-processes=2: scrape-time targets go to the worker, continuous ones keep running here."""
    import signal

    from tests.helpers.exporter_process import free_port, http, start_exporter

    config = tmp_path / "config.yml"
    config.write_text(f"""modules:
  on_scrape: {{prober: tcp, timeout: 2s}}
  fast: {{prober: tcp, timeout: 2s, interval: 200ms}}
targets:
  - {{target: "127.0.0.1:{listener}", module: on_scrape}}
  - {{target: "127.0.0.1:{closed_port}", module: on_scrape}}
  - {{target: "127.0.0.1:{closed_port}", module: fast}}
""")
    port = free_port()
    process = start_exporter(
        f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", "--runtime.probe-processes=2"
    )
    try:
        process.wait_for_log("probe worker 1 ready")

        def scraped() -> str:
            status, text, _ = http("GET", f"http://127.0.0.1:{port}/metrics")
            assert status == 200, text
            return text

        text = eventually(scraped, until=lambda text: results_total(text) >= 5, what="5 background probes")
        # The counts per state in the message: this failed once in CI (refused 0 of 5) and could not be reproduced.
        counts = {dict(lab).get("state"): v for (n, lab), v in samples(text).items() if n == "probe_results_total"}
        assert value(text, "probe_results_total", state="refused") == results_total(text) >= 5, (counts, process.log)
        assert value(text, "probe_success", target=f"127.0.0.1:{listener}") == 1
        assert (
            value(text, "probe_tcp_state", target=f"127.0.0.1:{closed_port}", module="on_scrape", state="refused") == 1
        )
        assert value(text, "connectivity_exporter_probe_workers") == 1
        process.signal(signal.SIGTERM)
        assert process.wait() == 0, process.log
        assert "msg=stopped exit_code=0" in process.log  # a clean stop on SIGTERM, workers included
    finally:
        process.stop()


async def test_a_failing_continuous_target_gets_a_path_diagnosis(make_client, closed_port):
    """Continuous targets are only read by a scrape; their failures still go to the background diagnosis."""
    client = await make_client(
        parse_config(f"""
modules:
  watch: {{prober: tcp, timeout: 2s, interval: 200ms, tcp: {{diagnose: on_failure}}}}
targets:
  - {{target: "127.0.0.1:{closed_port}", module: watch}}
""")
    )

    async def verdicts() -> list[str]:
        text = await (await client.get("/metrics")).text()
        return [line for line in text.splitlines() if line.startswith("probe_path_diagnosis{") and line.endswith(" 1")]

    verdict = (await eventually(verdicts, what="a path diagnosis of the failing continuous target"))[0]
    assert 'verdict="reached"' in verdict and f'target="127.0.0.1:{closed_port}"' in verdict


async def test_a_running_prober_times_full_collections_and_a_large_plan_is_frozen():
    """Issue 23: the cyclic GC's full collections run on the prober's timer while it runs (never on the
    collector's count, which with tens of thousands of targets stopped the loop for up to a second every few
    seconds), and a plan of FREEZE_FROM targets or more is frozen out of the collector; stopping gives the
    collector its own threshold back."""
    import gc

    from exporter.continuous import prober as continuous
    from exporter.probing.plan import build_plan

    threshold = gc.get_threshold()
    config = parse_config(
        "modules:\n  bg: {prober: tcp, timeout: 1s, interval: 1h}\ntargets:\n"
        + "".join(f"  - {{target: '127.0.9.{i % 250 + 1}:{1000 + i}', module: bg}}\n" for i in range(1000))
    )
    plan = build_plan(config)
    prober = continuous.ContinuousProber()
    try:
        gc.unfreeze()
        prober.update(plan.continuous)
        assert gc.get_freeze_count() > 1000  # the targets and what they hold
        prober.start(lambda: None)
        assert gc.get_threshold()[2] == continuous.FULL_COLLECT_NEVER
        assert gc.get_threshold()[:2] == threshold[:2]
    finally:
        await prober.stop()
        gc.unfreeze()
    assert gc.get_threshold() == threshold
