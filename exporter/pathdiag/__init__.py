"""Where and why a TCP connection fails: ICMP errors from the error queue, a paced TCP traceroute,
a UDP reach of the host, and a verdict from a fixed set, explained in words.

Nothing here needs privileges: IP_RECVERR / IPV6_RECVERR, IP_TTL / IPV6_UNICAST_HOPS and
unconnected-to-anything UDP sockets are open to every user (see docs/path-diagnosis.md).
"""
