"""/metrics is gzip-compressed when the client asks for it (Prometheus always does), and only then."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import subprocess

import pytest

from exporter.web import gzip as httpgzip
from tests.helpers.configs import tcp_config
from tests.helpers.metrics_text import state_of, value


@pytest.mark.parametrize(
    "header, accepted",
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, GZIP;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("gzip; q=0.0, identity", False),
        ("*;q=0", False),
        ("gzip;q=bogus", False),
        ("gzipped", False),
    ],
)
def test_accept_encoding_is_parsed_with_q_values(header, accepted):
    assert httpgzip.accepts_gzip(header) is accepted


async def test_metrics_is_gzip_when_asked_and_decodes_to_the_exposition(make_client, listener, closed_port):
    client = await make_client(tcp_config(f"127.0.0.1:{listener}", f"127.0.0.1:{closed_port}"))
    response = await client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    raw = await response.read()
    assert raw[:2] == b"\x1f\x8b"
    text = gzip.decompress(raw).decode()
    assert state_of(text, target=f"127.0.0.1:{listener}") == "open"
    assert state_of(text, target=f"127.0.0.1:{closed_port}") == "refused"
    assert value(text, "connectivity_exporter_scrape_duration_seconds_count", endpoint="metrics") == 1


@pytest.mark.parametrize("header", [None, "identity", "gzip;q=0"])
async def test_metrics_is_plain_when_gzip_is_not_accepted(make_client, listener, header):
    client = await make_client(tcp_config(f"127.0.0.1:{listener}"))
    headers = {"Accept-Encoding": header} if header else {"Accept-Encoding": ""}
    response = await client.get("/metrics", headers=headers, auto_decompress=False)
    assert "Content-Encoding" not in response.headers
    # Streamed as it is rendered: chunked, no Content-Length.
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    body = await response.read()
    assert state_of(body.decode(), target=f"127.0.0.1:{listener}") == "open"


@pytest.mark.slow
async def test_large_chunks_are_compressed_off_the_event_loop_with_the_same_result(
    make_client, closed_port, monkeypatch
):
    # Every chunk goes through the thread path; the reply must still be one valid gzip stream.
    monkeypatch.setattr(httpgzip, "_THREAD_ABOVE_BYTES", 0)
    targets = [f"127.0.{i // 250}.{i % 250 + 1}:{closed_port}" for i in range(300)]
    client = await make_client(tcp_config(*targets))
    response = await client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    text = gzip.decompress(await response.read()).decode()
    assert all(state_of(text, target=target) == "refused" for target in targets)


async def test_curl_compressed_decodes_the_reply(make_client, listener):
    # A real, independent gzip-decoding HTTP client.
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (Debian package 'curl'; .ci/run installs it)")
    client = await make_client(tcp_config(f"127.0.0.1:{listener}"))
    url = str(client.make_url("/metrics"))
    done = await _run([curl, "-sS", "--compressed", "-D", "-", url])
    headers, _, body = done.partition("\r\n\r\n")
    assert "content-encoding: gzip" in headers.lower()
    assert state_of(body, target=f"127.0.0.1:{listener}") == "open"


async def _run(argv: list[str]) -> str:
    # The test server runs on this event loop: run curl without blocking it.
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()
