"""Scenario programs: each file here runs as its own process (``python -m tests.scenarios.NAME`` or by path),
usually inside network namespaces a test created, and prints one JSON report the test asserts on. They are
not imported by tests (a test may import a scenario's constants); shared code lives in tests/helpers/."""
