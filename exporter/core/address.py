"""Parsing of probe targets written as ``host:port`` (IPv6 as ``[::1]:25``)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")


class AddressError(ValueError):
    """A target string that is not a usable ``host:port``."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int
    # Set when host is an IP literal, so the hot path never resolves it.
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    # The target exactly as configured (``example.com`` for an smtp module's default port 25): the
    # ``target`` label and every view show it byte for byte. Empty for addresses built by the exporter.
    written: str = ""

    def __str__(self) -> str:
        return self.written or self.endpoint

    @property
    def endpoint(self) -> str:
        """``host:port`` with the port filled in (IPv6 in brackets): what is connected to."""
        if self.ip is not None and self.ip.version == 6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_host_port(text: str, default_port: int | None = None) -> HostPort:
    """Parse ``host:port``; ``default_port`` allows the port to be left out."""
    if not isinstance(text, str) or not text:
        raise AddressError("empty target")
    if len(text) > 300:
        raise AddressError("target is longer than 300 characters")
    if any(c.isspace() or ord(c) < 0x20 or c == "/" for c in text):
        raise AddressError(f"target {text!r} contains whitespace, control characters or '/'; expected host:port")

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise AddressError(f"target {text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise AddressError(f"target {text!r}: expected ':port' after ']'")
        port_text = rest[1:] if rest else None
        if "%" in host:
            raise AddressError(f"target {text!r}: IPv6 zone identifiers (%interface) are not supported")
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"target {text!r}: {host!r} is not an IPv6 address") from None
    else:
        if text.count(":") > 1:
            raise AddressError(_unbracketed_ipv6_hint(text))
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
        ip = _ipv4_or_none(host)
        if ip is None:
            _check_hostname(text, host)

    if port_text is None or port_text == "":
        if default_port is None:
            raise AddressError(f"target {text!r}: missing port (expected host:port)")
        port = default_port
    else:
        if not (port_text.isascii() and port_text.isdigit()):
            raise AddressError(f"target {text!r}: port {port_text!r} is not a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise AddressError(f"target {text!r}: port {port} is out of range 1-65535")
    return HostPort(host=str(ip) if ip is not None else host, port=port, ip=ip, written=text)


def _unbracketed_ipv6_hint(text: str) -> str:
    """The message for 'a:b:c' without brackets. '::1:9816' is ambiguous: port 9816 of ::1 (what
    someone who wrote host:port meant) or the address ::1:9816 itself; name both readings."""
    address, _, last = text.rpartition(":")
    as_port = last.isascii() and last.isdigit() and 1 <= int(last) <= 65535 and _is_ipv6(address)
    if as_port and _is_ipv6(text):
        return (
            f"target {text!r}: write IPv6 addresses in brackets: [{address}]:{last} for port {last} of "
            f"{address}, or [{text}]:PORT"
        )
    if as_port:
        return f"target {text!r}: write IPv6 addresses in brackets, e.g. [{address}]:{last}"
    if _is_ipv6(text):
        return f"target {text!r}: write IPv6 addresses in brackets, e.g. [{text}]:PORT"
    return f"target {text!r}: expected host:port"


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _ipv4_or_none(host: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        return None


def is_host_name(host: str) -> bool:
    """A DNS name of 1-63 character labels (letters, digits, '-', '_'), 253 characters at most."""
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_HOSTNAME_LABEL.match(label) for label in name.split("."))


def _check_hostname(text: str, host: str) -> None:
    if not host:
        raise AddressError(f"target {text!r}: missing host")
    if not is_host_name(host):
        raise AddressError(f"target {text!r}: {host!r} is not a valid host name or IPv4 address")
