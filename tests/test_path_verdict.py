"""The path verdict, table-driven over hand-built evidence (one row per way a path can end), the
ICMP error-queue parsing, the metric families, and the whole diagnosis end to end on loopback
(real sockets, real ICMP errors from the kernel, no privileges needed)."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess

import pytest
from prometheus_client import CollectorRegistry

from exporter.config.loader import parse_config
from exporter.pathdiag.icmp import IP_RECVERR, IPV6_RECVERR, IcmpKind, IcmpReply, describe, parse_extended_error
from exporter.pathdiag.model import Answer, HopEvidence, PathDiagnosis, Reply, Verdict
from exporter.pathdiag.render import hop_table, path_json, short
from exporter.pathdiag.trace import diagnose
from exporter.pathdiag.verdict import decide
from exporter.probing.diagnosis_scheduler import DiagnosisScheduler
from exporter.probing.path_metrics import render_path_families
from exporter.web.app import EXPORTER, create_app
from tests.helpers.configs import require_binary
from tests.helpers.eventually import eventually
from tests.helpers.metrics_text import samples, value

T, R1, R2 = "10.0.3.2", "10.0.1.1", "10.0.2.2"
T6, R2_6 = "2001:db8:3::2", "2001:db8:2::2"
SILENT = Answer(Reply.SILENCE)


def te(address: str) -> Answer:
    version = 6 if ":" in address else 4
    return Answer(Reply.TIME_EXCEEDED, address, 0.001, IcmpReply(version, 11 if version == 4 else 3, 0, address, 113))


def unreach(reply: Reply, address: str, code: int) -> Answer:
    version = 6 if ":" in address else 4
    return Answer(reply, address, 0.001, IcmpReply(version, 3 if version == 4 else 1, code, address, 113))


def hop(ttl: int, tcp: Answer | None = None, udp: Answer | None = None, tries: int = 1) -> HopEvidence:
    return HopEvidence(ttl, tcp, tries if tcp is not None else 0, udp, 1 if udp is not None else 0)


SYN_ACK = Answer(Reply.SYN_ACK, T, 0.001)
RST = Answer(Reply.RESET, T, 0.001)
PORT_UNREACH_T = unreach(Reply.PORT_UNREACHABLE, T, 3)

# (id, hops, echo, verdict, blocked_by, blocked_at_hop, hops_to_host, words that must appear)
CASES = [
    (
        "open",
        [hop(1, te(R1)), hop(2, te(R2)), hop(3, SYN_ACK)],
        None,
        Verdict.REACHED,
        None,
        None,
        3,
        "the path is clear",
    ),
    (
        "closed port: the host's own reset",
        [hop(1, te(R1)), hop(2, te(R2)), hop(3, RST, PORT_UNREACH_T)],
        None,
        Verdict.REACHED,
        T,
        3,
        3,
        "nothing listens on port 25",
    ),
    (
        "reset at the host's hop, distance unknown",
        [hop(1, te(R1)), hop(2, te(R2)), hop(3, RST, SILENT, 3)],
        None,
        Verdict.UNKNOWN,
        None,
        None,
        None,
        "Still possible: the host itself refused",
    ),
    (
        "reset forged one hop early",
        [hop(1, te(R1)), hop(2, RST, te(R2)), hop(3, None, PORT_UNREACH_T)],
        None,
        Verdict.NETWORK_REJECTED,
        R1,
        1,
        3,
        "forges resets",
    ),
    (
        "host firewall ICMP reject",
        [hop(1, te(R1)), hop(2, te(R2)), hop(3, unreach(Reply.PROHIBITED, T, 13))],
        None,
        Verdict.HOST_REJECTED,
        T,
        3,
        3,
        "the host's own firewall rejects port 25, not the network",
    ),
    (
        "router ICMP reject",
        [hop(1, te(R1)), hop(2, te(R2)), hop(3, unreach(Reply.PROHIBITED, R2, 13))],
        None,
        Verdict.NETWORK_REJECTED,
        R2,
        2,
        None,
        "administratively prohibited by 10.0.2.2 (hop 2) — a network firewall",
    ),
    (
        "router rejects with port unreachable (iptables REJECT)",
        [hop(1, te(R1)), hop(2, unreach(Reply.PORT_UNREACHABLE, R1, 3))],
        None,
        Verdict.NETWORK_REJECTED,
        R1,
        1,
        None,
        "a network firewall, not the host",
    ),
    (
        "no route at the first router",
        [hop(1, unreach(Reply.NO_ROUTE, R1, 0))],
        None,
        Verdict.NO_ROUTE,
        R1,
        1,
        None,
        "has no route to 10.0.3.2",
    ),
    (
        "unreachable route: host unreachable without forwarding",
        [hop(1, unreach(Reply.HOST_UNREACHABLE, R1, 1))],
        None,
        Verdict.NO_ROUTE,
        R1,
        1,
        None,
        "did not forward",
    ),
    (
        "last router cannot deliver (ARP failed)",
        [hop(1, te(R1)), hop(2, te(R2)), hop(3, unreach(Reply.HOST_UNREACHABLE, R2, 1))],
        None,
        Verdict.HOST_DOWN,
        R2,
        2,
        None,
        "the host is down",
    ),
    (
        "last router cannot deliver the UDP probe either",
        [hop(1, te(R1)), hop(2, te(R2)), hop(3, SILENT, unreach(Reply.HOST_UNREACHABLE, R2, 1), 3)],
        None,
        Verdict.HOST_DOWN,
        R2,
        2,
        None,
        "could not deliver it",
    ),
    (
        "SYN dies after the first router",
        [hop(1, te(R1)), hop(2, SILENT, te(R2), 3), hop(3, None, PORT_UNREACH_T)],
        None,
        Verdict.DROPPED_IN_NETWORK,
        R1,
        1,
        3,
        "dropped after 10.0.1.1 (hop 1)",
    ),
    (
        "SYN dies after the first router, host distance unknown",
        [hop(1, te(R1)), hop(2, SILENT, te(R2), 3), hop(3, None, SILENT)],
        None,
        Verdict.DROPPED_IN_NETWORK,
        R1,
        1,
        None,
        "farther than hop 2",
    ),
    (
        "SYN dies before any router",
        [hop(1, SILENT, te(R1), 3)],
        None,
        Verdict.DROPPED_IN_NETWORK,
        None,
        None,
        None,
        "before the first router",
    ),
    (
        "SYN dies at the host's hop while it is up",
        [hop(1, te(R1)), hop(2, te(R2)), hop(3, SILENT, PORT_UNREACH_T, 3)],
        None,
        Verdict.DROPPED_AT_LAST_HOP,
        R2,
        2,
        3,
        "the host's own firewall, or its last router 10.0.2.2",
    ),
    (
        "direct neighbour drops",
        [hop(1, SILENT, PORT_UNREACH_T, 3)],
        None,
        Verdict.DROPPED_AT_LAST_HOP,
        T,
        1,
        1,
        "the host's own firewall drops it",
    ),
    (
        "a quiet hop hides where the SYN dies",
        [hop(1, te(R1)), hop(2, SILENT, SILENT, 3), hop(3, SILENT, unreach(Reply.PORT_UNREACHABLE, T, 3), 3)],
        None,
        Verdict.UNKNOWN,
        None,
        None,
        3,
        "where the SYN dies cannot be told",
    ),
    (
        "everything silent after hop 2",
        [hop(1, te(R1)), hop(2, te(R2)), hop(3, SILENT, SILENT, 3), hop(4, SILENT, SILENT)],
        None,
        Verdict.UNKNOWN,
        None,
        None,
        None,
        "or the host is down",
    ),
    (
        "a quiet router that forwards",
        [hop(1, te(R1)), hop(2, SILENT, SILENT, 3), hop(3, SYN_ACK)],
        None,
        Verdict.REACHED,
        None,
        None,
        3,
        "accepted the connection",
    ),
    (
        "nothing answers at all",
        [hop(1, SILENT, SILENT, 3), hop(2, SILENT, SILENT)],
        None,
        Verdict.UNKNOWN,
        None,
        None,
        None,
        "nothing on the path answered",
    ),
    (
        "this machine has no route",
        [hop(1, Answer(Reply.NO_ROUTE, None, 0.0))],
        None,
        Verdict.NO_ROUTE,
        None,
        None,
        None,
        "this machine has no route",
    ),
    (
        "IPv6: host firewall",
        [hop(1, te("2001:db8:1::1")), hop(2, unreach(Reply.PROHIBITED, T6, 1))],
        None,
        Verdict.HOST_REJECTED,
        T6,
        2,
        2,
        "administratively prohibited by 2001:db8:3::2 itself",
    ),
    (
        "IPv6: address unreachable after forwarding",
        [hop(1, te("2001:db8:1::1")), hop(2, te(R2_6)), hop(3, unreach(Reply.HOST_UNREACHABLE, R2_6, 3))],
        None,
        Verdict.HOST_DOWN,
        R2_6,
        2,
        None,
        "address unreachable from 2001:db8:2::2 (hop 2)",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_verdict(case):
    name, hops, echo, verdict, blocked_by, at_hop, hops_to_host, words = case
    target = T6 if name.startswith("IPv6") else T
    decision = decide(target, 25, hops, host_echo=echo)
    assert decision.verdict is verdict, decision.words
    assert decision.blocked_by == blocked_by
    assert decision.blocked_at_hop == at_hop
    assert decision.hops_to_host == hops_to_host
    assert words in decision.words
    if verdict is Verdict.UNKNOWN:
        assert decision.remaining and "Still possible" in decision.words
    else:
        assert decision.remaining == ()


def test_hop_order_does_not_matter():
    hops = [hop(3, SILENT, PORT_UNREACH_T, 3), hop(1, te(R1)), hop(2, te(R2))]
    assert decide(T, 25, hops).verdict is Verdict.DROPPED_AT_LAST_HOP


def test_unknown_lists_what_remains_and_an_echo_rules_out_host_down():
    hops = [hop(1, te(R1)), hop(2, te(R2)), hop(3, SILENT, SILENT, 3), hop(4, SILENT, SILENT)]
    assert decide(T, 25, hops).remaining == (Verdict.DROPPED_IN_NETWORK, Verdict.DROPPED_AT_LAST_HOP, Verdict.HOST_DOWN)
    with_echo = decide(T, 25, hops, host_echo=True)
    assert with_echo.verdict is Verdict.UNKNOWN
    assert with_echo.remaining == (Verdict.DROPPED_IN_NETWORK, Verdict.DROPPED_AT_LAST_HOP)
    assert "host is down" not in with_echo.words


def test_a_trace_cut_short_says_so():
    decision = decide(T, 25, [hop(1, te(R1))], cut_short="stopped at the packet budget of 48")
    assert decision.verdict is Verdict.UNKNOWN
    assert "stopped at the packet budget of 48" in decision.words


def test_a_reset_is_no_proof_of_the_host_distance():
    # The forged reset carries the target's address; only the UDP probe shows the host is farther.
    decision = decide(T, 25, [hop(1, te(R1)), hop(2, RST, te(R2)), hop(3, None, PORT_UNREACH_T)])
    assert decision.hops_to_host == 3


# --- ICMP error-queue messages ---------------------------------------------------------------------------


def extended_error(origin: int, icmp_type: int, code: int, sender: bytes, family: int) -> bytes:
    head = struct.pack("=IBBBBII", 113, origin, icmp_type, code, 0, 0, 0)
    if family == socket.AF_INET:
        return head + struct.pack("=H", family) + b"\0\0" + sender + b"\0" * 8
    return head + struct.pack("=H", family) + b"\0" * 6 + sender + b"\0" * 4


def test_parse_ipv4_time_exceeded_with_its_sender():
    data = extended_error(2, 11, 0, socket.inet_pton(socket.AF_INET, R1), socket.AF_INET)
    reply = parse_extended_error(socket.IPPROTO_IP, IP_RECVERR, data)
    assert reply == IcmpReply(4, 11, 0, R1, 113)
    assert reply.kind is IcmpKind.TIME_EXCEEDED


def test_parse_ipv6_admin_prohibited():
    data = extended_error(3, 1, 1, socket.inet_pton(socket.AF_INET6, R2_6), socket.AF_INET6)
    reply = parse_extended_error(socket.IPPROTO_IPV6, IPV6_RECVERR, data)
    assert reply == IcmpReply(6, 1, 1, R2_6, 113)
    assert reply.kind is IcmpKind.PROHIBITED and reply.description == "administratively prohibited"


@pytest.mark.parametrize(
    "level, kind, data",
    [
        (socket.IPPROTO_IP, IP_RECVERR, extended_error(1, 0, 0, b"\0" * 4, socket.AF_INET)),  # local origin
        (socket.IPPROTO_IP, IP_RECVERR, b"\0" * 10),  # truncated
        (socket.IPPROTO_IP, IP_RECVERR, struct.pack("=IBBBBII", 113, 2, 3, 1, 0, 0, 0)),  # no offender
        (socket.SOL_SOCKET, 1, extended_error(2, 3, 1, b"\0" * 4, socket.AF_INET)),  # another message
    ],
)
def test_messages_without_an_icmp_sender_are_ignored(level, kind, data):
    assert parse_extended_error(level, kind, data) is None


@pytest.mark.parametrize(
    "version, icmp_type, code, words",
    [
        (4, 3, 13, "administratively prohibited"),
        (4, 3, 0, "network unreachable"),
        (4, 3, 1, "host unreachable"),
        (4, 3, 3, "port unreachable"),
        (4, 3, 10, "host administratively prohibited"),
        (4, 11, 0, "time to live exceeded in transit"),
        (6, 1, 0, "no route to destination"),
        (6, 1, 3, "address unreachable"),
        (6, 3, 0, "hop limit exceeded in transit"),
        (6, 2, 0, "packet too big"),
        (4, 3, 99, "destination unreachable (code 99)"),
    ],
)
def test_icmp_messages_are_named_as_their_rfcs_name_them(version, icmp_type, code, words):
    assert describe(version, icmp_type, code) == words


def test_ipv4_mapped_sender_counts_as_the_host():
    assert IcmpReply(4, 3, 13, "::ffff:10.0.3.2", 13).sent_by_host(T)


# --- metric families ---------------------------------------------------------------------------------------


def diagnosis(hops, target=T) -> PathDiagnosis:
    return PathDiagnosis(target, 25, decide(target, 25, hops), tuple(hops), True, 5, 1.5, 1_800_000_000.0)


def test_families_one_hot_and_bounded():
    dropped = diagnosis([hop(1, te(R1)), hop(2, te(R2)), hop(3, SILENT, PORT_UNREACH_T, 3)])
    text = "".join(render_path_families([('target="a:25",module="m"', dropped), ('target="b:25",module="m"', None)]))
    found = samples(text)
    on = [dict(labels)["verdict"] for (name, labels), v in found.items() if name == "probe_path_diagnosis" and v == 1]
    assert on == ["dropped_at_last_hop"]
    assert sum(1 for (name, _), _v in found.items() if name == "probe_path_diagnosis") == len(Verdict)
    assert value(text, "probe_path_blocked_by_info", target="a:25", address=R2) == 1
    assert value(text, "probe_path_last_responding_hop", target="a:25") == 2
    assert value(text, "probe_path_hops_to_host", target="a:25") == 3
    assert value(text, "probe_path_blocked_at_hop", target="a:25") == 2
    assert value(text, "probe_path_diagnosis_timestamp_seconds", target="a:25") == 1_800_000_000.0
    assert 'target="b:25"' not in text


def test_families_leave_out_what_is_not_known():
    unknown = diagnosis([hop(1, SILENT, SILENT, 3), hop(2, SILENT, SILENT)])
    text = "".join(render_path_families([("", unknown)]))
    assert "probe_path_hops_to_host" not in text and "probe_path_blocked_by_info" not in text
    assert "probe_path_last_responding_hop" not in text
    assert 'probe_path_diagnosis{verdict="unknown"} 1' in text
    assert list(render_path_families([])) == []


def test_families_pass_promtool(tmp_path):
    promtool = require_binary("promtool")
    text = "".join(
        render_path_families(
            [
                ('target="a:25",module="m"', diagnosis([hop(1, te(R1)), hop(2, unreach(Reply.PROHIBITED, R2, 13))])),
                ('target="b:25",module="m"', diagnosis([hop(1, te(R1)), hop(2, SILENT, te(R2), 3)])),
            ]
        )
    )
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hop_table_and_json_for_people_and_programs():
    dropped = diagnosis([hop(1, te(R1)), hop(2, SILENT, te(R2), 3), hop(3, None, PORT_UNREACH_T)])
    lines = hop_table(dropped)
    assert any(line.split()[:2] == ["1", R1] for line in lines)
    assert any(line.split()[:3] == ["2", "*", "no"] and "(3 tries)" in line for line in lines)
    assert "Path verdict: dropped_in_network (dropped after 10.0.1.1 (hop 1))" in lines
    document = path_json(dropped)
    assert {k: document[k] for k in ("verdict", "blocked_by", "blocked_at_hop", "hops_to_host")} == {
        "verdict": "dropped_in_network",
        "blocked_by": R1,
        "blocked_at_hop": 1,
        "hops_to_host": 3,
    }
    assert document["hops"][0] == {
        "ttl": 1,
        "address": R1,
        "reply": "time_exceeded",
        "rtt_ms": 1.0,
        "tries": 1,
        "udp": None,
    }
    assert document["hops"][1]["address"] is None and document["hops"][1]["reply"] == "silence"
    assert short(dropped) == "dropped after 10.0.1.1 (hop 1)"


# --- end to end on loopback: real sockets, real ICMP from the kernel, no privileges -------------------------


async def test_loopback_closed_port_is_the_hosts_own_reset(closed_port):
    result = await diagnose("127.0.0.1", closed_port)
    assert result.verdict is Verdict.REACHED
    assert result.decision.blocked_by == "127.0.0.1"
    assert result.decision.hops_to_host == 1
    assert result.hops[0].tcp.reply is Reply.RESET
    assert result.hops[0].udp.reply is Reply.PORT_UNREACHABLE and result.hops[0].udp.address == "127.0.0.1"
    assert result.packets == 2


async def test_loopback_open_port(listener):
    result = await diagnose("127.0.0.1", listener)
    assert result.verdict is Verdict.REACHED and result.decision.blocked_by is None
    assert result.packets == 1


def finished(scheduler: DiagnosisScheduler):
    """How many diagnoses ``scheduler`` finished, as an async probe for ``eventually`` (they run on this loop)."""

    async def count() -> int:
        return scheduler.finished

    return count


async def test_scheduler_caps_diagnoses_in_flight_and_repeats_none_within_the_interval(closed_port):
    scheduler = DiagnosisScheduler(max_in_flight=2)
    keys = [(f"127.0.0.{n}:{closed_port}", "m") for n in range(1, 7)]
    for n, key in enumerate(keys, 1):
        assert scheduler.submit(key, f"127.0.0.{n}", closed_port, interval=600)
    assert not scheduler.submit(keys[0], "127.0.0.1", closed_port, interval=600)  # queued already
    await eventually(finished(scheduler), until=lambda n: n == len(keys), what=f"{len(keys)} finished diagnoses")
    assert scheduler.peak_in_flight == 2
    assert scheduler.started == len(keys)
    assert all(scheduler.latest(key).verdict is Verdict.REACHED for key in keys)
    assert not scheduler.submit(keys[0], "127.0.0.1", closed_port, interval=600)  # within its interval
    assert scheduler.submit(keys[0], "127.0.0.1", closed_port, interval=0)
    await scheduler.close()


def diagnosing_config(*targets: str, timeout: str = "2s"):
    lines = "\n".join(f"  - {{target: '{t}', module: diag}}" for t in targets)
    return parse_config(
        f"""
global: {{max_diagnoses_in_flight: 2}}
modules:
  diag: {{prober: tcp, timeout: {timeout}, tcp: {{diagnose: on_failure, diagnose_interval: 1h}}}}
  tcp_connect: {{prober: tcp, timeout: {timeout}}}
targets:
{lines}
""",
        "test.yml",
    )


async def test_scrape_submits_failures_and_later_scrapes_show_the_diagnosis(aiohttp_client, closed_port, listener):
    app = create_app(
        diagnosing_config(f"127.0.0.1:{closed_port}", f"127.0.0.1:{listener}"), registry=CollectorRegistry()
    )
    client = await aiohttp_client(app)
    first = await (await client.get("/metrics")).text()
    assert "probe_path_diagnosis{" not in first  # never on the scrape's own time
    scheduler = app[EXPORTER].diagnoses
    await eventually(finished(scheduler), until=lambda n: n >= 1, what="the first diagnosis to finish")
    text = await (await client.get("/metrics")).text()
    closed = f"127.0.0.1:{closed_port}"
    assert value(text, "probe_path_diagnosis", target=closed, verdict="reached") == 1
    assert value(text, "probe_path_blocked_by_info", target=closed, address="127.0.0.1") == 1
    assert value(text, "probe_path_hops_to_host", target=closed) == 1
    assert f'target="127.0.0.1:{listener}",module="diag",verdict' not in text  # succeeded: nothing to diagnose
    assert scheduler.started == 1  # the second scrape did not diagnose again within the interval


async def test_probe_runs_the_diagnosis_inline(aiohttp_client, closed_port):
    client = await aiohttp_client(create_app(diagnosing_config(), registry=CollectorRegistry()))
    text = await (await client.get(f"/probe?target=127.0.0.1:{closed_port}&module=diag")).text()
    assert value(text, "probe_path_diagnosis", verdict="reached") == 1
    debug = await (await client.get(f"/probe?target=127.0.0.1:{closed_port}&module=diag&debug=true")).text()
    assert "Path verdict: reached" in debug
    assert "The host 127.0.0.1 itself answered with a TCP reset" in debug
    plain = await (await client.get(f"/probe?target=127.0.0.1:{closed_port}&module=tcp_connect")).text()
    assert "probe_path_diagnosis" not in plain  # diagnose: never (the default)


async def test_a_target_cut_at_the_scrape_deadline_is_still_diagnosed_by_its_ip_literal(closed_port):
    from exporter.probing.plan import build_plan
    from exporter.probing.runner import deadline_result

    plan = build_plan(diagnosing_config(f"127.0.0.1:{closed_port}", f"[::1]:{closed_port}"))
    cut = deadline_result(plan.targets[0].module, 2.0)  # no address: it never got an outcome
    scheduler = DiagnosisScheduler(max_in_flight=2)
    assert scheduler.after_scrape(plan.targets, [cut, cut]) == 2
    await eventually(finished(scheduler), until=lambda n: n == 2, what="both diagnoses to finish")
    assert scheduler.latest((f"127.0.0.1:{closed_port}", "diag")).target == "127.0.0.1"
    assert scheduler.latest((f"[::1]:{closed_port}", "diag")).target == "::1"
    assert len(scheduler.entries(plan.targets)) == 2
    await scheduler.close()


async def test_connected_socket_drops_ip_recverr_and_a_refusal_has_no_icmp(listener, closed_port):
    from exporter.core.address import parse_host_port
    from exporter.probers.connect.dial import connect_target
    from exporter.probers.connect.resolve import Resolver
    from exporter.probers.connect.result import ProbeResult

    module = diagnosing_config().modules["tcp_connect"]
    resolver = Resolver(max_workers=1)
    try:
        loop = asyncio.get_running_loop()
        result = ProbeResult()
        sock = await connect_target(
            result, parse_host_port(f"127.0.0.1:{listener}"), module.tcp, loop.time() + 5, resolver
        )
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_IP, IP_RECVERR) == 0  # an established session rides out ICMP
        sock.close()
        refused = ProbeResult()
        assert (
            await connect_target(
                refused, parse_host_port(f"127.0.0.1:{closed_port}"), module.tcp, loop.time() + 5, resolver
            )
            is None
        )
        assert refused.icmp is None  # a TCP reset, not ICMP
        assert f"connecting to 127.0.0.1:{closed_port}" in refused.detail
        assert " from 127.0.0.1" not in refused.detail
    finally:
        resolver.close()


def run_check(*argv: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "exporter", "check", *argv], capture_output=True, text=True, timeout=60
    )


def test_check_diagnoses_by_default_and_no_diagnose_skips_it(closed_port):
    import json

    diagnosed = json.loads(run_check(f"127.0.0.1:{closed_port}", "--json").stdout)
    assert diagnosed["path"]["verdict"] == "reached" and diagnosed["path"]["hops_to_host"] == 1
    assert diagnosed["path"]["hops"][0] == {
        **diagnosed["path"]["hops"][0],
        "ttl": 1,
        "address": "127.0.0.1",
        "reply": "reset",
    }
    skipped = json.loads(run_check(f"127.0.0.1:{closed_port}", "--json", "--no-diagnose").stdout)
    assert skipped["path"] is None
    text = run_check(f"127.0.0.1:{closed_port}").stdout
    assert "Path verdict: reached (rejected by 127.0.0.1 (hop 1))" not in text  # a reset by the host is no rejection
    assert "Path verdict: reached (reached the host)" in text
    assert "The host 127.0.0.1 itself answered with a TCP reset from its own hop (1 hop away)" in text
    assert "Path to" not in run_check(f"127.0.0.1:{closed_port}", "--no-diagnose").stdout
