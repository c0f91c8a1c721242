"""The .dockerignore keeps the build context to what the Dockerfile copies, and lets all of that in."""

from __future__ import annotations

import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern decides; '!' re-includes; a directory pattern covers
    what is under it."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(
            fnmatch.fnmatchcase(prefix, pattern)
            or fnmatch.fnmatchcase(prefix, pattern.removeprefix("**/"))
            or fnmatch.fnmatchcase(parts[-1], pattern.removeprefix("**/"))
            and pattern.startswith("**/")
            for prefix in prefixes
        ):
            result = not negate
    return result


def patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def copied_sources() -> list[str]:
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(word.startswith("--from") for word in words):
            sources += [word.removeprefix("./").rstrip("/") for word in words[1:-1]]
    return sources


def test_everything_the_dockerfile_copies_is_in_the_context():
    sources = copied_sources()
    assert {"pyproject.toml", "README.md", "exporter", "config.example.yml"} <= set(sources)
    files = [
        str(p.relative_to(ROOT))
        for source in sources
        for p in ([ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*.py"))
    ]
    assert files and not [f for f in files if ignored(f, patterns())]


def test_the_rest_of_the_clone_stays_out():
    for path in (
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "bench/run.py",
        "docs/metrics.md",
        "exporter/__pycache__/app.cpython-311.pyc",
        "connectivity_exporter.egg-info/PKG-INFO",
    ):
        assert ignored(path, patterns()), path
