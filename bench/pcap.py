"""Handshake times as the wire saw them: first SYN out -> SYN-ACK back, per destination address.

Reads a classic pcap file written by ``tcpdump -i lo`` (Ethernet framing on Linux loopback).
On loopback the capture point is the device, before the nftables input hook, so a SYN that
the firewall drops is still seen: the time from the *first* SYN to the SYN-ACK is the real
connect time, retransmission wait included, measured by the kernel to the microsecond.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

SYN, ACK = 0x02, 0x10


def handshakes(path: str, port: int) -> Iterator[tuple[str, int, float]]:
    """(destination, client port, seconds from the connection's first SYN to port ``port`` until its
    SYN-ACK) for every handshake in the capture, in the order the SYN-ACKs were seen."""
    first_syn: dict[tuple[str, int], float] = {}
    with open(path, "rb") as f:
        header = f.read(24)
        magic = struct.unpack("<I", header[:4])[0]
        endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        scale = 1e-9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e-6
        while record := f.read(16):
            seconds, fraction, captured, _ = struct.unpack(endian + "IIII", record)
            frame = f.read(captured)
            stamp = seconds + fraction * scale
            if len(frame) < 54 or frame[12:14] != b"\x08\x00":  # IPv4 over Ethernet only
                continue
            ip = frame[14:]
            if ip[9] != 6:
                continue
            tcp = ip[(ip[0] & 0x0F) * 4 :]
            source = ".".join(map(str, ip[12:16]))
            destination = ".".join(map(str, ip[16:20]))
            sport, dport = struct.unpack("!HH", tcp[:4])
            flags = tcp[13]
            if flags & (SYN | ACK) == SYN and dport == port:
                first_syn.setdefault((destination, sport), stamp)
            elif flags & (SYN | ACK) == SYN | ACK and sport == port:
                sent = first_syn.pop((source, dport), None)
                if sent is not None:
                    yield source, dport, stamp - sent


def handshake_seconds(path: str, port: int) -> dict[str, float]:
    """{destination address: seconds of its first handshake with port ``port``}."""
    out: dict[str, float] = {}
    for destination, _, seconds in handshakes(path, port):
        out.setdefault(destination, seconds)
    return out
