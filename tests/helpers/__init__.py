"""Shared helpers of the test suite: fake and real servers, namespaces, processes, parsers (no tests here)."""
