"""Real servers from Debian packages on loopback high ports, each with its own config in a temp dir:
OpenSSH's sshd (banner), dovecot (IMAP with STARTTLS), PostgreSQL with SSL (SSLRequest).

Each starter skips the test with a clear reason when the package (or root, which the servers need to
drop privileges or switch user) is missing, and stops its server (by its own pid) at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.eventually import eventually
from tests.helpers.smtp_servers import Pki

READY_TIMEOUT = 60.0  # generous: two cores shared by many sessions


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_banner(port: int, process: subprocess.Popen, log: Path, needs_bytes: bool = True) -> None:
    """Until the port accepts a connection (and sends something, if ``needs_bytes``); bounded."""

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return not needs_bytes or bool(sock.recv(1))

    what = f"a server on port {port} to {'send its banner' if needs_bytes else 'accept'} (log: {log})"
    eventually(answers, what=what, timeout=READY_TIMEOUT, interval=0.2, ignoring=(OSError,))


def _require(path: str, package: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"{path} missing: apt-get install {package}")
    if os.geteuid() != 0:
        pytest.skip(f"{package}: the server is started as root (it drops privileges itself)")


@contextlib.contextmanager
def _running(command: list[str], log: Path, **kwargs) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@contextlib.contextmanager
def sshd(tmp_path: Path) -> Iterator[int]:
    """OpenSSH's sshd with a generated host key; yields its port."""
    _require("/usr/sbin/sshd", "openssh-server")
    key = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {tmp_path}/sshd.pid\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "LoginGraceTime 10\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation directory
    log = tmp_path / "sshd.log"
    with _running(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], log) as process:
        wait_for_banner(port, process, log)
        yield port


@contextlib.contextmanager
def dovecot(tmp_path: Path, pki: Pki) -> Iterator[int]:
    """Dovecot's IMAP server with STARTTLS (certificate for mx.test / 127.0.0.1 from ``pki``); yields its port."""
    _require("/usr/sbin/dovecot", "dovecot-imapd")
    cert, key = tmp_path / "imap-cert.pem", tmp_path / "imap-key.pem"
    pki.valid.cert_chain_pems[0].write_to_path(str(cert))
    pki.valid.private_key_pem.write_to_path(str(key))
    base = tmp_path / "dovecot-run"
    base.mkdir()
    port = free_port()
    config = tmp_path / "dovecot.conf"
    config.write_text(f"""
base_dir = {base}
state_dir = {base}/state
protocols = imap
listen = 127.0.0.1
log_path = {tmp_path}/dovecot.log
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
mail_location = maildir:{tmp_path}/mail/%u
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={tmp_path}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""")
    (base / "state").mkdir()
    log = tmp_path / "dovecot.log"
    log.touch()
    with _running(["/usr/sbin/dovecot", "-F", "-c", str(config)], tmp_path / "dovecot.out") as process:
        wait_for_banner(port, process, tmp_path / "dovecot.out")
        yield port


def _postgres_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return found[-1] if found else None


@contextlib.contextmanager
def postgres(tmp_path: Path, pki: Pki) -> Iterator[int]:
    """PostgreSQL with ssl=on in a fresh cluster (initdb as the postgres user); yields its port."""
    binary = _postgres_bin()
    _require(binary or "/usr/lib/postgresql/N/bin/postgres", "postgresql")
    if shutil.which("runuser") is None:
        pytest.skip("runuser missing: apt-get install util-linux")
    # Not under pytest's tmp_path: its parents are private to root, and the postgres user must reach the data.
    with tempfile.TemporaryDirectory(prefix="dlg-pg-") as private:
        yield from _postgres(Path(private), binary, pki, tmp_path)


def _postgres(home: Path, binary: str, pki: Pki, tmp_path: Path) -> Iterator[int]:
    data = home / "data"
    cert, key = home / "server.crt", home / "server.key"
    pki.valid.cert_chain_pems[0].write_to_path(str(cert))
    pki.valid.private_key_pem.write_to_path(str(key))
    os.chmod(key, 0o600)
    os.chmod(home, 0o755)
    shutil.chown(home, "postgres", "postgres")
    for path in (cert, key):
        shutil.chown(path, "postgres", "postgres")
    initdb = os.path.join(os.path.dirname(binary), "initdb")
    subprocess.run(
        ["runuser", "-u", "postgres", "--", initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    log = tmp_path / "postgres.log"
    command = [
        "runuser",
        "-u",
        "postgres",
        "--",
        binary,
        "-D",
        str(data),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={home}",
        "-c",
        "ssl=on",
        "-c",
        f"ssl_cert_file={cert}",
        "-c",
        f"ssl_key_file={key}",
    ]
    with _running(command, log, cwd=home) as process:
        wait_for_banner(port, process, log, needs_bytes=False)
        yield port
