"""A reload applies the new global settings and keeps the /probe rate limiter's state."""

from __future__ import annotations

from exporter.config.loader import load_config
from exporter.web.app import EXPORTER


async def test_reload_applies_max_concurrency_and_keeps_rate_limit_state(make_client, tmp_path):
    path = tmp_path / "config.yml"
    base = "modules: {tcp_connect: {prober: tcp}}\nprobe_access: {rate_limit: {requests_per_second: 0.01, burst: 1}}\n"
    path.write_text(base + "global: {max_concurrency: 64}\n")
    client = await make_client(load_config(str(path)))
    exporter = client.server.app[EXPORTER]
    assert exporter.runner.max_concurrency == 64
    assert (await client.get("/probe", params={"target": "127.0.0.1:1"})).status == 200
    path.write_text(base + "global: {max_concurrency: 8}\n")
    assert (await client.post("/-/reload")).status == 200
    assert exporter.runner.max_concurrency == 8
    # The same probe_access: the client's spent token is not handed back by a reload.
    assert (await client.get("/probe", params={"target": "127.0.0.1:1"})).status == 429
