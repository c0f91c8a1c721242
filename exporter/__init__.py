"""connectivity_exporter: tells open, refused, filtered and unreachable ports apart for Prometheus."""

__version__ = "0.1.0"
