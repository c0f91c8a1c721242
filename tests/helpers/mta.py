"""A real Postfix (Debian's package) on loopback for end-to-end SMTP tests.

One Postfix instance with its own config directory, queue and log (its ``master`` run in the foreground
with ``-c DIR``; the package's own service and /etc/postfix are never touched), and one ``smtpd`` listener
per behaviour on
127.0.0.1:<free port>, each with ``-o`` overrides in master.cf. Postfix must run as root (its master
drops privileges to the ``postfix`` user). Nothing here sends traffic anywhere but loopback; the
addresses in ``mynetworks`` are documentation addresses that are only configuration.

Behaviours, each Postfix's own code path (no canned replies):

- ``greeting_reject``: ``smtpd_client_restrictions = reject`` with ``smtpd_delay_reject = no``;
- ``client_block``: ``check_client_access`` REJECT for 127.0.0.1 with the default delayed rejection,
  so the client block is answered at RCPT ("Client host rejected");
- ``greylist``: a ``check_recipient_access`` answering 450 "Greylisted" as postgrey does;
- ``mailbox``: a virtual mailbox domain (unknown users get "User unknown in virtual mailbox table") and
  relay denial for any other domain ("Relay access denied");
- ``broken_tls``: STARTTLS advertised with a certificate file that does not exist (``454 4.7.0 TLS not
  available due to local problem``);
- ``tls_auth``: working STARTTLS (a test CA's certificate) and SASL AUTH through Dovecot's auth service
  (a passwd-file), when Dovecot is installed.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.eventually import eventually

MASTER = "/usr/lib/postfix/sbin/master"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOMAIN = "mx.test"
USER, PASSWORD = "probe", "Pf-s3cret-word"
# What postgrey answers a first attempt (Postfix prefixes "<address>: Recipient address rejected: ").
GREYLISTED = f"450 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/{DOMAIN}.html"


def missing() -> str | None:
    """Why the Postfix tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (Postfix's master process runs as root and drops to the postfix user)"
    if not os.path.exists(MASTER) or not os.path.exists("/usr/lib/postfix/sbin/smtpd"):
        return "Debian's postfix package is not installed (apt-get install postfix)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "the postfix user does not exist (install the postfix package)"
    return None


def dovecot_missing() -> str | None:
    if not os.path.exists(DOVECOT):
        return "Dovecot is not installed (apt-get install dovecot-core) for Postfix's SASL AUTH"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int) -> None:
    """Until 127.0.0.1:port accepts a connection (bounded)."""

    def connects() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    eventually(connects, what=f"a listener on 127.0.0.1:{port}", ignoring=(OSError,))


@dataclass
class Postfix:
    root: Path
    cert_file: Path | None = None  # PEM with the key and the chain, for tls_auth
    ca_file: Path | None = None  # the CA that issued cert_file, for the prober's tls_config
    ports: dict[str, int] = field(default_factory=dict)
    dovecot: subprocess.Popen | None = None
    master: subprocess.Popen | None = None
    sasl_port: int | None = None

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def _main_cf(self) -> str:
        queue = self.root / "queue"
        data = self.root / "data"
        sasl = ""
        if self.sasl_port is not None:
            sasl = (
                f"smtpd_sasl_type = dovecot\nsmtpd_sasl_path = inet:127.0.0.1:{self.sasl_port}\n"
                "smtpd_sasl_auth_enable = no\n"
            )
        return f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = {DOMAIN}
mydomain = test
mydestination =
# Documentation addresses: configuration only, never contacted. 127.0.0.1 is deliberately not trusted.
mynetworks = 192.0.2.0/24
inet_interfaces = loopback-only
inet_protocols = ipv4
smtpd_banner = $myhostname ESMTP
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_maps = inline:{{ postmaster@{DOMAIN}=postmaster/ }}
virtual_mailbox_base = {self.root / "mail"}
virtual_uid_maps = static:{pwd.getpwnam("postfix").pw_uid}
virtual_gid_maps = static:{pwd.getpwnam("postfix").pw_gid}
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
# Postfix's log goes to the master's standard output, which the test keeps in a file.
maillog_file = /dev/stdout
smtpd_tls_security_level = none
smtp_tls_security_level = none
default_transport = error:no outgoing mail in tests
relay_transport = error:no outgoing mail in tests
# Restriction lists for the listeners of master.cf (referenced there with -o name=$list).
test_client_block = check_client_access inline:{{ 127.0.0.1=REJECT }}
test_greylist = check_recipient_access inline:{{ {{grey@{DOMAIN}={GREYLISTED}}} }}
{sasl}"""

    def _master_cf(self) -> str:
        lines = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "virtual unix - n n - - virtual",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
        ]
        behaviours = {
            "greeting_reject": ["smtpd_delay_reject=no", "smtpd_client_restrictions=reject"],
            "client_block": ["smtpd_client_restrictions=$test_client_block"],
            "greylist": ["smtpd_recipient_restrictions=$test_greylist"],
            "mailbox": [],
            "broken_tls": [
                "smtpd_tls_security_level=may",
                f"smtpd_tls_cert_file={self.root}/missing-cert.pem",
                f"smtpd_tls_key_file={self.root}/missing-cert.pem",
            ],
        }
        if self.cert_file is not None:
            behaviours["tls_auth"] = [
                "smtpd_tls_security_level=may",
                f"smtpd_tls_chain_files={self.cert_file}",
                "smtpd_tls_auth_only=yes",
            ]
            if self.sasl_port is not None:
                behaviours["tls_auth"].append("smtpd_sasl_auth_enable=yes")
        for name, options in behaviours.items():
            port = self.ports[name] = free_port()
            opts = " ".join(f"-o {opt}" for opt in options)
            lines.append(f"127.0.0.1:{port} inet n - n - - smtpd -o syslog_name=postfix/{name} {opts}".rstrip())
        return "\n".join(lines) + "\n"

    def _start_dovecot(self) -> None:
        base = self.root / "dovecot"
        base.mkdir()
        passwd = base / "passwd"
        # Dovecot's passwd-file with a {PLAIN} scheme: the test password, for the test user only.
        passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        self.sasl_port = free_port()
        config = base / "dovecot.conf"
        config.write_text(f"""\
protocols =
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/log
default_login_user = dovenull
default_internal_user = dovecot
ssl = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home=/nonexistent
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {self.sasl_port}
  }}
}}
service anvil {{
  chroot =
}}
""")
        self.dovecot = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            wait_for_port(self.sasl_port)
        except TimeoutError:
            self.dovecot.kill()
            _, err = self.dovecot.communicate(timeout=10)
            log = (base / "log").read_text(errors="replace") if (base / "log").exists() else ""
            raise RuntimeError(f"dovecot did not start: {err.decode(errors='replace')} {log}") from None

    def start(self, with_auth: bool) -> None:
        if with_auth:
            self._start_dovecot()
        self.config_dir.mkdir(parents=True)
        (self.root / "mail").mkdir()
        shutil.chown(self.root / "mail", "postfix", "postfix")
        (self.config_dir / "main.cf").write_text(self._main_cf())
        (self.config_dir / "master.cf").write_text(self._master_cf())
        self._make_queue()
        # Postfix's master in the foreground (-d) with this config dir. The `postfix -c DIR start` wrapper is
        # not used: it insists that DIR be listed in the machine's default main.cf (alternate_config_directories).
        # Its own session: on SIGTERM the master signals its whole process group.
        with open(self.root / "maillog", "wb") as log:
            self.master = subprocess.Popen(
                [MASTER, "-c", str(self.config_dir), "-d"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "MAIL_CONFIG": str(self.config_dir)},
            )
        try:
            for port in self.ports.values():
                wait_for_port(port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"postfix did not start:\n{self.log()}") from None

    def _make_queue(self) -> None:
        """The queue and data directories with the owners and modes postfix-script would give them."""
        postfix, postdrop = pwd.getpwnam("postfix"), grp.getgrnam("postdrop")
        queue = self.root / "queue"
        queue.mkdir(mode=0o755)
        for name in (
            "active",
            "bounce",
            "corrupt",
            "defer",
            "deferred",
            "flush",
            "hold",
            "incoming",
            "private",
            "saved",
            "trace",
            "maildrop",
            "public",
        ):
            path = queue / name
            path.mkdir()
            group = postdrop.gr_gid if name in ("maildrop", "public") else postfix.pw_gid
            os.chown(path, postfix.pw_uid, group)
            path.chmod(0o730 if name == "maildrop" else 0o710 if name == "public" else 0o700)
        (queue / "pid").mkdir(mode=0o755)
        data = self.root / "data"
        data.mkdir(mode=0o700)
        os.chown(data, postfix.pw_uid, postfix.pw_gid)

    def stop(self) -> None:
        if self.master is not None and self.master.poll() is None:
            self.master.terminate()  # the master stops its children on SIGTERM
            try:
                self.master.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.master.kill()
                self.master.wait(timeout=10)
        if self.dovecot is not None:
            self.dovecot.terminate()
            try:
                self.dovecot.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.dovecot.kill()
                self.dovecot.wait(timeout=10)
