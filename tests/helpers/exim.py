"""A real MTA for the tests: Debian's Exim, unpacked with ``dpkg -x`` and run with our own config.

Exim is not installed as a package (exim4-daemon-light conflicts with postfix, which other
tests use). ``apt-get download`` fetches exim4-daemon-light and its one library missing here
(libidn12); ``dpkg -x`` unpacks them into a cache directory. Two things the Debian binary
assumes are supplied from outside:
- its compiled-in user ``Debian-exim``, which exists only when the package is installed: the
  daemon runs in a private mount namespace whose /etc/passwd and /etc/group are copies with
  that user added (mapped to nobody), bind-mounted over the real ones;
- its library: ``LD_LIBRARY_PATH`` (kept by ``keep_environment``) and ``exim_path`` for re-execs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PACKAGES = ("exim4-daemon-light", "libidn12")
CACHE = Path(os.environ.get("EXIM_TEST_ROOT", "/var/tmp/connectivity-exporter-exim"))


def exim_root() -> tuple[Path | None, str]:
    """The unpacked tree (with usr/sbin/exim4), or None and why not."""
    binary = CACHE / "usr" / "sbin" / "exim4"
    if binary.exists():
        return CACHE, ""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return None, "apt-get/dpkg are not available to fetch exim4-daemon-light"
    download = CACHE.with_name(CACHE.name + ".debs")
    download.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["apt-get", "download", *PACKAGES], cwd=download, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return None, f"apt-get download {' '.join(PACKAGES)} failed: {done.stderr.strip()[-300:]}"
    for deb in sorted(download.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(CACHE)], check=True, capture_output=True, timeout=120)
    if not binary.exists():
        return None, f"unpacking {' '.join(PACKAGES)} gave no usr/sbin/exim4"
    return CACHE, ""


CONFIG = """\
exim_user = Debian-exim
exim_group = Debian-exim
exim_path = {root}/usr/sbin/exim4
keep_environment = LD_LIBRARY_PATH
spool_directory = {work}/spool
log_file_path = {work}/log/%slog
primary_hostname = {hostname}
smtp_banner = $primary_hostname ESMTP Exim $version_number (connectivity_exporter test)
daemon_smtp_ports = 25
local_interfaces = {address}
tls_advertise_hosts =
host_lookup =
rfc1413_hosts =
domainlist local_domains = {local_domains}
hostlist relay_from_hosts = {relay_from}
acl_smtp_rcpt = acl_check_rcpt

begin acl
acl_check_rcpt:
  accept domains = +local_domains
  accept hosts = +relay_from_hosts
  deny message = relay not permitted
"""


def exim_workdir() -> Path:
    """A directory for Exim's spool and logs that its unprivileged user can reach (pytest's tmp_path
    is inside a mode-0700 directory). The caller removes it."""
    work = Path(tempfile.mkdtemp(prefix=f"md{os.getpid()}-exim-"))
    os.chmod(work, 0o755)
    return work


def exim_command(
    root: Path, work: Path, address: str, hostname: str, local_domains: str, open_relay: bool
) -> list[str]:
    """A command line (to run inside the lab's namespace) starting an Exim daemon on ADDRESS:25.

    ``open_relay``: accept every recipient from anywhere (the misconfiguration to detect);
    otherwise only ``local_domains`` are accepted and relaying is refused with 550.
    """
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("spool", "log"):
        (work / sub).mkdir(exist_ok=True)
        os.chmod(work / sub, 0o777)
    os.chmod(work, 0o755)
    config = work / "exim.conf"
    config.write_text(
        CONFIG.format(
            root=root,
            work=work,
            hostname=hostname,
            address=address,
            local_domains=local_domains,
            relay_from="0.0.0.0/0 : ::/0" if open_relay else "",
        )
    )
    os.chmod(config, 0o644)  # Exim refuses a config file others may write
    passwd, group = work / "passwd", work / "group"
    passwd.write_text(Path("/etc/passwd").read_text() + "Debian-exim:x:65534:65534::/nonexistent:/usr/sbin/nologin\n")
    group.write_text(Path("/etc/group").read_text() + "Debian-exim:x:65534:\n")
    script = (
        f"mount --bind {passwd} /etc/passwd && mount --bind {group} /etc/group && "
        f"LD_LIBRARY_PATH={root}/usr/lib/x86_64-linux-gnu exec {root}/usr/sbin/exim4 -C {config} -bdf"
    )
    return ["unshare", "-m", "sh", "-c", script]
