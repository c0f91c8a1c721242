"""The container's promise, checked without Docker: the exporter serves as an unprivileged user
(uid 65532, as in the Dockerfile) with a read-only root filesystem.

A private mount + network namespace makes / read-only for this test only; setpriv drops to the
unprivileged user with no capabilities. That user runs a readable copy of the exporter (and, where they are
hidden from it, of the venv's packages and the interpreter: tests/helpers/unprivileged.py), so the test
passes wherever the clone lives, under /root or a mode-700 temporary directory included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers.unprivileged import UID, blocked_directory, readable_by_others

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
set -eu
mount --make-rprivate /
ip link set lo up
mount -o remount,bind,ro /
if touch /probe-write-test 2>/dev/null; then echo "root is still writable" >&2; exit 3; fi
setpriv --reuid=$UID_ --regid=$UID_ --clear-groups --inh-caps=-all --bounding-set=-all \
  "$PYTHON" -m exporter --config.file="$RUNTIME_ROOT/config.example.yml" --web.listen-address=127.0.0.1:9816 &
pid=$!
PID=$pid "$PYTHON" - <<'PY'
import json, os, sys, time, urllib.request
sys.path[:0] = [os.environ["TESTS_ROOT"]]
from tests.helpers.eventually import eventually
text = eventually(
    lambda: urllib.request.urlopen("http://127.0.0.1:9816/metrics", timeout=5).read().decode(),
    what="the unprivileged exporter's /metrics",
    ignoring=(OSError,),
)
uid = int(next(l.split()[1] for l in open(f"/proc/{os.environ['PID']}/status") if l.startswith("Uid:")))
print(json.dumps({"uid": uid, "open": 'target="127.0.0.1:9816",module="tcp_connect",role="exporter",state="open"} 1' in text,
                  "refused": 'target="127.0.0.1:1",module="tcp_diagnose",role="closed-port",state="refused"} 1' in text}))
PY
kill -TERM $pid; wait $pid; echo "exit=$?" >&2
"""


@pytest.mark.netns
@pytest.mark.slow
def test_serves_unprivileged_on_a_read_only_root(unprivileged_runtime):
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (util-linux / iproute2)")
    env = dict(
        unprivileged_runtime.environ(),
        UID_=str(UID),
        RUNTIME_ROOT=str(unprivileged_runtime.root),
        PYTHON=unprivileged_runtime.python,
        TESTS_ROOT=str(ROOT),  # the client part runs as root: it may read the clone (and its helpers)
    )
    done = subprocess.run(
        ["unshare", "-m", "-n", "sh", "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=unprivileged_runtime.root,
    )
    # The exporter's log shares stderr: nothing can be written to a file on a read-only root.
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"uid": UID, "open": True, "refused": True}
    assert "exit=0" in done.stderr, "SIGTERM did not end the exporter cleanly"
    assert "Traceback" not in done.stderr


def test_blocked_directory_is_the_first_one_others_cannot_enter():
    top = Path(tempfile.mkdtemp(prefix="blocked-"))
    try:
        os.chmod(top, 0o755)
        (top / "closed" / "open").mkdir(parents=True)
        os.chmod(top / "closed", 0o700)
        os.chmod(top / "closed" / "open", 0o755)
        inner = top / "closed" / "open" / "file"
        inner.write_text("x")
        os.chmod(inner, 0o644)
        assert blocked_directory(inner) == top / "closed"
        assert blocked_directory(top / "closed") == top / "closed"  # a directory counts itself
        assert not readable_by_others(inner)
        os.chmod(top / "closed", 0o711)  # enter, not list: enough to reach a known path
        assert blocked_directory(inner) is None
        assert readable_by_others(inner)
        os.chmod(inner, 0o600)
        assert not readable_by_others(inner)
    finally:
        os.chmod(top / "closed", 0o755)
        shutil.rmtree(top)
