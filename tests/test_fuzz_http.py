"""Property-based /probe and /metrics requests: always a 2xx, or a 4xx with a one-line reason; never a 5xx or a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.netns import ROOT, netns_unavailable_reason

pytestmark = pytest.mark.netns


def test_bad_http_input_never_yields_5xx_or_hang():
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(f"{reason} (the fuzzer invents arbitrary targets, so it only runs where nothing can leave)")
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(ROOT / "tests" / "scenarios" / "fuzz_http.py"), "400"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["requests"] >= 400
    assert result["violations"] == []
