"""The status page and its bounded history: real scrapes of loopback targets, hostile strings escaped."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

from exporter.config.loader import Module, parse_config
from exporter.core.address import parse_host_port
from exporter.probers.connect.result import ProbeResult, TcpState
from exporter.probers.smtp.replies import Reply
from exporter.probers.smtp.result import SmtpDetails
from exporter.probers.tls.handshake import TlsInfo
from exporter.service.history import ProbeHistory
from exporter.web.app import EXPORTER
from exporter.web.statuspage import render_status_page
from tests.helpers.configs import tcp_config
from tests.helpers.html_tables import Tables

TCP = Module(name="tcp_connect", prober="tcp")


def result(success: bool, state: str = "open", detail: str = "") -> ProbeResult:
    return ProbeResult(
        success=success, state=state, tcp_state=TcpState.OPEN if success else TcpState.REFUSED, detail=detail
    )


def planned(count: int) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(address=parse_host_port(f"127.0.{i // 250}.{i % 250 + 1}:25"), module=TCP) for i in range(count)
    ]


# --- history --------------------------------------------------------------------------------


def test_failures_outlive_a_flood_of_successes():
    history = ProbeHistory(recent=10, failures=5)
    address = parse_host_port("127.0.0.1:1")
    history.record_probe(address, TCP, result(False, "refused"), 1.0)
    for i in range(50):
        history.record_probe(address, TCP, result(True), 2.0 + i)
    assert len(history.recent) == 10 and all(e.result.success for e in history.recent)
    assert [e.result.state for e in history.failures] == ["refused"]
    assert history.find(history.failures[0].id).result.state == "refused"
    assert history.find(10_000) is None


def test_a_large_scrape_keeps_only_its_newest_entries():
    history = ProbeHistory(recent=100, failures=100)
    targets = planned(10_000)
    results = [result(i % 3 != 0, "open" if i % 3 else "refused") for i in range(10_000)]
    history.record_scrape(targets, results, 5.0)
    assert [e.address for e in history.recent] == [t.address for t in targets[-100:]]
    failed = [t.address for t, r in zip(targets, results, strict=False) if not r.success]
    assert [e.address for e in history.failures] == failed[-100:]
    ids = [e.id for e in (*history.recent, *history.failures)]
    assert len(set(ids)) == len(ids)
    rows = list(history.latest(targets))
    assert len(rows) == 10_000 and rows[3] == (targets[3].address, TCP, 5.0, results[3])


def test_latest_merges_scrapes_and_ad_hoc_probes_and_bounds_the_ad_hoc_ones():
    history = ProbeHistory(ad_hoc=4)
    targets = planned(2)
    history.record_scrape(targets, [result(True), result(True)], 10.0)
    for i in range(5):
        history.record_probe(parse_host_port(f"127.1.0.{i + 1}:25"), TCP, result(True), 11.0 + i)
    newer = result(False, "refused")
    history.record_probe(targets[1].address, TCP, newer, 20.0)  # /probe of a configured target
    older = result(False, "refused")
    history.record_probe(targets[0].address, TCP, older, 9.0)  # older than the scrape: not shown
    rows = list(history.latest(targets))
    assert len(rows) == 2 and rows[0][3].success and rows[1][3] is newer and rows[1][2] == 20.0
    # Configured targets first, then the most recent ad-hoc ones (the bound is 4 /probe keys), newest first.
    assert [str(r[0]) for r in history.ad_hoc(targets)] == ["127.1.0.5:25", "127.1.0.4:25"]
    assert list(history.latest(planned(3)))[2][2:] == (None, None)  # configured, never probed


# --- the page, served by the real app after real probes ------------------------------------------


async def test_status_page_shows_the_latest_state_of_every_target(make_client, listener, closed_port):
    client = await make_client(tcp_config(f"127.0.0.1:{listener}", f"127.0.0.1:{closed_port}"))
    page = Tables(await (await client.get("/")).text())
    assert [row["State"] for row in page.rows("targets")] == ["not probed yet", "not probed yet"]

    assert (await client.get("/metrics")).status == 200
    response = await client.get("/")
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    html = await response.text()
    page = Tables(html)
    rows = {row["Target"]: row for row in page.rows("targets")}
    assert rows[f"127.0.0.1:{listener}"]["State"] == "open"
    assert rows[f"127.0.0.1:{closed_port}"]["State"] == "refused"
    assert rows[f"127.0.0.1:{closed_port}"]["Connect"].endswith(" ms")  # the time until the RST came back
    assert "ECONNREFUSED" in rows[f"127.0.0.1:{closed_port}"]["Detail"]
    assert "Banner after" not in page.tables["targets"][0]  # no SMTP columns without an SMTP module
    assert 'class="state s-refused"' in html and 'class="state s-open"' in html
    assert f"/probe?target=127.0.0.1:{closed_port}&amp;module=tcp_connect&amp;debug=true" in html
    assert len(page.tables["recent"]) == 3 and len(page.tables["failures"]) == 2
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from elsewhere
    assert "<script" not in html

    # The live transcript link and the recorded transcript link both work.
    live = await client.get(f"/probe?target=127.0.0.1:{closed_port}&module=tcp_connect&debug=true")
    assert "Verdict: FAILURE, state refused" in await live.text()
    history_link = next(link for link in page.links if link.startswith("/history?id="))
    failure_link = [link for link in page.links if link.startswith("/history?id=")][-1]
    recorded = await client.get(failure_link)
    assert recorded.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert recorded.headers["X-Content-Type-Options"] == "nosniff"
    text = await recorded.text()
    assert f"of 127.0.0.1:{closed_port} with module tcp_connect" in text
    assert f"Trying 127.0.0.1:{closed_port}..." in text
    assert 'probe_tcp_state{state="refused"} 1' in text
    assert (await client.get(history_link)).status == 200


async def test_ad_hoc_probes_appear_on_the_page(make_client, listener):
    client = await make_client(tcp_config())
    await client.get(f"/probe?target=127.0.0.1:{listener}&module=tcp_connect")
    page = Tables(await (await client.get("/")).text())
    assert page.rows("targets") == []  # /probe-only targets are listed apart from the configured ones
    assert [page.rows("adhoc")[0][k] for k in ("Target", "Module", "State")] == [
        f"127.0.0.1:{listener}",
        "tcp_connect",
        "open",
    ]


async def test_everything_from_servers_is_escaped_and_smtp_data_is_shown(make_client):
    config = parse_config(
        "modules: {mx: {prober: smtp, smtp: {ehlo: probe.test}}}\ntargets: [{target: '127.0.0.1:25', module: mx}]"
    )
    client = await make_client(config)
    exporter = client.server.app[EXPORTER]
    hostile = ProbeResult(
        success=False,
        state="<img src=x onerror=alert(1)>",
        tcp_state=TcpState.OPEN,
        detail='5.7.1 <script>alert("x")</script> & "quotes"',
        transcript=["< 554 <script>evil</script>"],
    )
    hostile.details = SmtpDetails(
        banner_seconds=0.0123,
        tls=TlsInfo(earliest_expiry=time.time() + 10 * 86400),
        replies={
            "banner": Reply(220, ("<b>mx</b>",), (b"220 <b>mx</b>",)),
            "ehlo": Reply(554, ('5.7.1 "><b>',), (b'554 5.7.1 "><b>',), "5.7.1"),
        },
    )
    exporter.history.record_probe(parse_host_port("127.0.0.1:25"), config.modules["mx"], hostile, time.time())
    html = await (await client.get("/")).text()
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html
    row = Tables(html).rows("targets")[0]
    assert row["State"] == "<img src=x onerror=alert(1)>"  # shown as text, with the colour of a failure
    assert 'class="state s-fail"' in html
    assert row["Banner after"] == "12.30 ms"
    assert row["SMTP replies"] == "banner 220, ehlo 554 5.7.1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in (9|10)\.\d days\)", row["Certificate expires"])


async def test_probe_only_targets_are_listed_apart_and_tcp_causes_shown(make_client, closed_port):
    config = parse_config("modules: {mx: {prober: smtp, timeout: 2s, smtp: {ehlo: probe.test}}}")
    client = await make_client(config)
    await client.get(f"/probe?target=127.0.0.1:{closed_port}&module=mx")
    page = Tables(await (await client.get("/")).text())
    assert page.rows("targets") == []
    [row] = page.rows("adhoc")
    assert row["Target"] == f"127.0.0.1:{closed_port}"
    assert row["State"] == "connect_failed (TCP: refused)"
    html = await (await client.get("/")).text()
    assert '<span class="state s-fail">connect_failed: 1</span>' in html


def test_a_long_table_is_cut_but_never_hides_a_failure():
    targets = planned(30)
    results = [result(i != 17, "open" if i != 17 else "refused") for i in range(30)]
    history = ProbeHistory()
    history.record_scrape(targets, results, time.time())
    page = render_status_page(
        version="t",
        config=tcp_config(),
        rows=history.latest(targets + planned(31)[30:]),
        recent=(),
        failures=(),
        max_rows=10,
    )
    rows = Tables(page).rows("targets")
    assert len(rows) == 10
    assert [row["State"] for row in rows[:2]] == ["refused", "not probed yet"]
    assert "21 more targets, all succeeding, are not shown" in page
    assert '<span class="state s-open">open: 29</span>' in page  # the summary still counts every target


async def test_refresh_and_bad_history_ids(make_client):
    client = await make_client(tcp_config())
    assert '<meta http-equiv="refresh" content="10">' in await (await client.get("/?refresh=10")).text()
    assert '<meta http-equiv="refresh" content="5">' in await (await client.get("/?refresh=1")).text()
    assert "http-equiv" not in await (await client.get("/?refresh=<x>")).text()
    for raw in ("", "abc", "-1", "99999", "1" * 40):
        response = await client.get("/history", params={"id": raw})
        assert response.status == 404
        assert "in the history" in await response.text()
