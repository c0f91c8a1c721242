"""The container's promise, checked without Docker: the exporter serves as an unprivileged user
(uid 65532, as in the Dockerfile) with a read-only root filesystem.

A private mount + network namespace makes / read-only for this test only; setpriv drops to the
unprivileged user with no capabilities.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UID = 65532

SCRIPT = r"""
set -eu
mount --make-rprivate /
ip link set lo up
# The interpreter, the venv or the clone may live under /root, which only root can enter (pyenv,
# a clone in root's home): in this mount namespace only, lay a world-readable /root over it with
# each of those directories bound back in.
if [ -n "$HIDDEN_PATHS" ]; then
  n=0
  for path in $HIDDEN_PATHS; do
    n=$((n + 1)); mkdir -p "$STAGE/hidden$n"; mount --bind "$path" "$STAGE/hidden$n"
  done
  mount -t tmpfs -o mode=755 tmpfs /root
  n=0
  for path in $HIDDEN_PATHS; do
    n=$((n + 1)); mkdir -p "$path"; mount --bind "$STAGE/hidden$n" "$path"
  done
fi
mount -o remount,bind,ro /
if touch /probe-write-test 2>/dev/null; then echo "root is still writable" >&2; exit 3; fi
setpriv --reuid=$UID_ --regid=$UID_ --clear-groups --inh-caps=-all --bounding-set=-all \
  env PYTHONPATH="$REPO" PYTHONDONTWRITEBYTECODE=1 "$PYTHON" -m exporter --config.file="$REPO/config.example.yml" \
  --web.listen-address=127.0.0.1:9816 &
pid=$!
"$PYTHON" - <<'PY'
import json, os, time, urllib.request
deadline = time.monotonic() + 20
while True:
    try:
        text = urllib.request.urlopen("http://127.0.0.1:9816/metrics", timeout=5).read().decode()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
uid = int(next(l.split()[1] for l in open(f"/proc/{os.environ['PID']}/status") if l.startswith("Uid:")))
print(json.dumps({"uid": uid, "open": 'target="127.0.0.1:9816",module="tcp_connect",role="exporter",state="open"} 1' in text,
                  "refused": 'target="127.0.0.1:1",module="tcp_diagnose",role="closed-port",state="refused"} 1' in text}))
PY
kill -TERM $pid; wait $pid; echo "exit=$?" >&2
"""


def needed_paths() -> list[Path]:
    """Every directory the unprivileged exporter reads: the real interpreter (a venv's python is a
    symlink to it; sys.prefix names the venv, not where the interpreter lives), its standard
    library, the venv's packages and the clone."""
    interpreter = Path(os.path.realpath(sys.executable)).parent
    return [interpreter, Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), ROOT]


def hidden_under_root(paths: list[Path]) -> list[str]:
    """The paths under /root (mode 700), outermost only: each is bound back over a readable /root."""
    under = sorted({path for path in paths if Path("/root") in path.parents}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in under:
        if not any(outer == path or outer in path.parents for outer in kept):
            kept.append(path)
    return [str(path) for path in kept]


def test_venv_under_another_prefix_still_finds_the_interpreter_under_root():
    venv_python_in_work = [
        Path("/root/.pyenv/versions/3.11.7/bin"),
        Path("/root/.pyenv/versions/3.11.7"),
        Path("/work/venvs/x"),
        Path("/work/clone"),
    ]
    assert hidden_under_root(venv_python_in_work) == ["/root/.pyenv/versions/3.11.7"]
    clone_in_root = [Path("/usr/bin"), Path("/usr"), Path("/root/ci/clone/.venv"), Path("/root/ci/clone")]
    assert hidden_under_root(clone_in_root) == ["/root/ci/clone"]


def test_serves_unprivileged_on_a_read_only_root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to make mount and network namespaces and to drop to uid 65532")
    for tool in ("unshare", "setpriv", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (util-linux / iproute2)")
    hidden = hidden_under_root(needed_paths())
    if any(" " in path or "\n" in path for path in hidden):
        pytest.skip(f"a path under /root contains a space: {hidden}")
    os.chmod(tmp_path, 0o755)
    env = dict(
        os.environ,
        HIDDEN_PATHS="\n".join(hidden),
        STAGE=str(tmp_path),
        UID_=str(UID),
        REPO=str(ROOT),
        PYTHON=sys.executable,
    )
    # The client's PID lookup needs the server's pid: pass it through the environment.
    script = SCRIPT.replace('"$PYTHON" - <<', 'PID=$pid "$PYTHON" - <<')
    done = subprocess.run(
        ["unshare", "-m", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    # The exporter's log shares stderr: nothing can be written to a file on a read-only root.
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"uid": UID, "open": True, "refused": True}
    assert "exit=0" in done.stderr, "SIGTERM did not end the exporter cleanly"
    assert "Traceback" not in done.stderr
