"""tcp.probe_addresses: all without a network: the verdict over addresses, RFC 8305's Happy Eyeballs time from
per-address outcomes, the sentence a person reads per case, the config keys, and the families' text (promtool).
The same behaviour against real DNS, servers and firewalls: tests/test_addresses_netns.py."""

from __future__ import annotations

import subprocess

import pytest

from exporter.config.loader import ConfigError, parse_config
from exporter.core.exposition import label_prefix, render
from exporter.probers.connect.address_metrics import ADDRESS_FAMILIES
from exporter.probers.connect.addresses import (
    CONNECTION_ATTEMPT_DELAY,
    experience,
    finish,
    happy_eyeballs_order,
    happy_eyeballs_seconds,
    table,
    to_json,
)
from exporter.probers.connect.result import AddressesReport, AddressesState, AddressOutcome, ProbeResult, TcpState
from tests.helpers.configs import require_binary

OPEN, REFUSED, TIMEOUT, UNREACHABLE = TcpState.OPEN, TcpState.REFUSED, TcpState.TIMEOUT, TcpState.UNREACHABLE


def v4(address: str, state: TcpState, seconds: float | None) -> AddressOutcome:
    return AddressOutcome(address, 4, state, seconds)


def v6(address: str, state: TcpState, seconds: float | None, no_route: bool = False) -> AddressOutcome:
    return AddressOutcome(address, 6, state, seconds, no_local_route=no_route)


def report(*outcomes: AddressOutcome, resolved: int | None = None) -> AddressesReport:
    return finish(AddressesReport(list(outcomes), len(outcomes) if resolved is None else resolved))


def test_rfc8305_order_interleaves_families_ipv6_first() -> None:
    outcomes = [v4("192.0.2.1", OPEN, 0.1), v4("192.0.2.2", OPEN, 0.1), v6("2001:db8::1", OPEN, 0.1)]
    outcomes.append(v6("2001:db8::2", OPEN, 0.1))
    order = [o.address for o in happy_eyeballs_order(outcomes)]
    assert order == ["2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2"]


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        # IPv6 drops: IPv4 starts after the Connection Attempt Delay (RFC 8305 sections 5 and 8: 250 ms).
        ([v6("2001:db8::1", TIMEOUT, 5.0), v4("192.0.2.1", OPEN, 0.02)], CONNECTION_ATTEMPT_DELAY + 0.02),
        # Both work: the IPv6 connect time.
        ([v6("2001:db8::1", OPEN, 0.03), v4("192.0.2.1", OPEN, 0.01)], 0.03),
        # IPv6 slower than the delay: IPv4 started at 250 ms wins when it is done first.
        ([v6("2001:db8::1", OPEN, 0.4), v4("192.0.2.1", OPEN, 0.05)], 0.3),
        # IPv6 refused at 5 ms: the next attempt starts at once, but never within 10 ms (section 5).
        ([v6("2001:db8::1", REFUSED, 0.005), v4("192.0.2.1", OPEN, 0.02)], 0.03),
        # Refused after 100 ms: the next starts when it failed.
        ([v6("2001:db8::1", UNREACHABLE, 0.1), v4("192.0.2.1", OPEN, 0.02)], 0.12),
        # Two dropping addresses before a working one: 2 delays.
        (
            [v6("2001:db8::1", TIMEOUT, 5), v4("192.0.2.1", TIMEOUT, 5), v6("2001:db8::2", OPEN, 0.01)],
            2 * CONNECTION_ATTEMPT_DELAY + 0.01,
        ),
        # Nothing connects: no time.
        ([v6("2001:db8::1", TIMEOUT, 5), v4("192.0.2.1", REFUSED, 0.001)], None),
        # A connect that never started (the deadline passed first) counts as unanswered.
        ([v6("2001:db8::1", TIMEOUT, None), v4("192.0.2.1", OPEN, 0.001)], CONNECTION_ATTEMPT_DELAY + 0.001),
    ],
)
def test_happy_eyeballs_seconds(outcomes: list[AddressOutcome], expected: float | None) -> None:
    got = happy_eyeballs_seconds(outcomes)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("outcomes", "state", "sentence"),
    [
        (
            [v6("2001:db8::1", OPEN, 0.02), v4("192.0.2.1", OPEN, 0.01)],
            AddressesState.ALL_OK,
            "every address connects over IPv4 and IPv6: clients connect in 20.0 ms",
        ),
        (
            [v6("2001:db8::1", TIMEOUT, 5), v4("192.0.2.1", OPEN, 0.001)],
            AddressesState.IPV6_FAILING,
            "clients with IPv6 wait 0.25 s, then connect over IPv4: the IPv6 path drops packets",
        ),
        (
            [v6("2001:db8::1", UNREACHABLE, 0.03), v4("192.0.2.1", OPEN, 0.001)],
            AddressesState.IPV6_FAILING,
            "clients with IPv6 wait 31.0 ms, then connect over IPv4: every IPv6 address is unreachable "
            "(an ICMP error came back)",
        ),
        (
            [v6("2001:db8::1", OPEN, 0.002), v4("192.0.2.1", REFUSED, 0.001)],
            AddressesState.IPV4_FAILING,
            "clients without IPv6 cannot connect (every IPv4 address refuses connections (TCP reset)); "
            "clients with IPv6 connect in 2.0 ms",
        ),
        (
            [v4("192.0.2.1", OPEN, 0.001), v4("192.0.2.2", TIMEOUT, 5)],
            AddressesState.SOME_FAILING,
            "1 of 2 addresses fail (192.0.2.2 drops packets): a client that tries only one address fails now and "
            'then ("it works, sometimes"); Happy Eyeballs clients connect in 1.0 ms',
        ),
        (
            # One of two IPv6 addresses fails, IPv4 works: not a whole family.
            [v6("2001:db8::1", OPEN, 0.001), v6("2001:db8::2", REFUSED, 0.001), v4("192.0.2.1", OPEN, 0.001)],
            AddressesState.SOME_FAILING,
            None,
        ),
        (
            [v6("2001:db8::1", TIMEOUT, 5), v4("192.0.2.1", TIMEOUT, 5)],
            AddressesState.ALL_FAILING,
            "no client can connect: every address drops packets (no answer)",
        ),
        (
            [v6("2001:db8::1", UNREACHABLE, 0.0, no_route=True), v4("192.0.2.1", OPEN, 0.001)],
            AddressesState.ALL_OK,
            "every address connects over IPv4: clients connect in 1.0 ms",
        ),
        ([], AddressesState.DNS_ERROR, "clients cannot connect: the name has no address"),
    ],
)
def test_verdict_and_sentence(outcomes: list[AddressOutcome], state: AddressesState, sentence: str | None) -> None:
    found = report(*outcomes)
    assert found.state is state
    if sentence is not None:
        assert experience(found) == sentence


def test_no_ipv6_route_is_one_note_not_failing_addresses() -> None:
    found = report(v6("2001:db8::1", UNREACHABLE, 0.0, no_route=True), v4("192.0.2.1", OPEN, 0.001))
    assert found.no_route_families == (6,) and found.all_connected
    document = to_json(found)
    assert (
        document["note"] == "this exporter cannot reach IPv6: no route (the IPv6 addresses of the name are not counted)"
    )
    assert [entry["counted"] for entry in document["list"]] == [False, True]
    assert sum("cannot reach IPv6" in line for line in table(found)) == 1
    # Only an IPv6 address refused locally for want of a route makes the family "no route".
    assert (
        report(v6("2001:db8::1", UNREACHABLE, 0.0), v4("192.0.2.1", OPEN, 0.001)).state is AddressesState.IPV6_FAILING
    )


def test_the_cap_is_said() -> None:
    found = report(v4("192.0.2.1", OPEN, 0.001), resolved=3)
    assert found.cut == 2
    assert to_json(found)["not_probed"] == 2
    assert any("2 more not probed" in line for line in table(found))


def test_config_keys() -> None:
    config = parse_config("modules:\n  m: {prober: tcp, tcp: {probe_addresses: all, probe_addresses_max: 4}}\n")
    assert config.modules["m"].tcp.probe_addresses == "all"
    assert config.modules["m"].tcp.probe_addresses_max == 4
    default = parse_config("modules:\n  m: {prober: smtp}\n").modules["m"].tcp
    assert (default.probe_addresses, default.probe_addresses_max) == ("one", 8)
    for bad, words in (
        ("probe_addresses: every", "expected one of one, all"),
        ("probe_addresses_max: 0", "out of range"),
    ):
        with pytest.raises(ConfigError) as raised:
            parse_config(f"modules:\n  m: {{prober: tcp, tcp: {{{bad}}}}}\n")
        assert any(words in error and "probe_addresses" in error for error in raised.value.errors)


def test_families_pass_promtool_and_are_absent_with_one() -> None:
    result = ProbeResult(success=False)
    result.addresses = report(v6("2001:db8::1", TIMEOUT, 5), v4("192.0.2.1", OPEN, 0.001), resolved=3)
    plain = ProbeResult(success=True)
    families = frozenset(ADDRESS_FAMILIES)
    prefix = label_prefix([("target", "dual.example:443"), ("module", "tcp_all")])
    text = render([(prefix, result, families), (prefix.replace("dual", "one"), plain, families)], ADDRESS_FAMILIES)
    assert "one.example" not in text
    assert (
        'probe_address_success{target="dual.example:443",module="tcp_all",address="2001:db8::1",ip_protocol="6"} 0'
        in text
    )
    assert 'probe_addresses_state{target="dual.example:443",module="tcp_all",state="ipv6_failing"} 1' in text
    assert 'probe_addresses_not_probed{target="dual.example:443",module="tcp_all"} 1' in text
    check = subprocess.run(
        [require_binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_plan_writes_the_address_families_only_for_all_modules() -> None:
    from exporter.probers.connect.address_metrics import ADDRESS_FAMILY_SET
    from exporter.probing.plan import build_plan

    one = parse_config("modules:\n  m: {prober: tcp}\ntargets:\n  - {target: 'a.example:80', module: m}\n")
    assert not ADDRESS_FAMILY_SET & set(build_plan(one).families)
    mixed = parse_config(
        "modules:\n  m: {prober: tcp}\n  a: {prober: tcp, tcp: {probe_addresses: all}}\n"
        "targets:\n  - {target: 'a.example:80', module: m}\n  - {target: 'a.example:80', module: a}\n"
    )
    plan = build_plan(mixed)
    assert set(plan.families) >= ADDRESS_FAMILY_SET
    by_module = {target.module.name: target.families for target in plan.targets}
    assert not ADDRESS_FAMILY_SET & by_module["m"] and by_module["a"] >= ADDRESS_FAMILY_SET


def test_the_table_does_not_repeat_the_verdict() -> None:
    found = report(v6("2001:db8::1", TIMEOUT, 5), v4("192.0.2.1", OPEN, 0.001))
    sentence = experience(found)
    assert any(sentence[1:] in line for line in table(found))
    assert not any(sentence[1:] in line for line in table(found, said=sentence))


def test_the_cap_bounds_the_addresses_of_several_names_together(caplog: pytest.LogCaptureFixture) -> None:
    """A mail domain's MX hosts (dial.connect_beside): an address two hosts share is connected once, and
    tcp.probe_addresses_max bounds all of them together, so the per-address series stay within the cap. The
    connects are real ones to closed loopback ports (refused at once)."""
    import asyncio
    import logging

    from exporter.core.deadline import Deadline
    from exporter.probers.connect.dial import connect_beside
    from exporter.probers.connect.resolve import Resolver
    from exporter.probers.connect.settings import TcpSettings

    tcp = TcpSettings(probe_addresses="all", probe_addresses_max=3)
    every = AddressesReport()

    async def nothing() -> None:
        return None

    async def main() -> None:
        resolver = Resolver(max_workers=1)
        try:
            deadline = Deadline.after(10.0)
            for name, addresses in (("mx1.test", ["127.0.0.1", "127.0.0.2"]), ("mx2.test", ["127.0.0.2", "127.0.0.3"])):
                await connect_beside(nothing(), addresses, 9, tcp, deadline, resolver, every, name)
            await connect_beside(nothing(), ["127.0.0.4", "127.0.0.5"], 9, tcp, deadline, resolver, every, "mx3.test")
        finally:
            resolver.close()

    with caplog.at_level(logging.WARNING, logger="exporter.addresses"):
        asyncio.run(main())
    assert [o.address for o in every.outcomes] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert all(o.state is REFUSED for o in every.outcomes)
    assert every.resolved == 5 and every.cut == 2
    assert [r.getMessage() for r in caplog.records] == [
        "mx3.test with the names probed before it: 5 addresses; probing the first 3 (tcp.probe_addresses_max): "
        "2 not probed"
    ]
    assert any("2 more not probed" in line for line in table(finish(every)))
