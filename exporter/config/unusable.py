"""Modules that name a file that cannot be read (a CA, certificate, key or password file).

Prometheus' convention, and blackbox_exporter's behaviour for a ``blackbox.yml`` written on another
machine: the configuration loads, one warning line per such module says which file and why, and only
that module's probes fail, with that reason (``probe_success 0``, ``/probe?debug=true``, ``check``, the
status page). ``--config.check`` reports each unreadable file as an error (exit 1), as ``promtool check
config`` does. A file that can be read but holds the wrong thing (not PEM, a key that does not match) stays
a configuration error: that is a mistake in the file, not a file missing here.
"""

from __future__ import annotations

from collections.abc import Sequence

FIX = "make the file readable, then reload the configuration"


def module_reason(module_path: str, problems: Sequence[tuple[str, str]]) -> str:
    """Why a module cannot probe: each unreadable file as ``key.path: problem``, relative to the module."""
    prefix = module_path + "."
    return "; ".join(f"{path.removeprefix(prefix)}: {problem}" for path, problem in problems)


def warning_text(reason: str) -> str:
    """The module's one warning line (after ``file: modules.NAME: ``)."""
    return f"its probes fail until a file it names can be read ({FIX}): {reason}"


def probe_detail(module_name: str, reason: str) -> str:
    """What a failed probe of such a module says to a person."""
    return f"module {module_name!r} cannot be used: {reason} ({FIX})"
