"""The vantage point name: the flag and config key, the `vantage` label on every series (probe and
self metrics, /metrics and /probe), validation, and the status page's link to the central view."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

from exporter.cli.main import build_parser
from exporter.config.loader import parse_config
from exporter.core.selfmetrics import ExporterMetrics
from exporter.core.vantage import Site, VantageLabelled, vantage_problem
from exporter.web.app import create_app
from tests.helpers.configs import require_binary
from tests.helpers.metrics_text import samples, state_of, value


def config_text(listener: int, closed_port: int, global_section: str = "") -> str:
    return f"""
{global_section}
modules: {{tcp_connect: {{prober: tcp, timeout: 2s}}}}
targets:
  - {{target: "127.0.0.1:{listener}", module: tcp_connect, labels: {{owner: web}}}}
  - {{target: "127.0.0.1:{closed_port}", module: tcp_connect}}
"""


async def scrape(aiohttp_client, config, site: Site | None = None, path: str = "/metrics", **params) -> str:
    client = await aiohttp_client(create_app(config, registry=CollectorRegistry(), site=site))
    response = await client.get(path, params=params)
    assert response.status == 200, await response.text()
    return await response.text()


async def test_flag_labels_every_series_of_metrics(aiohttp_client, listener, closed_port):
    text = await scrape(aiohttp_client, parse_config(config_text(listener, closed_port)), Site(vantage="fra1"))
    series = samples(text)
    assert series, text
    unlabelled = [name for name, labels in series if ("vantage", "fra1") not in labels]
    assert unlabelled == []  # probe series and the exporter's own (process_, python_, connectivity_exporter_)
    assert state_of(text, target=f"127.0.0.1:{listener}", vantage="fra1", owner="web") == "open"
    assert state_of(text, target=f"127.0.0.1:{closed_port}", vantage="fra1") == "refused"
    assert value(text, "connectivity_exporter_probes_total", state="refused", vantage="fra1") == 1
    assert value(text, "connectivity_exporter_build_info", vantage="fra1") == 1


async def test_config_key_labels_every_series_and_the_flag_wins(aiohttp_client, listener, closed_port):
    config = parse_config(config_text(listener, closed_port, "global: {vantage: office-berlin}"))
    text = await scrape(aiohttp_client, config)
    assert {dict(labels).get("vantage") for _, labels in samples(text)} == {"office-berlin"}
    text = await scrape(aiohttp_client, config, Site(vantage="fra1"))
    assert {dict(labels).get("vantage") for _, labels in samples(text)} == {"fra1"}


async def test_without_a_vantage_no_series_has_the_label(aiohttp_client, listener, closed_port):
    text = await scrape(aiohttp_client, parse_config(config_text(listener, closed_port)))
    assert samples(text)
    assert not [name for name, labels in samples(text) if "vantage" in dict(labels)]
    assert "vantage" not in text


async def test_probe_endpoint_carries_the_vantage_label(aiohttp_client, listener):
    config = parse_config(config_text(listener, 1))
    text = await scrape(
        aiohttp_client, config, Site(vantage="fra1"), "/probe", target=f"127.0.0.1:{listener}", module="tcp_connect"
    )
    assert state_of(text, vantage="fra1") == "open"
    assert value(text, "probe_success", vantage="fra1") == 1
    # The per-request series carry no target/module labels, only the site's.
    assert {frozenset(dict(labels)) - {"state"} for _, labels in samples(text)} == {frozenset({"vantage"})}


async def test_output_with_vantage_passes_promtool_check_metrics(aiohttp_client, listener, closed_port):
    promtool = require_binary("promtool")
    text = await scrape(aiohttp_client, parse_config(config_text(listener, closed_port)), Site(vantage="fra1"))
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_reload_keeps_the_flag_and_follows_the_config_key(aiohttp_client, tmp_path, listener, closed_port):
    path = tmp_path / "config.yml"
    path.write_text(config_text(listener, closed_port, "global: {vantage: old-site}"))
    from exporter.config.loader import load_config

    for site, after_reload in ((Site(vantage="fra1"), "fra1"), (None, "new-site")):
        path.write_text(config_text(listener, closed_port, "global: {vantage: old-site}"))
        client = await aiohttp_client(create_app(load_config(str(path)), registry=CollectorRegistry(), site=site))
        path.write_text(config_text(listener, closed_port, "global: {vantage: new-site}"))
        assert (await client.post("/-/reload")).status == 200
        text = await (await client.get("/metrics")).text()
        assert {dict(labels).get("vantage") for _, labels in samples(text)} == {after_reload}


def test_vantage_labelled_view_leaves_the_registry_unlabelled():
    metrics = ExporterMetrics(CollectorRegistry())
    metrics.probe_requests_denied.labels("rate_limit").inc()
    from prometheus_client import generate_latest

    labelled = generate_latest(VantageLabelled(metrics.registry, "fra1")).decode()
    assert (
        value(labelled, "connectivity_exporter_probe_requests_denied_total", reason="rate_limit", vantage="fra1") == 1
    )
    assert "vantage" not in generate_latest(metrics.registry).decode()
    assert metrics.exposition("fra1").decode() == labelled


@pytest.mark.parametrize(
    "name, problem",
    [
        ("fra1", None),
        ("office-berlin.2_b", None),
        ("9lives", None),
        ("", "expected a vantage point name such as fra1 or office-berlin"),
        (
            "-lead",
            "invalid vantage point name '-lead': use letters, digits, '_', '.' or '-', starting with a letter or digit",
        ),
        (
            'a"b',
            "invalid vantage point name 'a\"b': use letters, digits, '_', '.' or '-', starting with a letter or digit",
        ),
        (
            "zürich",
            "invalid vantage point name 'zürich': use letters, digits, '_', '.' or '-', starting with a "
            "letter or digit",
        ),
        ("x" * 64, "vantage point name is longer than 63 characters"),
    ],
)
def test_vantage_names(name, problem):
    assert vantage_problem(name) == problem


def test_flag_parses_and_rejects_with_one_line():
    args = build_parser().parse_args(["--probe.vantage=fra1", "--web.central-url=https://grafana.example/d/v"])
    assert (args.vantage, args.central_url) == ("fra1", "https://grafana.example/d/v")
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--probe.vantage=new york"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "connectivity-exporter: error: argument --probe.vantage: invalid vantage point name 'new york': use "
        "letters, digits, '_', '.' or '-', starting with a letter or digit (see --help)"
    ]


async def test_status_page_names_the_vantage_and_links_to_the_central_view(aiohttp_client, listener):
    config = parse_config(config_text(listener, 1, "global: {central_url: 'https://grafana.example/d/x?a=1&b=2'}"))
    page = await scrape(aiohttp_client, config, Site(vantage="fra1"), "/")
    assert "<li id=vantage>Vantage point: <b>fra1</b>" in page
    assert '<a href="https://grafana.example/d/x?a=1&amp;b=2" rel=noopener>Central view</a>' in page
    flag_wins = await scrape(aiohttp_client, config, Site(central_url="http://central.example:3000/"), "/")
    assert '<a href="http://central.example:3000/" rel=noopener>Central view</a>' in flag_wins


async def test_status_page_without_site_has_no_central_link(aiohttp_client, listener):
    page = await scrape(aiohttp_client, parse_config(config_text(listener, 1)), None, "/")
    assert "Central view" not in page and "Vantage point" not in page


@pytest.mark.parametrize(
    "url, problem",
    [
        ("https://grafana.example/d/connectivity-vantage?orgId=1", None),
        ("http://10.0.0.1:3000/", None),
        ("", "expected an http:// or https:// URL"),
        ("grafana.example/d/x", "'grafana.example/d/x' is not an absolute http:// or https:// URL"),
        ("javascript:alert(1)", "'javascript:alert(1)' is not an absolute http:// or https:// URL"),
        ("https://a.example/x y", "URL contains spaces or control characters"),
        ("https://a.example/\n", "URL contains spaces or control characters"),
        ("https://a.example/" + "x" * 2048, "URL is longer than 2048 characters"),
    ],
)
def test_central_urls(url, problem):
    from exporter.core.vantage import central_url_problem

    assert central_url_problem(url) == problem
