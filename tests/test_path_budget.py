"""A scrape of 1,000 failing targets with diagnosis on: the scrape still answers within its deadline
(diagnoses run in the background, never on its time), at most ``max_diagnoses_in_flight`` run at
once, and the diagnosis traffic, counted by an nftables counter on the client, stays inside the
stated budget: at most DiagnosisSettings.max_packets packets per diagnosis started, and no more than
the exporter itself accounts for."""

from __future__ import annotations

import re

import pytest

from exporter.pathdiag.trace import DEFAULT_SETTINGS
from tests.helpers.eventually import eventually
from tests.helpers.metrics_text import samples, value
from tests.helpers.topology import SERVER4, ClientExporter, Topology, built_topology, in_client

pytestmark = [pytest.mark.netns, pytest.mark.slow]
TARGETS = 1000
FIRST_PORT = 20000
CAP = 4
COUNTERS = f"""table inet pd {{
  counter diagnosis_tcp {{
  }}
  counter diagnosis_udp {{
  }}
  counter probe_syn {{
  }}
  chain output {{
    type filter hook output priority 0;
    ip daddr {SERVER4} tcp dport {FIRST_PORT}-{FIRST_PORT + TARGETS - 1} ip ttl < 64 counter name diagnosis_tcp
    ip daddr {SERVER4} udp dport 33435-33499 counter name diagnosis_udp
    ip daddr {SERVER4} tcp dport {FIRST_PORT}-{FIRST_PORT + TARGETS - 1} ip ttl 64 counter name probe_syn
  }}
}}
"""
R1_DROPS = f"""table inet pd {{
  chain forward {{
    type filter hook forward priority 0;
    tcp dport {FIRST_PORT}-{FIRST_PORT + TARGETS - 1} drop
  }}
}}
"""
# Times one scrape from inside the client namespace (no interpreter start-up in the figure).
TIMED_SCRAPE = """
import sys, time, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"X-Prometheus-Scrape-Timeout-Seconds": sys.argv[2]})
started = time.monotonic()
body = urllib.request.urlopen(request, timeout=120).read().decode()
print(f"{time.monotonic() - started:.3f}")
sys.stdout.write(body)
"""


@pytest.fixture(scope="module")
def network():
    with built_topology("b", {"r1": R1_DROPS, "client": COUNTERS}) as topology:
        yield topology


def counter(network: Topology, name: str) -> int:
    text = network.exec(network.client, "nft", "list", "counter", "inet", "pd", name).stdout
    return int(re.search(r"packets (\d+)", text).group(1))


def timed_scrape(exporter: ClientExporter, scrape_timeout: float) -> tuple[float, str]:
    done = in_client(
        exporter.topology, "-c", TIMED_SCRAPE, f"http://127.0.0.1:{exporter.port}/metrics", str(scrape_timeout)
    )
    assert done.returncode == 0, done.stderr
    elapsed, _, body = done.stdout.partition("\n")
    return float(elapsed), body


def test_scrape_of_1000_failing_targets_keeps_its_deadline_and_the_diagnosis_budget(network, tmp_path):
    config = tmp_path / "config.yml"
    targets = "\n".join(
        f"  - {{target: '{SERVER4}:{port}', module: diag}}" for port in range(FIRST_PORT, FIRST_PORT + TARGETS)
    )
    config.write_text(f"""global: {{max_diagnoses_in_flight: {CAP}}}
modules:
  diag: {{prober: tcp, timeout: 1s, tcp: {{diagnose: on_failure, diagnose_interval: 1h}}}}
targets:
{targets}
""")
    exporter = ClientExporter(network, str(config), port=19116)
    try:
        scrape_timeout = 5.0
        elapsed, first = timed_scrape(exporter, scrape_timeout)
        assert elapsed < scrape_timeout, f"the scrape took {elapsed:.2f} s, past Prometheus' {scrape_timeout} s"
        found = samples(first)
        assert sum(1 for (name, _), v in found.items() if name == "probe_success" and v == 0) == TARGETS
        # Diagnoses run after the scrape, a few at a time; wait (bounded) until the first ones finished.
        eventually(
            lambda: exporter.get("/metrics", scrape_timeout=0.5),  # a short scrape: cut targets, our own metrics
            until=lambda own: value(own, "connectivity_exporter_path_diagnoses_finished_total") >= 2 * CAP,
            what=f"{2 * CAP} finished diagnoses",
            timeout=120,
            interval=1.0,
        )
        elapsed, second = timed_scrape(exporter, scrape_timeout)  # diagnoses in flight meanwhile
        assert elapsed < scrape_timeout, f"with diagnoses running the scrape took {elapsed:.2f} s"
        sent = counter(network, "diagnosis_tcp") + counter(network, "diagnosis_udp")
        own = exporter.get("/metrics", scrape_timeout=0.5)
    finally:
        exporter.close()
    started = value(own, "connectivity_exporter_path_diagnoses_started_total")
    finished = value(own, "connectivity_exporter_path_diagnoses_finished_total")
    accounted = value(own, "connectivity_exporter_path_diagnosis_packets_total")
    peak = value(own, "connectivity_exporter_path_diagnoses_in_flight_max")
    assert finished >= 2 * CAP, own
    assert peak <= CAP
    assert started <= finished + CAP  # the rest still queued: one per target, never two at once
    assert sent <= started * DEFAULT_SETTINGS.max_packets, (sent, started)
    # What the exporter accounts for its finished diagnoses was really sent, and nothing else beyond
    # what the ones in flight may still send.
    assert accounted <= sent <= accounted + (started - finished) * DEFAULT_SETTINGS.max_packets, (sent, accounted)
    # Diagnoses show up on the later scrape, one verdict per diagnosed target.
    verdicts = [labels for (name, labels), v in samples(second).items() if name == "probe_path_diagnosis" and v == 1]
    assert len(verdicts) >= 2 * CAP
    print(
        f"\n1,000 failing targets: scrape {elapsed:.2f} s; {int(started)} diagnoses started, {int(finished)} "
        f"finished, peak {int(peak)} in flight; {sent} diagnosis packets on the wire, {int(accounted)} accounted "
        f"by finished diagnoses ({accounted / max(finished, 1):.1f} each)"
    )
