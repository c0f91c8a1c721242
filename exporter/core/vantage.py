"""The site an exporter probes from (its *vantage point*) and the central view it links to.

A vantage name becomes the value of a ``vantage`` label on every series the exporter writes, so one
central Prometheus can tell "down from everywhere" from "down from one site". Names are short words,
safe as label values, file names and URL parts alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

VANTAGE_LABEL = "vantage"
MAX_VANTAGE_LENGTH = 63
VANTAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
MAX_URL_LENGTH = 2048


def vantage_problem(name: object) -> str | None:
    """Why ``name`` cannot be a vantage point name, or None when it can."""
    if not isinstance(name, str) or not name:
        return "expected a vantage point name such as fra1 or office-berlin"
    if len(name) > MAX_VANTAGE_LENGTH:
        return f"vantage point name is longer than {MAX_VANTAGE_LENGTH} characters"
    if not VANTAGE_NAME.match(name):
        shown = repr(name) if len(name) <= 40 else repr(name[:37]) + "..."
        return (
            f"invalid vantage point name {shown}: use letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return None


def central_url_problem(url: object) -> str | None:
    """Why ``url`` cannot be the link to the central view, or None when it can."""
    if not isinstance(url, str) or not url:
        return "expected an http:// or https:// URL"
    if len(url) > MAX_URL_LENGTH:
        return f"URL is longer than {MAX_URL_LENGTH} characters"
    if any(ord(char) < 33 or ord(char) == 127 for char in url):
        return "URL contains spaces or control characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        shown = repr(url) if len(url) <= 60 else repr(url[:57]) + "..."
        return f"{shown} is not an absolute http:// or https:// URL"
    return None


@dataclass(frozen=True, slots=True)
class Site:
    """Set from the command line; each field, when set, wins over the config file's ``global`` key."""

    vantage: str | None = None
    central_url: str | None = None


class VantageLabelled:
    """A view of a prometheus_client registry whose samples all carry ``vantage="NAME"``, for
    ``generate_latest``; the registry itself stays unlabelled (the name may change on reload)."""

    def __init__(self, registry: Collector, vantage: str):
        self.registry = registry
        self.vantage = vantage

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            labelled.samples = list(_with_vantage(metric.samples, self.vantage))
            yield labelled


def _with_vantage(samples: Iterable[Sample], vantage: str) -> Iterator[Sample]:
    for sample in samples:
        yield sample._replace(labels={**sample.labels, VANTAGE_LABEL: vantage})
