"""Shared helpers of the test suite: fake and real servers, namespaces, processes, parsers, ``eventually()``
(no tests here; programs that run as their own process are in tests/scenarios/)."""
