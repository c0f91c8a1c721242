"""--web.config.file: strict parsing, basic auth with bcrypt, TLS and client certificates with real curl."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

from exporter.config.loader import ConfigError
from exporter.web import auth as webauth
from exporter.web.app import create_app
from exporter.web.config import load_web_config, parse_web_config
from tests.helpers.configs import tcp_config
from tests.helpers.exporter_process import REPO, free_port, start_exporter

bcrypt = pytest.importorskip("bcrypt", reason="the bcrypt package is needed for basic auth (pip install bcrypt)")
trustme = pytest.importorskip("trustme")

PASSWORD = "correct horse battery staple"


def toolkit_hash(password: str, cost: int = 4) -> str:
    """A bcrypt hash as htpasswd writes it ($2y$), at a low cost to keep tests fast."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode().replace("$2b$", "$2y$", 1)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1, and two client certificates, as PEM files."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    for name, san in (("client", "scraper.example"), ("stranger", "stranger.example")):
        leaf = ca.issue_cert(san)
        leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))
    return directory


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, errors",
    [
        (
            "tls_server_config: {cert_file: a, key_file: b}\nbogus: 1\n",
            [
                "w.yml: bogus: unknown key (valid keys: tls_server_config, http_server_config, basic_auth_users, "
                "rate_limit)"
            ],
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth: x}\n",
            [
                "w.yml: tls_server_config.client_auth: unknown key (valid keys: cert_file, key_file, cert, key, "
                "client_ca_file, client_ca, client_auth_type, client_allowed_sans, min_version, max_version, "
                "cipher_suites, prefer_server_cipher_suites, curve_preferences)"
            ],
        ),
        (
            "tls_server_config: {key_file: b}\n",
            ["w.yml: tls_server_config.cert_file: missing: a server certificate is required for TLS"],
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAndVerifyClientCert}\n",
            [
                "w.yml: tls_server_config.client_ca_file: missing: client_auth_type RequireAndVerifyClientCert needs the "
                "CA that signs client certificates"
            ],
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAnyClientCert, client_ca_file: c}\n",
            [
                "w.yml: tls_server_config.client_auth_type: RequireAnyClientCert (a client certificate accepted without "
                "verification) is not supported: use RequireAndVerifyClientCert, VerifyClientCertIfGiven or NoClientCert"
            ],
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, max_version: TLS12}\n",
            ["w.yml: tls_server_config.min_version: TLS13 is above max_version TLS12"],
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, min_version: SSL3}\n",
            ["w.yml: tls_server_config.min_version: expected one of TLS10, TLS11, TLS12, TLS13, got 'SSL3'"],
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [TLS_FAST]}\n",
            [
                "w.yml: tls_server_config.cipher_suites[0]: unknown cipher suite 'TLS_FAST' (known: "
                "TLS_RSA_WITH_AES_128_CBC_SHA, TLS_RSA_WITH_AES_256_CBC_SHA, TLS_RSA_WITH_AES_128_GCM_SHA256, "
                "TLS_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, "
                "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, "
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, "
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, "
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, "
                "TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256)"
            ],
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, curve_preferences: [X25519]}\n",
            [
                "w.yml: tls_server_config.curve_preferences: is part of the exporter-toolkit format but not supported by "
                "connectivity_exporter"
            ],
        ),
        (
            "rate_limit: {interval: 1s, burst: 20}\n",
            ["w.yml: rate_limit: is part of the exporter-toolkit format but not supported by connectivity_exporter"],
        ),
        (
            "http_server_config: {headers: {X-Frame-Options: allow, Server: x}}\n",
            [
                "w.yml: http_server_config.headers.X-Frame-Options: expected one of deny, sameorigin, got 'allow'",
                "w.yml: http_server_config.headers.Server: unknown header (valid: Content-Security-Policy, X-Frame-Options, "
                "X-Content-Type-Options, X-XSS-Protection, Strict-Transport-Security)",
            ],
        ),
        (
            "basic_auth_users: [alice]\n",
            ["w.yml: basic_auth_users: expected a mapping of user names to bcrypt hashes, got a list"],
        ),
        (
            "tls_server_config: [a]\nhttp_server_config: {http2: maybe}\n",
            [
                "w.yml: tls_server_config: expected a mapping, got a list",
                "w.yml: http_server_config.http2: expected true or false, got a string",
            ],
        ),
        # libyaml's wording (PyYAML's wheels bundle libyaml, and the loader uses it when present).
        ("basic_auth_users: {a: {b: c}\n", ["w.yml: line 2, column 1: invalid YAML: did not find expected ',' or '}'"]),
    ],
)
def test_invalid_web_configs_name_file_and_key(text, errors):
    with pytest.raises(ConfigError) as caught:
        parse_web_config(text, "w.yml")
    assert caught.value.errors == errors


def test_a_bad_password_hash_is_reported_without_showing_it():
    with pytest.raises(ConfigError) as caught:
        parse_web_config("basic_auth_users:\n  alice: plaintext-secret\n  'b:c': " + toolkit_hash("x") + "\n", "w.yml")
    assert caught.value.errors == [
        "w.yml: basic_auth_users.alice: not a bcrypt hash (expected $2y$, $2b$ or $2a$, a two-digit cost, then 53 "
        "characters, e.g. from 'htpasswd -nBC 10 \"\" | tr -d :')",
        "w.yml: basic_auth_users.b:c: invalid user name: a non-empty string without ':'",
    ]
    assert "plaintext-secret" not in str(caught.value)


def test_unreadable_certificates_fail_at_load_naming_the_key(tmp_path, pki):
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: missing.pem\n  key_file: {pki}/server.key\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki}/server.key\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_web_config(str(web))
    cert_error, ca_error = caught.value.errors
    # A relative path is taken relative to the web config file, as exporter-toolkit does.
    assert cert_error == (
        f"{web}: tls_server_config.cert_file: cannot load the certificate and key "
        f"({tmp_path}/missing.pem, {pki}/server.key): No such file or directory"
    )
    assert ca_error.startswith(
        f"{web}: tls_server_config.client_ca_file: cannot load the client CA ({pki}/server.key): "
    )
    assert "PRIVATE KEY" not in ca_error


def test_the_toolkit_example_shape_loads(tmp_path, pki):
    web = tmp_path / "web.yml"
    web.write_text(f"""tls_server_config:
  cert_file: {pki}/server.pem
  key_file: {pki}/server.key
  client_auth_type: VerifyClientCertIfGiven
  client_ca_file: {pki}/ca.pem
  min_version: TLS12
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
http_server_config:
  http2: false
  headers: {{X-Frame-Options: deny, X-Content-Type-Options: nosniff, Content-Security-Policy: ""}}
basic_auth_users:
  alice: {toolkit_hash("a")}
""")
    loaded = load_web_config(str(web))
    assert loaded.ssl_context.verify_mode == ssl.CERT_OPTIONAL
    assert loaded.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert dict(loaded.headers) == {"X-Frame-Options": "deny", "X-Content-Type-Options": "nosniff"}
    assert set(loaded.users) == {"alice"}
    assert "$2y$" not in repr(loaded)  # hashes stay out of reprs (and so out of tracebacks and logs)


def test_inline_certificate_and_key(pki):
    cert = (pki / "server.pem").read_text()
    key = (pki / "server.key").read_text()
    indent = lambda pem: "\n".join("    " + line for line in pem.splitlines())  # noqa: E731
    loaded = parse_web_config(f"tls_server_config:\n  cert: |\n{indent(cert)}\n  key: |\n{indent(key)}\n", "w.yml")
    assert loaded.ssl_context is not None


# --- basic auth on every endpoint (in-process server, real HTTP) ------------------------------------


@pytest.fixture
async def auth_client(aiohttp_client, monkeypatch):
    """A client of the app with basic auth, and a list of the bcrypt checks it ran."""
    bcrypt_runs = []
    real_checkpw = webauth.checkpw

    def counting_checkpw(password, hashed):
        bcrypt_runs.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(webauth, "checkpw", counting_checkpw)
    web = parse_web_config(
        f"basic_auth_users:\n  alice: {toolkit_hash(PASSWORD)}\n  bob: {toolkit_hash('bob')}\n"
        "http_server_config:\n  headers: {X-Content-Type-Options: nosniff}\n",
        "w.yml",
    )
    app = create_app(tcp_config(), registry=CollectorRegistry(), web_config=web)
    return await aiohttp_client(app), bcrypt_runs


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/probe?target=127.0.0.1:1"),
        ("GET", "/-/healthy"),
        ("GET", "/-/ready"),
        ("POST", "/-/reload"),
        ("GET", "/no-such-page"),
    ],
)
async def test_every_endpoint_needs_the_password(auth_client, method, path):
    client, _ = auth_client
    response = await client.request(method, path)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Basic"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    response = await client.request(method, path, headers=basic("alice", "wrong"))
    assert response.status == 401


@pytest.mark.parametrize(
    "header",
    [
        basic("alice", PASSWORD.upper()),
        basic("mallory", PASSWORD),
        basic("alice", PASSWORD + "x" * 80),
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic " + base64.b64encode(b"alice").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
    ],
)
async def test_wrong_or_malformed_credentials_get_401(auth_client, header):
    client, _ = auth_client
    assert (await client.get("/-/healthy", headers=header)).status == 401


async def test_a_verified_password_is_remembered_not_rehashed(auth_client):
    client, bcrypt_runs = auth_client
    response = await client.get("/-/healthy", headers=basic("alice", PASSWORD))
    assert (response.status, await response.text()) == (200, "Healthy\n")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert len(bcrypt_runs) == 1
    for _ in range(5):
        assert (await client.get("/-/healthy", headers=basic("alice", PASSWORD))).status == 200
    assert len(bcrypt_runs) == 1
    # A remembered password does not open the door to a different one, nor to another user.
    assert (await client.get("/-/healthy", headers=basic("alice", PASSWORD + "!"))).status == 401
    assert (await client.get("/-/healthy", headers=basic("bob", PASSWORD))).status == 401
    assert len(bcrypt_runs) == 3
    assert (await client.get("/-/healthy", headers=basic("bob", "bob"))).status == 200
    assert (await client.get("/-/healthy", headers=basic("alice", PASSWORD))).status == 200
    assert len(bcrypt_runs) == 4


# --- TLS with the real exporter and real curl -------------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess:
    path = shutil.which("curl")
    if path is None:
        pytest.skip("curl is not installed")
    return subprocess.run(
        [path, "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.fixture
def tls_exporter(tmp_path, pki, listener):
    started = []

    def start(tls_extra: str = "", users: str = ""):
        config = tmp_path / "config.yml"
        config.write_text(
            f"modules: {{tcp_connect: {{prober: tcp, timeout: 2s}}}}\n"
            f"targets: [{{target: '127.0.0.1:{listener}', module: tcp_connect}}]\n"
        )
        web = tmp_path / "web.yml"
        web.write_text(
            f"tls_server_config:\n  cert_file: {pki}/server.pem\n  key_file: {pki}/server.key\n{tls_extra}{users}"
        )
        port = free_port()
        process = start_exporter(
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.config.file={web}",
            "--log.level=debug",
        )
        started.append(process)
        return f"https://127.0.0.1:{port}", process

    yield start
    for process in started:
        process.stop()


def test_tls_and_basic_auth_with_curl(tls_exporter, pki):
    base, _ = tls_exporter(users=f"basic_auth_users:\n  alice: {toolkit_hash(PASSWORD, cost=10)}\n")
    ok = curl("--cacert", f"{pki}/ca.pem", "-u", f"alice:{PASSWORD}", base + "/metrics")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.endswith("\n200")
    assert 'probe_tcp_state{target="127.0.0.1:' in ok.stdout
    wrong = curl("--cacert", f"{pki}/ca.pem", "-u", "alice:guess", "-D", "-", base + "/metrics")
    assert wrong.stdout.endswith("\n401")
    assert "WWW-Authenticate: Basic" in wrong.stdout
    # Without the CA, curl refuses the server's certificate; plain HTTP gets no HTTP answer.
    assert curl(base + "/-/healthy").returncode == 60
    assert curl(base.replace("https", "http") + "/-/healthy").stdout.endswith("\n000")


def test_client_certificates_are_required_and_verified(tls_exporter, pki):
    base, _ = tls_exporter(
        tls_extra=f"  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki}/ca.pem\n  client_allowed_sans: [scraper.example]\n"
    )
    no_cert = curl("--cacert", f"{pki}/ca.pem", base + "/-/healthy")
    assert no_cert.returncode != 0 and not no_cert.stdout.endswith("200")
    ok = curl(
        "--cacert", f"{pki}/ca.pem", "--cert", f"{pki}/client.pem", "--key", f"{pki}/client.key", base + "/-/healthy"
    )
    assert ok.stdout == "Healthy\n\n200", ok.stderr
    # Signed by the right CA but not in client_allowed_sans.
    stranger = curl(
        "--cacert",
        f"{pki}/ca.pem",
        "--cert",
        f"{pki}/stranger.pem",
        "--key",
        f"{pki}/stranger.key",
        base + "/-/healthy",
    )
    assert stranger.stdout.endswith("\n403")


def test_secrets_never_reach_the_log(tls_exporter, pki):
    hashed = toolkit_hash(PASSWORD)
    base, process = tls_exporter(users=f"basic_auth_users:\n  alice: {hashed}\n")
    guess = "hunter2-guess"
    assert curl("--cacert", f"{pki}/ca.pem", "-u", f"alice:{guess}", base + "/-/healthy").stdout.endswith("401")
    assert curl("--cacert", f"{pki}/ca.pem", "-u", f"alice:{PASSWORD}", base + "/-/healthy").stdout.endswith("200")
    process.wait_for_log("HTTP basic authentication failed")
    process.wait_for_log("response_status=200")  # the access log line of the good request
    process.stop()
    log = process.log
    for secret in (guess, PASSWORD, hashed, hashed[7:], base64.b64encode(f"alice:{PASSWORD}".encode()).decode()):
        assert secret not in log


def test_a_wrong_web_config_stops_the_start_with_exit_1(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("modules: {tcp_connect: {prober: tcp}}\n")
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\nbasic_auth_users: {a: b}\n")
    done = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={config}", f"--web.config.file={web}"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=REPO,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{web}: basic_auth_users.a: not a bcrypt hash (expected $2y$, $2b$ or $2a$, a two-digit cost, then 53 "
        "characters, e.g. from 'htpasswd -nBC 10 \"\" | tr -d :')"
    ]
    web.write_text("tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n")
    done = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={config}", f"--web.config.file={web}"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=REPO,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"{web}: tls_server_config.cert_file: cannot load the certificate and key "
        f"({tmp_path}/nope.pem, {tmp_path}/nope.key): No such file or directory\n"
    )
