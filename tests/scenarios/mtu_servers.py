"""Real servers for the path-MTU tests, run inside the server namespace:

    python mtu_servers.py CA_FILE TLS_PORT SMTP_PORT SILENT_PORT

- a TLS server (Python's ssl, OpenSSL) whose certificate chain — leaf, three intermediates, RSA —
  is several kilobytes: its certificate flight fills several full-size segments;
- aiosmtpd with STARTTLS, the same chain.
- a silent server: it accepts and never sends a byte (a stalled or hostile server).
All read whatever the client sends until it closes. The root CA is written to CA_FILE; "ready" is
printed once both listen.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

import trustme
from aiosmtpd.smtp import SMTP


class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"


def chain_context(ca_file: str) -> ssl.SSLContext:
    root = trustme.CA(key_type=trustme.KeyType.RSA)
    root.cert_pem.write_to_path(ca_file)
    issuer = root
    for _ in range(3):
        issuer = issuer.create_child_ca(key_type=trustme.KeyType.RSA)
    leaf = issuer.issue_cert("tls.test", "mx.test", key_type=trustme.KeyType.RSA)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    return context


async def drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(65536):
            pass
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main(ca_file: str, tls_port: int, smtp_port: int, silent_port: int) -> None:
    context = chain_context(ca_file)
    loop = asyncio.get_running_loop()
    tls = await asyncio.start_server(drain, None, tls_port, ssl=context)
    smtp = await loop.create_server(lambda: SMTP(Sink(), hostname="mx.test", tls_context=context), None, smtp_port)
    silent = await asyncio.start_server(drain, None, silent_port)
    print("ready", flush=True)
    async with tls, smtp, silent:
        await asyncio.Event().wait()  # until the test kills the process


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
